"""One posting segment on disk: written once, checksummed, verified when read, never trusted blindly.

A segment is a directory ``segments/seg-<ns>-<rand>/`` of numpy arrays (see :mod:`bgmid.index.local` for what
they hold) plus ``manifest.json``, written last, which makes the segment self-describing:

* ``files``: each array file's size and BLAKE2b-128 digest, so any flipped, truncated or swapped file is found;
* ``tracks``: the metadata of every track whose postings the segment holds (title, exact path bytes,
  duration, content hash, tags), so the index's SQLite metadata can be rebuilt from the segments alone when
  it is lost, truncated or replaced by an old copy (``bgmid check --repair``);
* ``generation``: the metadata generation the segment was committed in (each commit increments it), which
  tells a segment left by a crash between write and commit (generation = committed + 1, harmless debris)
  from one whose metadata was lost (the metadata is stale);
* ``preset``, ``format``, ``value_bits``, ``n_postings``.

The digest of ``manifest.json`` itself is recorded in SQLite with the segment row. Opening a segment
verifies the manifest against that digest, every small array (directory, bases, track ids, stop words: read
whole anyway) against its digest, and the bit stream (the bulk of the bytes, memory-mapped) against its digest
while it is below :data:`VERIFY_WORDS_MAX` (``bgmid check`` verifies it always). So a damaged segment makes
lookups fail with a message naming the file, never return another track's postings with full scores.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.index.postings import PostingLists, encode
from bgmid.paths import shown

#: Array files of a segment; all but ``words`` are small and read whole.
ARRAYS = ("kdir", "klow", "bitpos", "width", "words", "base", "tids", "stops")
SMALL_ARRAYS = tuple(a for a in ARRAYS if a != "words")
MANIFEST = "manifest.json"

#: The one pattern of segment names the index writes; any other name in metadata is refused (never a path).
NAME_RE = re.compile(r"seg-[0-9a-f]{1,20}-[0-9a-f]{8}")

#: Bit streams up to this size are verified against their checksum whenever a segment is opened (a merged
#: segment holds at most 2**23 postings, ~20 MB, so in practice always: ~10 ms per 10 MB). Larger ones, made
#: only by a forced compaction of a huge index, are verified in full by ``bgmid check``.
VERIFY_WORDS_MAX = 64 << 20

#: Frames per block of the value -> track look-up table (256 frames of p1 = 6 s; more in huge segments).
_LUT_SHIFT = 8


class IndexDamaged(BgmidError):
    """A file of the index is damaged or inconsistent. Names the file and says to run ``bgmid check``."""

    def __init__(self, index: Path, file: Path | str, reason: str, tracks: list[int] | None = None):
        self.index, self.file, self.reason, self.tracks = Path(index), str(file), reason, list(tracks or [])
        held = f" It holds tracks {_id_list(self.tracks)}." if self.tracks else ""
        super().__init__(
            f"{shown(file)}: damaged index file ({reason}).{held} Run 'bgmid check --db {shown(index)} --repair': "
            "it keeps every healthy track, quarantines the damaged file and re-indexes what it held."
        )


def _id_list(ids: list[int], limit: int = 12) -> str:
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def digest_bytes(data: bytes) -> str:
    """BLAKE2b-128 hex digest (fast, and collision-safe far beyond what bit rot can produce)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def digest_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def valid_name(name: str) -> bool:
    """Whether ``name`` is a segment name this index writes (so it can be joined to the folder safely)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def segment_dir(index: Path, root: Path, name: str) -> Path:
    """The folder of segment ``name``; a name that is not one the index writes is damage, not a path."""
    if not valid_name(name):
        raise IndexDamaged(index, index / "meta.sqlite", f"segment name {name!r} is not one bgmid writes")
    return root / name


def track_record(meta) -> dict:
    """A track's metadata as stored in a manifest (the path as its exact bytes, hex)."""
    from bgmid.paths import to_stored

    return {"id": int(meta.track_id), "title": meta.title, "path_hex": to_stored(meta.path).hex(),
            "duration_s": float(meta.duration_s), "content_hash": meta.content_hash,
            "n_hashes": int(meta.n_hashes), "extra": meta.extra}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles (Windows): the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (callers rename it into place)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@dataclass
