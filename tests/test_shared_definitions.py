"""Definitions with one owner each: SI-SDR/SNR, file and manifest hashes, the separator choice and thread policy."""

from __future__ import annotations

import hashlib
import json
import math
import sys

import numpy as np
import pytest

from bgmid.hashing import file_digest
from bgmid.metrics import si_sdr, snr


def test_si_sdr_argument_order_and_zero_mean():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(8000)
    est = 0.5 * ref + 0.3 * rng.standard_normal(8000)
    a = si_sdr(reference=ref, estimate=est)
    assert a == pytest.approx(si_sdr(ref, est)) == pytest.approx(si_sdr(est, ref))  # SI-SDR is symmetric ...
    assert snr(reference=ref, estimate=est) != pytest.approx(snr(est, ref), abs=0.1)  # ... SNR is not
    # a DC offset on the estimate costs SI-SDR unless the means are removed first (training's validation does)
    assert si_sdr(ref, est + 1.0) < a - 3 and si_sdr(ref, est + 1.0, zero_mean=True) == pytest.approx(a, abs=0.01)
    assert math.isnan(si_sdr(np.zeros(10), np.ones(10))) and math.isnan(snr(np.zeros(10), np.ones(10)))
    from bgmid.evaluate import bss

    assert bss.si_sdr is si_sdr and bss.snr is snr


def test_file_digest_and_manifest_hash(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000
    p.write_bytes(data)
    assert file_digest(p) == hashlib.sha256(data).hexdigest()
    assert file_digest(p, "sha1", chunk=1000) == hashlib.sha1(data).hexdigest()
    from bgmid.data.corpus import manifest_sha256
    from bgmid.errors import BgmidError
    from bgmid.train import manifest_hash

    (tmp_path / "manifest.json").write_text(json.dumps({"items": []}))
    full = manifest_sha256(tmp_path)
    assert len(full) == 64 and full == file_digest(tmp_path / "manifest.json")
    assert manifest_hash(str(tmp_path)) == full[:16] and manifest_hash(str(tmp_path / "none")) == ""
    with pytest.raises(BgmidError, match="bgmid data fetch"):
        manifest_sha256(tmp_path / "none")


def test_resolve_separator_and_torch_threads(monkeypatch, tmp_path, capsys):
    from bgmid.cli.common import resolve_separator as from_cli
    from bgmid.errors import BgmidError
    from bgmid.separation import resolve_separator, torch_threads

    assert from_cli is resolve_separator
    assert resolve_separator("none") is None and resolve_separator("NONE") is None
    monkeypatch.setenv("BGMID_MODELS", str(tmp_path))  # no shipped weights here
    assert resolve_separator("auto", command="identify") is None
    assert "bgmid identify: no weights" in capsys.readouterr().err
    with pytest.raises(BgmidError):
        resolve_separator("unet")  # named: its missing weights are an error
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):  # no policy: leave it alone
        assert torch.get_num_threads() == before


def test_separation_imports_no_torch():
    import subprocess

    code = "import sys, bgmid.separation, bgmid.cli.common; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
