"""Broadcast-like long-form test programmes with a ground-truth cue sheet (what ``bgmid monitor`` is scored on).

A programme is a timeline of passages: dialogue (30-120 s of lines with natural pauses), short silences
(2-6 s) and music-only passages (10-40 s). Music cues (5-90 s pieces from the middle of tracks of the
chosen split, never training tracks) are laid over it at -25..+5 dB relative to the dialogue, with fades in
and out; every music-only passage carries a cue. ``with_music=False`` gives the same kind of programme with
no music at all, on which any reported cue is a false alarm. Cues are :class:`bgmid.cuesheet.TruthCue` records,
the one ground-truth cue type (what ``--truth`` reads), written as :data:`CUE_FIELDS` columns.

Level convention: a cue's ``level_db = 10·log10(P_music / P_dialogue)``, where ``P_music`` is the mean
power of the cue piece at full level (fades excluded) and ``P_dialogue`` the mean power of the programme's
dialogue passages (pauses included) — the same convention as the SNR of the fixed sets.

Aired changed (issue 12): ``speed``, ``tempo`` and ``pitch_semitones`` transform the finished programme as a
whole (:mod:`bgmid.data.transforms`: a 24 fps film aired at 25 fps is ``speed=25/24``). The cue sheet then
gives programme times in the aired programme (the generated times divided by ``speed·tempo``) and track
offsets in the track's own time line: at aired time ``t`` a cue plays its track at
``track_offset_s + speed·tempo·(t - programme_start_s)``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from bgmid.cuesheet import TRUTH_FIELDS, TruthCue, read_truth
from bgmid.data.mixing import Corpus, _rms, _speech_sources, plan_dialogue, render_dialogue, source_band_hz
from bgmid.errors import BgmidError

__all__ = ["CUE_FIELDS", "HARD_SCENES", "generate_hard_programme", "generate_programme", "read_cue_sheet"]

#: The cue sheet's columns (:data:`bgmid.cuesheet.TRUTH_FIELDS`: the ground-truth format has one owner).
CUE_FIELDS = TRUTH_FIELDS


def _timeline(rng: np.random.Generator, duration_s: float, with_music: bool) -> list[tuple[str, float, float]]:
    """Passages (kind, start s, end s) covering ``[0, duration_s)``; starts with dialogue."""
    out: list[tuple[str, float, float]] = []
    t = 0.0
    while t < duration_s:
        u = rng.random()
        if not out or out[-1][0] != "dialogue" or u < 0.72:
            kind, d = "dialogue", rng.uniform(30, 120)
        elif u < 0.84 or not with_music:
            kind, d = "silence", rng.uniform(2, 6)
        else:
            kind, d = "music", rng.uniform(10, 40)
        end = min(duration_s, t + d)
        out.append((kind, float(t), float(end)))
        t = end
    return out


def _fade(n: int, fi: int, fo: int) -> np.ndarray:
    """Gain envelope of ``n`` samples with raised-cosine fade-in/out of ``fi``/``fo`` samples."""
    g = np.ones(n, np.float32)
    if fi > 0:
        g[:fi] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fi) / fi)
    if fo > 0:
        g[n - fo :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, fo + 1) / fo)
    return g


def _sources(root, sample_rate: int, split: str, seed: int, wideband_hz: float, min_music: int):
    """What a programme is made from: the corpus at ``sample_rate``, ``split``'s music tracks (sorted by id; at
    least ``min_music``), its speech sources (a speaker or group each), the wideband ones among them (measured
    band >= ``wideband_hz``; all when none is) and their draw weights (sqrt of each source's hours)."""
    cor = Corpus(root, sample_rate)
    music = sorted(cor.items("music", split), key=lambda r: r["id"])
    speech = cor.items("speech", split)
    if not speech or len(music) < min_music:
        raise BgmidError(f"split '{split}' has {len(music)} music tracks and {len(speech)} speech lines; "
                         "run 'bgmid data fetch' first.")
    cor.ensure(music + speech)
    srcs = _speech_sources(speech)
    wide = [n for n in sorted(srcs) if source_band_hz(cor, srcs[n], seed=seed) >= wideband_hz] or sorted(srcs)
    hours = np.sqrt([sum(r["duration_s"] for r in srcs[w]) for w in wide])
    return cor, music, srcs, wide, hours


def generate_programme(
    root: str | os.PathLike | None = None,
    duration_s: float = 600.0,
    seed: int = 0,
    sample_rate: int = 16000,
    split: str = "test",
    with_music: bool = True,
    out: str | os.PathLike | None = None,
    level_db: tuple[float, float] = (-25.0, 5.0),
    cue_s: tuple[float, float] = (5.0, 90.0),
    cues_per_10min: float = 6.0,
    dialogue_dbfs: float = -23.0,
    wideband_hz: float = 5000.0,
    speed: float = 1.0,
    tempo: float = 1.0,
    pitch_semitones: float = 0.0,
) -> tuple[Path, Path]:
    """Write a programme WAV and its cue-sheet CSV (plus ``.json`` with passages); return both paths.

    Music comes from ``split``'s tracks (default ``test``: never seen in training; index them for the
    monitoring benchmark), speech from ``split``'s wideband sources where there are any. Cues do not
    overlap each other. Dialogue is scaled to ``dialogue_dbfs`` (RMS over dialogue passages); the whole
    programme is scaled down if it would clip (levels relative to speech are unchanged).

    ``speed`` (ratio: tempo and pitch, 25/24 = PAL speed-up), ``tempo`` (ratio, pitch kept) and
    ``pitch_semitones`` (tempo kept) transform the whole programme after it is made, in that order (the same
    draws as the unchanged programme, so the same cues). Times in the cue sheet, passages and fades are divided
    by ``speed·tempo``; ``track_offset_s`` is unchanged (the track's own time line). The factors are recorded in
    the ``.json`` and, when any is not the identity, as extra ``speed, tempo, pitch_semitones`` columns of the cue
    sheet CSV. With the defaults the output is exactly as without these options. Default file name:
    ``prog_<seed>[_nomusic][_speedR][_tempoR][_pitchS].wav``.
    """
    changed = (speed, tempo, pitch_semitones) != (1.0, 1.0, 0.0)
    if speed <= 0 or tempo <= 0:
        raise BgmidError(f"speed and tempo must be > 0 (got {speed}, {tempo})")
    cor, music, srcs, wide, hours = _sources(root, sample_rate, split, seed, wideband_hz, 1 if with_music else 0)
    sr = cor.sr
    rng = np.random.default_rng([seed, 7])
    n_total = int(round(duration_s * sr))
    y_speech = np.zeros(n_total, np.float32)
    passages = _timeline(rng, duration_s, with_music)
    in_dialogue = np.zeros(n_total, bool)
    for kind, a, b in passages:
        if kind != "dialogue":
            continue
        ia, ib = int(round(a * sr)), int(round(b * sr))
        # a scene: one source's voices (one language and band), drawn by sqrt(hours); lines with pauses
        lines = srcs[wide[int(rng.choice(len(wide), p=hours / hours.sum()))]]
        plan = plan_dialogue(rng, lines, b - a, lead_in=False)
        y_speech[ia:ib] = render_dialogue(cor, plan, ib - ia)
        in_dialogue[ia:ib] = True
    p_dialogue = float(np.mean(np.square(y_speech[in_dialogue], dtype=np.float64))) if in_dialogue.any() else 0.0
    if p_dialogue > 0:
        y_speech *= np.float32(10 ** (dialogue_dbfs / 20) / math.sqrt(p_dialogue))
        p_dialogue = 10 ** (dialogue_dbfs / 10)
    y_music = np.zeros(n_total, np.float32)
    cues: list[TruthCue] = []
    if with_music:
        spans: list[tuple[float, float, bool]] = [(a, b, True) for k, a, b in passages if k == "music"]
        want = max(1, int(round(duration_s / 600.0 * cues_per_10min))) - len(spans)
        for _ in range(200 * max(want, 1)):
            if want <= 0:
                break
            d = float(rng.uniform(*cue_s))
            a = float(rng.uniform(0, max(0.0, duration_s - d)))
            b = min(duration_s, a + d)
            if all(b + 2.0 <= s or a >= e + 2.0 for s, e, _ in spans):  # >= 2 s apart: cues stay distinct
                spans.append((a, b, False))
                want -= 1
        spans.sort()
        for k, (a, b, only) in enumerate(spans):
            d = b - a
            cands = [r for r in music if r["duration_s"] >= d + 1.0] or music
            tr = cands[int(rng.integers(len(cands)))]
            mid_lo, mid_hi = 0.2 * tr["duration_s"], 0.8 * tr["duration_s"] - d
            if mid_hi < mid_lo:
                mid_lo, mid_hi = 0.0, max(0.0, tr["duration_s"] - d)
            off = round(float(rng.uniform(mid_lo, mid_hi)) * sr) / sr  # on the sample grid: exact truth
            ia, ib = int(round(a * sr)), int(round(b * sr))
            a, b = ia / sr, ib / sr
            piece = cor.crop(tr["id"], int(round(off * sr)), ib - ia)
            lvl = float(rng.uniform(-3.0, 3.0)) if only else float(rng.uniform(*level_db))
            ref = p_dialogue if p_dialogue > 0 else 10 ** (dialogue_dbfs / 10)
            g = math.sqrt(ref * 10 ** (lvl / 10)) / max(_rms(piece), 1e-6)
            fi = float(min(rng.uniform(0.3, 3.0), d / 4))
            fo = float(min(rng.uniform(0.3, 3.0), d / 4))
            env = _fade(ib - ia, int(fi * sr), int(fo * sr))
            y_music[ia:ib] += piece * np.float32(g) * env
            cues.append(TruthCue(tr["id"], round(a, 6), round(b, 6), tr["title"], round(off, 6), round(lvl, 3), only,
                                 seq=k, package=tr["package"], orig_path=tr["orig_path"], fade_in_s=round(fi, 3),
                                 fade_out_s=round(fo, 3)))
    y = y_music + y_speech
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    scale = 0.99 / peak if peak > 0.99 else 1.0
    y *= np.float32(scale)
    from bgmid.audio import write_wav

    name = f"prog_{seed}{'' if with_music else '_nomusic'}"
    if changed:
        y, cues, passages = _air(y, sr, cues, passages, speed, tempo, pitch_semitones)
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0.99:  # resampling and atempo can overshoot the 0.99 peak a little
            y *= np.float32(0.99 / peak)
            scale *= 0.99 / peak
        name += "".join(f"_{k}{v:.6g}" for k, v, one in (("speed", speed, 1.0), ("tempo", tempo, 1.0),
                                                          ("pitch", pitch_semitones, 0.0)) if v != one)
    out = Path(out) if out else cor.root / "programmes" / f"{name}.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, y, sr)
    cue_path = out.with_suffix(".cues.csv")
    tmp = cue_path.with_name(cue_path.name + ".tmp")
    factors = {"speed": speed, "tempo": tempo, "pitch_semitones": pitch_semitones}
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CUE_FIELDS + (tuple(factors) if changed else ()))
        w.writeheader()
        for c in cues:
            w.writerow({**c.to_row(), **({k: f"{v:.10g}" for k, v in factors.items()} if changed else {})})
    os.replace(tmp, cue_path)
    info = {
        "duration_s": duration_s, "sample_rate": sr, "seed": seed, "split": split, "with_music": with_music,
        "dialogue_dbfs": dialogue_dbfs + 20 * math.log10(scale), "scale": scale, "speech_sources": wide,
        "passages": [{"kind": k, "start_s": round(a, 3), "end_s": round(b, 3)} for k, a, b in passages],
        "cues": [c.to_row() for c in cues],
    }
    if changed:
        info.update(factors, aired_duration_s=round(y.size / sr, 6), generated_duration_s=duration_s,
                    duration_s=round(y.size / sr, 6))
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return out, cue_path


