"""The embedded index: round trips, removal, compaction, crash safety, resume, corrupt input."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import N_TRACKS

from bgmid.cli import main as cli_main
from bgmid.index import TrackMeta, open_index
from bgmid.index.build import index_paths


def _meta(i: int) -> TrackMeta:
    return TrackMeta(f"t{i}", f"/x/t{i}.wav", 10.0, f"hash{i}")


def _random_track(rng, n=5000, frames=4000):
    return rng.choice(2**23, n, replace=False).astype(np.uint32), np.sort(rng.integers(0, frames, n))


def test_lookup_roundtrip_and_compaction(tmp_path):
    rng = np.random.default_rng(1)
    tracks = [_random_track(rng) for _ in range(10)]
    with open_index(tmp_path / "db", create=True) as store:
        ids = [store.add_track(_meta(i), h, t) for i, (h, t) in enumerate(tracks)]
        h, t = tracks[3]
        q = h[100:200]
        rows, tids, times = store.lookup(q)
        # every query hash finds its own posting (plus rare collisions with other tracks)
        own = tids == ids[3]
        assert np.array_equal(np.sort(rows[own]), np.arange(100))
        assert np.array_equal(times[own][np.argsort(rows[own])], t[100:200])
        before = sorted(zip(rows.tolist(), tids.tolist(), times.tolist()))
        assert store.compact() > 0  # tiers of 4 merge
        assert store.stats()["segments"] < 10
        after = sorted(zip(*(a.tolist() for a in store.lookup(q))))
        assert before == after
        assert store.has_content("hash3") and not store.has_content("nope")


def test_large_track_ids_and_times_are_not_capped(tmp_path):
    """No fixed limit on track count or length: times beyond 2^20 frames (audfprint's cap ~ 6.8 h) survive."""
    with open_index(tmp_path / "db", create=True) as store:
        h = np.arange(100, dtype=np.uint32)
        t = np.arange(100, dtype=np.int64) * 100_000 + 2**31  # far beyond 32-bit packing with the track id
        tid = store.add_track(_meta(0), h, t)
        rows, tids, times = store.lookup(h)
        assert np.array_equal(times[np.argsort(rows)], t) and set(tids.tolist()) == {tid}


def test_remove_hides_postings_and_compaction_drops_them(tmp_path):
    rng = np.random.default_rng(2)
    with open_index(tmp_path / "db", create=True) as store:
        a = store.add_track(_meta(0), *_random_track(rng))
        h, t = _random_track(rng)
        b = store.add_track(_meta(1), h, t)
        assert store.remove([b]) == 1
        assert b not in store.lookup(h)[1]
        assert [m.track_id for m in store.tracks()] == [a]
        store.compact(force=True)
        assert store.stats()["postings"] == 5000 and store.stats()["segments"] == 1
        assert not store.has_content("hash1")  # a removed file can be indexed again


def test_crash_between_segment_write_and_commit_leaves_consistent_index(tmp_path, monkeypatch):
    import bgmid.index.local as local

    rng = np.random.default_rng(3)
    real = local.write_segment
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)  # the segment directory is complete on disk ...
        if calls["n"] == 3:
            raise KeyboardInterrupt  # ... and the process dies before the commit
        return out

    monkeypatch.setattr(local, "write_segment", dying)
    store = open_index(tmp_path / "db", create=True)
    store.add_track(_meta(0), *_random_track(rng))
    store.add_track(_meta(1), *_random_track(rng))
    with pytest.raises(KeyboardInterrupt):
        store.add_track(_meta(2), *_random_track(rng))
    store.close()
    monkeypatch.setattr(local, "write_segment", real)
    with open_index(tmp_path / "db") as store:  # a reader answers from the committed state, deleting nothing
        assert [m.title for m in store.tracks()] == ["t0", "t1"]
        assert len(list((tmp_path / "db" / "segments").iterdir())) == 3
    with open_index(tmp_path / "db", write=True) as store:  # a writer removes the debris
        assert len(list((tmp_path / "db" / "segments").iterdir())) == 2
        store.add_track(_meta(2), *_random_track(rng))
        assert store.stats()["tracks"] == 3


