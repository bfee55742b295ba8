"""Broadcast conventions of the cue sheet: SMPTE timecodes (25, 29.97 drop-frame, 30 fps), programme start
timecode, wall-clock UTC, rights-society columns from the index's tags, and the CLI that writes them."""

import csv
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import SR
from signals import synth_music, synth_speech

from bgmid.audio import read_tags, resample
from bgmid.cli import main
from bgmid.cuesheet import (
    BROADCAST_FIELDS,
    CSV_FIELDS,
    SOCIETY_FIELDS,
    SheetOptions,
    csv_rows,
    format_table,
    result_to_dict,
    society_duration,
)
from bgmid.errors import BgmidError
from bgmid.monitor import Cue, CuePart, MonitorResult
from bgmid.timecode import Timebase, df_frames_to_label, df_label_to_frames, parse_utc

# -- SMPTE arithmetic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("frames", "label"), [
    (0, (0, 0, 0, 0)),
    (29, (0, 0, 0, 29)),
    (1799, (0, 0, 59, 29)),  # last frame of minute 0 ...
    (1800, (0, 1, 0, 2)),  # ... and the next is ;02: labels ;00 and ;01 are dropped at minute 1
    (3597, (0, 1, 59, 29)),
    (3598, (0, 2, 0, 2)),
    (17981, (0, 9, 59, 29)),
    (17982, (0, 10, 0, 0)),  # every tenth minute keeps ;00
    (17983, (0, 10, 0, 1)),
    (19781, (0, 10, 59, 29)),
    (19782, (0, 11, 0, 2)),
    (107891, (0, 59, 59, 29)),
    (107892, (1, 0, 0, 0)),  # one hour of 29.97 fps is 107,892 frames
    (1078920, (10, 0, 0, 0)),
    (24 * 107892, (0, 0, 0, 0)),  # hours wrap at 24
])
def test_drop_frame_known_values(frames, label):
    assert df_frames_to_label(frames) == label
    if frames < 24 * 107892:
        assert df_label_to_frames(*label) == frames


def test_drop_frame_labels_are_a_bijection_over_an_hour():
    labels = [df_frames_to_label(f) for f in range(107892)]
    assert len(set(labels)) == 107892 and labels == sorted(labels)  # unique and increasing
    assert all(df_label_to_frames(*labels[f]) == f for f in range(0, 107892, 97))
    dropped = {(0, m, 0, f) for m in range(60) if m % 10 for f in (0, 1)}
    assert not dropped & set(labels) and len(dropped) == 108  # 108 labels an hour are skipped
    with pytest.raises(ValueError, match="does not exist"):
        df_label_to_frames(0, 1, 0, 0)


def test_seconds_to_timecode_at_each_rate():
    df = Timebase("29.97")
    assert df.tc(0) == "00:00:00;00"
    assert df.tc(60.0) == "00:00:59;28"  # 1,798.2 frames: drop-frame labels lag inside the minute ...
    assert df.tc(600.0) == "00:10:00;00"  # ... and are exact every ten minutes (17,982.018 frames)
    assert df.tc(3600.0) == "01:00:00;00"  # 107,892.1 frames
    assert df.tc(1001 / 30000 * 1800) == "00:01:00;02"
    ndf = Timebase("30")
    assert ndf.tc(3600.0) == "01:00:00:00" and ndf.tc(59.99) == "00:01:00:00" and ndf.tc(0.05) == "00:00:00:02"
    pal = Timebase("25", "10:00:00:00")
    assert pal.tc(0) == "10:00:00:00" and pal.tc(1.48) == "10:00:01:12" and pal.tc(1.5) == "10:00:01:13"
    assert pal.tc(14 * 3600 + 0.04) == "00:00:00:01"  # 24:00:00:01 wraps
    assert pal.duration(90.2) == "00:01:30:05"
    assert Timebase("29.97", "09:59:30;00").tc(30.03) == "10:00:00;00"  # a 30 s leader before 10:00:00;00
    assert Timebase("ms", "10:00:00.250").tc(1.5) == "10:00:01.750"


