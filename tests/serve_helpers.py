"""Shared by the ``bgmid serve`` tests: a short generated programme (the fixture index's tracks under
generated dialogue) with its truth CSV, and an app on the fixture index."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import SR, TRACK_S
from signals import synth_music, synth_speech

from bgmid.audio import resample

DUR = 75.0
#: (track index, programme start, end, track time at start, music-to-speech dB)
CUES = [(0, 4.0, 22.0, 3.0, -5.0), (3, 28.0, 44.0, 10.0, 0.0), (5, 50.0, 70.0, 5.0, 3.0)]
TOKEN = "test-token-123"


def write_programme(folder: Path, name: str = "show", seed: int = 7) -> tuple[Path, Path]:
    """``folder/name.wav`` (75 s, three cues under dialogue) and ``folder/name.cues.csv`` (its truth)."""
    speech = resample(synth_speech(seed, DUR, 11025), 11025, SR)[: int(DUR * SR)]
    prog = speech.astype(np.float64)
    ref = float(np.mean(speech.astype(np.float64) ** 2))
    for i, a, b, off, lvl in CUES:
        x = synth_music(100 + i, TRACK_S, SR)[int(off * SR): int((off + b - a) * SR)].astype(np.float64)
        prog[int(a * SR): int(a * SR) + x.size] += x * np.sqrt(ref * 10 ** (lvl / 10) / np.mean(x ** 2))
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / f"{name}.wav"
    sf.write(wav, (0.5 * prog / np.abs(prog).max()).astype(np.float32), SR)
    truth = folder / f"{name}.cues.csv"
    with open(truth, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cue", "track_id", "title", "programme_start_s", "programme_end_s", "track_offset_s",
                    "level_db", "music_only"])
        for k, (i, a, b, off, lvl) in enumerate(CUES):
            w.writerow([k, f"track{i:02d}", f"track{i:02d}", a, b, off, lvl, False])
    return wav, truth


def make_app(db: Path, data: Path | list[Path], **kw):
    from bgmid.serve.app import ServeConfig, create_app
    from bgmid.serve.security import Tokens

    roots = data if isinstance(data, list) else [data]
    kw.setdefault("pool", "thread")
    return create_app(ServeConfig(db=db, data=roots, tokens=Tokens({TOKEN: "tester"}), **kw))


AUTH = {"Authorization": f"Bearer {TOKEN}"}
