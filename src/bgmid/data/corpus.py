"""Build the real music/speech corpus from Debian packages: fetch, unpack, extract, convert, manifest, splits.

Why Debian packages: nothing can be downloaded from model or data hubs where bgmid is developed (and many
broadcasters' machines sit behind firewalls), but ``apt-get download`` works without root and the archive
holds many hours of real game-soundtrack music and real voice acting (see ``docs/data.md``).

Pipeline (each step idempotent, so an interrupted run resumes where it stopped):

1. ``apt-get download`` each package into ``ROOT/debs`` (skipped when a ``PKG_*.deb`` is there already).
2. Unpack it (``dpkg-deb -x``, or a pure-Python ar/tar reader when dpkg is missing) into ``ROOT/work/PKG``
   and copy its ``usr/share/doc/PKG/copyright`` to ``ROOT/licences/PKG.copyright``.
3. Find the audio of the package's :class:`Source` (speech archives such as FOTAQ's ``queen.1c`` included),
   decode each file in a pool of worker processes, drop sound effects (music shorter than
   ``min_duration_s``) and near-silent files, and write mono int16 ``.npy`` caches at 16,000 and 22,050 Hz
   (``ROOT/audio/<rate>/<id>.npy``, memory-mappable). Other rates are derived on demand by
   :func:`ensure_rate`. The item id is a hash of the decoded 16 kHz samples, which deduplicates by content.
   Finished files are appended to ``ROOT/items/PKG.partial.jsonl``; a finished package becomes
   ``ROOT/items/PKG.json`` and its unpacked tree is deleted (the ``.deb`` is kept).
4. :func:`build_manifest` merges all packages' items (first copy of duplicated content wins), assigns the
   splits (:func:`assign_split`) and writes ``ROOT/manifest.json`` and ``ROOT/manifest.csv``.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError

__all__ = [
    "CACHE_RATES",
    "SPLITS",
    "Source",
    "MUSIC_SOURCES",
    "SPEECH_SOURCES",
    "PRESETS",
    "default_root",
    "fetch",
    "add_local",
    "build_manifest",
    "load_manifest",
    "manifest_sha256",
    "items",
    "audio_path",
    "load_item",
    "ensure_rate",
    "assign_split",
    "measure_bandwidth",
    "parse_queen_archive",
    "disk_usage",
]

#: Sample rates (Hz) stored for every item. 16 kHz is the training rate; 22,050 Hz serves the paper's
#: 22 kHz variant. Any other rate (8,000, 11,025, ...) is resampled once from the nearest stored rate
#: at or above it and cached by :func:`ensure_rate`.
CACHE_RATES = (16000, 22050)

#: Split names. ``ooi`` ("out of index") music is never indexed: it is the negatives' pool.
SPLITS = ("train", "val", "test", "ooi")

#: Music split fractions by hashed track id (train, val, test, ooi).
MUSIC_FRACTIONS = (0.75, 0.10, 0.10, 0.05)
#: Speech split fractions by hashed speaker group (train, val, test).
SPEECH_FRACTIONS = (0.80, 0.10, 0.10)

AUDIO_EXTS = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".flac", ".m4a", ".aac", ".mka", ".wma"}
#: Magic bytes of files without an extension that are worth decoding (blobwars ships extensionless OGG).
_MAGIC = (b"OggS", b"RIFF", b"fLaC", b"ID3")


@dataclass(frozen=True)
class Source:
    """Where a package keeps usable audio and how to label it.

    ``include``/``exclude`` are fnmatch patterns on the path inside the unpacked package (``usr/share/...``);
    an empty ``include`` takes every audio file. ``speaker_rule`` names how the speaker (for
    speaker-disjoint splits) is read from the path: ``dir`` (parent folder), ``fillets``
    (``<level>-<speaker>-<word>.ogg``), ``fotaq`` (queen.1c line names), ``single`` (one voice),
    ``none`` (music). ``split`` forces the whole source into one split (single-speaker sources).
    ``train_speakers`` are speakers too large to hold out (their lines would dominate a test set).
    """

    package: str
    kind: str  # "music" or "speech"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_duration_s: float = 60.0
    language: str = ""
    speaker_rule: str = "none"
    archive: str = ""  # "queen1c": speech inside FOTAQ's archive
    split: str = ""
    train_speakers: tuple[str, ...] = ()
    local_dir: str = ""  # a user's own folder instead of a package


def _music(pkg: str, *include: str, exclude: tuple[str, ...] = ()) -> Source:
    return Source(pkg, "music", include=tuple(include), exclude=exclude, min_duration_s=60.0)


#: Music packages (DATA.md). Includes are the music folders; where none is given every audio file
#: >= 60 s is taken (shorter ones are sound effects).
MUSIC_SOURCES: dict[str, Source] = {
    s.package: s
    for s in [
        _music("warzone2100-music"),
        _music("planetblupi-music-ogg"),
        _music("colobot-common-sounds", "*/music/*"),
        _music("blobwars-data", "*/music/*"),
        _music("marsshooter-data", "*/music/*"),
        _music("hedgewars-data", "*/Data/Music/*"),
        _music("naev-data", "*/music/*"),
        _music("wesnoth-1.16-music"),
        _music("supertux-data", "*/music/*"),
        _music("widelands-data", "*/music/*"),
        _music("supertuxkart-data", "*/music/*"),
        _music("freedroidrpg-data", "*/music/*"),
        _music("unknown-horizons", "*/music/*"),
        _music("drascula-music"),
        _music("flare-game", "*/music/*"),
        _music("megaglest-data", "*/music/*"),
        _music("trackballs-data", "*/music/*"),
        _music("pushover-data"),
        _music("redeclipse-data", "*/music/*"),
        _music("starfighter-data", "*/music/*"),
        _music("warmux-data", "*/music/*"),
        _music("openclonk-data"),
        _music("davegnukem-data"),
        _music("hyperrogue-music"),
        _music("freecol", "*/music/*"),
        _music("enigma-data", "*/music/*"),
        _music("btanks-data"),
        _music("freedink-data"),
        _music("lordsawar-data", "*/music/*"),
        _music("xmoto-data"),
        _music("frozen-bubble-data"),
        _music("fretsonfire-songs-sectoid", "*/song.ogg"),
        _music("fretsonfire-songs-muldjord", "*/song.ogg"),
    ]
}

#: Speech packages (DATA.md): real voice acting and recorded prompts, no TTS.
SPEECH_SOURCES: dict[str, Source] = {
    s.package: s
    for s in [
        Source(
            "flight-of-the-amazon-queen", "speech", include=("*/queen.1c",), min_duration_s=0.3,
            language="en", speaker_rule="fotaq", archive="queen1c", train_speakers=("J",),
        ),
        Source(
            "fillets-ng-data-cs", "speech", include=("*/sound/*/cs/*.ogg",), min_duration_s=0.3,
            language="cs", speaker_rule="fillets", train_speakers=("m", "v"),
        ),
        Source(
            "hedgewars-data", "speech", include=("*/Sounds/voices/*",), min_duration_s=0.3,
            language="", speaker_rule="dir",
        ),
        Source(
            "festvox-ru", "speech", include=("*/msu_ru_nsh_clunits/wav/*.wav",), min_duration_s=0.3,
            language="ru", speaker_rule="single", split="test",
        ),
    ]
    + [
        Source(
            f"asterisk-core-sounds-{lang}-wav", "speech", include=("*.wav",), min_duration_s=0.3,
            language=lang, speaker_rule="single", split="train",
        )
        for lang in ("en", "es", "fr", "it", "ru")
    ]
}

_DEMO_MUSIC = (
    "warzone2100-music", "planetblupi-music-ogg", "colobot-common-sounds", "blobwars-data",
    "marsshooter-data", "hedgewars-data",
)
_DEMO_SPEECH = ("flight-of-the-amazon-queen", "fillets-ng-data-cs", "hedgewars-data", "festvox-ru")

#: Named package sets: ``demo`` (~770 MB of .debs, ~110 tracks, ~9 h speech) for the README demo and a
#: first separator; ``full`` (every music package of DATA.md, several GB) for training.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "demo": {"music": _DEMO_MUSIC, "speech": _DEMO_SPEECH},
    "full": {"music": tuple(MUSIC_SOURCES), "speech": tuple(SPEECH_SOURCES)},
}


def default_root() -> Path:
    """``$BGMID_DATA`` if set, else ``~/.cache/bgmid``: one corpus per user, shared by all commands."""
    env = os.environ.get("BGMID_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bgmid"


# --------------------------------------------------------------------------------------------------
# signal measures


def measure_bandwidth(x: np.ndarray, sr: int, fractions: tuple[float, ...] = (0.99, 0.999)) -> list[float]:
    """Frequencies (Hz) below which the given fractions of the signal's energy lie.

    Why: much of the available speech is band-limited (11 kHz MP3, 8 kHz telephone), which changes what a
    separator learns and what a fingerprinter can see; the manifest records it so mixing can respect it.
    Welch PSD with 2,048-sample Hann segments over at most the first 120 s.
    """
    from scipy.signal import welch

    x = np.asarray(x[: int(120 * sr)], dtype=np.float64)
    if x.size < 256 or not np.any(x):
        return [0.0 for _ in fractions]
    f, p = welch(x, fs=sr, nperseg=min(2048, x.size), noverlap=None)
    c = np.cumsum(p)
    c /= c[-1]
    return [float(f[min(int(np.searchsorted(c, q)), f.size - 1)]) for q in fractions]


def _rms_dbfs(x: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (1.0); -inf-safe (floor -200 dB)."""
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _active_fraction(x: np.ndarray, sr: int, thresh_db: float = -50.0) -> float:
    """Fraction of 50 ms frames whose RMS exceeds ``thresh_db`` dBFS (tells near-silent files apart)."""
    n = int(0.05 * sr)
    m = x.size // n
    if m == 0:
        return 0.0
    fr = x[: m * n].reshape(m, n).astype(np.float64)
    return float(np.mean(10 * np.log10(np.mean(fr * fr, axis=1) + 1e-20) > thresh_db))


