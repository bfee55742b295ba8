"""The query pipeline: audio -> (separation) -> the signals a query analyses -> landmarks -> matches.

One object, :class:`QueryPipeline`, holds what every caller used to wire for itself: the separator (or none),
the fusion rule (which of the mix and the separated music are analysed), the query options and the torch
thread policy of separation. ``bgmid identify`` calls :meth:`QueryPipeline.identify_file`, :class:`bgmid.monitor.
Monitor` analyses each block with :meth:`QueryPipeline.block_landmarks`, and ``bgmid evaluate`` scores cached
separations with :meth:`QueryPipeline.candidates` and condition sets with :meth:`QueryPipeline.identify_stems`:
so a change to how a query is separated, fused or analysed is made here once and reaches all three.

The stages, each usable alone (the evaluation caches the first):

1. :meth:`~QueryPipeline.stems` -- the signal at the pipeline's working rate (the separator's, else the
   preset's) and, with a separator, its music and speech estimates (:func:`bgmid.separation.separate_at`).
2. :meth:`~QueryPipeline.query_signals` -- the stems a query analyses: ``mix`` alone without a separator;
   with one, ``mix`` and ``music`` pooled (``fusion``, the default: votes of the true track add up, chance
   votes do not) or ``music`` alone (the paper's pipeline).
3. :meth:`~QueryPipeline.landmarks` -- their pooled landmarks (:func:`bgmid.match.analyse`).
4. :meth:`~QueryPipeline.identify_stems` -- the calibrated decision with alteration search
   (:meth:`bgmid.match.Matcher.identify`); :meth:`~QueryPipeline.candidates` -- the raw top tracks for
   threshold sweeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from bgmid.audio import resample
from bgmid.fingerprint.landmarks import Landmarks
from bgmid.fingerprint.presets import QueryOptions
from bgmid.index.base import Store
from bgmid.match import Match, Matcher, analyse, pool_landmarks
from bgmid.separation.registry import Separator, separate_at, threaded

__all__ = ["STREAM_QUERY_S", "QueryPipeline"]

#: Query files longer than this (s, as the container declares; unknown counts as long) are streamed in blocks
#: (:meth:`bgmid.match.Matcher.identify_file`): memory stays flat whatever their length. Shorter ones are
#: loaded whole, which skips the refinement phases' analyses when no refinement is needed.
STREAM_QUERY_S = 60.0


@dataclass
class QueryPipeline:
    """Separator, fusion rule, query options and thread policy of one kind of query against ``store``.

    ``threads``: torch intra-op threads while separating (None or 0: torch's own count; monitoring uses 1,
    fastest when cores are shared). ``fusion`` only matters with a separator.
    """

    store: Store
    separator: Separator | None = None
    fusion: bool = True
    options: QueryOptions = field(default_factory=QueryOptions)
    threads: int | None = None
    separator_name: str = ""

    def __post_init__(self) -> None:
        self.preset = self.store.preset
        self.matcher = Matcher(self.store, self.options)
        if not self.separator_name:
            sep = self.separator
            self.separator_name = "none" if sep is None else str(getattr(sep, "name", type(sep).__name__))

    @property
    def sample_rate(self) -> int:
        """The working rate, Hz: audio is read (and separated) at the separator's rate, else at the preset's."""
        return int(self.separator.sample_rate) if self.separator is not None else self.preset.sample_rate

    def inputs(self, stems: dict[str, np.ndarray] | None = None) -> tuple[str, ...]:
        """The stems a query analyses: ``("mix",)`` when nothing was separated, else ``("mix", "music")``
        (fusion) or ``("music",)``. Separated means: ``stems`` holds a music estimate (given stems, e.g. an
        evaluation's cached ones), or, without ``stems``, this pipeline has a separator."""
        separated = self.separator is not None if stems is None else "music" in stems
        if not separated:
            return ("mix",)
        return ("mix", "music") if self.fusion else ("music",)

    # stage 1-3
    def stems(self, x: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        """``{"mix"[, "music", "speech"]}`` of mono ``x`` at ``sr`` Hz, all at :attr:`sample_rate`."""
        mix = resample(np.asarray(x, np.float32), sr, self.sample_rate)
        if self.separator is None:
            return {"mix": mix}
        music, speech = separate_at(self.separator, mix, self.sample_rate, self.threads)
        return {"mix": mix, "music": music, "speech": speech}

    def query_signals(self, stems: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The stems of :meth:`inputs`, at :attr:`sample_rate`."""
        return [stems[k] for k in self.inputs(stems)]

    def landmarks(self, stems: dict[str, np.ndarray], known: dict[str, Landmarks] | None = None) -> Landmarks:
        """Pooled query landmarks of :meth:`inputs`; ``known`` landmarks of a stem (e.g. the mix's, shared by
        every separator an evaluation compares) are used instead of analysing it again (pooling is a set union,
        so the result is the same)."""
        known = known or {}
        parts = [known[k] if k in known else self.stem_landmarks(stems[k]) for k in self.inputs(stems)]
        return parts[0] if len(parts) == 1 else pool_landmarks(parts)

    def stem_landmarks(self, y: np.ndarray) -> Landmarks:
        """Query landmarks of one stem at :attr:`sample_rate` (every analysis phase of the options)."""
        return analyse([resample(y, self.sample_rate, self.preset.sample_rate)], self.preset, self.options)

    def block_landmarks(self, x: np.ndarray) -> tuple[Landmarks, dict[str, np.ndarray]]:
        """Pooled landmarks of a block at :attr:`sample_rate` and its stems (a programme block in
        :class:`bgmid.monitor.Monitor`): one analysis of all inputs, so every phase is computed once."""
        stems = self.stems(x, self.sample_rate)
        ys = [resample(s, self.sample_rate, self.preset.sample_rate) for s in self.query_signals(stems)]
        return analyse(ys, self.preset, self.options), stems

    # stage 4
    def candidates(self, lm: Landmarks, top: int = 2, min_aligned: int | None = None) -> list[Match]:
        """The best tracks for pooled landmarks, without alteration search or refinement (threshold sweeps)."""
        return self.matcher.match_landmarks(lm, top=top, min_aligned=min_aligned)

    def identify_stems(self, stems: dict[str, np.ndarray], top: int = 1) -> list[Match]:
        """The calibrated decision on separated stems (alteration search and short-query density included)."""
        return self.matcher.identify(self.query_signals(stems), self.sample_rate, top=top)

    def identify(self, x: np.ndarray, sr: int, top: int = 1) -> list[Match]:
        """Identify mono ``x`` at ``sr`` Hz: separate (when a separator is set), fuse, decide."""
        return self.identify_stems(self.stems(x, sr), top)

    def identify_file(self, path: str | os.PathLike, top: int = 1) -> list[Match]:
        """Identify a query file of any length: loaded whole up to :data:`STREAM_QUERY_S`, streamed beyond
        (memory stays flat; the separator, when there is one, runs block by block and ``fusion`` applies);
        a streamed query with no match is searched for alterations on its first :data:`STREAM_QUERY_S` s.
        Raises :class:`bgmid.audio.AudioError` for a file that cannot be read."""
        from bgmid.audio import info, load

        duration = info(path).duration_s
        if (duration <= 0 or duration > STREAM_QUERY_S) and (self.separator is None or self.fusion):
            sep = None if self.separator is None else threaded(self.separator, self.threads)
            found = self.matcher.identify_file(path, top=top, separator=sep)
            if found or not self.options.alterations:
                return found
            # nothing as indexed: search alterations on the first STREAM_QUERY_S seconds (a sped-up or
            # transposed recording is altered throughout; the search needs the signal in memory)
            x, sr = load(path, duration_s=STREAM_QUERY_S)
            return self.identify(x, sr, top)
        x, sr = load(path)
        return self.identify(x, sr, top)