def _air(y: np.ndarray, sr: int, cues: list[TruthCue], passages: list[tuple[str, float, float]], speed: float,
         tempo: float, pitch_semitones: float) -> tuple[np.ndarray, list[TruthCue], list[tuple[str, float, float]]]:
    """The finished programme transformed as aired, with its cue and passage times mapped to the aired time line
    (divided by ``speed·tempo``; track offsets unchanged)."""
    from dataclasses import replace

    from bgmid.data import transforms

    if speed != 1.0:
        y = transforms.speed(y, sr, speed)
    if tempo != 1.0:
        y = transforms.tempo(y, sr, tempo)
    if pitch_semitones != 0.0:
        y = transforms.pitch(y, sr, pitch_semitones)
    f = speed * tempo
    cues = [replace(c, start_s=round(c.start_s / f, 6), end_s=round(c.end_s / f, 6),
                    fade_in_s=round(c.fade_in_s / f, 3), fade_out_s=round(c.fade_out_s / f, 3)) for c in cues]
    passages = [(k, a / f, b / f) for k, a, b in passages]
    return y, cues, passages


def read_cue_sheet(path: str | os.PathLike) -> list[TruthCue]:
    """Read a ground-truth cue sheet written by :func:`generate_programme` (:func:`bgmid.cuesheet.read_truth`)."""
    return read_truth(path)