# --------------------------------------------------------------------------------------------------
# package fetching and unpacking


def _need_apt() -> str:
    exe = shutil.which("apt-get")
    if not exe:
        raise BgmidError(
            "apt-get not found: the corpus is built from Debian/Ubuntu packages. On Debian or Ubuntu install "
            "apt (and run 'sudo apt-get update' once). Elsewhere, download the .deb files listed by "
            "'bgmid data fetch --list' from https://packages.debian.org into ROOT/debs/ and re-run (no "
            "download is attempted for packages already there), or build a corpus from your own folders "
            "with 'bgmid data add --music DIR --speech DIR'."
        )
    return exe


def _find_deb(debs: Path, pkg: str) -> Path | None:
    hits = sorted(debs.glob(f"{pkg}_*.deb"))
    return hits[-1] if hits else None


def download_deb(pkg: str, debs: Path, log: Callable[[str], None] = print) -> Path:
    """``apt-get download PKG`` into ``debs`` unless a ``PKG_*.deb`` is there already; return its path."""
    debs.mkdir(parents=True, exist_ok=True)
    hit = _find_deb(debs, pkg)
    if hit:
        return hit
    exe = _need_apt()
    log(f"  downloading {pkg} ...")
    r = subprocess.run([exe, "download", pkg], cwd=debs, capture_output=True, text=True)
    hit = _find_deb(debs, pkg)
    if r.returncode != 0 or hit is None:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise BgmidError(
            f"apt-get download {pkg} failed: {msg[-1] if msg else 'no .deb written'}. If the package is "
            "unknown, run 'sudo apt-get update' (its lists may be empty) or check the package name; the "
            "Debian 'main' and 'contrib' sections must be enabled."
        )
    return hit