@pytest.mark.parametrize(("fps", "start", "why"), [
    ("25", "10:00:00:25", "frame 25 does not exist"),
    ("29.97", "10:01:00;00", "does not exist in drop-frame"),
    ("ms", "10:00:00:00", "give the frame rate"),
    ("30", "10:00:00.500", "write frames"),
    ("25", "ten o'clock", "HH:MM:SS:FF"),
    ("24", None, "choose one of"),
])
def test_bad_start_timecodes_are_one_line_errors(fps, start, why):
    with pytest.raises(BgmidError, match=why):
        Timebase(fps, start)


def test_utc_from_a_zoned_or_naive_start():
    tb = Timebase(start_utc=parse_utc("2026-03-01T21:00:00+01:00"))
    assert tb.utc(0) == "2026-03-01T20:00:00.000Z" and tb.utc(3723.4567) == "2026-03-01T21:02:03.457Z"
    assert parse_utc("2026-03-01T20:00:00") == datetime(2026, 3, 1, 20, tzinfo=UTC)
    assert Timebase().utc(5.0) == ""
    with pytest.raises(BgmidError, match="ISO 8601"):
        parse_utc("yesterday")


# -- cue-sheet rows ------------------------------------------------------------------------------------------

TAGS = {"composer": "A. Composer", "publisher": "Library Music Ltd", "artist": "The Band",
        "isrc": "GBABC2600001", "iswc": "T-123.456.789-0"}


def _result() -> MonitorResult:
    loop = Cue(3, 10.0, 70.25, 5.0, 25.0, 400, 0.98, usage="background", seq=1, title="Theme", path="/lib/t.flac",
               extra=dict(TAGS), parts=[CuePart(10.0, 40.0, 5.0, 35.0), CuePart(40.0, 70.25, 5.0, 35.25)])
    sting = Cue(4, 90.0, 93.6, 0.0, 3.6, 40, 0.9, usage="featured", seq=2, title="Sting", extra={"ISRC": "X1"})
    return MonitorResult("/rec/ep101.ts", 120.0, [loop, sting], np.zeros(120, np.float32))


def test_society_layout_has_the_template_columns_and_the_tags():
    tb = Timebase("29.97", "10:00:00;00", parse_utc("2026-03-01T20:00:00Z"))
    header, rows = csv_rows([_result()], SheetOptions(tb, "Crime Series", "", "", "society"))
    assert header == list(SOCIETY_FIELDS)
    r = rows[0]
    assert (r["Production Title"], r["Episode Title"], r["Air Date"], r["Cue #"]) == (
        "Crime Series", "ep101", "2026-03-01", 1)
    assert (r["Composer(s)"], r["Publisher(s)"], r["ISRC"], r["ISWC"], r["Artist"]) == (
        TAGS["composer"], TAGS["publisher"], TAGS["isrc"], TAGS["iswc"], TAGS["artist"])
    assert r["Usage"] == "BI" and r["Duration"] == "01:00"  # 60.25 s
    assert r["Timecode In"] == "10:00:10;00" and r["UTC In"] == "2026-03-01T20:00:10.000Z"  # 299.7 frames -> 300
    s = rows[1]
    assert s["Usage"] == "VI" and s["Duration"] == "00:04" and s["ISRC"] == "X1" and s["Composer(s)"] == ""


