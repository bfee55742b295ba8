"""Faithfully generated test audio: music-like note sequences, speech-like babble, and encoders.

Real corpus audio is used by the benchmarks; unit tests must run on a fresh clone without downloads, so they
use signals with the properties the fingerprinter relies on (music: stable harmonic partials with onsets;
speech: voiced harmonics gliding in pitch under moving formants, syllable-rate on/off).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synth_music(seed: int, duration_s: float, sr: int = 22050) -> np.ndarray:
    """A melody with chords and percussion: random notes from a scale, harmonics, ADSR, noise hits."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    out = np.zeros(n, np.float32)
    t_pos = 0.0
    scale = np.array([0, 2, 3, 5, 7, 8, 10])
    base = rng.uniform(90.0, 220.0)  # every piece its own tuning, tempo and timbre
    beat = rng.uniform(0.09, 0.2)
    partials = rng.uniform(0.1, 1.0, 8) / np.arange(1, 9)
    while t_pos < duration_s:
        dur = beat * float(rng.choice([1, 2, 2, 3, 4, 6]))
        start = int(t_pos * sr)
        m = min(int(dur * sr), n - start)
        if m <= 0:
            break
        t = np.arange(m) / sr
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.5, 6.0))
        for voice in range(int(rng.integers(1, 4))):
            deg = int(rng.integers(0, 14))
            f0 = base * 2 ** ((scale[deg % 7] + 12 * (deg // 7) + 12 * voice) / 12)
            for h in range(1, 9):
                if f0 * h < sr / 2:
                    ph = rng.uniform(0, 6.3)
                    out[start:start + m] += 0.3 * partials[h - 1] * env * np.sin(2 * np.pi * f0 * h * t + ph)
        if rng.random() < 0.4:  # a percussive hit
            k = min(int(0.05 * sr), m)
            out[start:start + k] += 0.3 * rng.standard_normal(k) * np.exp(-np.arange(k) / (0.01 * sr))
        t_pos += dur
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def synth_speech(seed: int, duration_s: float, sr: int = 16000) -> np.ndarray:
    """Speech-like babble: glottal pulse trains with gliding pitch through moving formant resonances."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    f0 = 120 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))  # wandering pitch
    phase = np.cumsum(f0 / sr)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    src += 0.05 * rng.standard_normal(n)  # breath
    out = np.zeros(n)
    seg = int(0.08 * sr)  # formants move every 80 ms
    for s in range(0, n, seg):
        y = src[s:s + seg]
        for fc, bw in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120), (rng.uniform(2500, 3500), 200)):
            r = np.exp(-np.pi * bw / sr)
            a = [1, -2 * r * np.cos(2 * np.pi * fc / sr), r * r]
            out[s:s + seg] += lfilter([1 - r], a, y)
    syll = (np.sin(2 * np.pi * 4.0 * np.arange(n) / sr + rng.uniform(0, 6)) > -0.3).astype(float)
    pauses = np.repeat(rng.random(n // sr + 1) > 0.15, sr)[:n]
    out *= syll * pauses
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def encode(path: str | Path, x: np.ndarray, sr: int, codec: str, fmt: str | None = None, bitrate: int = 128000) -> Path:
    """Encode mono float ``x`` with PyAV (e.g. codec 'libmp3lame', 'aac', 'libopus', 'flac')."""
    from bgmid.data.transforms import encode_mono

    path = Path(path)
    encode_mono(path, np.clip(x, -1, 1), sr, codec, fmt, None if codec in ("flac", "pcm_s16le") else bitrate)
    return path