def _read_ar(path: Path) -> Iterator[tuple[str, int, int]]:
    """Yield (name, data offset, size) of the members of an ``ar`` archive (a .deb is one)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BgmidError(f"{path}: not a Debian package (no ar header). Delete it and re-run.")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                return
            name = hdr[:16].decode().strip().rstrip("/")
            size = int(hdr[48:58].decode().strip())
            off = f.tell()
            yield name, off, size
            f.seek(off + size + (size & 1))


def unpack_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files into ``dest`` without installing anything (dpkg-deb, else Python)."""
    dest.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb"):
        r = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
        if r.returncode == 0:
            return
    for name, off, size in _read_ar(deb):
        if name.startswith("data.tar"):
            with open(deb, "rb") as f:
                f.seek(off)
                blob = f.read(size)
            import io

            if name.endswith(".zst"):
                raise BgmidError(f"{deb}: zstd-compressed package and no dpkg-deb: install dpkg.")
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
                tf.extractall(dest, filter="data")
            return
    raise BgmidError(f"{deb}: no data.tar member; the file is damaged. Delete it and re-run.")


# --------------------------------------------------------------------------------------------------
# FOTAQ archive


def parse_queen_archive(path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """Entries ``(name, offset, size)`` of a Flight of the Amazon Queen ``queen.1c`` archive.

    Format (big-endian): ``QTBL``, 6-byte version, u16 flags, u8 compression at offset 12 (1 = MP3),
    u16 entry count at 13, then 21-byte entries from offset 15: 12-byte NUL-padded name, u8 bundle,
    u32 offset, u32 size. ``.SB`` entries are the spoken dialogue lines (MP3, 11,025 Hz mono).
    """
    with open(path, "rb") as f:
        head = f.read(15)
        if len(head) < 15 or head[:4] != b"QTBL":
            raise BgmidError(f"{path}: not a queen.1c archive (no QTBL header).")
        (n,) = struct.unpack(">H", head[13:15])
        table = f.read(21 * n)
        f.seek(0, 2)
        total = f.tell()
    if len(table) < 21 * n:
        raise BgmidError(f"{path}: truncated queen.1c table ({len(table) // 21} of {n} entries).")
    out = []
    for i in range(n):
        e = table[21 * i : 21 * (i + 1)]
        name = e[:12].split(b"\0", 1)[0].decode("ascii", "replace")
        off, size = struct.unpack(">II", e[13:21])
        if off + size <= total:
            out.append((name, off, size))
    return out


_FOTAQ_CODED = re.compile(r"^([0-9A-F]{2})([0-9A-F]{4})([A-Z])(\d)\.SB$")


def _speaker_of(src: Source, rel: str) -> tuple[str, str]:
    """(speaker, split group) of a speech line, from its path. The group is what splits are drawn over."""
    name = rel.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if src.speaker_rule == "fotaq":
        m = _FOTAQ_CODED.match(name)
        if m:  # <dialogue file><line><speaker letter><n>: J = Joe (the hero, one actor throughout)
            spk = m.group(3)
            return (spk, "J") if spk == "J" else (f"{m.group(1)}{spk}{m.group(4)}", m.group(1))
        if name.startswith("JOE"):
            return "J", "J"
        return name[:2], name[:2]
    if src.speaker_rule == "fillets":
        parts = Path(name).stem.split("-")
        spk = parts[1] if len(parts) >= 3 else parts[0]
        if spk in src.train_speakers:
            return spk, spk
        return f"{parts[0]}-{spk}", f"{parts[0]}-{spk}"
    if src.speaker_rule == "dir":
        parent = rel.rsplit("/", 2)[-2] if rel.count("/") >= 1 else ""
        return parent, parent
    if src.speaker_rule == "single":
        return src.package, src.package
    return "", ""


# --------------------------------------------------------------------------------------------------
# conversion (runs in worker processes)


@dataclass
class _Job:
    package: str
    kind: str
    rel: str  # path inside the package (archive entries: "archive/path:NAME")
    path: str  # file to read
    offset: int = -1  # >= 0: bytes [offset, offset+size) of ``path`` hold the audio
    size: int = 0
    min_duration_s: float = 60.0
    root: str = ""
    extra: dict = field(default_factory=dict)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def _convert(job: _Job) -> dict:
    """Decode one file, filter it, write its caches; return its manifest record or a drop reason."""
    from bgmid.audio import AudioError, load, resample

    rec: dict = {"package": job.package, "kind": job.kind, "orig_path": job.rel}
    tmp = None
    try:
        path = job.path
        if job.offset >= 0:
            with open(job.path, "rb") as f:
                f.seek(job.offset)
                blob = f.read(job.size)
            fd, tmp = tempfile.mkstemp(suffix=".bin", dir=Path(job.root) / "work")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            path = tmp
        try:
            x, sr = load(path)
        except AudioError as exc:
            return {**rec, "drop": f"undecodable: {str(exc)[:120]}"}
    finally:
        if tmp:
            os.unlink(tmp)
    dur = x.size / sr
    if dur < job.min_duration_s:
        return {**rec, "drop": f"short ({dur:.1f} s < {job.min_duration_s:g} s)"}
    level = _rms_dbfs(x)
    if level < -55.0 or _active_fraction(x, sr) < (0.5 if job.kind == "music" else 0.1):
        return {**rec, "drop": f"near-silent ({level:.1f} dBFS)"}
    bw99, bw999 = measure_bandwidth(x, sr)
    peak = float(np.max(np.abs(x)))
    if peak > 0.999:  # rare decoder overshoot: scale down rather than clip
        x = x * (0.999 / peak)
    caches = {r: _to_int16(resample(x, sr, r)) for r in CACHE_RATES}
    digest = hashlib.sha1(caches[CACHE_RATES[0]].tobytes()).hexdigest()
    item_id = f"{job.kind[0]}{digest[:15]}"
    root = Path(job.root)
    for r, arr in caches.items():
        p = root / "audio" / str(r) / f"{item_id}.npy"
        if not p.exists():
            _atomic_save_npy(p, arr)
    return {
        **rec,
        "id": item_id,
        "duration_s": round(dur, 3),
        "orig_sr": int(sr),
        "bandwidth_hz": round(bw999, 1),
        "bandwidth99_hz": round(bw99, 1),
        "rms_dbfs": round(level, 2),
        "title": Path(job.rel.split(":")[-1]).stem,
        **job.extra,
    }


# --------------------------------------------------------------------------------------------------
# discovery


def _is_audio(p: Path) -> bool:
    if p.suffix.lower() in AUDIO_EXTS:
        return True
    if p.suffix == "" or p.suffix.lower() in {".dat", ".snd", ".mus"}:
        try:
            with open(p, "rb") as f:
                head = f.read(4)
        except OSError:
            return False
        return head.startswith(_MAGIC) or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xe3")
    return False


def _match(rel: str, pats: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase("/" + rel, p) for p in pats)


def _jobs_for(src: Source, tree: Path, root: Path) -> list[_Job]:
    """All conversion jobs of one source in an unpacked tree (or a user's folder)."""
    jobs: list[_Job] = []
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    for p in files:
        rel = p.relative_to(tree).as_posix()
        if "/doc/" in f"/{rel}" or (src.include and not _match(rel, src.include)):
            continue
        if src.exclude and _match(rel, src.exclude):
            continue
        if src.archive == "queen1c":
            for name, off, size in parse_queen_archive(p):
                if not name.upper().endswith(".SB"):
                    continue
                erel = f"{rel}:{name}"
                spk, grp = _speaker_of(src, erel)
                extra = {"language": src.language, "speaker": spk, "group": f"{src.package}:{grp}"}
                jobs.append(_Job(src.package, src.kind, erel, str(p), off, size, src.min_duration_s,
                                 str(root), extra))
            continue
        if not _is_audio(p):
            continue
        extra = {}
        if src.kind == "speech":
            spk, grp = _speaker_of(src, rel)
            extra = {"language": src.language, "speaker": spk, "group": f"{src.package}:{grp}"}
        jobs.append(_Job(src.package, src.kind, rel, str(p), -1, 0, src.min_duration_s, str(root), extra))
    if not jobs and src.kind == "music" and src.include:
        # the package moved its music folder: take every audio file (the 60 s minimum drops the effects)
        return _jobs_for(Source(src.package, src.kind, min_duration_s=src.min_duration_s), tree, root)
    return jobs


# --------------------------------------------------------------------------------------------------
# the fetch driver


def _items_dir(root: Path) -> Path:
    return root / "items"


def _done_file(root: Path, key: str) -> Path:
    return _items_dir(root) / f"{key}.json"


def _copy_licence(tree: Path, pkg: str, root: Path) -> str:
    dst = root / "licences" / f"{pkg}.copyright"
    if not dst.exists():
        src = tree / "usr" / "share" / "doc" / pkg / "copyright"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copyfile(src, dst)
        else:  # some packages symlink their doc dir to a sibling package's; take any copyright file
            cands = sorted(tree.glob("usr/share/doc/*/copyright"))
            if cands and cands[0].is_file():
                shutil.copyfile(cands[0], dst)
            else:
                dst.write_text(f"No copyright file found in {pkg}; see https://packages.debian.org/{pkg}\n")
    return dst.relative_to(root).as_posix()


def _run_jobs(jobs: list[_Job], partial: Path, workers: int, log: Callable[[str], None]) -> list[dict]:
    """Convert ``jobs`` not yet recorded in ``partial`` (a JSON-lines journal), append results as they land."""
    done: dict[str, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                r = json.loads(line)
                done[r["orig_path"]] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by an interruption: redo that file
    todo = [j for j in jobs if j.rel not in done]
    if todo:
        log(f"  converting {len(todo)} files ({len(done)} already done) with {workers} worker(s)")
    t0 = time.time()
    with open(partial, "a") as jf:
        if workers <= 1:
            results: Iterable[dict] = map(_convert, todo)
            pool = None
        else:
            import multiprocessing as mp

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
            chunk = max(1, min(64, len(todo) // (workers * 8) or 1))
            results = pool.map(_convert, todo, chunksize=chunk)
        try:
            for k, r in enumerate(results, 1):
                done[r["orig_path"]] = r
                jf.write(json.dumps(r) + "\n")
                jf.flush()
                if k % 500 == 0 or (k == len(todo) and k >= 50):
                    log(f"    {k}/{len(todo)} files, {time.time() - t0:.0f} s")
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return [done[j.rel] for j in jobs if j.rel in done]


def _process_source(
    src: Source, root: Path, workers: int, keep_work: bool, log: Callable[[str], None],
    tree: Path | None = None,
) -> dict:
    key = f"{src.package}.{src.kind}"
    done = _done_file(root, key)
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.time()
    _items_dir(root).mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(parents=True, exist_ok=True)
    if tree is None:
        deb = download_deb(src.package, root / "debs", log)
        tree = root / "work" / src.package
        marker = tree / ".unpacked"
        if not marker.exists():
            log(f"  unpacking {deb.name}")
            if tree.exists():
                shutil.rmtree(tree)
            unpack_deb(deb, tree)
            marker.touch()
        licence = _copy_licence(tree, src.package, root)
        remove_tree = not keep_work
    else:
        licence = ""
        for cand in ("LICENSE", "LICENCE", "COPYING", "copyright", "LICENSE.txt", "README"):
            if (tree / cand).is_file():
                licence = str((tree / cand).resolve())
                break
        remove_tree = False
    jobs = _jobs_for(src, tree, root)
    if not jobs:
        log(f"  warning: no audio found for {src.package} ({src.kind}) with include={src.include}")
    recs = _run_jobs(jobs, _items_dir(root) / f"{key}.partial.jsonl", workers, log)
    for r in recs:
        r["licence"] = licence
        r["source_split"] = src.split
        r["train_speakers"] = list(src.train_speakers)
    kept = [r for r in recs if "drop" not in r]
    summary = {
        "package": src.package, "kind": src.kind, "local_dir": src.local_dir, "licence": licence,
        "files": len(recs), "kept": len(kept), "hours": round(sum(r["duration_s"] for r in kept) / 3600, 3),
        "items": recs,
    }
    tmp = done.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, done)
    (_items_dir(root) / f"{key}.partial.jsonl").unlink(missing_ok=True)
    if remove_tree and not any(
        (_items_dir(root) / f"{src.package}.{k}.partial.jsonl").exists() for k in ("music", "speech")
    ):
        shutil.rmtree(tree, ignore_errors=True)
    log(f"  {src.package} [{src.kind}]: kept {len(kept)}/{len(recs)} files, {summary['hours']:.2f} h, "
        f"{time.time() - t0:.0f} s")
    return summary


def disk_usage(path: Path) -> int:
    """Bytes used by the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _resolve(names: Iterable[str], table: dict[str, Source], kind: str) -> list[Source]:
    out = []
    for n in names:
        if n not in table:
            raise BgmidError(f"unknown {kind} package '{n}'. Known: {', '.join(table)}.")
        out.append(table[n])
    return out


def fetch(
    root: str | os.PathLike | None = None,
    preset: str = "full",
    music: Iterable[str] | None = None,
    speech: Iterable[str] | None = None,
    workers: int = 2,
    keep_work: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Download, unpack, convert and index the packages of ``preset`` (or the named ``music``/``speech``).

    Idempotent: finished packages are skipped; a package interrupted mid-way resumes from its journal.
    Returns the manifest (see :func:`build_manifest`). ``workers`` decoding processes run in parallel.
    """
    root = Path(root) if root else default_root()
    if preset not in PRESETS:
        raise BgmidError(f"unknown preset '{preset}'. Choose one of: {', '.join(PRESETS)}.")
    music = PRESETS[preset]["music"] if music is None else tuple(music)
    speech = PRESETS[preset]["speech"] if speech is None else tuple(speech)
    sources = _resolve(music, MUSIC_SOURCES, "music") + _resolve(speech, SPEECH_SOURCES, "speech")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pending = [s for s in sources if not _done_file(root, f"{s.package}.{s.kind}").exists()]
    if pending and any(_find_deb(root / "debs", s.package) is None for s in pending):
        _need_apt()
    log(f"bgmid data: corpus in {root} ({len(sources)} sources, {len(pending)} to do)")
    for s in sources:
        _process_source(s, root, workers, keep_work, log)
    shutil.rmtree(root / "work", ignore_errors=True) if not keep_work and not any(
        (root / "items").glob("*.partial.jsonl")) else None
    man = build_manifest(root, seed=seed)
    log(f"done in {time.time() - t0:.0f} s; disk use {disk_usage(root) / 1e9:.2f} GB "
        f"(of which .debs {disk_usage(root / 'debs') / 1e9:.2f} GB)")
    return man


def add_local(
    root: str | os.PathLike | None,
    folder: str | os.PathLike,
    kind: str,
    name: str | None = None,
    language: str = "",
    min_duration_s: float | None = None,
    workers: int = 2,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Add a user's own folder of music or speech to the corpus (same cache, manifest and splits).

    Speech speakers are taken from the parent folder name (one folder per speaker keeps splits
    speaker-disjoint). Returns the rebuilt manifest.
    """
    if kind not in ("music", "speech"):
        raise BgmidError(f"kind must be 'music' or 'speech', not '{kind}'.")
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise BgmidError(f"{folder}: not a folder. Give the folder that holds your {kind} files.")
    root = Path(root) if root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    name = name or f"local-{re.sub(r'[^A-Za-z0-9_.-]+', '_', folder.name)}"
    src = Source(
        name, kind, min_duration_s=(60.0 if kind == "music" else 0.3) if min_duration_s is None
        else min_duration_s, language=language, speaker_rule="dir" if kind == "speech" else "none",
        local_dir=str(folder),
    )
    (root / "work").mkdir(parents=True, exist_ok=True)
    _process_source(src, root, workers, True, log, tree=folder)
    return build_manifest(root, seed=seed)


# --------------------------------------------------------------------------------------------------
# manifest and splits


def _unit(seed: int, key: str) -> float:
    """A reproducible uniform number in [0, 1) from (seed, key): the split does not depend on what else
    is in the corpus, so adding packages later never moves a test track into training."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign_split(rec: dict, seed: int = 0) -> str:
    """Split of one manifest record.

    Music: by hashed track id, ``MUSIC_FRACTIONS`` into train/val/test/ooi (track-disjoint; ``ooi`` tracks
    are never indexed and serve as negatives). Speech: by hashed speaker group, ``SPEECH_FRACTIONS`` into
    train/val/test, so a voice is in one split only; a source with a fixed split (single-speaker
    sources) goes there whole, and speakers too large to hold out (FOTAQ's hero Joe, Fish Fillets' two
    fish) go to train.
    """
    if rec["kind"] == "music":
        u, fr, names = _unit(seed, rec["id"]), MUSIC_FRACTIONS, SPLITS
    else:
        if rec.get("source_split"):
            return rec["source_split"]
        grp = rec.get("group") or f"{rec['package']}:"
        if grp.split(":", 1)[1] in rec.get("train_speakers", []):
            return "train"
        u, fr, names = _unit(seed, grp), SPEECH_FRACTIONS, SPLITS[:3]
    acc = 0.0
    for name, f in zip(names, fr, strict=True):
        acc += f
        if u < acc:
            return name
    return names[-1]


MANIFEST_FIELDS = (
    "id", "kind", "split", "package", "title", "orig_path", "licence", "duration_s", "orig_sr",
    "bandwidth_hz", "bandwidth99_hz", "rms_dbfs", "language", "speaker", "group",
)


def build_manifest(root: str | os.PathLike, seed: int = 0) -> dict:
    """Merge every finished source in ``root/items`` into ``manifest.json`` and ``manifest.csv``.

    Items whose decoded audio is identical (same id) are kept once: the first by (kind, package, path);
    the others are listed under ``duplicates``. Per-source band (median of the items' 99.9 %-energy
    frequency) and hours per split are put in ``summary``.
    """
    root = Path(root)
    recs: list[dict] = []
    for p in sorted(_items_dir(root).glob("*.json")):
        recs.extend(r for r in json.loads(p.read_text())["items"] if "drop" not in r)
    recs.sort(key=lambda r: (r["kind"], r["package"], r["orig_path"]))
    seen: dict[str, dict] = {}
    dups: list[dict] = []
    for r in recs:
        if r["id"] in seen:
            dups.append({"id": r["id"], "package": r["package"], "orig_path": r["orig_path"]})
            continue
        r = dict(r)
        src = SPEECH_SOURCES.get(r["package"]) if r["kind"] == "speech" else None
        if src is not None:  # speaker rules are re-applied, so fixing a rule needs no re-decoding
            spk, grp = _speaker_of(src, r["orig_path"])
            r.update(speaker=spk, group=f"{src.package}:{grp}", source_split=src.split,
                     train_speakers=list(src.train_speakers))
        r["split"] = assign_split(r, seed)
        seen[r["id"]] = r
    items_ = [{k: r.get(k, "") for k in MANIFEST_FIELDS} for r in seen.values()]
    summary: dict = {"seed": seed, "sources": {}, "splits": {}}
    for r in items_:
        s = summary["sources"].setdefault(
            f"{r['kind']}:{r['package']}", {"kind": r["kind"], "package": r["package"], "items": 0,
                                           "hours": 0.0, "bands": []})
        s["items"] += 1
        s["hours"] += r["duration_s"] / 3600
        s["bands"].append(r["bandwidth_hz"])
        sp = summary["splits"].setdefault(f"{r['kind']}:{r['split']}", {"items": 0, "hours": 0.0})
        sp["items"] += 1
        sp["hours"] += r["duration_s"] / 3600
    for s in summary["sources"].values():
        s["band_hz"] = float(np.median(s.pop("bands")))
        s["hours"] = round(s["hours"], 3)
    for sp in summary["splits"].values():
        sp["hours"] = round(sp["hours"], 3)
    man = {"version": 1, "root": str(root), "cache_rates": list(CACHE_RATES), "summary": summary,
           "items": items_, "duplicates": dups}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=1))
    os.replace(tmp, root / "manifest.json")
    tmp = root / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(items_)
    os.replace(tmp, root / "manifest.csv")
    return man


def load_manifest(root: str | os.PathLike | None = None) -> dict:
    """Read ``ROOT/manifest.json``; a clear error says how to build it when missing."""
    root = Path(root) if root else default_root()
    p = root / "manifest.json"
    if not p.exists():
        raise BgmidError(f"{p}: no corpus here yet. Run 'bgmid data fetch --root {root}' (or --preset demo).")
    return json.loads(p.read_text())


def manifest_sha256(root: str | os.PathLike | None = None) -> str:
    """sha256 (64 hex digits) of ``ROOT/manifest.json``: names the exact corpus (items, splits) a number or a
    checkpoint came from. Callers that display it shorten it (reports show 16 digits; checkpoints record 16 in
    ``data_manifest_hash``)."""
    p = (Path(root) if root else default_root()) / "manifest.json"
    if not p.exists():
        raise BgmidError(f"{p}: no corpus here. Run 'bgmid data fetch --root {p.parent}' first.")
    return hashlib.sha256(p.read_bytes()).hexdigest()


def items(man: dict, kind: str | None = None, split: str | None = None) -> list[dict]:
    """Manifest records filtered by kind ('music'/'speech') and split."""
    return [r for r in man["items"] if (kind is None or r["kind"] == kind) and (split is None or r["split"] == split)]


def audio_path(root: str | os.PathLike, item_id: str, sr: int) -> Path:
    """Where the int16 cache of ``item_id`` at ``sr`` Hz lives (it may not exist yet: see ensure_rate)."""
    return Path(root) / "audio" / str(int(sr)) / f"{item_id}.npy"


def ensure_rate(root: str | os.PathLike, ids: Iterable[str], sr: int, log: Callable[[str], None] | None = None
                ) -> None:
    """Make sure ``audio/<sr>/<id>.npy`` exists for every id, resampling from the nearest stored rate >= sr
    (or the highest stored rate); done once, then memory-mapped like the stored rates."""
    from bgmid.audio import resample

    if sr in CACHE_RATES:
        return
    src_rate = min([r for r in CACHE_RATES if r >= sr] or [max(CACHE_RATES)])
    todo = [i for i in ids if not audio_path(root, i, sr).exists()]
    if todo and log:
        log(f"resampling {len(todo)} items to {sr} Hz (once)")
    for i in todo:
        x = np.load(audio_path(root, i, src_rate)).astype(np.float32) / 32768.0
        _atomic_save_npy(audio_path(root, i, sr), _to_int16(resample(x, src_rate, sr)))


def load_item(root: str | os.PathLike, item_id: str, sr: int = 16000, mmap: bool = True) -> np.ndarray:
    """The int16 samples of one item at ``sr`` Hz (memory-mapped by default; scale by 1/32768)."""
    p = audio_path(root, item_id, sr)
    if not p.exists():
        ensure_rate(root, [item_id], sr)
    return np.load(p, mmap_mode="r" if mmap else None)


def list_packages() -> str:
    """Human-readable list of the packages each preset uses (for ``bgmid data fetch --list``)."""
    lines = []
    for name, p in PRESETS.items():
        lines.append(f"{name}: music: {' '.join(p['music'])}")
        lines.append(f"{' ' * len(name)}  speech: {' '.join(p['speech'])}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    fetch(preset=sys.argv[1] if len(sys.argv) > 1 else "demo")
