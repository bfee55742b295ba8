"""Landmark fingerprinting: presets and the peak/pair/hash pipeline."""

from bgmid.fingerprint.landmarks import Landmarks, find_peaks, fingerprint, pair_peaks, spectrogram
from bgmid.fingerprint.presets import DEFAULT_PRESET, PRESETS, Preset, QueryOptions, get_preset

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "Landmarks",
    "Preset",
    "QueryOptions",
    "find_peaks",
    "fingerprint",
    "get_preset",
    "pair_peaks",
    "spectrogram",
]
