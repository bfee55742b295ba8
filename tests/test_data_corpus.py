"""Corpus building on generated audio: archive parsing, extraction, filtering, dedupe, manifest, splits."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from signals import encode, synth_music, synth_speech

from bgmid.data import corpus
from bgmid.errors import BgmidError


def _queen_archive(path: Path, entries: list[tuple[str, bytes]]) -> None:
    """Write a queen.1c archive in the documented layout (big-endian table, then the data)."""
    n = len(entries)
    head = b"QTBL" + b"CEM10\x00" + b"\x00\x00" + bytes([1]) + struct.pack(">H", n)
    off = len(head) + 21 * n
    table = b""
    for name, blob in entries:
        table += name.encode().ljust(12, b"\0") + bytes([1]) + struct.pack(">II", off, len(blob))
        off += len(blob)
    path.write_bytes(head + table + b"".join(b for _, b in entries))


def test_queen_parser_reads_entries(tmp_path):
    blobs = [("020006J1.SB", b"abc" * 10), ("020006P1.SB", b"xyz" * 7), ("ROOM1.BBK", b"q" * 5)]
    p = tmp_path / "queen.1c"
    _queen_archive(p, blobs)
    got = corpus.parse_queen_archive(p)
    assert [g[0] for g in got] == [b[0] for b in blobs]
    data = p.read_bytes()
    for (_, off, size), (_, blob) in zip(got, blobs, strict=True):
        assert data[off : off + size] == blob
    (tmp_path / "bad.1c").write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(BgmidError):
        corpus.parse_queen_archive(tmp_path / "bad.1c")


def test_fotaq_speakers_grouped():
    src = corpus.SPEECH_SOURCES["flight-of-the-amazon-queen"]
    assert corpus._speaker_of(src, "q/queen.1c:020006J1.SB") == ("J", "J")  # Joe, the hero: one actor
    assert corpus._speaker_of(src, "q/queen.1c:020006P2.SB") == ("02P2", "02")
    src = corpus.SPEECH_SOURCES["fillets-ng-data-cs"]
    assert corpus._speaker_of(src, "x/sound/city/cs/vit-hs-klid1.ogg") == ("vit-hs", "vit-hs")
    assert corpus._speaker_of(src, "x/sound/city/cs/vit-m-hlava.ogg") == ("m", "m")


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory) -> Path:
    """An unpacked 'package': music tracks (one duplicated, one extensionless), a sound effect, a silent
    file, a speech archive with MP3 lines, and the copyright file."""
    d = tmp_path_factory.mktemp("pkg")
    mus = d / "usr/share/games/fake/music"
    mus.mkdir(parents=True)
    sr = 8000  # cheap to decode; the cache is resampled up to 16/22.05 kHz
    for i in range(3):
        sf.write(mus / f"song{i}.flac", synth_music(10 + i, 61.0, sr), sr)
    sf.write(mus / "song0_copy.wav", sf.read(mus / "song0.flac", dtype="float32")[0], sr)  # same content
    sf.write(mus / "noext", synth_music(20, 61.0, sr), sr, format="OGG")  # extensionless OGG
    sf.write(mus / "sfx.wav", synth_music(30, 5.0, sr), sr)  # a sound effect: too short
    sf.write(mus / "silence.wav", np.zeros(61 * sr, np.float32) + 1e-5, sr)  # near-silent
    arch = d / "usr/share/scummvm/fake"
    arch.mkdir(parents=True)
    lines = []
    for i, name in enumerate(["020006J1.SB", "020006P1.SB", "030007P1.SB"]):
        p = encode(d / f"l{i}.mp3", synth_speech(40 + i, 2.0, 11025), 11025, "libmp3lame", "mp3", 32000)
        lines.append((name, p.read_bytes()))
        p.unlink()
    lines.append(("ROOM.BBK", b"\0" * 100))
    _queen_archive(arch / "queen.1c", lines)
    doc = d / "usr/share/doc/fakepkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Fake licence: CC0\n")
    return d


def _convert(root: Path, tree: Path) -> dict:
    music = corpus.Source("fakepkg", "music", include=("*/music/*",), min_duration_s=60.0)
    speech = corpus.Source("fakepkg", "speech", include=("*/queen.1c",), min_duration_s=0.3, language="en",
                           speaker_rule="fotaq", archive="queen1c", train_speakers=("J",))
    corpus._copy_licence(tree, "fakepkg", root)
    for s in (music, speech):
        corpus._process_source(s, root, workers=1, keep_work=True, log=lambda m: None, tree=tree)
    return corpus.build_manifest(root)


def test_convert_filters_dedupes_and_writes_manifest(tmp_path, fake_package):
    root = tmp_path / "corpus"
    man = _convert(root, fake_package)
    mus = corpus.items(man, "music")
    sp = corpus.items(man, "speech")
    # song0 + song1 + song2 + noext kept; the copy deduplicated; sfx (short) and silence dropped
    assert sorted(r["title"] for r in mus) == ["noext", "song0", "song1", "song2"]
    assert len(man["duplicates"]) == 1 and man["duplicates"][0]["orig_path"].endswith("song0_copy.wav")
    done = json.loads((root / "items" / "fakepkg.music.json").read_text())
    reasons = {Path(r["orig_path"]).name: r.get("drop", "") for r in done["items"]}
    assert reasons["sfx.wav"].startswith("short") and reasons["silence.wav"].startswith("near-silent")
    assert sorted(r["speaker"] for r in sp) == ["02P1", "03P1", "J"]
    for r in mus + sp:
        for rate in corpus.CACHE_RATES:
            x = np.load(corpus.audio_path(root, r["id"], rate), mmap_mode="r")
            assert x.dtype == np.int16
            assert abs(x.shape[0] / rate - r["duration_s"]) < 0.05
        assert r["split"] in corpus.SPLITS and r["orig_sr"] in (8000, 11025)
    for r in sp:
        assert 2.0 < r["bandwidth_hz"] < 5600  # 11 kHz MP3 lines: nothing above Nyquist 5.5 kHz
    assert (root / "manifest.csv").read_text().splitlines()[0].startswith("id,kind,split")
    assert (root / "licences" / "fakepkg.copyright").read_text().startswith("Fake licence")
    # 8 kHz sources have no energy above 4 kHz: the measured band says so
    assert all(r["bandwidth_hz"] <= 4000 for r in mus)


def test_rerun_is_idempotent(tmp_path, fake_package, monkeypatch):
    root = tmp_path / "corpus"
    man1 = _convert(root, fake_package)

    def boom(job):  # nothing may be decoded again
        raise AssertionError(f"reconverted {job.rel}")

    monkeypatch.setattr(corpus, "_convert", boom)
    man2 = _convert(root, fake_package)
    assert man1["items"] == man2["items"]


def test_interrupted_package_resumes_from_journal(tmp_path, fake_package, monkeypatch):
    root = tmp_path / "corpus"
    src = corpus.Source("fakepkg", "music", include=("*/music/*",), min_duration_s=60.0)
    real = corpus._convert
    calls: list[str] = []

    def flaky(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.rel)
        return real(job)

    monkeypatch.setattr(corpus, "_convert", flaky)
    with pytest.raises(KeyboardInterrupt):
        corpus._process_source(src, root, 1, True, lambda m: None, tree=fake_package)
    assert len((root / "items" / "fakepkg.music.partial.jsonl").read_text().splitlines()) == 2
    seen: list[str] = []
    monkeypatch.setattr(corpus, "_convert", lambda job: seen.append(job.rel) or real(job))
    corpus._process_source(src, root, 1, True, lambda m: None, tree=fake_package)
    assert not set(seen) & set(calls) and len(seen) == 7 - 2


def test_splits_disjoint_stable_and_near_fractions():
    rng = np.random.default_rng(0)
    music = [{"kind": "music", "id": f"m{rng.integers(1 << 60):015x}"} for _ in range(4000)]
    got = [corpus.assign_split(r) for r in music]
    frac = {s: got.count(s) / len(got) for s in corpus.SPLITS}
    for s, f in zip(corpus.SPLITS, corpus.MUSIC_FRACTIONS, strict=True):
        assert abs(frac[s] - f) < 0.025, frac
    # stable: a track's split does not depend on the other tracks (adding packages never leaks test tracks)
    assert [corpus.assign_split(r) for r in music[:100]] == got[:100]
    # speech: every line of a speaker group lands in the same split; big speakers in train
    speech = []
    for g in range(300):
        for k in range(5):
            speech.append({"kind": "speech", "id": f"s{g}_{k}", "package": "p", "group": f"p:g{g}",
                           "train_speakers": ["g7"], "source_split": ""})
    by: dict[str, set[str]] = {}
    for r in speech:
        by.setdefault(r["group"], set()).add(corpus.assign_split(r))
    assert all(len(v) == 1 for v in by.values())
    assert by["p:g7"] == {"train"}
    assert {next(iter(v)) for v in by.values()} == {"train", "val", "test"}
    single = {"kind": "speech", "id": "x", "package": "festvox-ru", "group": "festvox-ru:festvox-ru",
              "source_split": "test"}
    assert corpus.assign_split(single) == "test"


def test_real_manifest_splits_disjoint():
    """On the corpus fetched on this machine (skipped where none): no track or speaker group is in two
    splits, and every split a benchmark needs is populated."""
    p = corpus.default_root() / "manifest.json"
    if not p.exists():
        pytest.skip("no corpus fetched here")
    man = json.loads(p.read_text())
    ids = [r["id"] for r in man["items"]]
    assert len(ids) == len(set(ids))
    groups: dict[str, set[str]] = {}
    for r in corpus.items(man, "speech"):
        groups.setdefault(r["group"], set()).add(r["split"])
    assert all(len(v) == 1 for v in groups.values()), {g: v for g, v in groups.items() if len(v) > 1}
    splits = {r["split"] for r in corpus.items(man, "music")}
    if len(corpus.items(man, "music")) >= 50:
        assert splits == set(corpus.SPLITS)


def test_missing_apt_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(BgmidError, match="apt-get not found"):
        corpus.download_deb("no-such-package-here", tmp_path)
    with pytest.raises(BgmidError, match="unknown preset"):
        corpus.fetch(tmp_path, preset="nope")


def test_local_folder_added(tmp_path):
    d = tmp_path / "mine" / "alice"
    d.mkdir(parents=True)
    for i in range(2):
        sf.write(d / f"line{i}.wav", synth_speech(i, 1.5, 16000), 16000)
    man = corpus.add_local(tmp_path / "root", tmp_path / "mine", "speech", language="en", workers=1,
                           log=lambda m: None)
    sp = corpus.items(man, "speech")
    assert len(sp) == 2 and {r["speaker"] for r in sp} == {"alice"} and len({r["split"] for r in sp}) == 1
