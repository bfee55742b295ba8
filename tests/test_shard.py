"""A sharded catalogue answers exactly as the single index: a 3-shard split of the test index gives the same
postings (also where the stop-word rule must sum counts over shards), identifications and programme cue sheets;
a catalogue created sharded and filled by ``bgmid index`` equals one indexed whole; adding a track goes to one
shard; ``stats`` and ``check`` cover every shard."""

import json

import numpy as np
import pytest
import soundfile as sf
from archive import make_programme
from conftest import N_TRACKS, SR
from signals import synth_music

from bgmid.audio import resample
from bgmid.cli import main
from bgmid.cuesheet import result_to_dict
from bgmid.fingerprint.landmarks import fingerprint
from bgmid.index import open_index
from bgmid.index.check import check_index
from bgmid.index.shard import ShardedStore, split_index
from bgmid.match import Matcher, lookup
from bgmid.monitor import Monitor


@pytest.fixture(scope="module")
def sharded(built_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "lib3"
    stats = split_index(built_index, out, 3)
    assert stats["shards"] == 3 and stats["tracks"] == N_TRACKS
    assert sorted(stats["tracks_per_shard"]) == sorted([len(range(k, N_TRACKS + 1, 3)) - (k == 0)
                                                        for k in range(3)])
    return out


def _sorted(p):
    order = np.lexsort((p[2], p[1], p[0]))
    return [a[order] for a in p]


def _queries(music_dir):
    """Excerpts of indexed tracks (clean and under noise) and of music that is not indexed."""
    rng = np.random.default_rng(3)
    out = []
    for i in (1, 4, 6):
        x = synth_music(100 + i, 40.0, SR)[int(5 * SR): int(17 * SR)]
        out += [x, x + 0.5 * np.std(x) * rng.standard_normal(x.size).astype(np.float32)]
    out.append(synth_music(555, 12.0, SR))
    return out


def test_three_shards_answer_as_the_single_index(built_index, sharded, music_dir):
    with open_index(built_index) as one, open_index(sharded) as three:
        assert isinstance(three, ShardedStore) and len(three.shards) == 3
        assert three.n_hashes == one.n_hashes and three.preset == one.preset
        assert [(t.track_id, t.title, t.n_hashes) for t in three.tracks()] == \
            [(t.track_id, t.title, t.n_hashes) for t in one.tracks()]
        m1, m3 = Matcher(one), Matcher(three)
        per_shard_differs = False
        for x in _queries(music_dir):
            lm = fingerprint(resample(x, SR, one.preset.sample_rate), one.preset, 2.0, 2.0)
            # each shard's own rule keeps a hash whose postings are spread over shards: the summed rule must not
            naive = sum(s.lookup(lm.hashes, 1)[0].size for s in three.shards)
            per_shard_differs |= naive > one.lookup(lm.hashes, 1)[0].size
            for limit in (None, 1, 2, 8):  # small limits: a hash's count must be summed over the shards
                a, b = lookup(one, lm, limit), lookup(three, lm, limit)
                for u, v in zip(_sorted((a.rows, a.tids, a.off)), _sorted((b.rows, b.tids, b.off))):
                    np.testing.assert_array_equal(u, v)
            assert [m.to_dict() for m in m1.identify(x, SR, top=3)] == [m.to_dict() for m in m3.identify(x, SR, top=3)]
        assert per_shard_differs
        found = sum(bool(m1.identify(x, SR)) for x in _queries(music_dir))
        assert found >= 5  # the indexed excerpts are found (so the comparison above compares real matches)
        for k in range(3):
            prog = make_programme(k)
            c1 = result_to_dict(Monitor(one).run_array(prog, SR, f"p{k}"))
            c3 = result_to_dict(Monitor(three).run_array(prog, SR, f"p{k}"))
            assert c1 == c3 and c1["cues"]


def test_stats_and_check_cover_every_shard(built_index, sharded, capsys):
    assert main(["stats", "--db", str(sharded), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    with open_index(built_index) as one:
        single = one.stats()
    assert (s["tracks"], s["postings"], s["stored_postings"], s["shards"]) == \
        (single["tracks"], single["postings"], single["stored_postings"], 3)
    rep = check_index(sharded)
    assert rep.healthy and rep.tracks == N_TRACKS and rep.healthy_tracks == N_TRACKS
    victim = next((sharded / "shard-001" / "segments").iterdir()) / "words.npy"
    data = bytearray(victim.read_bytes())
    data[-9] ^= 0xFF
    victim.write_bytes(bytes(data))
    rep = check_index(sharded)
    assert not rep.healthy and any("shard-001" in f.file for f in rep.findings)
    assert main(["check", "--db", str(sharded)]) == 1


def test_created_sharded_equals_single_and_adds_go_to_one_shard(built_index, music_dir, tmp_path, capsys):
    db = tmp_path / "cat"
    assert main(["index", "--db", str(db), "--shards", "3", "--preset", "p1", str(music_dir)]) == 0
    capsys.readouterr()
    with open_index(built_index) as one, open_index(db) as three:
        assert [(t.track_id, t.content_hash, t.n_hashes) for t in three.tracks()] == \
            [(t.track_id, t.content_hash, t.n_hashes) for t in one.tracks()]
        for t in three.tracks():
            assert [s.has_content(t.content_hash) for s in three.shards].count(True) == 1
        prog = make_programme(0)
        assert result_to_dict(Monitor(one).run_array(prog, SR, "p")) == \
            result_to_dict(Monitor(three).run_array(prog, SR, "p"))
        before = [len(s.tracks()) for s in three.shards]
    new = tmp_path / "new.flac"
    sf.write(new, synth_music(777, 20.0, SR), SR)
    assert main(["index", "--db", str(db), str(new), str(music_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["added"], rep["skipped_already_indexed"]) == (1, N_TRACKS)
    with open_index(db) as three:
        after = [len(s.tracks()) for s in three.shards]
        assert sum(after) == N_TRACKS + 1 and sum(a != b for a, b in zip(after, before)) == 1
        got = Matcher(three).identify(synth_music(777, 20.0, SR)[SR * 4: SR * 16], SR)
        assert got and got[0].title == "new" and got[0].track_id == N_TRACKS + 1
    assert main(["index", "--db", str(built_index), "--shards", "2", str(new)]) == 2  # an index: use 'shard'
