"""The CLI contract: `bgmid identify --json` lines, `bgmid stats`, `bgmid remove`, helpful errors."""

import json

import soundfile as sf
from conftest import SR, TRACK_S
from signals import synth_music, synth_speech

from bgmid.cli import main


def test_identify_json_contract(built_index, tmp_path, capsys):
    x = synth_music(106, TRACK_S, SR)[int(14.0 * SR): int(26.0 * SR)]
    sf.write(tmp_path / "q.wav", x, SR)
    sf.write(tmp_path / "speech.wav", synth_speech(1, 12.0, SR), SR)
    rc = main(["identify", "--db", str(built_index), "--json", "--top", "2",
               str(tmp_path / "q.wav"), str(tmp_path / "speech.wav")])
    assert rc == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert [d["query"] for d in lines] == [str(tmp_path / "q.wav"), str(tmp_path / "speech.wav")]
    best = lines[0]["matches"][0]
    assert set(best) == {"track_id", "path", "title", "track_offset_s", "query_start_s", "query_end_s",
                         "score", "confidence", "speed", "tempo", "pitch_semitones"}
    assert best["title"] == "track06" and abs(best["track_offset_s"] - 14.0) < 0.1
    assert (best["speed"], best["tempo"], best["pitch_semitones"]) == (1.0, 1.0, 0.0)  # aired as indexed
    assert lines[1]["matches"] == []


def test_identify_missing_file_names_it(built_index, tmp_path, capsys):
    rc = main(["identify", "--db", str(built_index), "--json", str(tmp_path / "nope.mp3")])
    out, err = capsys.readouterr()
    assert rc == 1 and "nope.mp3" in err and json.loads(out)["matches"] == []


def test_stats_and_remove(built_index, tmp_path, capsys):
    import shutil

    db = tmp_path / "copy"
    shutil.copytree(built_index, db)
    assert main(["stats", "--db", str(db), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tracks"] == 8 and s["hours"] > 0.08 and s["postings"] > 10000 and s["bytes"] > 0
    assert main(["remove", "--db", str(db), "1"]) == 0
    capsys.readouterr()
    main(["stats", "--db", str(db), "--json"])
    s2 = json.loads(capsys.readouterr().out)
    assert s2["tracks"] == 7 and s2["postings"] < s["postings"]


def test_missing_index_is_a_clear_error(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path / "none")]) == 2
    assert "bgmid index --db" in capsys.readouterr().err
