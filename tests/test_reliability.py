"""Fault injection on the index: concurrent writers, kills, damaged or replaced files, odd names, traversal.

Every case asserts the three promises of docs/reliability.md: nothing lost (every healthy track still found,
damaged ones re-indexed from their audio), nothing invented (no duplicate, no wrong answer, exit status says
so), and a clear message (names the file, says what to do; never a traceback).
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import N_TRACKS

from bgmid.cli import main as cli_main
from bgmid.index import open_index
from bgmid.index.check import check_index

CLI = [sys.executable, "-m", "bgmid.cli"]
SEGMENT_FILES = ["kdir.npy", "klow.npy", "bitpos.npy", "width.npy", "words.npy", "base.npy", "tids.npy",
                 "stops.npy", "manifest.json"]


def _run(*args, timeout=120):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def db(built_index, tmp_path) -> Path:
    """A private copy of the session's 8-track index (tests damage it)."""
    d = tmp_path / "db"
    shutil.copytree(built_index, d)
    return d


@pytest.fixture(scope="module")
def queries(music_dir, tmp_path_factory) -> dict[str, Path]:
    """A 12 s excerpt of every library track, by title."""
    out = tmp_path_factory.mktemp("q")
    qs = {}
    for f in sorted(music_dir.iterdir()):
        x, sr = sf.read(f, dtype="float32")
        q = out / f"{f.stem}.wav"
        sf.write(q, x[int(10.3 * sr): int(22.3 * sr)], sr)
        qs[f.stem] = q
    return qs


def _identify(db: Path, q: Path) -> tuple[int, list[dict], str]:
    r = _run("identify", "--db", db, "--json", "--separator", "none", q)
    lines = [json.loads(s) for s in r.stdout.splitlines() if s.strip()]
    return r.returncode, (lines[0]["matches"] if lines else []), r.stderr


def _titles(db: Path) -> list[str]:
    with open_index(db) as store:
        return sorted(t.title for t in store.tracks())


def _all_found(db: Path, queries: dict[str, Path]) -> bool:
    with open_index(db) as store:
        from bgmid.audio import load
        from bgmid.match import Matcher

        m = Matcher(store)
        for title, q in queries.items():
            x, sr = load(q)
            hits = m.identify(x, sr)
            if not hits or hits[0].title != title or abs(hits[0].track_offset_s - 10.3) > 0.1:
                return False
    return True