class Written:
    """What :func:`write_segment` wrote: what the metadata row needs."""

    name: str
    value_bits: int
    n_postings: int
    checksum: str  #: digest of manifest.json


def _track_slots(track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(track_ids, return_inverse=True)`` without sorting every posting when the ids span a modest
    range (they do: ids are a catalogue's sequence), by counting instead (bulk imports of millions of postings)."""
    if track_ids.size == 0:
        return np.unique(track_ids, return_inverse=True)
    lo = int(track_ids.min())
    span = int(track_ids.max()) - lo + 1
    if span > max(1 << 22, track_ids.size):
        return np.unique(track_ids, return_inverse=True)
    present = np.bincount(track_ids - lo, minlength=span) > 0
    slot = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(np.int64) + lo, slot[track_ids - lo]


def write_segment(
    root: Path, hashes: np.ndarray, track_ids: np.ndarray, times: np.ndarray, *, tracks: list[dict],
    generation: int, preset: dict, drop: np.ndarray | None = None, stops: np.ndarray | None = None,
) -> Written:
    """Write postings as a new segment directory atomically (temporary name, fsync, rename, fsync folder).

    Postings whose hash is in ``drop`` (the index's stop words) are not stored; ``stops`` (the stop words
    this segment introduces or inherits) is recorded with it. ``tracks`` are the manifest records
    (:func:`track_record`) of the tracks in ``track_ids``.
    """
    hashes = np.asarray(hashes, dtype=np.uint32)
    times = np.asarray(times, dtype=np.int64)
    track_ids = np.asarray(track_ids, dtype=np.int64)
    stops = np.unique(np.asarray([] if stops is None else stops, dtype=np.uint32))
    drop = np.asarray([] if drop is None else drop, dtype=np.uint32)
    if times.size and times.min() < 0:
        raise ValueError("posting times must be >= 0 frames")
    if drop.size:
        keep = ~np.isin(hashes, drop)
        hashes, times, track_ids = hashes[keep], times[keep], track_ids[keep]
    tids, local = _track_slots(track_ids)
    length = np.zeros(tids.size, np.int64)
    np.maximum.at(length, local, times + 1)
    base = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    lists = encode(hashes, base[local] + times)
    n_postings = int(lists.counts(np.arange(lists.n_keys)).sum())
    name = f"seg-{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"tmp-{name}"
    tmp.mkdir(parents=True)
    arrays = {"kdir": lists.kdir, "klow": lists.klow, "bitpos": lists.bitpos, "width": lists.width,
              "words": lists.words, "base": base, "tids": tids, "stops": stops}
    files = {}
    for fname in ARRAYS:
        data = _npy_bytes(arrays[fname])
        write_durably(tmp / f"{fname}.npy", data)
        files[fname] = {"size": len(data), "blake2b": digest_bytes(data)}
    known = {t["id"] for t in tracks}
    missing = set(tids.tolist()) - known
    if missing:
        raise ValueError(f"manifest lacks the records of tracks {sorted(missing)}")
    held = set(tids.tolist())
    data = manifest_bytes(name, generation, preset, lists.value_bits, n_postings, files,
                          [t for t in tracks if t["id"] in held])
    write_durably(tmp / MANIFEST, data)
    os.replace(tmp, root / name)
    _fsync_dir(root)  # the rename itself must survive a power cut before the row that names it is committed
    return Written(name, int(lists.value_bits), n_postings, digest_bytes(data))


def manifest_bytes(name: str, generation: int, preset: dict, value_bits: int, n_postings: int, files: dict,
                   tracks: list[dict]) -> bytes:
    """The ``manifest.json`` of a segment (see the module docstring), as written."""
    manifest = {"format": 3, "name": name, "generation": int(generation), "preset": preset,
                "value_bits": int(value_bits), "n_postings": int(n_postings), "files": files, "tracks": tracks,
                "written_at": time.time()}
    return json.dumps(manifest, sort_keys=True).encode()


def read_manifest(index: Path, path: Path, checksum: str | None = None) -> dict:
    """Parse a segment's manifest, checking it against ``checksum`` (from SQLite) when given."""
    f = path / MANIFEST
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise IndexDamaged(index, f, "missing") from None
    except OSError as exc:
        raise IndexDamaged(index, f, f"unreadable: {exc.strerror}") from None
    if checksum is not None and digest_bytes(data) != checksum:
        raise IndexDamaged(index, f, "checksum differs from the one recorded in meta.sqlite")
    try:
        m = json.loads(data)
        if not isinstance(m, dict) or not isinstance(m.get("files"), dict) or not isinstance(m.get("tracks"), list):
            raise ValueError("not a manifest")
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexDamaged(index, f, f"not a valid manifest: {exc}") from None
    return m


def _load_array(index: Path, f: Path, expect: dict | None, tracks: list[int]) -> np.ndarray:
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise IndexDamaged(index, f, "missing", tracks) from None
    except OSError as exc:
        raise IndexDamaged(index, f, f"unreadable: {exc.strerror}", tracks) from None
    if expect is not None:
        if len(data) != expect.get("size"):
            raise IndexDamaged(index, f, f"{len(data)} bytes, {expect.get('size')} written", tracks)
        if digest_bytes(data) != expect.get("blake2b"):
            raise IndexDamaged(index, f, "checksum mismatch (flipped or replaced bytes)", tracks)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/... on a damaged header
        raise IndexDamaged(index, f, f"not a readable array: {exc}", tracks) from None


class Segment:
    """One immutable, memory-mapped posting segment, verified as it is opened (see module docstring)."""

    def __init__(self, index: Path, path: Path, value_bits: int, n_postings: int, checksum: str | None = None):
        self.path = path
        self.name = path.name
        manifest = read_manifest(index, path, checksum) if checksum is not None else None
        files = manifest["files"] if manifest else {}
        held = [int(t["id"]) for t in manifest["tracks"]] if manifest else []
        a = {n: _load_array(index, path / f"{n}.npy", files.get(n) if manifest else None, held)
             for n in SMALL_ARRAYS}
        words = path / "words.npy"
        try:
            size = words.stat().st_size
            if manifest and size != files.get("words", {}).get("size"):
                raise IndexDamaged(index, words, f"{size} bytes, {files['words'].get('size')} written", held)
            if manifest and size <= VERIFY_WORDS_MAX and digest_file(words) != files["words"].get("blake2b"):
                raise IndexDamaged(index, words, "checksum mismatch (flipped or replaced bytes)", held)
            # Only the bit stream is memory-mapped (one open file per segment: an unmerged index of thousands
            # of tracks must not run out of file descriptors). A plain ndarray view of the map: indexing a
            # np.memmap subclass costs more than the lookup itself.
            w = np.asarray(np.load(words, mmap_mode="r"))
        except FileNotFoundError:
            raise IndexDamaged(index, words, "missing", held) from None
        except IndexDamaged:
            raise
        except Exception as exc:
            raise IndexDamaged(index, words, f"not a readable array: {exc}", held) from None
        self.manifest = manifest
        self.lists = PostingLists(a["kdir"], a["klow"], a["bitpos"], a["width"], w, value_bits)
        self.base = np.array(a["base"], dtype=np.int64)
        self.tids = np.array(a["tids"], dtype=np.int64)
        self.stops = np.array(a["stops"], dtype=np.uint32)
        self.n_postings = n_postings  #: stored postings, as recorded in SQLite when the segment was written
        self._check_structure(index, held, manifest)
        # value >> _LUT_SHIFT -> the track holding the start of that block of frames (a first guess that
        # split() corrects by stepping over the few track starts inside the block)
        end = int(self.base[-1])
        self._shift = max(_LUT_SHIFT, int(end).bit_length() - 20)  # at most ~2^20 entries, whatever the size
        blocks = np.arange(0, end + 1, 1 << self._shift)
        self._lut = (np.searchsorted(self.base, blocks, side="right") - 1).astype(np.int32)

    def _check_structure(self, index: Path, held: list[int], manifest: dict | None) -> None:
        """Cheap consistency of the arrays with each other and with the metadata (no bulk reads)."""
        L, k = self.lists, self.lists.n_keys
        problems = []
        if L.kdir.ndim != 1 or (k and (int(L.kdir[-1]) != k or np.any(np.diff(L.kdir.astype(np.int64)) < 0))):
            problems.append("the hash directory is inconsistent")
        if k and int(L.width.max()) > 64:
            problems.append("posting widths above 64 bits")
        if L.klow.size != k or L.width.size != k or L.bitpos.size != k + 1:
            problems.append(f"directory sizes disagree ({L.klow.size}, {L.width.size}, {L.bitpos.size}, {k})")
        elif k and (int(L.bitpos[-1]) > 64 * (L.words.size - 1) or np.any(np.diff(L.bitpos.astype(np.int64)) < 0)):
            problems.append("posting-list offsets run past the bit stream")
        if self.base.size != self.tids.size + 1 or self.base.size < 1 or np.any(np.diff(self.base) < 0):
            problems.append("track bases are inconsistent")
        if manifest is not None:
            if sorted(self.tids.tolist()) != sorted(held):
                problems.append("track ids differ from the manifest's")
            if int(manifest.get("n_postings", -1)) != self.n_postings:
                problems.append("posting count differs from the manifest's")
        if problems:
            raise IndexDamaged(index, self.path, "; ".join(problems), held or self.tids.tolist())

    def split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posting values -> (global track id, frame)."""
        local = self._lut[values >> self._shift].astype(np.int64)
        while True:  # tracks shorter than a block are rare: one or two passes (values < base[-1], always)
            step = values >= self.base[local + 1]
            if not step.any():
                break
            local += step
        return self.tids[local], values - self.base[local]

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored postings as (hash, track_id, time); used when merging segments."""
        k = np.arange(self.lists.n_keys, dtype=np.int64)
        counts = self.lists.counts(k)
        h = np.repeat(self.lists.keys, counts)
        tid, t = self.split(self.lists.decode(k, counts))
        return h, tid, t


def verify_segment(index: Path, path: Path, checksum: str | None = None) -> dict:
    """Full verification of one segment (every byte, the bit stream included); returns its manifest.

    Raises :class:`IndexDamaged` naming the first damaged file.
    """
    m = read_manifest(index, path, checksum)
    held = [int(t["id"]) for t in m["tracks"]]
    for fname in ARRAYS:
        f = path / f"{fname}.npy"
        expect = m["files"].get(fname)
        if expect is None:
            raise IndexDamaged(index, path / MANIFEST, f"lists no checksum for {fname}.npy", held)
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            raise IndexDamaged(index, f, "missing", held) from None
        if size != expect.get("size"):
            raise IndexDamaged(index, f, f"{size} bytes, {expect.get('size')} written", held)
        if digest_file(f) != expect.get("blake2b"):
            raise IndexDamaged(index, f, "checksum mismatch (flipped or replaced bytes)", held)
    seg = Segment(index, path, int(m.get("value_bits", 0)), int(m.get("n_postings", 0)), checksum)
    # the bit stream decodes to values inside the segment's time line
    if seg.lists.n_keys:
        k = np.arange(seg.lists.n_keys, dtype=np.int64)
        values = seg.lists.decode(k, seg.lists.counts(k))
        if values.size and (values.min() < 0 or values.max() >= seg.base[-1]):
            raise IndexDamaged(index, path / "words.npy", "postings outside the segment's time line", held)
    return m
