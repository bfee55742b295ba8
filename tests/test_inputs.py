"""Inputs as they come from real archives: undecodable file names, Latin-1 tags, FIFOs and broken links,
truncated files, hour-long queries, colliding names and bad files in a batch (issue 10)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR
from signals import encode, synth_music, synth_speech

from bgmid.audio import AudioError, AudioWarning, iter_audio_files, load, read_tags
from bgmid.cli import main
from bgmid.paths import shown

BAD = b"caf\xe9"  # Latin-1 'café': not valid UTF-8
PY = [sys.executable, "-m", "bgmid.cli"]


def _bad_name(d: Path, ext: str) -> Path:
    """A path in ``d`` whose file name holds the byte 0xE9 (decoded with surrogateescape, as Python does)."""
    return d / os.fsdecode(BAD + ext.encode())


def _write(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    sf.write(os.fsencode(path), x, sr, format="FLAC" if path.suffix == ".flac" else "WAV")
    return path


def _query(track: int, a: float, b: float, speech: bool = False) -> np.ndarray:
    """Seconds ``a``..``b`` of the fixture library's track ``track`` (optionally under speech)."""
    x = synth_music(100 + track, 40.0, SR)[int(a * SR): int(b * SR)]
    if speech:
        x = 0.6 * x + 0.4 * synth_speech(track, b - a, SR)[: x.size]
    return x


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(PY + args, capture_output=True, text=True, timeout=timeout, env=_env())


# -- 1. file names that are not UTF-8 -----------------------------------------------------------------------