def _segments(db: Path) -> list[Path]:
    return sorted(p for p in (db / "segments").iterdir() if p.name.startswith("seg-"))


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# -- concurrent writers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("split", [False, True], ids=["same-folder", "split-folders"])
def test_two_writers_never_index_a_file_twice(music_dir, tmp_path, split, queries):
    files = sorted(music_dir.iterdir())
    if split:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir(), b.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, (a if i % 2 else b) / f.name)
        (a / "dup").mkdir()
        shutil.copy(files[0], a / "dup" / files[0].name)  # the same bytes (and title) in both halves
        inputs = [[a], [b, files[0]]]
    else:
        inputs = [[music_dir], [music_dir]]
    db = tmp_path / "db"
    procs = [subprocess.Popen([*CLI, "index", "--db", str(db), "--json", *map(str, ins)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ins in inputs]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        _no_traceback(err)
    waited = [err for _, err in outs if "is writing" in err]
    assert all("waiting..." in w and "pid" in w for w in waited)
    with open_index(db) as store:
        hashes = [t.content_hash for t in store.tracks()]
    assert len(hashes) == N_TRACKS == len(set(hashes))
    assert check_index(db).healthy
    assert _all_found(db, queries)


def test_no_wait_fails_at_once_while_another_writer_writes(db):
    holder = open_index(db, write=True)
    try:
        t0 = time.time()
        r = _run("remove", "--db", db, "--no-wait", "1")
        assert r.returncode == 2 and time.time() - t0 < 30
        assert "is writing" in r.stderr and str(db) in r.stderr
        _no_traceback(r.stderr)
        assert len(_titles(db)) == N_TRACKS  # readers are not blocked by the writer
    finally:
        holder.close()


# -- kills ------------------------------------------------------------------------------------------------
_COMPACT_CHILD = """
import sys, numpy as np
from bgmid.index import open_index, TrackMeta
rng = np.random.default_rng(int(sys.argv[2]))
with open_index(sys.argv[1], create=True) as s:
    for i in range(12):
        h = rng.choice(2**22, 20000, replace=False).astype(np.uint32)
        s.add_track(TrackMeta(f"t{i}", f"/x/{i}", 10.0, f"h{i}"), h, np.sort(rng.integers(0, 9000, h.size)))
    print("added", flush=True)
    while True:
        s.compact(force=True)
        s.add_track(TrackMeta("extra", "/x/e", 1.0, f"e{rng.integers(1 << 60)}"), h[:100], np.arange(100))
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.31, 0.6])
def test_kill_during_compaction_leaves_a_consistent_index(tmp_path, delay):
    db = tmp_path / "db"
    p = subprocess.Popen([sys.executable, "-c", _COMPACT_CHILD, str(db), "1"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "added"
    time.sleep(delay)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with open_index(db) as store:  # a reader: consistent, deletes nothing
        titles = [t.title for t in store.tracks()]
        assert sorted(titles[:12]) == sorted(f"t{i}" for i in range(12))
    with open_index(db, write=True) as store:  # a writer removes the kill's debris
        rng = np.random.default_rng(1)
        first = rng.choice(2**22, 20000, replace=False).astype(np.uint32)
        rows, tids, _ = store.lookup(first[:500])
        assert (tids == store.tracks()[0].track_id).sum() >= 490  # the first track's postings are all there
    assert check_index(db).healthy


# -- metadata lost, emptied or replaced ---------------------------------------------------------------------
def test_truncated_metadata_is_reported_never_deleted_and_repaired(db, queries):
    segs = _segments(db)
    (db / "meta.sqlite").write_bytes(b"")
    for name in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (db / name).unlink(missing_ok=True)
    for cmd in (["stats", "--db", db], ["identify", "--db", db, "--separator", "none", queries["track01"]]):
        r = _run(*cmd)
        assert r.returncode == 2 and "meta.sqlite" in r.stderr and "check --db" in r.stderr and "--repair" in r.stderr
        _no_traceback(r.stderr)
    assert _segments(db) == segs  # a read command deleted nothing
    assert (db / "meta.sqlite").stat().st_size == 0
    r = _run("index", "--db", db, queries["track01"])  # a writer refuses too rather than start afresh
    assert r.returncode == 2 and "--repair" in r.stderr
    assert _run("check", "--db", db).returncode == 1
    r = _run("check", "--db", db, "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(_titles(db)) == N_TRACKS and _all_found(db, queries)
    assert any((db / "quarantine").rglob("meta.sqlite"))  # the old metadata is kept, not deleted


def test_metadata_replaced_by_an_older_copy(music_dir, tmp_path, queries):
    db = tmp_path / "db"
    files = sorted(music_dir.iterdir())
    assert cli_main(["index", "--db", str(db), *map(str, files[:4])]) == 0
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(db / "meta.sqlite", old / "meta.sqlite")
    assert cli_main(["index", "--db", str(db), *map(str, files[4:])]) == 0
    for name in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (db / name).unlink(missing_ok=True)
    shutil.copy(old / "meta.sqlite", db / "meta.sqlite")
    segs = _segments(db)
    r = _run("stats", "--db", db)
    assert r.returncode == 2 and "older than the segments" in r.stderr and "--repair" in r.stderr
    assert _segments(db) == segs
    r = _run("check", "--db", db, "--repair", "--json")
    assert r.returncode == 0, r.stderr
    assert len(_titles(db)) == N_TRACKS and _all_found(db, queries)


# -- damaged segment files ----------------------------------------------------------------------------------
def _damage(f: Path, how: str) -> None:
    data = bytearray(f.read_bytes())
    if how == "flip":
        at = len(data) // 2 if f.suffix == ".json" else max(128, len(data) - 16)  # past the .npy header
        at = min(at, len(data) - 8)
        data[at: at + 8] = bytes(b ^ 0xFF for b in data[at: at + 8])
        f.write_bytes(bytes(data))
    elif how == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    else:
        f.unlink()


@pytest.mark.parametrize("how", ["flip", "truncate", "remove"])
@pytest.mark.parametrize("fname", SEGMENT_FILES)
def test_damaged_segment_file_is_named_then_repaired(db, queries, fname, how):
    seg = _segments(db)[0]
    if fname == "tids.npy" and how == "flip":  # a permutation: same bytes, other order
        tids = np.load(seg / fname)
        if tids.size < 2:
            pytest.skip("single-track segment")
        np.save(seg / fname, tids[::-1].copy())
    else:
        _damage(seg / fname, how)
    code, matches, err = _identify(db, queries["track03"])
    assert code == 2 and matches == [], err
    assert seg.name in err and "--repair" in err
    _no_traceback(err)
    report = check_index(db)
    assert not report.healthy and any(seg.name in f.file for f in report.findings)
    r = _run("check", "--db", db, "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert check_index(db).healthy
    assert len(_titles(db)) == N_TRACKS and _all_found(db, queries)
    assert (db / "quarantine").exists() and any(p.name == seg.name for p in (db / "quarantine").rglob("seg-*"))


def test_unrecoverable_tracks_are_listed(db, music_dir, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(music_dir, lib)
    db2 = tmp_path / "db2"
    assert cli_main(["index", "--db", str(db2), str(lib)]) == 0
    seg = _segments(db2)[0]
    held = np.load(seg / "tids.npy").tolist()
    _damage(seg / "words.npy", "truncate")
    for f in lib.iterdir():
        f.unlink()  # the audio is gone too
    r = _run("check", "--db", db2, "--repair", "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 1
    assert sorted(u["track_id"] for u in rep["unrecoverable"]) == sorted(held)
    assert all("no longer exists" in u["why"] for u in rep["unrecoverable"])
    assert len(_titles(db2)) == N_TRACKS - len(held) and check_index(db2).healthy


# -- names that are not paths, names that are not UTF-8 -------------------------------------------------------
def test_segment_name_in_metadata_is_never_used_as_a_path(db, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    c = sqlite3.connect(db / "meta.sqlite")
    name = c.execute("SELECT name FROM segments LIMIT 1").fetchone()[0]
    c.execute("UPDATE segments SET name = ? WHERE name = ?", ("../../victim", name))
    c.commit()
    c.close()
    for cmd in (["remove", "--db", db, "1"], ["stats", "--db", db], ["check", "--db", db, "--repair"]):
        r = _run(*cmd)
        _no_traceback(r.stderr)
        assert (victim / "precious").read_text() == "keep me"
    assert _run("stats", "--db", db).returncode == 0  # repaired from the segments themselves


def test_non_utf8_file_names_are_indexed_and_kept_exactly(music_dir, tmp_path, queries):
    src = tmp_path / "in"
    src.mkdir()
    raw = os.fsencode(src) + b"/caf\xe9 \xff.flac"
    shutil.copy(music_dir / "track01.flac", raw)
    db = tmp_path / "db"
    r = _run("index", "--db", db, "--json", src)
    assert r.returncode == 0, r.stderr
    with open_index(db) as store:
        (t,) = store.tracks()
    assert os.fsencode(t.path) == raw  # lossless: the file can be opened again from the index
    code, matches, err = _identify(db, queries["track01"])
    assert code == 0 and matches[0]["path"].endswith("caf\ufffd \ufffd.flac")
    _damage(_segments(db)[0] / "words.npy", "truncate")
    assert _run("check", "--db", db, "--repair").returncode == 0  # re-indexed from the odd name
    assert _identify(db, queries["track01"])[1][0]["title"] == "caf\ufffd \ufffd"  # the file stem, shown


# -- smaller ones ---------------------------------------------------------------------------------------------
def test_a_byte_identical_copy_of_a_broken_file_fails_too(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    junk = b"ID3" + bytes(range(256)) * 20
    (src / "a.mp3").write_bytes(junk)
    (src / "b.mp3").write_bytes(junk)
    r = _run("index", "--db", tmp_path / "db", "--json", src)
    summary = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 1 and summary["skipped_already_indexed"] == 0
    assert sorted(Path(p).name for p in summary["failed"]) == ["a.mp3", "b.mp3"]
    assert "same bytes as" in r.stderr


def test_a_folder_without_audio_creates_no_index(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no audio here")
    r = _run("index", "--db", tmp_path / "db", tmp_path / "docs")
    assert r.returncode == 2 and "no audio files" in r.stderr
    assert not (tmp_path / "db").exists()


def test_a_fifo_is_refused_at_once_by_index(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    r = _run("index", "--db", tmp_path / "db", fifo, timeout=60)
    assert r.returncode == 1 and "FIFO" in r.stderr and "pipe.wav" in r.stderr


def test_stats_says_its_units(db):
    r = _run("stats", "--db", db)
    assert r.returncode == 0 and (" kB" in r.stdout or " MB" in r.stdout)
    assert "bytes)" in r.stdout and " h\n" in r.stdout


def test_format2_index_is_upgraded_in_place(tmp_path, queries, music_dir):
    """An index written before checksums: readers say how to upgrade; --repair upgrades without re-indexing."""
    db = tmp_path / "db"
    assert cli_main(["index", "--db", str(db), str(music_dir)]) == 0
    c = sqlite3.connect(db / "meta.sqlite")
    c.execute("UPDATE info SET value = '2' WHERE key = 'format_version'")
    c.execute("UPDATE segments SET checksum = NULL")
    c.commit()
    c.close()
    for seg in _segments(db):
        (seg / "manifest.json").unlink()
    r = _run("stats", "--db", db)
    assert r.returncode == 2 and "format 2" in r.stderr and "--repair" in r.stderr
    r = _run("check", "--db", db, "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert check_index(db).healthy and _all_found(db, queries)


def test_readers_keep_working_while_a_writer_merges(tmp_path):
    """Readers open and look up while a writer adds and merges segments (WAL snapshot, immutable segments,
    a re-read when a merge deletes a segment of the reader's snapshot)."""
    db = tmp_path / "db"
    child = subprocess.Popen([sys.executable, "-c", _COMPACT_CHILD, str(db), "3"], stdout=subprocess.PIPE, text=True)
    rng = np.random.default_rng(3)
    first = rng.choice(2**22, 20000, replace=False).astype(np.uint32)
    try:
        assert child.stdout.readline().strip() == "added"
        for _ in range(20):
            with open_index(db) as store:
                assert len(store.tracks()) >= 12
                tids = store.lookup(first[:200])[1]
                assert (tids == store.tracks()[0].track_id).sum() >= 190
    finally:
        child.kill()
        child.wait()