# -- harder programmes (issue 13): the structures real programmes have -------------------------------------

#: Scene kinds of :func:`generate_hard_programme`, each at least once per programme (cycled in a random order).
HARD_SCENES = ("suite", "crossfade", "edit", "sting", "featured", "crowd")


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-power pink-ish noise (1/f power from 20 Hz up, by FFT shaping): an ambience bed."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    spec /= np.sqrt(np.maximum(f, max(1.0, 20.0 * n / 16000.0)))
    y = np.fft.irfft(spec, n).astype(np.float32)
    return y / max(_rms(y), 1e-9)


def _level_curve(n: int, sr: int, parts: list[tuple[int, int, float]], ramp_s: float = 0.5) -> np.ndarray:
    """Amplitude gain (linear) over ``n`` samples from levels (dB) per part ``[a, b)`` (samples from the
    event's start), with ``ramp_s`` linear-in-dB ramps centred on the part boundaries."""
    db = np.zeros(n, np.float64)
    for a, b, lvl in parts:
        db[a:b] = lvl
    r = int(ramp_s * sr / 2)
    for (_, b, l0), (_, _, l1) in zip(parts, parts[1:], strict=False):
        lo, hi = max(0, b - r), min(n, b + r)
        if hi > lo:
            db[lo:hi] = np.linspace(l0, l1, hi - lo)
    return (10 ** (db / 20)).astype(np.float32)