def test_identify_json_shows_an_undecodable_query_name(built_index, tmp_path, capsys):
    q = _write(_bad_name(tmp_path, ".wav"), _query(3, 10.0, 22.0))
    assert main(["identify", "--db", str(built_index), "--json", "--separator", "none", str(q)]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["query"] == shown(q) and "\ufffd" in d["query"] and "\\udce9" not in out
    assert d["matches"][0]["title"] == "track03"
    out.encode("utf-8")  # strict: valid UTF-8 for any JSON reader


def test_match_and_cue_paths_are_valid_utf8():
    from bgmid.cuesheet import cue_to_dict, result_to_dict
    from bgmid.match import Match
    from bgmid.monitor import Cue, MonitorResult

    raw = os.fsdecode(b"/music/" + BAD + b".flac")
    m = Match(1, raw, "t", 0.0, 0.0, 1.0, 30, 0.9)
    assert m.to_dict()["path"] == "/music/caf\ufffd.flac"
    cue = Cue(1, 0.0, 5.0, 0.0, 5.0, 30, 0.9, path=raw, title="t")
    assert cue_to_dict(cue)["path"] == "/music/caf\ufffd.flac"
    res = MonitorResult(raw, 5.0, [cue], np.zeros(5, np.float32))
    d = result_to_dict(res)
    assert d["programme"] == "/music/caf\ufffd.flac" and d["programme_title"] == "caf\ufffd"
    json.dumps(d, ensure_ascii=False).encode("utf-8")


def test_monitor_csv_and_json_of_an_undecodable_programme_name(built_index, tmp_path, capsys):
    prog = _write(_bad_name(tmp_path, ".flac"), _query(5, 2.0, 32.0))
    for ext in (".csv", ".json"):
        out = tmp_path / f"cues{ext}"
        assert main(["monitor", "--db", str(built_index), "--separator", "none", str(prog), "--out", str(out)]) == 0
        text = out.read_text(encoding="utf-8")  # strict UTF-8
        if ext == ".json":
            d = json.loads(text)
            assert d["programme"] == shown(prog) and d["programme_title"] == "caf\ufffd"
        assert shown(prog.name) in (text if ext == ".csv" else d["programme"]) and "track05" in text
    assert "caf\ufffd" in capsys.readouterr().out  # the terminal table


# -- 2. tags in legacy encodings -----------------------------------------------------------------------------


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _latin1_tagged_ogg(path: Path) -> Path:
    """A real OGG/Vorbis file (libsndfile) whose Vorbis comments hold Latin-1 bytes, as old taggers wrote:
    the ASCII placeholders are replaced byte for byte and every page's CRC recomputed."""
    x = synth_music(7, 4.0, SR)
    with sf.SoundFile(path, "w", SR, 1, format="OGG") as f:
        f.title, f.artist = "CafX", "MXller"
        f.write(x)
    data = bytearray(path.read_bytes().replace(b"CafX", b"Caf\xe9").replace(b"MXller", b"M\xfcller"))
    i = 0
    while i < len(data):
        assert data[i:i + 4] == b"OggS"
        n = data[i + 26]
        size = 27 + n + sum(data[i + 27:i + 27 + n])
        page = bytearray(data[i:i + size])
        page[22:26] = b"\0\0\0\0"
        data[i + 22:i + 26] = struct.pack("<I", _ogg_crc(bytes(page)))
        i += size
    path.write_bytes(bytes(data))
    return path


def test_latin1_tags_do_not_reject_an_ogg_file(tmp_path):
    from bgmid.audio import info
    from bgmid.fingerprint.landmarks import fingerprint_file
    from bgmid.fingerprint.presets import PRESETS
    from bgmid.index.build import _work

    ogg = _latin1_tagged_ogg(tmp_path / "old.ogg")
    assert b"Caf\xe9" in ogg.read_bytes()
    x, sr = load(ogg)
    assert sr == SR and abs(x.size / sr - 4.0) < 0.05
    assert info(ogg).codec == "vorbis"
    assert read_tags(ogg) == ("Café", {"artist": "Müller"})
    lm, dur = fingerprint_file(ogg, PRESETS["p1"])
    assert len(lm) > 100 and abs(dur - 4.0) < 0.05
    assert _work(str(ogg), PRESETS["p1"])[2:] == ("Café", {"artist": "Müller"}, [])


def test_tag_decoding_fallbacks():
    from bgmid.audio import decode_tag

    esc = os.fsdecode  # what PyAV gives with metadata_errors="surrogateescape"
    assert decode_tag("Café") == "Café"  # valid UTF-8 stays
    assert decode_tag(esc(b"Caf\xe9")) == "Café"  # Latin-1 / Windows-1252
    assert decode_tag(esc(b"\x93quoted\x94")) == "\u201cquoted\u201d"  # Windows-1252 curly quotes
    assert decode_tag(esc(b"x\x81y")) == "x\x81y"  # undefined in CP1252: Latin-1 decodes any byte


def test_a_file_without_a_title_tag_is_named_readably(tmp_path):
    q = _write(_bad_name(tmp_path, ".wav"), np.zeros(SR, np.float32))
    assert read_tags(q) == ("caf\ufffd", {})


# -- 3. inputs that are not regular files --------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _unblock(fifo: Path) -> None:
    """Let a reader blocked on ``fifo`` go (open it for writing without blocking, then close: end of file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader left
        pass


def test_load_refuses_a_fifo_at_once(tmp_path):
    fifo = _fifo(tmp_path / "feed.wav")
    got: list = []

    def work():
        try:
            load(fifo)
        except AudioError as exc:
            got.append(str(exc))

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(30)
    if th.is_alive():  # unblock the reader so the test run can end, then fail
        _unblock(fifo)
        pytest.fail("reading a FIFO blocked")
    assert got and "feed.wav" in got[0] and "FIFO" in got[0]


@pytest.mark.parametrize("command", ["identify", "monitor"])
def test_cli_refuses_a_fifo_promptly(built_index, tmp_path, command):
    fifo = _fifo(tmp_path / "pipe.wav")
    try:
        r = _run([command, "--db", str(built_index), "--separator", "none", str(fifo)])
    except subprocess.TimeoutExpired:
        pytest.fail(f"bgmid {command} blocked on a FIFO")
    assert r.returncode != 0 and "pipe.wav" in r.stderr and "FIFO" in r.stderr
    assert "Traceback" not in r.stderr


def test_folder_walk_yields_non_regular_entries_for_reporting(tmp_path):
    d = tmp_path / "lib"
    (d / "sub").mkdir(parents=True)
    _write(d / "a.wav", np.zeros(100, np.float32))
    _fifo(d / "feed.wav")
    os.symlink("loop.wav", d / "loop.wav")
    os.symlink(d / "sub", d / "linked")  # a linked folder is not an input
    (d / "notes.txt").write_text("x")
    assert sorted(p.name for p in iter_audio_files([d])) == ["a.wav", "feed.wav", "loop.wav"]


def test_index_reports_a_fifo_in_a_folder_by_name(tmp_path):
    d = tmp_path / "lib"
    d.mkdir()
    _write(d / "good.flac", synth_music(1, 5.0, SR))
    _fifo(d / "feed.flac")
    try:
        r = _run(["index", "--db", str(tmp_path / "db"), "--json", str(d)])
    except subprocess.TimeoutExpired:
        pytest.fail("bgmid index blocked on a FIFO in a folder")
    assert r.returncode == 1 and "feed.flac" in r.stderr and "FIFO" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["added"] == 1


def test_symlink_loop_is_named_as_such(tmp_path):
    os.symlink("loop.wav", tmp_path / "loop.wav")
    with pytest.raises(AudioError, match="loop.wav: symbolic link loop"):
        load(tmp_path / "loop.wav")


def test_unreadable_file_says_permissions_not_reencode(tmp_path, monkeypatch):
    import bgmid.audio

    f = _write(tmp_path / "locked.wav", np.zeros(100, np.float32))

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(bgmid.audio, "_av_open", denied)
    with pytest.raises(AudioError) as e:
        load(f)
    msg = str(e.value)
    assert "locked.wav: cannot read (Permission denied); check permissions" in msg and "e-encode" not in msg


def test_undecodable_data_still_suggests_reencoding(tmp_path):
    f = tmp_path / "junk.mp3"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="junk.mp3: .*Re-encode"):
        load(f)


# -- 4. truncated files --------------------------------------------------------------------------------------


def _truncated(tmp_path: Path, ext: str) -> tuple[Path, Path]:
    x = synth_music(11, 20.0, SR)
    full = tmp_path / f"full{ext}"
    if ext == ".flac":
        _write(full, x)
    else:
        encode(full, x, SR, "libmp3lame")
    cut = tmp_path / f"cut{ext}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


@pytest.mark.parametrize("ext", [".flac", ".mp3"])
def test_truncated_file_warns_and_keeps_what_was_read(tmp_path, ext):
    from bgmid.fingerprint.presets import PRESETS
    from bgmid.index.build import _work

    full, cut = _truncated(tmp_path, ext)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, sr = load(full)
    assert abs(x.size / sr - 20.0) < 0.1 and not [w for w in caught if w.category is AudioWarning]
    with pytest.warns(AudioWarning, match=r"cut\S*: truncated or damaged after (9|10|11)\.\d s of 20\.0 s"):
        x, sr = load(cut)
    assert 8.0 < x.size / sr < 12.0
    lm, dur, _, _, notes = _work(str(cut), PRESETS["p1"])
    assert 8.0 < dur < 12.0 and len(lm) > 0
    assert len(notes) == 1 and "truncated" in notes[0] and cut.name in notes[0]
    assert _work(str(full), PRESETS["p1"])[4] == []


def test_identify_prints_a_truncation_warning_not_a_traceback(built_index, tmp_path):
    x = _query(2, 0.0, 30.0)
    full = _write(tmp_path / "q.flac", x)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    r = _run(["identify", "--db", str(built_index), "--separator", "none", str(cut)])
    assert r.returncode == 0, r.stderr
    assert "bgmid identify: warning: " in r.stderr and "cut.flac: truncated" in r.stderr
    assert "AudioWarning" not in r.stderr and "Traceback" not in r.stderr
    assert "track02" in r.stdout


# -- 5. long queries are streamed ----------------------------------------------------------------------------


class _Pointwise:
    """A stand-in separator whose output at a sample depends on that sample only: separating in blocks then
    gives exactly what separating the whole signal gives, so the streamed bookkeeping is tested exactly."""

    sample_rate = 16000

    def separate(self, x):
        music = np.tanh(3.0 * x).astype(np.float32)
        return music, (x - music).astype(np.float32)


def _key(matches):
    return [(m.track_id, m.track_offset_s, m.query_start_s, m.query_end_s, m.score, m.confidence) for m in matches]


@pytest.mark.parametrize("shifts, phases", [(1, 3), (2, 4)])
def test_streamed_query_equals_whole_query(built_index, tmp_path, shifts, phases):
    from bgmid.audio import resample
    from bgmid.fingerprint.presets import QueryOptions
    from bgmid.index import open_index
    from bgmid.match import Matcher

    q = _write(tmp_path / "q.flac", _query(3, 5.0, 35.0, speech=True))
    with open_index(built_index) as store:
        m = Matcher(store, QueryOptions(shifts=shifts, refine_phases=phases))
        x, sr = load(q)
        whole = m.identify(x, sr, top=3)
        assert whole and whole[0].title == "track03"
        assert _key(m.identify_file(q, top=3, block_s=10)) == _key(whole)  # three fingerprint blocks
        sep = _Pointwise()
        y = resample(x, sr, sep.sample_rate)
        fused = m.identify([y, sep.separate(y)[0]], sep.sample_rate, top=3)
        assert fused[0].score > whole[0].score  # the second analysis counts
        for block_s in (10.0, 60.0):  # three separator blocks; one (the query separated whole)
            got = m.identify_file(q, top=3, separator=sep, block_s=block_s, context_s=2.0)
            assert _key(got) == _key(fused)


def test_streamed_query_refines_offsets_like_whole_query(tmp_path):
    """The offset refinement re-analyses the query at sub-hop phases; streamed, those phases are analysed in
    the one pass, and the refined offsets must be the same (a steady beat makes refinement necessary)."""
    from bgmid.fingerprint.landmarks import fingerprint
    from bgmid.fingerprint.presets import PRESETS, QueryOptions
    from bgmid.index import open_index
    from bgmid.index.base import TrackMeta
    from bgmid.match import Matcher

    sr, p = 11025, PRESETS["p1"]
    loop = synth_music(3, (int(0.87 * sr) + 37) / sr, sr)
    beat = np.tile(loop, 40)
    x = beat + 0.35 * synth_music(4, beat.size / sr + 1, sr)[: beat.size]
    lm = fingerprint(x, p)
    with open_index(tmp_path / "db", create=True) as store:
        store.add_track(TrackMeta("beat", "", x.size / sr, "h"), lm.hashes, lm.times)
        m, plain = Matcher(store), Matcher(store, QueryOptions(refine_phases=1))
        refined = 0
        for s0 in np.random.default_rng(0).integers(2 * sr, 20 * sr, 8):
            q = x[s0:s0 + 12 * sr]
            whole = m.identify(q, sr)
            assert _key(m.identify_stream(np.array_split(q, 7), sr, block_s=5)) == _key(whole)
            refined += _key(whole) != _key(plain.identify(q, sr))
    assert refined >= 1  # the refinement did change some results, so it was compared


def test_identify_streams_long_queries(built_index, tmp_path, monkeypatch, capsys):
    import bgmid.audio

    x = np.concatenate([_query(4, 0.0, 40.0), _query(6, 0.0, 30.0)])  # 70 s: longer than STREAM_QUERY_S
    q = _write(tmp_path / "long.flac", x)
    short = _write(tmp_path / "short.flac", _query(4, 0.0, 20.0))

    def no_load(*a, **k):
        raise AssertionError("a long query was loaded whole")

    assert main(["identify", "--db", str(built_index), "--json", "--separator", "none", "--top", "2",
                 str(short)]) == 0
    monkeypatch.setattr(bgmid.audio, "load", no_load)
    assert main(["identify", "--db", str(built_index), "--json", "--separator", "none", "--top", "2",
                 str(q)]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["matches"][0]["title"] == "track04"
    assert {d["title"] for d in lines[1]["matches"]} == {"track04", "track06"}


# -- 6. bgmid separate ---------------------------------------------------------------------------------------


@pytest.fixture
def tiny_weights(tmp_path):
    from bgmid.separation import build
    from bgmid.separation.registry import make_checkpoint, save_checkpoint

    return save_checkpoint(tmp_path / "w.pt", make_checkpoint(build("wave-unet", "lite", levels=3,
                                                                    base_channels=4)))


def test_separate_gives_colliding_names_distinct_outputs(tmp_path, tiny_weights, capsys):
    from bgmid.separation.apply import unique_stems

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(tmp_path / "a" / "x.wav", np.zeros(4000, np.float32), 22050)
    b = _write(tmp_path / "b" / "x.wav", 0.3 * np.sin(np.arange(8000, dtype=np.float32) / 5), 22050)
    out = tmp_path / "o"
    assert main(["separate", "--model", "wave-unet", "--weights", str(tiny_weights), str(a), str(b),
                 "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x-2.music.wav", "x-2.speech.wav", "x.music.wav", "x.speech.wav"]
    assert sf.info(out / "x.music.wav").frames < sf.info(out / "x-2.music.wav").frames  # a's, then b's
    text = capsys.readouterr().out
    assert f"{a}: " in text and f"{b}: " in text and "x-2.music.wav" in text
    assert unique_stems(["a/x.wav", "b/x.wav", "c/x-2.wav", "d/x"]) == ["x", "x-3", "x-2", "x-4"]


def test_separate_removes_part_files_on_error(tmp_path, tiny_weights, capsys):
    from bgmid.separation import build
    from bgmid.separation.apply import separate_file

    out = tmp_path / "o"
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    good = _write(_bad_name(tmp_path, ".wav"), np.zeros(4000, np.float32), 22050)
    assert main(["separate", "--model", "wave-unet", "--weights", str(tiny_weights), str(junk), str(good),
                 "--out", str(out)]) == 1
    io = capsys.readouterr()
    assert "junk.wav" in io.err and shown(good) in io.out
    assert sorted(os.listdir(os.fsencode(out))) == [BAD + b".music.wav", BAD + b".speech.wav"]

    m = build("wave-unet", "lite", levels=3, base_channels=4).eval()

    def broken(x):
        raise RuntimeError("out of memory")

    m.forward = broken
    with pytest.raises(RuntimeError):
        separate_file(m, good, tmp_path / "o2", block_s=0.1)
    assert list((tmp_path / "o2").iterdir()) == []


# -- 7. bgmid monitor continues past a bad input -------------------------------------------------------------


def test_monitor_continues_past_a_bad_input(built_index, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    good = _write(tmp_path / "good.flac", _query(1, 3.0, 33.0))
    out = tmp_path / "cues.json"
    rc = main(["monitor", "--db", str(built_index), "--separator", "none", str(bad), str(good),
               str(tmp_path / "missing.wav"), "--out", str(out)])
    io = capsys.readouterr()
    assert rc == 1
    assert "bad.wav" in io.err and "missing.wav" in io.err and "2 of 3 inputs failed" in io.err
    sheet = json.loads(out.read_text())
    assert sheet["programme"] == str(good) and [c["title"] for c in sheet["cues"]] == ["track01"]
    assert "track01" in io.out