def test_bgmid_layout_adds_the_reporting_columns_and_json_the_parts():
    res = _result()
    opts = SheetOptions(Timebase("25", "10:00:00:00"), "Crime Series", "Pilot", "2026-02-27")
    header, rows = csv_rows([res], opts)
    assert header[: len(CSV_FIELDS) + len(BROADCAST_FIELDS)] == list(CSV_FIELDS) + list(BROADCAST_FIELDS)
    r = rows[0]
    assert r["tc_in"] == "10:00:10:00" and r["tc_out"] == "10:01:10:06" and r["duration_tc"] == "00:01:00:06"
    assert (r["production"], r["episode"], r["air_date"], r["usage_code"], r["iswc"], r["timebase"]) == (
        "Crime Series", "Pilot", "2026-02-27", "BI", TAGS["iswc"], "25")
    assert r["utc_in"] == "" and r["programme_start_s"] == 10.0
    d = result_to_dict(res, options=opts)
    assert d["timebase"] == {"fps": "25", "drop_frame": False, "start_tc": "10:00:00:00", "start_utc": None}
    assert [(p["tc_in"], p["track_start_s"]) for p in d["cues"][0]["parts"]] == [
        ("10:00:10:00", 5.0), ("10:00:40:00", 5.0)]  # both positions of the repeat
    assert d["cues"][1]["usage_code"] == "VI" and "utc_in" not in d["cues"][1]
    assert "10:00:10;00" in format_table(res, timebase=Timebase("29.97", "10:00:00;00"))
    assert society_duration(0.2) == "00:01" and society_duration(3599.6) == "60:00"


# -- end to end: tags in the index, CLI options --------------------------------------------------------------


def _write_tagged_flac(path, x, sr, tags):
    import av

    with av.open(str(path), "w") as c:
        c.metadata.update(tags)
        st = c.add_stream("flac", rate=sr)
        st.layout = "mono"
        fr = av.AudioFrame.from_ndarray(x[None].astype(np.float32), format="flt", layout="mono")
        fr.sample_rate = sr
        for pkt in list(st.encode(fr)) + list(st.encode(None)):
            c.mux(pkt)


def test_cli_writes_a_society_sheet_with_the_index_tags(tmp_path, capsys):
    import soundfile as sf

    track = synth_music(4242, 30.0, SR)
    _write_tagged_flac(tmp_path / "theme.flac", track, SR, {"title": "Theme", **TAGS})
    assert read_tags(tmp_path / "theme.flac")[1]["iswc"] == TAGS["iswc"]
    db = tmp_path / "lib"
    assert main(["index", "--db", str(db), "--preset", "p1", str(tmp_path / "theme.flac")]) == 0
    prog = resample(synth_speech(5, 40.0, 11025), 11025, SR)[: int(40 * SR)] * 0.5
    prog[int(8 * SR): int(28 * SR)] += 0.5 * track[: int(20 * SR)]
    sf.write(tmp_path / "ep1.wav", prog, SR)
    out = tmp_path / "ep1.csv"
    rc = main(["monitor", "--db", str(db), "--separator", "none", "--alteration", "none", "--fps", "29.97",
               "--start-tc", "10:00:00;00", "--start-utc", "2026-03-01T20:00:00Z", "--production", "Series",
               "--sheet", "society", "--out", str(out), str(tmp_path / "ep1.wav")])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1, rows
    r = rows[0]
    assert r["Cue Title"] == "Theme" and r["Composer(s)"] == TAGS["composer"] and r["ISRC"] == TAGS["isrc"]
    assert r["Production Title"] == "Series" and r["Episode Title"] == "ep1" and r["Air Date"] == "2026-03-01"
    assert r["Timecode In"].startswith("10:00:0") and ";" in r["Timecode In"]
    assert abs(int(r["Duration"][-2:]) - 20) <= 2 and r["UTC In"].startswith("2026-03-01T20:00:0")
    capsys.readouterr()
    assert main(["monitor", "--db", str(db), "--separator", "none", "--alteration", "none", "--json", "--fps", "25",
                 str(tmp_path / "ep1.wav")]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[0])
    assert d["timebase"]["fps"] == "25" and d["cues"][0]["tc_in"].count(":") == 3


def test_cli_rejects_bad_broadcast_options(tmp_path, capsys, built_index):
    wav = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(SR, np.float32), SR)
    for extra, why in ((["--fps", "25", "--start-tc", "25:00:00:00"], "hours 0-23"),
                       (["--start-utc", "2026-03-01T20:00Z", str(wav)], "one input"),
                       (["--air-date", "1/3/2026"], "YYYY-MM-DD"),
                       (["--sheet", "society", "--out", str(tmp_path / "a.json")], "CSV layout")):
        assert main(["monitor", "--db", str(built_index), "--separator", "none", *extra, str(wav)]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