def _plan_hard(rng: np.random.Generator, duration_s: float, music: list[dict]) -> tuple[list, list]:
    """Scenes over ``[0, duration_s)``: speech passages ``(kind, a, b)`` (dialogue, crowd, silence) and music
    events ``{track, a, off, parts: [(a, b, level_db, music_only)], fade_in_s, fade_out_s}`` (times in s)."""
    by_pkg: dict[str, list[dict]] = {}
    for r in music:
        by_pkg.setdefault(r["package"], []).append(r)
    suites = [v for v in by_pkg.values() if len(v) >= 2] or [music]
    order = list(rng.permutation(HARD_SCENES))
    speech: list[tuple[str, float, float]] = []
    events: list[dict] = []

    def offset(tr: dict, need: float) -> float:
        lo, hi = 0.1 * tr["duration_s"], 0.9 * tr["duration_s"] - need
        return float(rng.uniform(lo, hi)) if hi > lo else 0.0

    def ev(tr: dict, a: float, off: float, parts: list, fi: float, fo: float) -> None:
        events.append({"track": tr, "a": a, "off": off, "parts": parts, "fade_in_s": fi, "fade_out_s": fo})

    t, k = 0.0, 0
    while True:
        lead = float(rng.uniform(8, 20))  # dialogue between scenes
        kind = order[k % len(order)]
        k += 1
        a = t + lead
        if kind == "suite":  # cues of one soundtrack back to back, 0-3 s apart, under dialogue
            pool = suites[int(rng.integers(len(suites)))]
            trs = [pool[i] for i in rng.permutation(len(pool))[: int(rng.integers(2, 4))]]
            s = a
            for tr in trs:
                d = float(rng.uniform(8, 25))
                ev(tr, s, offset(tr, d), [(s, s + d, float(rng.uniform(-15, 0)), False)],
                   float(rng.uniform(0.1, 1.0)), float(rng.uniform(0.1, 1.0)))
                s += d + float(rng.uniform(0, 3))
            end = s
            speech.append(("dialogue", t, end))
        elif kind == "crossfade":  # two tracks of one soundtrack, the second fading in as the first fades out
            pool = suites[int(rng.integers(len(suites)))]
            t1, t2 = (pool[i] for i in rng.permutation(len(pool))[:2])
            d1, d2, x = float(rng.uniform(15, 30)), float(rng.uniform(15, 30)), float(rng.uniform(2, 5))
            ev(t1, a, offset(t1, d1), [(a, a + d1, float(rng.uniform(-12, 0)), False)], 0.5, x)
            b = a + d1 - x
            ev(t2, b, offset(t2, d2), [(b, b + d2, float(rng.uniform(-12, 0)), False)], x, 0.5)
            end = b + d2
            speech.append(("dialogue", t, end))
        elif kind == "edit":  # the same track twice with an edit: the position jumps, the music goes on
            tr = music[int(rng.integers(len(music)))]
            d1, d2 = float(rng.uniform(12, 25)), float(rng.uniform(10, 25))
            off1 = offset(tr, d1 + d2 + 30)
            jump = float(rng.choice([-1, 1]) * rng.uniform(8, 30))
            off2 = float(np.clip(off1 + d1 + jump, 0.0, max(0.0, tr["duration_s"] - d2)))
            lvl = float(rng.uniform(-12, -3))
            ev(tr, a, off1, [(a, a + d1, lvl, False)], 0.5, 0.01)
            ev(tr, a + d1, off2, [(a + d1, a + d1 + d2, lvl, False)], 0.01, 0.5)
            end = a + d1 + d2
            speech.append(("dialogue", t, end))
        elif kind == "sting":  # a 3-5 s sting, loud, in a pause of the dialogue
            tr = music[int(rng.integers(len(music)))]
            d = float(rng.uniform(3, 5))
            ev(tr, a, offset(tr, d), [(a, a + d, float(rng.uniform(0, 5)), False)], 0.05, 0.3)
            speech += [("dialogue", t, a - 0.5), ("silence", a - 0.5, a + d + 0.5)]
            end = a + d + 0.5
        elif kind == "featured":  # one cue: under dialogue, alone (featured), under dialogue again
            tr = music[int(rng.integers(len(music)))]
            d1, d2, d3 = float(rng.uniform(10, 20)), float(rng.uniform(8, 15)), float(rng.uniform(10, 20))
            lvl = float(rng.uniform(-12, -6))
            b1, b2, b3 = a + d1, a + d1 + d2, a + d1 + d2 + d3
            ev(tr, a, offset(tr, d1 + d2 + d3),
               [(a, b1, lvl, False), (b1, b2, lvl + 6.0, True), (b2, b3, lvl, False)], 1.0, 1.0)
            speech += [("dialogue", t, b1), ("silence", b1, b2), ("dialogue", b2, b3)]
            end = b3
        else:  # crowd / ambience scene, with music under it half the time
            d = float(rng.uniform(20, 40))
            speech += [("dialogue", t, a), ("crowd", a, a + d)]
            if rng.random() < 0.6:
                tr = music[int(rng.integers(len(music)))]
                m0, md = a + float(rng.uniform(0, 5)), float(rng.uniform(10, d - 5))
                ev(tr, m0, offset(tr, md), [(m0, m0 + md, float(rng.uniform(-10, 0)), False)], 1.0, 1.0)
            end = a + d
        if end > duration_s - 5.0:  # the scene does not fit: drop it and end with dialogue
            n_ev = sum(1 for e in events if e["a"] >= t)
            del events[len(events) - n_ev:]
            speech = [p for p in speech if p[1] < t] + [("dialogue", t, duration_s)]
            break
        t = end
    return speech, events