def test_killed_index_run_opens_and_resumes(music_dir, tmp_path):
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "bgmid.cli", "index", "--db", str(db), str(music_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    n = 0
    while time.time() < deadline and proc.poll() is None:
        if (db / "meta.sqlite").exists():
            try:
                with sqlite3.connect(db / "meta.sqlite") as c:
                    n = c.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 2:
                break
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_index(db) as store:  # opens: no corruption
        partial = store.stats()["tracks"]
        assert 2 <= partial <= N_TRACKS
    assert cli_main(["index", "--db", str(db), "--json", str(music_dir)]) == 0
    with open_index(db) as store:
        titles = [m.title for m in store.tracks()]
    assert sorted(titles) == sorted(set(titles)) and len(titles) == N_TRACKS


def test_corrupt_files_reported_and_skipped(music_dir, tmp_path, capsys):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.mp3").write_bytes(b"ID3" + os.urandom(5000))
    (bad / "empty.wav").write_bytes(b"")
    (bad / "good.flac").write_bytes((music_dir / "track01.flac").read_bytes())
    rc = cli_main(["index", "--db", str(tmp_path / "db"), "--json", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 1
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["added"] == 1
    assert sorted(os.path.basename(p) for p in summary["failed"]) == ["broken.mp3", "empty.wav"]
    assert "broken.mp3" in err and "empty.wav" in err


def test_index_with_jobs_and_memory_flat_duplicate_skip(music_dir, tmp_path):
    with open_index(tmp_path / "db", create=True) as store:
        rep = index_paths(store, [music_dir, music_dir / "track01.flac"], jobs=2)
        assert len(rep.added) == N_TRACKS and len(rep.skipped) == 1
        rep2 = index_paths(store, [music_dir])
        assert not rep2.added and len(rep2.skipped) == N_TRACKS


def test_preset_mismatch_is_a_clear_error(tmp_path):
    from bgmid.errors import BgmidError

    open_index(tmp_path / "db", preset="p1", create=True).close()
    with pytest.raises(BgmidError, match="preset 'p1'"):
        open_index(tmp_path / "db", preset="p2")
    with pytest.raises(BgmidError, match="no bgmid index"):
        open_index(tmp_path / "nothing")


def test_stop_words_are_not_stored_and_lookups_do_not_depend_on_segmentation(tmp_path):
    """A hash far above the stop-word limit loses its postings when segments merge, is listed, is skipped by
    lookups before and after, and the answer is the same before and after compaction."""
    from bgmid.match import stop_word_limit

    rng = np.random.default_rng(5)
    common = np.uint32(12345)
    with open_index(tmp_path / "db", create=True) as store:
        tracks = []
        for i in range(6):  # 1.5 M hashes: enough for the relative rule (not its floor) to decide
            h, t = _random_track(rng, n=250_000, frames=400_000)
            h[::125] = common  # 2,000 postings of one hash per track
            tracks.append((h, t))
            store.add_track(_meta(i), h, t)
        limit = stop_word_limit(store)
        assert 50 < limit < 2_000
        assert store.stats()["stored_postings"] == 6 * 250_000  # nothing dropped while writing tracks
        q = np.concatenate([tracks[2][0][:50], [common]])
        before = sorted(zip(*(a.tolist() for a in store.lookup(q, max_postings=limit))))
        assert before and all(r != 50 for r, _, _ in before)  # the common hash is skipped: 12,000 > limit
        store.compact(force=True)
        st = store.stats()
        assert st["segments"] == 1 and common in store.stop_words
        assert st["postings"] == 6 * 250_000 and st["stored_postings"] == 6 * 248_000
        assert sorted(zip(*(a.tolist() for a in store.lookup(q, max_postings=limit)))) == before
        assert store.lookup(q)[0].size == len(before)  # a stop word is skipped whatever max_postings says
    with open_index(tmp_path / "db") as store:  # persisted with the segment
        assert common in store.stop_words


def test_max_postings_counts_over_all_segments(tmp_path):
    """max_postings compares a hash's postings summed over every segment, not per segment."""
    rng = np.random.default_rng(6)
    shared = np.arange(20, dtype=np.uint32) + 7_000_000
    with open_index(tmp_path / "db", create=True) as store:
        for i in range(4):
            h, t = _random_track(rng, n=500)
            h[:20] = shared  # each shared hash: one posting in each of 4 segments
            store.add_track(_meta(i), h, t)
        assert store.stats()["segments"] == 4
        assert store.lookup(shared, max_postings=4)[0].size == 80
        assert store.lookup(shared, max_postings=3)[0].size == 0


def test_old_index_format_is_a_clear_error(tmp_path):
    with open_index(tmp_path / "db", create=True) as store:
        store.add_track(_meta(0), *_random_track(np.random.default_rng(7)))
    db = sqlite3.connect(tmp_path / "db" / "meta.sqlite")
    db.execute("UPDATE info SET value = '1' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="format 1.*Rebuild"):
        open_index(tmp_path / "db")


def test_tiered_compaction_respects_the_merge_size_cap(tmp_path):
    """Tiers stop at max_postings (bounded merge memory); force still merges everything."""
    rng = np.random.default_rng(8)
    with open_index(tmp_path / "db", create=True) as store:
        for i in range(8):
            store.add_track(_meta(i), *_random_track(rng, n=5000))
        assert store.compact(max_postings=15_000) == 0  # 4 x 5,000 would exceed the cap
        assert store.stats()["segments"] == 8
        assert store.compact(max_postings=20_000) == 8  # two merges of 4
        sizes = [seg.n_postings for seg in store._segments]
        assert sorted(sizes) == [20_000, 20_000]
        store.compact(force=True)
        assert store.stats()["segments"] == 1 and store.n_postings == 40_000


def test_opening_an_index_never_deletes_a_segment_another_process_is_writing(tmp_path):
    """Readers never delete; a second writer waits for the first (the lock), so nobody removes a folder
    another process is writing; once the writer is gone, the next writer removes its leftover."""
    from bgmid.errors import BgmidError

    rng = np.random.default_rng(9)
    writer = open_index(tmp_path / "db", create=True)
    writer.add_track(_meta(0), *_random_track(rng))
    in_flight = tmp_path / "db" / "segments" / "tmp-seg-1-0123abcd"
    in_flight.mkdir()
    with open_index(tmp_path / "db") as reader:
        assert reader.stats()["tracks"] == 1
    assert in_flight.exists()
    with pytest.raises(BgmidError, match=r"pid \d+\) is writing"):
        open_index(tmp_path / "db", write=True, wait=False)
    assert in_flight.exists()
    writer.close()  # the writer dies without finishing that segment
    with open_index(tmp_path / "db", write=True):
        pass
    assert not in_flight.exists()
