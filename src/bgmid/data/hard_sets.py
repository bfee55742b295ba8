"""Harder fixed test sets: continuous dialogue, crowd scenes, -25 dB; and the speech statistics of every set.

Why: on the fixed sets of :func:`bgmid.data.mixing.build_fixed_sets` the unprocessed mix identifies 87 % of the
clips at -20 dB, because the dialogue has multi-second pauses (lines of 1-5 s, 15 % of gaps 1.5-4 s) in which
the music is heard alone. Broadcast dialogue is denser, and scenes have crowds. These sets use the same clips
(music array, tracks, offsets, low-pass band) as the base sets so that figures compare clip for clip:

* ``<split>_<snr>dB_turns`` (-10, -20, -25 dB): continuous dialogue of the clip's speech source, lines back to
  back with turn gaps uniform in 0.1-0.6 s between the words (the recordings' own leading and trailing silence
  removed; pauses inside a line stay), array ``speech_turns.npy``;
* ``<split>_-10dB_crowd``: the base clip's dialogue plus a crowd of six other voices (dialogues of the split's
  wideband sources, each at unit power +-4 dB, the crowd's sum scaled to the dialogue's power), with music 10 dB
  below the whole non-music stem (13 dB below the dialogue alone; array ``speech_crowd.npy``), and its
  speech-only negative ``<split>_speech_crowd``;
* ``<split>_-25dB``: the base clips (``music.npy``, ``speech.npy``) at -25 dB.

Files are only ever added: an array or CSV that exists already is left as it is (the folder holds other sets
that must not change), and the sets' statistics go to ``scene_sets.json`` beside ``info.json``: per set, the
speech band and pause statistics of its non-music stem (:func:`pause_stats`, :func:`stem_band_hz`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bgmid.data.mixing import (
    CONDITION_FIELDS,
    CSV_FIELDS,
    Corpus,
    _lowpass,
    _rms,
    _save_npy,
    _speech_sources,
    mix_gains,
    plan_dialogue,
    render_dialogue,
    source_band_hz,
)
from bgmid.data.scenes import babble
from bgmid.errors import BgmidError

#: Suffixes of the scene sets' names (``test_-20dB_turns``); :func:`split_scene` strips them.
SCENE_SUFFIXES = ("turns", "crowd")
#: Turn gaps of continuous dialogue (s).
TURN_GAP_S = (0.1, 0.6)
#: Voices in a crowd scene.
CROWD_VOICES = 6
#: Extra CSV columns of the scene sets.
SCENE_FIELDS = ("scene", "dialogue_snr_db")


def split_scene(name: str) -> tuple[str, str]:
    """``("test_-20dB", "turns")`` for ``test_-20dB_turns``; ``(name, "")`` for any other set."""
    head, _, tail = name.rpartition("_")
    return (head, tail) if head and tail in SCENE_SUFFIXES else (name, "")


def scene_set_names(split: str = "test") -> list[str]:
    """The sets :func:`build_scene_sets` writes, in order."""
    return ([f"{split}_{s}dB_turns" for s in (-10, -20, -25)] + [f"{split}_-10dB_crowd", f"{split}_speech_crowd",
                                                                 f"{split}_-25dB"])


def pause_stats(speech: np.ndarray, sr: int, rel_db: float = -25.0, frame_s: float = 0.05,
                min_pause_s: float = 0.1) -> dict[str, float]:
    """Pauses of a set's non-music stem, ``speech`` (clips, samples) at ``sr`` Hz: a 50 ms frame is a pause when
    its power is ``rel_db`` dB or more below the clip's mean power (so a crowd filling the dialogue's gaps
    counts as speech); a pause is a run of such frames of at least ``min_pause_s`` s. Returns the active
    fraction of frames, pauses per minute, median / 90th-percentile / longest pause (s), and the fraction of
    clips with a pause of 1 s or more (where music is heard alone long enough to be identified on its own)."""
    h = max(1, int(round(frame_s * sr)))
    pauses: list[float] = []
    active, long_clips, minutes = [], 0, 0.0
    for x in np.asarray(speech):
        m = x.size // h
        e = np.mean(np.square(x[: m * h].reshape(m, h), dtype=np.float64), axis=1)
        quiet = e < np.mean(e) * 10 ** (rel_db / 10)
        active.append(1.0 - float(np.mean(quiet)))
        minutes += x.size / sr / 60
        run, longest = 0, 0.0
        for q in np.append(quiet, False):
            if q:
                run += 1
                continue
            if run * frame_s >= min_pause_s:
                pauses.append(run * frame_s)
                longest = max(longest, run * frame_s)
            run = 0
        long_clips += longest >= 1.0
    p = np.asarray(pauses)
    n = max(1, len(active))
    return {
        "active_fraction": round(float(np.mean(active)) if active else 0.0, 3),
        "pauses_per_min": round(len(pauses) / max(minutes, 1e-9), 1),
        "pause_median_s": round(float(np.median(p)), 2) if p.size else 0.0,
        "pause_p90_s": round(float(np.percentile(p, 90)), 2) if p.size else 0.0,
        "pause_max_s": round(float(p.max()), 2) if p.size else 0.0,
        "clips_with_pause_over_1s": round(long_clips / n, 3),
    }


def stem_band_hz(speech: np.ndarray, sr: int, floor_db: float = -50.0) -> float:
    """Upper band edge (Hz) of a set's non-music stem: the highest frequency where the clips' average PSD is
    within ``|floor_db|`` dB of its maximum (as :func:`bgmid.data.mixing.source_band_hz` measures sources)."""
    from scipy.signal import welch

    f, p = welch(np.asarray(speech, np.float64), fs=sr, nperseg=1024, axis=-1)
    psd = p.mean(axis=0) if p.ndim > 1 else p
    db = 10 * np.log10(psd + 1e-30)
    above = np.nonzero(db > db.max() + floor_db)[0]
    return float(f[above[-1]]) if above.size else 0.0


def _active_extent(x: np.ndarray, sr: int, rel_db: float = -40.0, frame_s: float = 0.01) -> tuple[float, float]:
    """(start, end) in s of the part of a recorded line between its first and last 10 ms frame within
    ``|rel_db|`` dB of its loudest frame: recordings carry silence before and after the words, which would
    add to every turn gap."""
    h = max(1, int(frame_s * sr))
    m = x.size // h
    if m == 0:
        return 0.0, x.size / sr
    e = np.mean(np.square(np.asarray(x[: m * h], np.float64).reshape(m, h)), axis=1)
    on = np.nonzero(e >= e.max() * 10 ** (rel_db / 10))[0]
    return (on[0] * frame_s, (on[-1] + 1) * frame_s) if on.size else (0.0, x.size / sr)


def plan_turns(rng: np.random.Generator, cor: Corpus, lines: Sequence[dict], clip_s: float,
               gap_s: tuple[float, float] = TURN_GAP_S) -> list:
    """Continuous dialogue over ``clip_s`` s: lines of one source back to back, ``gap_s`` (uniform, s) between
    the end of one line's words and the start of the next's (the recordings' leading and trailing silence
    removed from the gap, :func:`_active_extent`); the clip starts inside the first line."""
    from bgmid.data.mixing import Line

    out = []
    first = True
    t = 0.0
    while t < clip_s:
        r = lines[int(rng.integers(len(lines)))]
        a, b = _active_extent(cor.samples(r["id"]), cor.sr)
        if first:
            t = -float(rng.uniform(0.0, 0.8 * (b - a)))
            first = False
        out.append(Line(r["id"], t - a, float(rng.uniform(-3, 3))))
        t += (b - a) + float(rng.uniform(*gap_s))
    return out


def build_scene_sets(root: str | os.PathLike | None = None, split: str = "test", sample_rate: int = 16000,
                     seed: int = 0, level_dbfs: float = -20.0, log: Callable[[str], None] = print) -> dict[str, int]:
    """Write the scene sets of ``split`` at ``sample_rate`` next to its base sets (which must exist: ``bgmid data
    mix``). Never overwrites: existing arrays and CSVs are kept. Returns {set name: clips} of the sets written."""
    from bgmid.data.corpus import default_root

    root = Path(root) if root else default_root()
    d = root / "fixed" / str(int(sample_rate)) / split
    base_csv = d / f"{split}_-10dB.csv"
    if not base_csv.exists():
        raise BgmidError(f"{base_csv}: no base set. Run 'bgmid data mix --sr {sample_rate}' first.")
    with open(base_csv, newline="") as f:
        base = list(csv.DictReader(f))
    if [int(b["clip"]) for b in base] != list(range(len(base))):
        raise BgmidError(f"{base_csv}: clips are not numbered 0..{len(base) - 1} in order; rebuild the base sets.")
    M = np.load(d / "music.npy", mmap_mode="r")
    S = np.load(d / "speech.npy", mmap_mode="r")
    n = M.shape[1]
    cor = Corpus(root, sample_rate)
    srcs = _speech_sources(cor.items("speech", split))
    cor.ensure([r for recs in srcs.values() for r in recs])
    bands = {name: source_band_hz(cor, recs, seed=seed) for name, recs in srcs.items()}
    wide = [s for s in sorted(srcs) if bands[s] >= 5000.0] or sorted(srcs)
    hours = np.sqrt([sum(r["duration_s"] for r in srcs[u]) for u in wide])
    k_split = 1 if split == "test" else 2
    rng_turns = np.random.default_rng([seed, 14, k_split, 1])  # one stream per set kind: each rebuilds alone
    rng = np.random.default_rng([seed, 14, k_split, 2])
    clip_s = n / sample_rate

    def lp(x: np.ndarray, row: dict) -> np.ndarray:
        cut = float(row["lowpass_hz"] or 0)
        return _lowpass(x, sample_rate, cut) if cut else x

    turns_plans = []
    St = np.zeros((len(base), n), np.float32)
    Sc = np.zeros((len(base), n), np.float32)
    for k, row in enumerate(base):
        src = row["speech_source"]
        plan = plan_turns(rng_turns, cor, srcs[src], clip_s)
        turns_plans.append(plan)
        s = lp(render_dialogue(cor, plan, n), row)
        St[k] = s / _rms(s)
        crowd = []
        for _ in range(CROWD_VOICES):
            other = wide[int(rng.choice(len(wide), p=hours / hours.sum()))]
            crowd.append(lp(render_dialogue(cor, plan_dialogue(rng, srcs[other], clip_s), n), row))
        c = S[k] + babble(crowd, rng)  # both at unit power: the crowd at the dialogue's level
        Sc[k] = c / _rms(c)
    arrays = {"speech_turns": St, "speech_crowd": Sc}
    for name, arr in arrays.items():
        p = d / f"{name}.npy"
        if p.exists():
            log(f"  {p} exists: kept (sets using it are written against it)")
            arrays[name] = np.load(p, mmap_mode="r")
        else:
            _save_npy(p, arr)
    target = 10 ** (level_dbfs / 20)
    fields = CSV_FIELDS + CONDITION_FIELDS + SCENE_FIELDS
    counts: dict[str, int] = {}
    stats: dict[str, dict] = {}

    def write(name: str, rows: list[dict], stem: np.ndarray) -> None:
        stats[name] = {"clips": len(rows), "speech_band_hz": round(stem_band_hz(stem, sample_rate)),
                       "speech_sources": sorted({r["speech_source"] for r in rows if r["speech_source"]}),
                       **pause_stats(stem, sample_rate)}
        p = d / f"{name}.csv"
        if p.exists():
            log(f"  {p} exists: kept")
            return
        tmp = d / f".{name}.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, p)
        counts[name] = len(rows)

    def rows_for(name: str, scene: str, snr: float | None, speech_arr: str, Sx: np.ndarray, music: bool,
                 lines: Sequence | None, dialogue_extra_db: float = 0.0) -> tuple[list[dict], np.ndarray]:
        rows, stems = [], []
        for k, b in enumerate(base):  # row k is clip k of every array (checked above)
            kk = k
            gm, gs = mix_gains(np.asarray(M[kk]) if music else None, np.asarray(Sx[k]), snr, target)
            r = {f: b.get(f, "") for f in CSV_FIELDS}
            r.update(set=name, snr_db=snr if snr is not None else "-inf", music_gain=f"{gm:.8g}",
                     speech_gain=f"{gs:.8g}", clip=kk)
            if not music:
                r.update(music_track_id="", music_title="", music_package="", track_offset_s="")
            if lines is not None:
                r["speech_lines"] = " ".join(f"{ln.item_id}@{ln.start_s:.3f}" for ln in lines[k])
            r.update(condition="", speed="1", tempo="1", pitch_semitones="0", music_array="music" if music else "",
                     speech_array=speech_arr, scene=scene,
                     dialogue_snr_db="" if snr is None else f"{snr - dialogue_extra_db:g}")
            rows.append(r)
            stems.append(np.asarray(Sx[k]) * np.float32(gs))
        return rows, np.asarray(stems)

    crowd_db = 10 * math.log10(2.0)  # dialogue + an equal-power crowd: the stem is ~3 dB above the dialogue
    plan = [(f"{split}_{s}dB_turns", "turns", float(s), "speech_turns", arrays["speech_turns"], True, turns_plans, 0.0)
            for s in (-10, -20, -25)]
    plan += [(f"{split}_-10dB_crowd", "crowd", -10.0, "speech_crowd", arrays["speech_crowd"], True, None, crowd_db),
             (f"{split}_speech_crowd", "crowd", None, "speech_crowd", arrays["speech_crowd"], False, None, 0.0),
             (f"{split}_-25dB", "", -25.0, "speech", S, True, None, 0.0)]
    for name, scene, snr, arr, Sx, music, lines, extra in plan:
        rows, stems = rows_for(name, scene, snr, arr, Sx, music, lines, extra)
        write(name, rows, stems)
    for name in (f"{split}_-10dB", f"{split}_-20dB"):  # the base sets' figures, for comparison
        if (d / f"{name}.csv").exists():
            stats[name] = {"clips": len(base), "speech_band_hz": round(stem_band_hz(np.asarray(S), sample_rate)),
                           "speech_sources": sorted({b["speech_source"] for b in base}),
                           **pause_stats(np.asarray(S), sample_rate)}
    info = {"split": split, "sample_rate": sample_rate, "clip_s": clip_s, "seed": seed, "level_dbfs": level_dbfs,
            "turn_gap_s": list(TURN_GAP_S), "crowd_voices": CROWD_VOICES,
            "source_bands_hz": {s: round(bands[s]) for s in sorted(bands)},
            "pause_rule": "50 ms frames 25 dB or more below the clip's mean power, runs of >= 0.1 s",
            "snr_rule": "music power / power of the whole non-music stem (dialogue + crowd); dialogue_snr_db in "
                        "the CSV is against the dialogue alone",
            "sets": stats}
    p = d / "scene_sets.json"
    if p.exists():
        log(f"  {p} exists: kept; statistics of this run in {p.with_suffix('.new.json')}")
        p = p.with_suffix(".new.json")
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, p)
    for name, st in stats.items():
        log(f"  {name:22s} band {st['speech_band_hz']:5d} Hz  active {st['active_fraction']:.2f}  "
            f"pauses {st['pauses_per_min']:5.1f}/min  median {st['pause_median_s']:.2f} s  "
            f"max {st['pause_max_s']:.2f} s"
            f"  clips with a >= 1 s pause {st['clips_with_pause_over_1s']:.2f}")
    return counts
