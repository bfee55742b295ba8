"""Broadcast transforms (issue 12): durations, pitches, alignment, loudness and codecs, measured on generated audio."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
from scipy.signal import butter, fftconvolve, sosfilt
from signals import synth_music

from bgmid.data import transforms as T
from bgmid.errors import BgmidError

SR = 16000


def sines(t: np.ndarray) -> np.ndarray:
    """A deterministic function of time (s): three partials, so a resampled copy can be computed exactly."""
    return (0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1330 * t + 1)
            + 0.05 * np.sin(2 * np.pi * 2750 * t + 2)).astype(np.float32)


def tone(freq: float, seconds: float = 4.0, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def dominant_hz(y: np.ndarray, sr: int = SR) -> float:
    """Peak of a zero-padded Hann spectrum with parabolic interpolation."""
    y = y[len(y) // 8 : -len(y) // 8]  # away from the edges
    n = 1 << 20
    mag = np.abs(np.fft.rfft(y * np.hanning(y.size), n))
    k = int(np.argmax(mag))
    a, b, c = np.log(mag[k - 1 : k + 2] + 1e-30)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


def noise(seconds: float, sr: int = SR, seed: int = 7) -> np.ndarray:
    """Band-limited noise with a random 50 ms envelope (a different signal from the module's calibration probe)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = sosfilt(butter(4, [150, 2500], btype="band", fs=sr, output="sos"), rng.standard_normal(n))
    env = np.repeat(rng.uniform(0.1, 1.0, n // (sr // 20) + 1), sr // 20)[:n]
    return (0.1 * x * env).astype(np.float32)


def notes(seconds: float, sr: int = SR, seed: int = 99) -> np.ndarray:
    """Music-like audio that never repeats (random notes and lengths; the module's probe with another seed)."""
    return T._probe(sr, seconds, seed)


def xcorr_lag_ms(y: np.ndarray, x: np.ndarray, sr: int = SR, max_ms: float = 50.0) -> float:
    """Lag (ms) at which ``y`` best matches ``x`` (positive: ``y`` is late)."""
    m = int(max_ms * sr / 1000)
    core = x[m:-m]
    cc = np.correlate(y, core, mode="valid")  # cc[j] = sum y[j + i] core[i]; j = m is no lag
    return (int(np.argmax(cc)) - m) * 1000.0 / sr


def envelope_lag_ms(y: np.ndarray, x: np.ndarray, sr: int = SR, max_ms: float = 60.0) -> float:
    """Lag (ms) between the 10 ms amplitude envelopes of ``y`` and ``x`` (works across a pitch change)."""
    h = np.ones(int(0.01 * sr)) / int(0.01 * sr)
    ey, ex = (fftconvolve(np.abs(v), h, mode="same") for v in (y, x))
    ey, ex = ey - ey.mean(), ex - ex.mean()
    return xcorr_lag_ms(ey, ex, sr, max_ms)


@pytest.mark.parametrize("factor", [25 / 24, 24 / 25, 1.06, 0.94])
def test_speed_is_exact_resampling(factor):
    n = 10 * SR
    x = sines(np.arange(n) / SR)
    y = T.speed(x, SR, factor)
    assert y.dtype == np.float32 and y.size == round(n / factor)
    assert abs(y.size * factor / n - 1) < 0.005
    # output sample i is input time i·factor/sr, with no delay: compare with the function itself
    want = sines(np.arange(y.size) * factor / SR)
    core = slice(SR // 2, y.size - SR // 2)
    assert np.max(np.abs(y[core] - want[core])) < 2e-3
    f0 = dominant_hz(T.speed(tone(1000.0), SR, factor))
    assert f0 / 1000.0 == pytest.approx(factor, rel=0.005)
    assert x[0] == sines(np.zeros(1))[0]  # input untouched


@pytest.mark.parametrize("factor", [1.03, 0.97, 1.05, 0.95])
def test_tempo_changes_duration_keeps_pitch_and_alignment(factor):
    x = notes(12.0)
    y = T.tempo(x, SR, factor)
    assert y.size == round(x.size / factor) and abs(y.size * factor / x.size - 1) < 0.005
    # output time t plays input time factor·t: the median lag of local 100 ms windows within 4 ms, most within
    # 15 ms (the rest are sustained notes that correlate as well one period away)
    lags = T._local_lags(y, x, factor, SR)
    assert lags.size > 20
    assert abs(np.median(lags)) < 0.004 and np.mean(np.abs(lags) < 0.015) > 0.6, lags
    f0 = dominant_hz(T.tempo(tone(1000.0), SR, factor))
    assert f0 == pytest.approx(1000.0, rel=0.005)


def test_tempo_on_music_ends_aligned():
    """A 30 s music-like signal: the last second is where it should be (no drift, output flushed)."""
    x = synth_music(5, 30.0, SR)
    for factor in (1.03, 0.97):
        y = T.tempo(x, SR, factor)
        assert y.size == round(x.size / factor)
        end = y[-2 * SR : -SR]  # output 28..29 s ↔ input factor·(28..29) s
        a = int(round((y.size - 2 * SR) * factor))
        ref = x[a - 800 : a + 800 + end.size]
        cc = np.correlate(ref, end, mode="valid")
        assert abs(int(np.argmax(cc)) - 800) / SR < 0.03  # within the 30 ms WSOLA tolerance


@pytest.mark.parametrize("semitones", [1, -1, 2, -2])
def test_pitch_shifts_frequency_keeps_duration(semitones):
    r = 2 ** (semitones / 12)
    y = T.pitch(tone(1000.0), SR, semitones)
    assert y.size == 4 * SR
    assert dominant_hz(y) / 1000.0 == pytest.approx(r, rel=0.005)
    # timing kept: the envelope of music-like audio lines up with the original's
    x = notes(8.0)
    assert abs(envelope_lag_ms(T.pitch(x, SR, semitones), x)) <= 12.0


@pytest.mark.parametrize("codec", ["aac", "mp3", "opus"])
def test_codec_roundtrip_aligned(codec):
    x = noise(4.0)
    y = T.codec_roundtrip(x, SR, codec, 64000)
    assert y.size == x.size and y.dtype == np.float32
    assert abs(xcorr_lag_ms(y, x)) <= 0.1  # priming samples removed: lag 0 (measured by cross-correlation)
    snr = 10 * math.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y).astype(np.float64) ** 2))
    assert snr > 8.0, snr  # lossy, but the same audio
    with pytest.raises(BgmidError):
        T.codec_roundtrip(x, SR, "wma")


def ebur128_lufs(x: np.ndarray, sr: int) -> float:
    """ffmpeg's own integrated loudness (the ebur128 filter's metadata), an independent measurement."""
    import av

    g = av.filter.Graph()
    src = g.add_abuffer(format="flt", sample_rate=sr, layout="mono")
    f = g.add("ebur128", "metadata=1")
    sink = g.add("abuffersink")
    src.link_to(f)
    f.link_to(sink)
    g.configure()
    last = None

    def pull():
        nonlocal last
        while True:
            try:
                fr = sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            last = fr.metadata.get("lavfi.r128.I", last)

    for i in range(0, x.size, 4096):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i : i + 4096], np.float32), format="flt",
                                        layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = sr, i, fractions.Fraction(1, sr)
        src.push(fr)
        pull()
    src.push(None)
    pull()
    return float(last)


