"""Landmark fingerprints: spectral peaks paired into hashes (Wang 2003; Ellis' audfprint).

Pipeline, all vectorised numpy:

1. :func:`spectrogram` -- log-magnitude STFT (Hann window) of mono audio at the preset's sample rate.
2. :func:`find_peaks` -- local maxima of the log spectrogram within a time-frequency neighbourhood that also
   stand out from their surroundings (an adaptive threshold: the local mean over a wider area), thinned to the
   wanted density by keeping the most prominent peaks in each one-second block. Peaks survive additive noise
   and speech far better than any other spectral feature, which is why the method works at all under dialogue.
3. :func:`pair_peaks` -- each anchor peak is paired with the next ``fanout`` peaks inside its target zone
   (1..dt_max frames later, within +-df_max bins); a pair's hash packs (anchor bin, bin difference, frame
   difference), and the anchor's frame is the pair's time. Matching later counts hashes that agree on the time
   offset between query and reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from bgmid.fingerprint.presets import Preset

__all__ = ["Landmarks", "spectrogram", "find_peaks", "pair_peaks", "fingerprint", "hash_bits"]


@dataclass(frozen=True)
class Landmarks:
    """Hashes and their anchor times (STFT frames at the preset's hop) of one signal."""

    hashes: np.ndarray  #: uint32
    times: np.ndarray  #: int32, frames; seconds = times * preset.frame_s

    def __len__(self) -> int:
        return int(self.hashes.size)


def _bits(n: int) -> int:
    return max(1, int(np.ceil(np.log2(max(2, n)))))


def hash_bits(preset: Preset) -> tuple[int, int, int]:
    """Bits used for (anchor bin, bin difference, frame difference) in a hash of ``preset``."""
    n_bins = preset.n_fft // 2 + 1
    return _bits(n_bins), _bits(2 * preset.df_max + 1), _bits(preset.dt_max + 1)


def spectrogram(x: np.ndarray, preset: Preset) -> np.ndarray:
    """Log-magnitude STFT, shape (frames, bins), natural-log units.

    ``x`` is mono float audio at ``preset.sample_rate`` Hz. Frames start every ``preset.hop`` samples
    (frame ``t`` covers samples ``t*hop .. t*hop+n_fft``); no centre padding, so frame times are exact.
    """
    x = np.asarray(x, dtype=np.float32)
    n_fft, hop = preset.n_fft, preset.hop
    if x.size < n_fft:
        return np.zeros((0, n_fft // 2 + 1), np.float32)
    frames = sliding_window_view(x, n_fft)[::hop]
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    mag = np.abs(np.fft.rfft(frames * win, axis=1)).astype(np.float32)
    # a floor relative to the loudest bin: silence and digital zeros produce no spurious peaks
    floor = max(float(mag.max()) * 1e-4, 1e-7)
    return np.log(np.maximum(mag, floor))


def find_peaks(
    logspec: np.ndarray,
    preset: Preset,
    density: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick landmark peaks from a log spectrogram; return (frames, bins) sorted by frame then bin.

    ``density`` is the number of peaks kept per second (default: the preset's). A peak must be the maximum
    of its (2*peak_freq_radius+1) x (2*peak_time_radius+1) neighbourhood and exceed the local mean of a wider
    area; of those, each one-second block keeps its ``density`` most prominent.
    """
    n_frames, n_bins = logspec.shape
    if n_frames == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    density = preset.density if density is None else density
    lo = int(np.ceil(preset.fmin_hz * preset.n_fft / preset.sample_rate))
    hi = n_bins if preset.fmax_hz is None else int(preset.fmax_hz * preset.n_fft / preset.sample_rate) + 1
    s = logspec[:, lo:hi]
    size = (2 * preset.peak_time_radius + 1, 2 * preset.peak_freq_radius + 1)
    local_max = ndimage.maximum_filter(s, size=size, mode="nearest")
    background = ndimage.uniform_filter(s, size=(4 * size[0] + 1, 4 * size[1] + 1), mode="nearest")
    prominence = s - background
    is_peak = (s == local_max) & (prominence > 0.0)
    # a flat floor (silence) is its own local maximum everywhere: require real energy above the floor
    is_peak &= s > s.min() + 1e-3
    t, f = np.nonzero(is_peak)
    if t.size == 0:
        return t.astype(np.int32), f.astype(np.int32)
    score = prominence[t, f]
    frames_per_block = max(1, int(round(preset.sample_rate / preset.hop)))
    per_block = max(1, int(round(density * frames_per_block * preset.hop / preset.sample_rate)))
    block = t // frames_per_block
    order = np.lexsort((-score, block))
    block_sorted = block[order]
    first = np.searchsorted(block_sorted, block_sorted, side="left")
    rank = np.arange(order.size) - first
    keep = order[rank < per_block]
    t, f = t[keep], f[keep] + lo
    order = np.lexsort((f, t))
    return t[order].astype(np.int32), f[order].astype(np.int32)


def pair_peaks(
    t: np.ndarray, f: np.ndarray, preset: Preset, fanout: int | None = None
) -> Landmarks:
    """Pair each anchor peak with up to ``fanout`` later peaks in its target zone and hash the pairs.

    Peaks must be sorted by frame. Candidates are the next ``4 * fanout`` peaks in time order, so the pairs
    come from the earliest peaks of the zone, as in audfprint.
    """
    fanout = preset.fanout if fanout is None else fanout
    n = t.size
    if n < 2:
        return Landmarks(np.zeros(0, np.uint32), np.zeros(0, np.int32))
    window = min(n - 1, 4 * fanout)
    i = np.arange(n)[:, None]
    j = i + np.arange(1, window + 1)[None, :]
    inside = j < n
    jc = np.minimum(j, n - 1)
    dt = t[jc] - t[:, None]
    df = f[jc] - f[:, None]
    valid = inside & (dt >= 1) & (dt <= preset.dt_max) & (np.abs(df) <= preset.df_max)
    valid &= np.cumsum(valid, axis=1) <= fanout
    ii, kk = np.nonzero(valid)
    f1 = f[ii].astype(np.uint32)
    d_f = (df[ii, kk] + preset.df_max).astype(np.uint32)
    d_t = dt[ii, kk].astype(np.uint32)
    _, bdf, bdt = hash_bits(preset)
    hashes = (f1 << np.uint32(bdf + bdt)) | (d_f << np.uint32(bdt)) | d_t
    return Landmarks(hashes.astype(np.uint32), t[ii].astype(np.int32))


def fingerprint(
    x: np.ndarray,
    preset: Preset,
    density_factor: float = 1.0,
    fanout_factor: float = 1.0,
) -> Landmarks:
    """Landmark hashes of mono audio ``x`` at ``preset.sample_rate``.

    Indexing uses the defaults. Queries may use more peaks (``density_factor`` > 1) and more pairs per anchor
    (``fanout_factor``) so that the reference's sparser pairs are among theirs despite noise.
    """
    spec = spectrogram(x, preset)
    t, f = find_peaks(spec, preset, density=preset.density * density_factor)
    return pair_peaks(t, f, preset, fanout=int(round(preset.fanout * fanout_factor)))
