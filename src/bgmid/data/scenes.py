"""Real scenes for the non-music stem: crowd babble, effects and ambience, room reverberation, level and EQ.

The separators were trained on clean dialogue over music, and they fail where broadcast audio is not clean: a
crowd (six voices at the dialogue's level over -10 dB music) was identified in 10 % of clips. Real scenes have
crowds, rooms, traffic and effects, and all of that is "not music" to bgmid: it belongs to the speech stem the
separator removes. These are the building blocks; :class:`bgmid.data.mixing.MixtureDataset` draws them per
training example (its ``scene`` setting, :class:`SceneConfig`).

Every function is pure numpy: it takes float32 arrays at ``sr`` Hz and a ``numpy.random.Generator`` where
it draws, returns a new float32 array of the same length as its main input, and changes nothing in place.
Units: seconds (``_s``), Hz (``_hz``), dB (``_db``; powers as mean squares), samples (``n``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SceneConfig",
    "rms",
    "babble",
    "place_effects",
    "room_ir",
    "reverberate",
    "rt60_of",
    "eq_gain_db",
    "equalise",
    "level_ramp",
]


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (float; 1e-15 for silence, so divisions stay finite)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-30))


@dataclass(frozen=True)
class SceneConfig:
    """How often and how strongly each part of a scene is drawn for one training example.

    Levels of babble and effects are relative to the dialogue's power over the example (dB); with no dialogue
    in the example they are relative to -20 dBFS. ``p_*`` are probabilities per example.
    """

    p_babble: float = 0.3  #: a crowd of several other voices
    babble_voices: tuple[int, int] = (3, 8)  #: voices in a crowd (inclusive range)
    babble_db: tuple[float, float] = (-9.0, 3.0)  #: crowd power re the dialogue's (dB)
    p_effects: float = 0.3  #: sound effects / ambience from the effects set (``bgmid data effects``)
    effects_count: tuple[int, int] = (1, 4)  #: effects per example (inclusive range)
    effects_db: tuple[float, float] = (-15.0, 0.0)  #: each effect's power re the dialogue's, while it plays
    p_reverb: float = 0.4  #: room reverberation on the dialogue (and the crowd)
    rt60_s: tuple[float, float] = (0.2, 1.2)  #: reverberation time (s to decay by 60 dB)
    drr_db: tuple[float, float] = (-3.0, 12.0)  #: direct-to-reverberant power ratio (dB)
    p_eq: float = 0.5  #: a random EQ on the speech stem (and, independently, on the music)
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)  #: spectral tilt around 1 kHz
    bell_db: tuple[float, float] = (-9.0, 9.0)  #: one peaking band's gain
    p_level_ramp: float = 0.3  #: a slow level change of the speech stem across the example
    ramp_db: tuple[float, float] = (-6.0, 6.0)  #: level change from start to end (dB)


def babble(voices: Sequence[np.ndarray], rng: np.random.Generator, spread_db: float = 4.0) -> np.ndarray:
    """A crowd: the sum of ``voices`` (same length), each at unit power times a random gain of +-``spread_db``
    dB, scaled to unit power. Silent voices add nothing."""
    n = len(voices[0]) if voices else 0
    y = np.zeros(n, np.float64)
    for v in voices:
        r = rms(v)
        if r > 1e-6:
            y += np.asarray(v, np.float64) / r * 10 ** (rng.uniform(-spread_db, spread_db) / 20)
    r = rms(y)
    return (y / r if r > 1e-6 else y).astype(np.float32)


def place_effects(effects: Sequence[np.ndarray], n: int, rng: np.random.Generator, sr: int,
                  fade_s: float = 0.01) -> list[tuple[int, np.ndarray]]:
    """Each effect placed at a random start in ``[−len/2, n)`` samples (so some start before the example and are
    cut), cropped to ``n`` samples, with ``fade_s`` linear fades at cut edges (no clicks): ``(start, piece)`` with
    ``piece`` at the effect's own level. Effects longer than ``n`` samples are cropped at a random point."""
    out = []
    f = max(1, int(fade_s * sr))
    for e in effects:
        e = np.asarray(e, np.float32)
        if e.size > n:
            a = int(rng.integers(0, e.size - n + 1))
            e = e[a : a + n].copy()
            e[:f] *= np.linspace(0, 1, min(f, e.size), dtype=np.float32)
            e[-f:] *= np.linspace(1, 0, min(f, e.size), dtype=np.float32)
            start = 0
        else:
            start = int(rng.integers(-(e.size // 2), n))
        lo, hi = max(0, start), min(n, start + e.size)
        if hi <= lo:
            continue
        piece = e[lo - start : hi - start].copy()
        if start < 0:
            piece[:f] *= np.linspace(0, 1, min(f, piece.size), dtype=np.float32)
        if start + e.size > n:
            piece[-f:] *= np.linspace(1, 0, min(f, piece.size), dtype=np.float32)
        out.append((lo, piece))
    return out


def room_ir(rng: np.random.Generator, sr: int, rt60_s: float, drr_db: float, predelay_s: float = 0.004,
            length_s: float | None = None) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path at sample 0, then after ``predelay_s`` Gaussian
    noise decaying exponentially by 60 dB in ``rt60_s`` seconds (amplitude ``exp(-6.91 t / rt60)``), low-passed
    slightly more as it decays (air and wall absorption), scaled so the direct-to-reverberant power ratio is
    ``drr_db``. Length ``length_s`` (default ``rt60_s``, where the tail is 60 dB down)."""
    n = max(2, int(round((length_s if length_s is not None else rt60_s) * sr)))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.907755 * t / max(rt60_s, 1e-3))
    # frequency-dependent decay: a one-pole low-pass whose smoothing grows along the tail
    alpha = np.clip(0.1 + 0.6 * t / max(rt60_s, 1e-3), 0.0, 0.9)
    sm = np.empty(n)
    acc = 0.0
    for i in range(n):  # n ~ sr * rt60 (<= 20k samples): a plain loop is fast enough and exact
        acc = alpha[i] * acc + (1 - alpha[i]) * tail[i]
        sm[i] = acc
    sm[: int(round(predelay_s * sr)) + 1] = 0.0
    p = float(np.sum(sm**2))
    if p > 0:
        sm *= math.sqrt(10 ** (-drr_db / 10) / p)
    sm[0] = 1.0
    return sm.astype(np.float32)


def reverberate(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``ir`` (FFT), cut to ``x``'s length: the direct path stays time-aligned with ``x``
    (``ir[0]`` is the direct path), the tail runs on until the end of the example."""
    from scipy.signal import fftconvolve

    return fftconvolve(np.asarray(x, np.float64), np.asarray(ir, np.float64))[: len(x)].astype(np.float32)


def rt60_of(ir: np.ndarray, sr: int, from_db: float = -5.0, to_db: float = -25.0) -> float:
    """Reverberation time (s) of an impulse response by Schroeder backward integration of its tail (the direct
    path at sample 0 excluded): the slope between ``from_db`` and ``to_db`` of the energy decay curve,
    extrapolated to 60 dB (T20 by default)."""
    tail = np.asarray(ir[1:], np.float64) ** 2
    edc = np.cumsum(tail[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
    i0 = int(np.argmax(edc_db <= from_db))
    i1 = int(np.argmax(edc_db <= to_db))
    if i1 <= i0:
        return 0.0
    slope = (edc_db[i1] - edc_db[i0]) / ((i1 - i0) / sr)  # dB per second (negative)
    return float(-60.0 / slope)


def eq_gain_db(freqs_hz: np.ndarray, tilt_db_per_octave: float, bell_hz: float, bell_db: float,
               bell_octaves: float = 1.0, pivot_hz: float = 1000.0) -> np.ndarray:
    """Gain (dB) at ``freqs_hz`` of a smooth EQ: a tilt of ``tilt_db_per_octave`` around ``pivot_hz`` (limited to
    +-12 dB) plus a Gaussian-in-log-frequency bell of ``bell_db`` at ``bell_hz`` with ``bell_octaves`` width (std)."""
    f = np.maximum(np.asarray(freqs_hz, np.float64), 20.0)
    octaves = np.log2(f / pivot_hz)
    tilt = np.clip(tilt_db_per_octave * octaves, -12.0, 12.0)
    bell = bell_db * np.exp(-0.5 * (np.log2(f / bell_hz) / bell_octaves) ** 2)
    return tilt + bell


def equalise(x: np.ndarray, sr: int, tilt_db_per_octave: float, bell_hz: float, bell_db: float,
             bell_octaves: float = 1.0) -> np.ndarray:
    """``x`` through :func:`eq_gain_db`'s EQ, zero-phase (an FFT gain on the signal padded by a quarter of its
    length on each side, so the circular wrap lands in the padding), same length, power restored to ``x``'s
    (an EQ changes the colour here, :func:`level_ramp` and the SNR draw change the level)."""
    x = np.asarray(x, np.float64)
    pad = max(1, x.size // 4)
    xp = np.pad(x, pad, mode="reflect") if x.size > pad else np.pad(x, pad)
    spec = np.fft.rfft(xp)
    f = np.fft.rfftfreq(xp.size, 1.0 / sr)
    y = np.fft.irfft(spec * 10 ** (eq_gain_db(f, tilt_db_per_octave, bell_hz, bell_db, bell_octaves) / 20), xp.size)
    y = y[pad : pad + x.size]
    r = rms(y)
    return (y * (rms(x) / r) if r > 1e-12 else y).astype(np.float32)


def level_ramp(x: np.ndarray, start_db: float, end_db: float) -> np.ndarray:
    """``x`` with a gain that moves linearly in dB from ``start_db`` at the first sample to ``end_db`` at the last
    (a speaker walking away, a fader move)."""
    db = np.linspace(start_db, end_db, len(x))
    return (np.asarray(x, np.float64) * 10 ** (db / 20)).astype(np.float32)