def test_loudness_measurement():
    # BS.1770: a 997 Hz sine at amplitude 0.1 (-20 dBFS peak) reads -23.0 LUFS at 48 kHz (K-weighting ~ 0 dB there)
    s = (0.1 * np.sin(2 * np.pi * 997 * np.arange(5 * 48000) / 48000)).astype(np.float32)
    assert T.loudness_lufs(s, 48000) == pytest.approx(-23.0, abs=0.1)
    for sr in (16000, 48000):
        x = synth_music(1, 10.0, sr)
        assert T.loudness_lufs(x, sr) == pytest.approx(ebur128_lufs(x, sr), abs=0.3)
    assert T.loudness_lufs(np.zeros(SR, np.float32), SR) == -math.inf
    y = T.normalize_loudness(x, 48000, -30.0)
    assert T.loudness_lufs(y, 48000) == pytest.approx(-30.0, abs=0.01)


def test_broadcast_chain_alignment_loudness_processing():
    rng = np.random.default_rng(3)
    x = synth_music(2, 12.0, SR) + 0.03 * np.sin(2 * np.pi * 40 * np.arange(12 * SR) / SR).astype(np.float32)
    x[: 6 * SR] *= 0.1  # a quiet half then a loud one (20 dB apart)
    x += 1e-4 * rng.standard_normal(x.size).astype(np.float32)
    y = T.broadcast_chain(x, SR)
    assert y.size == x.size and y.dtype == np.float32
    # alignment: cross-correlation lag of processed vs original within 2 ms (on the high-passed original)
    hp = sosfilt(butter(2, 80, btype="high", fs=SR, output="sos"), x).astype(np.float32)
    assert abs(xcorr_lag_ms(y, hp)) <= 2.0
    # -23 LUFS within 1 LU, by our measurement and by ffmpeg's
    assert T.loudness_lufs(y, SR) == pytest.approx(-23.0, abs=1.0)
    assert ebur128_lufs(y, SR) == pytest.approx(-23.0, abs=1.0)

    def band_db(v, lo, hi):
        p = np.abs(np.fft.rfft(v)) ** 2
        f = np.fft.rfftfreq(v.size, 1 / SR)
        return 10 * np.log10(p[(f >= lo) & (f < hi)].sum() / p.sum())

    assert band_db(y, 30, 50) < band_db(x, 30, 50) - 6  # the 40 Hz hum is cut by the high-pass
    # the compressor narrows the 20 dB gap between the quiet and the loud half
    gap = 20 * np.log10(np.sqrt(np.mean(y[7 * SR :] ** 2)) / np.sqrt(np.mean(y[SR : 5 * SR] ** 2)))
    assert gap < 17.0, gap
    assert not np.shares_memory(y, x)


