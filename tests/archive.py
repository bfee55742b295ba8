"""A small generated archive for the batch, cluster and shard tests: three short programmes of generated
dialogue with indexed test tracks under it, and what ``bgmid monitor`` writes for each alone."""

import json
from pathlib import Path

import numpy as np
from conftest import SR, TRACK_S
from signals import synth_music, synth_speech

from bgmid.audio import resample

PROG_S = 36.0
#: per programme: (track index, programme start s, end s, track time at start s)
LAYOUTS = [
    [(0, 3.0, 15.0, 2.0), (1, 20.0, 33.0, 8.0)],
    [(2, 2.0, 18.0, 5.0), (3, 22.0, 34.0, 0.0)],
    [(4, 6.0, 30.0, 10.0)],
]


def make_programme(k: int) -> np.ndarray:
    """Generated dialogue with indexed tracks under it (-3 dB), as the monitor tests build them."""
    speech = resample(synth_speech(40 + k, PROG_S, 11025), 11025, SR)[: int(PROG_S * SR)]
    prog = speech.copy()
    ref = float(np.mean(speech.astype(np.float64) ** 2))
    for i, a, b, off in LAYOUTS[k]:
        x = synth_music(100 + i, TRACK_S, SR)[int(off * SR): int((off + b - a) * SR)]
        prog[int(a * SR): int(a * SR) + x.size] += x * np.sqrt(ref * 10 ** (-0.3) / np.mean(x ** 2))
    return (0.5 * prog / np.abs(prog).max()).astype(np.float32)


def assert_same_as_monitor(out: Path, monitored: dict) -> None:
    for name, (obj, text) in monitored.items():
        assert json.loads((out / f"{name}.json").read_text()) == obj
        assert (out / f"{name}.csv").read_text() == text
    assert sum(len(obj["cues"]) for obj, _ in monitored.values()) >= 4  # the programmes' music was found
