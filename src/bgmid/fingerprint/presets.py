"""Fingerprint parameter sets. ``p1`` and ``p2`` are the reference paper's; the rest are ours.

A preset fixes everything that must be identical between indexing and querying (sample rate, STFT, peak
picking, pairing). Query-only knobs (analysis shifts, density boost) live in :class:`QueryOptions` so one
index serves several query strategies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Preset:
    """Landmark fingerprint parameters (Wang 2003 / Ellis' audfprint)."""

    name: str
    sample_rate: int  #: Hz; audio is resampled to this before the STFT
    n_fft: int  #: STFT window length, samples
    hop: int  #: STFT hop, samples
    density: float = 20.0  #: target spectral peaks per second kept for indexing
    fanout: int = 5  #: pairs formed from each anchor peak
    dt_max: int = 63  #: target zone: max frames between anchor and target peak (>= 1)
    df_max: int = 63  #: target zone: max |frequency-bin difference| between anchor and target
    peak_freq_radius: int = 6  #: a peak is the max within +-this many bins ...
    peak_time_radius: int = 3  #: ... and +-this many frames
    fmin_hz: float = 100.0  #: peaks below this frequency are ignored (hum, rumble)
    fmax_hz: float | None = None  #: peaks above this are ignored (None: Nyquist)

    @property
    def frame_s(self) -> float:
        """Duration of one STFT hop in seconds: the time resolution of offsets."""
        return self.hop / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> Preset:
        return replace(self, **changes)


@dataclass(frozen=True)
class QueryOptions:
    """How a query is analysed; does not change the index."""

    density_factor: float = 2.0  #: query peaks per second relative to the preset's (denser queries match more)
    fanout_factor: float = 2.0  #: query pairs per anchor relative to the preset's (reaches the sparser index pairs)
    shifts: int = 1  #: analysis phases: fingerprint the query this many times at hop/shifts offsets
    min_aligned: int = 0  #: aligned hashes needed to report a match (0: the preset's calibrated default)
    refine_phases: int = 3  #: sub-hop phases tried when the matched track aligns at several offsets (1: off)
    refine_fraction: float = 0.4  #: ... at another offset with at least this share of the best count
    #: when the unaltered query finds nothing, search for speed (+-6 %), tempo (+-5 %) and pitch (+-2
    #: semitones) changes as broadcasts apply them (:mod:`bgmid.alterations`); False: unaltered only
    alterations: bool = True
    #: pairs per anchor in the alteration search, relative to the preset's (settling and verification use
    #: ``fanout_factor``). The search's cost is the ~40 alterations' lookups, in proportion to the pairs; at
    #: 1.0 it costs about half, but on 30 corpus clips at -10 dB it found 27 instead of 30 at speed +4.2 %, 22
    #: instead of 25 at -2 semitones (benchmarks/alterations.py measures it)
    search_fanout_factor: float = 2.0
    #: queries shorter than this (s) are analysed at ``short_density`` times the density and ``short_shifts``
    #: phases: a 5 s cue has less than half the evidence of a 12 s query. On 40 corpus clips of 5 s at -10 dB
    #: (no separator): 1.5x / 2 phases found 26, 2x / 8 phases 35, with no false match on 120 clips of 5 s of
    #: speech or never-indexed music either way; the cost is that of analysing a 40 s query
    short_query_s: float = 8.0
    short_density: float = 2.0
    short_shifts: int = 8


PRESETS: dict[str, Preset] = {
    # audfprint's defaults as used in the paper: 11,025 Hz, 512-point window, hop 256
    "p1": Preset(name="p1", sample_rate=11025, n_fft=512, hop=256),
    # the paper's second set: 16 kHz, 1,024-point window, hop 373
    "p2": Preset(name="p2", sample_rate=16000, n_fft=1024, hop=373),
}

DEFAULT_PRESET = "p1"


def get_preset(name_or_preset: str | Preset) -> Preset:
    """Look up a preset by name (``p1``, ``p2``, ...) or pass a :class:`Preset` through."""
    if isinstance(name_or_preset, Preset):
        return name_or_preset
    try:
        return PRESETS[name_or_preset]
    except KeyError:
        from bgmid.errors import BgmidError

        raise BgmidError(
            f"unknown fingerprint preset {name_or_preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None