def generate_hard_programme(
    root: str | os.PathLike | None = None,
    duration_s: float = 300.0,
    seed: int = 0,
    sample_rate: int = 16000,
    split: str = "test",
    out: str | os.PathLike | None = None,
    dialogue_dbfs: float = -23.0,
    wideband_hz: float = 5000.0,
) -> tuple[Path, Path]:
    """A programme built the way real ones are (:data:`HARD_SCENES`, each at least once when the programme is
    long enough, ~300 s): cues of one soundtrack back to back 0-3 s apart, a cross-fade between two of them,
    the same track twice with an edit (the position jumps, the music goes on), 3-5 s stings in pauses, a cue
    under dialogue with a music-only (featured) passage inside, and a crowd/ambience scene (6 voices of babble
    over pink noise) with music under it. Dialogue fills the time between scenes.

    The cue sheet has one row per *part*: an edit gives two rows of the track that touch, a cue with a featured
    passage three rows (background, ``music_only``, background) with continuous track offsets; scoring joins
    rows of one track that touch (:func:`bgmid.cuesheet.merge_truth`), per-part usage reads them as written.
    Levels as :func:`generate_programme`'s (relative to the mean dialogue power; crowd scenes are not dialogue).
    Writes WAV, ``.cues.csv`` and ``.json`` (passages with kinds ``dialogue``, ``crowd``, ``silence``).
    """
    cor, music, srcs, wide, hours = _sources(root, sample_rate, split, seed, wideband_hz, 2)
    sr = cor.sr
    rng = np.random.default_rng([seed, 13])
    passages, events = _plan_hard(rng, duration_s, music)
    n_total = int(round(duration_s * sr))

    def voice(length_s: float, n: int, lead_in: bool) -> np.ndarray:
        lines = srcs[wide[int(rng.choice(len(wide), p=hours / hours.sum()))]]
        return render_dialogue(cor, plan_dialogue(rng, lines, length_s, lead_in=lead_in), n)

    y_speech = np.zeros(n_total, np.float32)
    in_dialogue = np.zeros(n_total, bool)
    for kind, a, b in passages:
        ia, ib = int(round(a * sr)), min(n_total, int(round(b * sr)))
        if kind == "dialogue" and ib > ia:
            y_speech[ia:ib] = voice(b - a, ib - ia, False)
            in_dialogue[ia:ib] = True
    p_dialogue = float(np.mean(np.square(y_speech[in_dialogue], dtype=np.float64))) if in_dialogue.any() else 0.0
    y_speech *= np.float32(10 ** (dialogue_dbfs / 20) / math.sqrt(max(p_dialogue, 1e-12)))
    ref = 10 ** (dialogue_dbfs / 10)
    for kind, a, b in passages:  # crowd scenes: babble at -3 dB and ambience at -12 dB re dialogue
        ia, ib = int(round(a * sr)), min(n_total, int(round(b * sr)))
        if kind == "crowd" and ib > ia:
            babble = sum(voice(b - a, ib - ia, True) * np.float32(10 ** (rng.uniform(-4, 4) / 20)) for _ in range(6))
            babble *= np.float32(math.sqrt(ref * 10 ** (-3 / 10)) / max(_rms(babble), 1e-9))
            amb = _pink(rng, ib - ia) * np.float32(math.sqrt(ref * 10 ** (-12 / 10)))
            y_speech[ia:ib] += (babble + amb) * _fade(ib - ia, int(0.5 * sr), int(0.5 * sr))
    y_music = np.zeros(n_total, np.float32)
    cues: list[TruthCue] = []
    for e in sorted(events, key=lambda e: e["a"]):
        tr, parts = e["track"], e["parts"]
        ia, ib = int(round(parts[0][0] * sr)), min(n_total, int(round(parts[-1][1] * sr)))
        off = round(e["off"] * sr) / sr
        piece = cor.crop(tr["id"], int(round(off * sr)), ib - ia)
        g0 = math.sqrt(ref) / max(_rms(piece), 1e-6)
        curve = _level_curve(ib - ia, sr, [(int(round(p0 * sr)) - ia, int(round(p1 * sr)) - ia, lv)
                                           for p0, p1, lv, _ in parts])
        env = _fade(ib - ia, int(e["fade_in_s"] * sr), int(e["fade_out_s"] * sr))
        y_music[ia:ib] += piece * np.float32(g0) * curve * env
        for j, (p0, p1, lv, only) in enumerate(parts):
            cues.append(TruthCue(tr["id"], round(p0, 6), round(min(p1, duration_s), 6), tr["title"],
                                 round(off + (p0 - parts[0][0]), 6), round(lv, 3), only, package=tr["package"],
                                 orig_path=tr["orig_path"], fade_in_s=e["fade_in_s"] if j == 0 else 0.0,
                                 fade_out_s=e["fade_out_s"] if j == len(parts) - 1 else 0.0))
    cues.sort(key=lambda c: (c.start_s, c.track))
    for i, c in enumerate(cues):
        c.seq = i
    y = y_music + y_speech
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    scale = 0.99 / peak if peak > 0.99 else 1.0
    y *= np.float32(scale)
    from bgmid.audio import write_wav

    out = Path(out) if out else cor.root / "programmes" / f"hard_{seed}.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, y, sr)
    cue_path = out.with_suffix(".cues.csv")
    tmp = cue_path.with_name(cue_path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CUE_FIELDS)
        w.writeheader()
        for c in cues:
            w.writerow(c.to_row())
    os.replace(tmp, cue_path)
    out.with_suffix(".json").write_text(json.dumps({
        "duration_s": duration_s, "sample_rate": sr, "seed": seed, "split": split, "structure": "hard",
        "dialogue_dbfs": dialogue_dbfs + 20 * math.log10(scale), "scale": scale, "speech_sources": wide,
        "passages": [{"kind": k, "start_s": round(a, 3), "end_s": round(b, 3)} for k, a, b in passages],
        "scenes": [{"track_id": e["track"]["id"], "start_s": round(e["parts"][0][0], 3),
                    "end_s": round(e["parts"][-1][1], 3)} for e in events],
        "cues": [c.to_row() for c in cues],
    }, indent=1))
    return out, cue_path