def test_ffmpeg_filter_generic_and_checked():
    x = noise(2.0)
    y = T.ffmpeg_filter(x, SR, [("volume", "0.5")])
    np.testing.assert_allclose(y, 0.5 * x, atol=1e-6)
    assert T.ffmpeg_filter(np.zeros(0, np.float32), SR, [("volume", "2")]).size == 0
    with pytest.raises(BgmidError):
        T.ffmpeg_filter(x, SR, [("asetrate", "20000")])  # leaves the rate changed
    with pytest.raises(BgmidError):
        T.speed(np.zeros((2, 10), np.float32), SR, 1.1)


def test_conditions_registry():
    names = list(T.CONDITIONS)
    for want in ("speed+4.2", "speed-4", "speed+6", "speed-6", "tempo+3", "tempo-3", "tempo+5", "pitch+1",
                 "pitch-1", "pitch+2", "pitch-2", "broadcast", "aac64", "short5"):
        assert want in names
    c = T.get_condition("speed+4.2")
    assert c.speed == pytest.approx(25 / 24) and c.tempo == 1.0 and c.pitch_semitones == 0.0
    assert c.snrs_db == (0.0, -10.0) and c.time_factor == pytest.approx(25 / 24)
    assert T.get_condition("speed-4").speed == pytest.approx(0.96)
    assert T.get_condition("tempo-3").tempo == pytest.approx(0.97) and T.get_condition("tempo-3").speed == 1.0
    assert T.get_condition("pitch-2").pitch_semitones == -2.0 and T.get_condition("pitch-2").time_factor == 1.0
    assert T.get_condition("short5").excerpt_s == 5.0 and T.get_condition("short5").func is None
    assert T.get_condition("broadcast").speech_negatives
    x = noise(3.0)
    assert T.get_condition("tempo+5").apply(x, SR).size == round(x.size / 1.05)
    assert T.get_condition("aac64").apply(x, SR).size == x.size
    with pytest.raises(BgmidError, match="known"):
        T.get_condition("speed+99")
