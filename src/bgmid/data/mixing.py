"""The paper's music-speech mixing dataset: on-the-fly training mixtures and fixed 12 s test/validation sets.

SNR convention (paper and whole project): ``SNR = 10·log10(P_music / P_speech)`` in dB over the clip, where
``P`` is the mean power of the component as it is in the mixture. -10 dB means the speech is 10 dB louder
than the music.

Speech is made like broadcast dialogue: spoken lines (one source per dialogue, so one language and one
band) separated by natural pauses (mostly 0.15-1.2 s, sometimes 1.5-4 s), each line with its own small gain
change, instead of wall-to-wall talking. Music comes from random crops of whole tracks.

Everything is read from the corpus cache (memory-mapped int16 ``.npy``), so drawing a training example
costs a few array slices and no decoding.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.data.corpus import audio_path, default_root, ensure_rate, items, load_manifest
from bgmid.errors import BgmidError

__all__ = [
    "Corpus",
    "make_dialogue",
    "speech_gain_for_snr",
    "snr_db",
    "MixtureDataset",
    "build_fixed_sets",
    "load_fixed_set",
    "fixed_set_names",
    "condition_set_names",
    "split_condition",
    "resolve_conditions",
    "source_band_hz",
]

#: A line of speech or a dialogue pause is "speech present" above this level (dBFS).
_ACTIVE_DB = -55.0


def snr_db(music: np.ndarray, speech: np.ndarray) -> float:
    """``10·log10(P_music / P_speech)`` in dB (the paper's SNR), powers as mean squares over the clip."""
    pm = float(np.mean(np.square(music, dtype=np.float64)))
    ps = float(np.mean(np.square(speech, dtype=np.float64)))
    return 10.0 * math.log10((pm + 1e-30) / (ps + 1e-30))


def speech_gain_for_snr(music: np.ndarray, speech: np.ndarray, snr: float) -> float:
    """Linear gain for ``speech`` that makes ``snr_db(music, gain*speech) == snr`` exactly."""
    pm = float(np.mean(np.square(music, dtype=np.float64)))
    ps = float(np.mean(np.square(speech, dtype=np.float64)))
    if ps <= 0.0:
        return 0.0
    return math.sqrt(pm / (ps * 10.0 ** (snr / 10.0)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-30))


class Corpus:
    """Read access to the cache for one sample rate: items by kind/split, memory-mapped samples.

    Memory maps are opened lazily and per process (so a DataLoader's forked workers each open their own).
    """

    def __init__(self, root: str | os.PathLike | None = None, sample_rate: int = 16000):
        self.root = Path(root) if root else default_root()
        self.sr = int(sample_rate)
        self.manifest = load_manifest(self.root)
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # DataLoader workers started with 'spawn' get a pickled copy: send no memory maps (they would be
        # copied as full arrays), each worker reopens its own
        return {**self.__dict__, "_maps": {}}

    def items(self, kind: str | None = None, split: str | None = None) -> list[dict]:
        return items(self.manifest, kind, split)

    def ensure(self, recs: Sequence[dict]) -> None:
        """Create the cache at this sample rate if it is not a stored one (once, then memory-mapped)."""
        ensure_rate(self.root, [r["id"] for r in recs], self.sr, log=print)

    def samples(self, item_id: str) -> np.ndarray:
        """int16 samples of ``item_id`` at this rate (memory-mapped; divide by 32768 for float)."""
        if os.getpid() != self._pid:
            self._maps, self._pid = {}, os.getpid()
        m = self._maps.get(item_id)
        if m is None:
            p = audio_path(self.root, item_id, self.sr)
            if not p.exists():
                ensure_rate(self.root, [item_id], self.sr)
            m = self._maps[item_id] = np.load(p, mmap_mode="r")
        return m

    def crop(self, item_id: str, start: int, n: int) -> np.ndarray:
        """Float32 samples ``[start, start+n)`` of an item, zero-padded past its end."""
        s = self.samples(item_id)
        seg = np.asarray(s[max(0, start) : max(0, start + n)], dtype=np.float32) * (1.0 / 32768.0)
        if seg.size < n:
            seg = np.pad(seg, (0, n - seg.size))
        return seg


def source_band_hz(corpus: Corpus, recs: Sequence[dict], floor_db: float = -50.0, max_items: int = 40,
                   seed: int = 0) -> float:
    """Effective upper band edge (Hz) of a speech source, measured on its 22,050 Hz cache.

    Why not the 99.9 %-energy frequency: speech puts little energy above 4 kHz even when it is wideband.
    Here the edge is the highest frequency at which the average PSD of up to ``max_items`` lines is
    within ``|floor_db|`` dB of its maximum: 16 kbps MP3 (FOTAQ) stops dead near 4 kHz, 16 kHz studio WAV
    reaches 8 kHz, 44.1 kHz OGG reaches 11 kHz (the cache's Nyquist).
    """
    from scipy.signal import welch

    from bgmid.data.corpus import load_item

    rng = np.random.default_rng(seed)
    pick = [recs[i] for i in rng.permutation(len(recs))[:max_items]]
    psd = None
    f = None
    for r in pick:
        x = np.asarray(load_item(corpus.root, r["id"], 22050), dtype=np.float32) / 32768.0
        if x.size < 1024:
            continue
        f, p = welch(x, fs=22050, nperseg=1024)
        psd = p if psd is None else psd + p
    if psd is None or f is None:
        return 0.0
    db = 10 * np.log10(psd + 1e-30)
    above = np.nonzero(db > db.max() + floor_db)[0]
    return float(f[above[-1]]) if above.size else 0.0


# --------------------------------------------------------------------------------------------------
# dialogue


@dataclass(frozen=True)
class Line:
    """One spoken line placed in a clip: item id, start (s, may be < 0 = cut at the clip start), gain (dB)."""

    item_id: str
    start_s: float
    gain_db: float


def _natural_pause_s(rng: np.random.Generator) -> float:
    """A natural pause between lines (s): mostly 0.15-1.2 s turn gaps, sometimes a 1.5-4 s silence."""
    if rng.random() < 0.15:
        return float(rng.uniform(1.5, 4.0))
    return float(np.clip(rng.lognormal(mean=math.log(0.45), sigma=0.5), 0.15, 1.2))


def plan_dialogue(rng: np.random.Generator, lines: Sequence[dict], clip_s: float,
                  lead_in: bool = True, pause: Callable[[np.random.Generator], float] | None = None) -> list[Line]:
    """Lay out spoken lines (from ``lines``, manifest records of one source) over ``clip_s`` seconds.

    With ``lead_in`` the clip starts at a random point of an ongoing dialogue (inside a line or a pause),
    as a crop of a programme would. ``pause`` draws the gap (s) after each line (default: natural pauses,
    mostly 0.15-1.2 s, sometimes 1.5-4 s). Returns the placed lines; rendering is separate so that the same
    plan can be rendered at several sample rates.
    """
    _pause_s = pause or _natural_pause_s
    out: list[Line] = []
    t = 0.0
    if lead_in:
        first = lines[int(rng.integers(len(lines)))]
        t = -float(rng.uniform(0.0, first["duration_s"] + _pause_s(rng)))
        out.append(Line(first["id"], t, float(rng.uniform(-3, 3))))
        t += first["duration_s"] + _pause_s(rng)
    else:
        t = float(rng.uniform(0.0, 0.5))
    while t < clip_s:
        r = lines[int(rng.integers(len(lines)))]
        out.append(Line(r["id"], t, float(rng.uniform(-3, 3))))
        t += r["duration_s"] + _pause_s(rng)
    return out


def render_dialogue(corpus: Corpus, plan: Sequence[Line], n: int) -> np.ndarray:
    """Float32 speech of ``n`` samples at ``corpus.sr`` from a dialogue plan (lines added, not overlapped)."""
    sr = corpus.sr
    y = np.zeros(n, np.float32)
    for ln in plan:
        s = corpus.samples(ln.item_id)
        a = int(round(ln.start_s * sr))
        lo, hi = max(0, a), min(n, a + s.shape[0])
        if hi <= lo:
            continue
        y[lo:hi] += np.asarray(s[lo - a : hi - a], dtype=np.float32) * (10 ** (ln.gain_db / 20) / 32768.0)
    return y


def make_dialogue(corpus: Corpus, rng: np.random.Generator, lines: Sequence[dict], n: int,
                  min_active: float = 0.25, tries: int = 6) -> np.ndarray:
    """``n`` samples of dialogue-like speech with at least ``min_active`` of 50 ms frames speaking
    (retried ``tries`` times; a crop of pure pause would make the SNR undefined)."""
    clip_s = n / corpus.sr
    y = np.zeros(n, np.float32)
    for _ in range(tries):
        y = render_dialogue(corpus, plan_dialogue(rng, lines, clip_s), n)
        if _active(y, corpus.sr) >= min_active:
            return y
    return y


def _active(x: np.ndarray, sr: int) -> float:
    """Fraction of 50 ms frames above -55 dBFS."""
    h = max(1, int(0.05 * sr))
    m = x.size // h
    if m == 0:
        return float(_rms(x) > 10 ** (_ACTIVE_DB / 20))
    e = np.mean(np.square(x[: m * h].reshape(m, h), dtype=np.float64), axis=1)
    return float(np.mean(e > 10 ** (_ACTIVE_DB / 10)))


# --------------------------------------------------------------------------------------------------
# training dataset


def _speech_sources(recs: Sequence[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for r in recs:
        by.setdefault(r["package"], []).append(r)
    return by


class _TorchDataset:  # replaced by torch.utils.data.Dataset when torch is importable
    pass


try:  # torch is a dependency, but the fixed sets and programmes must not need it
    from torch.utils.data import Dataset as _TorchDataset  # type: ignore[no-redef,assignment]
except Exception:  # pragma: no cover
    pass


class MixtureDataset(_TorchDataset):
    """Random music/speech mixtures drawn on the fly, every epoch different (paper: SNR U[-30, 0] dB).

    ``__getitem__(i)`` returns ``(mix, music, speech)``, float32 torch tensors of shape ``(1, length)``
    with ``mix == music + speech`` (up to float rounding) and ``snr_db(music, speech)`` equal to the drawn
    SNR. Draws:

    * SNR uniform in ``snr_db``; with probability ``p_high_snr`` uniform in [0, +20] dB instead, and with
      ``p_music_only`` / ``p_speech_only`` one component is silent. Why: a separator trained on low SNRs
      only never sees clean music and damages it, so its output identifies worse than the raw mix.
    * Music: a track of the split, chosen with probability proportional to its duration (capped at 10 min
      so long ambient pieces do not dominate), a random crop avoiding near-silent stretches.
    * Speech: one source per example, chosen with probability proportional to
      ``sqrt(hours) * (wideband_weight if its band >= wideband_hz)``, then dialogue-like lines with pauses.
      Why: most available speech is 4 kHz-band; broadcast dialogue is wideband.
    * Level: the mixture's RMS uniform in ``level_dbfs`` (gain augmentation), then scaled down if it
      would clip.
    * ``scene`` (:class:`bgmid.data.scenes.SceneConfig`; None: clean dialogue, as before): the non-music stem
      becomes a scene (:meth:`scene_stem`): crowd babble of several other voices, effects and ambience from the
      effects set (``bgmid data effects``; left out when it is not built), room reverberation on the voices,
      a random EQ and a slow level change; the music gets its own random EQ. The SNR is then drawn against
      the whole non-music stem.

    ``seed=None``: fresh randomness per call (use in training). With a seed, item ``i`` is a fixed
    function of ``(seed, epoch, i)``; call :meth:`set_epoch` to get new examples per epoch.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        sample_rate: int = 16000,
        length: int = 16384,
        snr_db: tuple[float, float] = (-30.0, 0.0),
        p_music_only: float = 0.1,
        p_speech_only: float = 0.05,
        p_high_snr: float = 0.15,
        seed: int | None = None,
        epoch_size: int = 10000,
        wideband_weight: float = 4.0,
        wideband_hz: float = 5000.0,
        level_dbfs: tuple[float, float] = (-32.0, -12.0),
        scene=None,
    ):
        self.corpus = Corpus(root, sample_rate)
        self.scene = scene
        self.split = split
        self.sr = int(sample_rate)
        self.length = int(length)
        self.snr_range = (float(snr_db[0]), float(snr_db[1]))
        self.p_music_only, self.p_speech_only, self.p_high_snr = p_music_only, p_speech_only, p_high_snr
        self.seed = seed
        self.epoch = 0
        self.epoch_size = int(epoch_size)
        self.level_dbfs = level_dbfs
        self.music = self.corpus.items("music", split)
        speech = self.corpus.items("speech", split)
        if not self.music or not speech:
            raise BgmidError(
                f"split '{split}' of {self.corpus.root} has {len(self.music)} music tracks and {len(speech)} "
                "speech lines; both are needed. Run 'bgmid data fetch' (a bigger preset) first."
            )
        self.corpus.ensure(self.music + speech)
        dur = np.array([min(r["duration_s"], 600.0) for r in self.music])
        self.music_p = dur / dur.sum()
        self.sources = _speech_sources(speech)
        names = sorted(self.sources)
        w = []
        for name in names:
            recs = self.sources[name]
            band = float(np.median([r["bandwidth_hz"] for r in recs]))
            hours = sum(r["duration_s"] for r in recs) / 3600
            w.append(math.sqrt(hours) * (wideband_weight if band >= wideband_hz else 1.0))
        self.source_names = names
        self.source_p = np.asarray(w) / np.sum(w)
        self.effects: list[np.ndarray] = []
        if scene is not None and scene.p_effects > 0:
            from bgmid.data.effects import has_effects, load_effects

            if has_effects(self.corpus.root):
                self.effects = [e for e in load_effects(self.corpus.root, split, self.sr) if e.size > 0]

    def __len__(self) -> int:
        return self.epoch_size

    def set_epoch(self, epoch: int) -> None:
        """With a fixed seed, change the examples drawn (the DataLoader sampler's epoch)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    def _music_crop(self, rng: np.random.Generator) -> np.ndarray:
        n = self.length
        x = np.zeros(n, np.float32)
        for _ in range(8):
            r = self.music[int(rng.choice(len(self.music), p=self.music_p))]
            total = self.corpus.samples(r["id"]).shape[0]
            start = int(rng.integers(0, max(1, total - n)))
            x = self.corpus.crop(r["id"], start, n)
            if _rms(x) > 10 ** (-45 / 20):
                return x
        return x

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """One (music, speech, snr) draw as numpy float32 arrays, levels already applied.

        ``snr`` is ``+inf`` for music-only and ``-inf`` for speech-only examples.
        """
        u = rng.random()
        music_on = u >= self.p_speech_only
        speech_on = u < self.p_speech_only or u >= self.p_speech_only + self.p_music_only
        n = self.length
        music = self._music_crop(rng) if music_on else np.zeros(n, np.float32)
        if speech_on:
            src = self.sources[self.source_names[int(rng.choice(len(self.source_names), p=self.source_p))]]
            speech = make_dialogue(self.corpus, rng, src, n)
            if self.scene is not None:
                speech = self.scene_stem(rng, speech)
        else:
            speech = np.zeros(n, np.float32)
        if music_on and self.scene is not None and rng.random() < self.scene.p_eq:
            music = self._random_eq(rng, music)
        if music_on and speech_on:
            snr = (float(rng.uniform(0.0, 20.0)) if rng.random() < self.p_high_snr
                   else float(rng.uniform(*self.snr_range)))
            speech = speech * np.float32(speech_gain_for_snr(music, speech, snr))
        else:
            snr = math.inf if music_on else -math.inf
        mix = music + speech
        r = _rms(mix)
        if r > 1e-6:
            g = 10 ** (float(rng.uniform(*self.level_dbfs)) / 20) / r
            peak = float(np.max(np.abs(mix))) * g
            if peak > 0.99:
                g *= 0.99 / peak
            music, speech = music * np.float32(g), speech * np.float32(g)
        return music.astype(np.float32), speech.astype(np.float32), snr

    def _random_eq(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        from bgmid.data.scenes import equalise

        sc = self.scene
        bell_hz = float(np.exp(rng.uniform(math.log(150.0), math.log(0.4 * self.sr))))
        return equalise(x, self.sr, float(rng.uniform(*sc.tilt_db_per_octave)), bell_hz,
                        float(rng.uniform(*sc.bell_db)))

    def scene_stem(self, rng: np.random.Generator, dialogue: np.ndarray) -> np.ndarray:
        """The non-music stem of a scene around ``dialogue`` (float32, same length), drawn by ``self.scene``:
        a crowd of other voices of the split, the room's reverberation on voices, effects, EQ, a level ramp.
        Levels are relative to the dialogue's power (-20 dBFS when the dialogue is silent)."""
        from bgmid.data import scenes

        sc, n, sr = self.scene, dialogue.size, self.sr
        ref = _rms(dialogue) if _rms(dialogue) > 1e-5 else 0.1
        voices = dialogue.astype(np.float32)
        if rng.random() < sc.p_babble:
            k = int(rng.integers(sc.babble_voices[0], sc.babble_voices[1] + 1))
            crowd = [make_dialogue(self.corpus, rng, self.sources[self.source_names[int(rng.choice(
                len(self.source_names), p=self.source_p))]], n) for _ in range(k)]
            voices = voices + scenes.babble(crowd, rng) * np.float32(ref * 10 ** (rng.uniform(*sc.babble_db) / 20))
        if rng.random() < sc.p_reverb:
            ir = scenes.room_ir(rng, sr, float(rng.uniform(*sc.rt60_s)), float(rng.uniform(*sc.drr_db)))
            voices = scenes.reverberate(voices, ir)
        stem = voices
        if self.effects and rng.random() < sc.p_effects:
            k = int(rng.integers(sc.effects_count[0], sc.effects_count[1] + 1))
            picks = [self.effects[int(rng.integers(len(self.effects)))] for _ in range(k)]
            stem = stem.copy()
            for start, piece in scenes.place_effects(picks, n, rng, sr):
                g = ref * 10 ** (rng.uniform(*sc.effects_db) / 20) / scenes.rms(piece)
                stem[start : start + piece.size] += piece * np.float32(g)
        if rng.random() < sc.p_eq:
            stem = self._random_eq(rng, stem)
        if rng.random() < sc.p_level_ramp:
            stem = scenes.level_ramp(stem, 0.0, float(rng.uniform(*sc.ramp_db)))
        return stem.astype(np.float32)

    def __getitem__(self, index: int):
        import torch

        music, speech, _ = self.draw(self._rng(index))
        mix = music + speech
        t = torch.from_numpy
        return t(mix[None].copy()), t(music[None].copy()), t(speech[None].copy())


# --------------------------------------------------------------------------------------------------
# fixed sets


def _lowpass(x: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase 8th-order Butterworth low-pass (no delay, so music and its mixture stay aligned)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, cutoff_hz, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def _clip_slots(recs: Sequence[dict], clip_s: float, rng: np.random.Generator, n: int) -> list[tuple[dict, float]]:
    """``n`` (track, offset s) pairs: non-overlapping clips from the middle 80 % of tracks, spread
    round-robin over tracks (so each track contributes about equally), random offsets."""
    per: list[list[tuple[dict, float]]] = []
    for r in recs:
        d = r["duration_s"]
        lo, hi = 0.1 * d, 0.9 * d - clip_s
        if hi < lo:
            lo, hi = 0.0, d - clip_s
        if hi < lo:
            continue
        k = int((hi - lo) // clip_s) + 1
        jitter = rng.uniform(0, (hi - lo) - (k - 1) * clip_s) if k > 0 else 0.0
        offs = [lo + jitter + i * clip_s for i in range(k)]
        rng.shuffle(offs)
        per.append([(r, round(float(o), 3)) for o in offs])  # the CSV states the offset in ms
    order = rng.permutation(len(per))
    out: list[tuple[dict, float]] = []
    depth = 0
    while len(out) < n and any(depth < len(p) for p in per):
        for i in order:
            if depth < len(per[i]) and len(out) < n:
                out.append(per[i][depth])
        depth += 1
    return out


def fixed_set_names(split: str = "test", snrs: Sequence[float] = (0, -10, -20),
                    conditions: Sequence[str] = ()) -> list[str]:
    """Names of the fixed sets of a split, e.g. ``test_0dB``, ``test_music``, ``test_ooi_-10dB``, then those of
    ``conditions`` (:func:`condition_set_names`; none by default)."""
    return ([f"{split}_{s:g}dB" for s in snrs] + [f"{split}_music", f"{split}_speech", f"{split}_ooi"]
            + [f"{split}_ooi_{s:g}dB" for s in snrs[:2]] + condition_set_names(split, conditions))


def resolve_conditions(names: Sequence[str]) -> list[str]:
    """Condition names checked against :data:`bgmid.data.transforms.CONDITIONS` (``all`` = every one), in
    the registry's order, without repeats."""
    from bgmid.data.transforms import CONDITIONS, get_condition

    want = set()
    for n in names:
        if n == "all":
            want.update(CONDITIONS)
        else:
            want.add(get_condition(n).name)
    return [n for n in CONDITIONS if n in want]


def condition_set_names(split: str, conditions: Sequence[str]) -> list[str]:
    """Fixed-set names of ``conditions`` (see :data:`bgmid.data.transforms.CONDITIONS`): the mixture at each of
    the condition's SNRs, ``<split>_<snr>dB_<condition>`` (``test_-10dB_speed+4.2``, ``test_0dB_speed+4.2``,
    ``test_-10dB_short5``), and for processing conditions with speech negatives the processed speech-only set,
    ``<split>_speech_<condition>`` (``test_speech_broadcast``)."""
    from bgmid.data.transforms import get_condition

    out = []
    for name in resolve_conditions(conditions):
        c = get_condition(name)
        out += [f"{split}_{s:g}dB_{c.name}" for s in c.snrs_db]
        if c.speech_negatives:
            out.append(f"{split}_speech_{c.name}")
    return out


def split_condition(name: str) -> tuple[str, str]:
    """``(base set name, condition)`` of a fixed-set name: ``test_-10dB_speed+4.2`` -> ``("test_-10dB",
    "speed+4.2")``, ``test_speech_broadcast`` -> ``("test_speech", "broadcast")``, ``test_-10dB`` ->
    ``("test_-10dB", "")``."""
    from bgmid.data.transforms import CONDITIONS

    head, _, tail = name.rpartition("_")
    if head and tail in CONDITIONS:
        return head, tail
    return name, ""


CSV_FIELDS = (
    "clip", "set", "music_track_id", "music_title", "music_package", "track_offset_s", "snr_db",
    "music_gain", "speech_gain", "speech_source", "speech_lines", "speech_band_hz", "lowpass_hz",
    "clip_s", "sample_rate",
)

#: Extra columns of a condition's sets: the condition, its ground-truth factors (clip time ``τ`` plays the track
#: at ``track_offset_s + speed·tempo·τ``, frequencies ×``speed·2**(pitch_semitones/12)``) and the arrays the
#: clips are read from (``<music_array>.npy``, ``<speech_array>.npy`` in the set's folder).
CONDITION_FIELDS = ("condition", "speed", "tempo", "pitch_semitones", "music_array", "speech_array")

#: Source context (s) cropped on each side of a clip before a condition's transform, then cut away: filters
#: start and end on real music, not on the clip's edges.
_CONTEXT_S = 0.5


def _crop_padded(cor: Corpus, item_id: str, start: int, n: int) -> np.ndarray:
    """``n`` float32 samples of an item from ``start`` (may be negative), zero-padded outside the item."""
    lead = max(0, -start)
    seg = cor.crop(item_id, start + lead, n - lead)
    return np.concatenate([np.zeros(lead, np.float32), seg]) if lead else seg


def _condition_music(cor: Corpus, item_id: str, off_s: float, cond, n: int) -> np.ndarray:
    """``n`` samples of the condition applied to the track from ``off_s``: clip time ``τ`` plays the track at
    ``off_s + cond.time_factor·τ`` (so ``n·time_factor`` samples of source, plus context, are transformed)."""
    from bgmid.data.transforms import _fit

    sr = cor.sr
    f = cond.time_factor
    ctx = int(round(_CONTEXT_S * sr))
    src = _crop_padded(cor, item_id, int(round(off_s * sr)) - ctx, int(math.ceil(n * f)) + 2 * ctx)
    y = cond.apply(src, sr)
    return _fit(y[int(round(ctx / f)) :], n)


def _excerpt_start(speech: np.ndarray, sr: int, n_out: int, step_s: float = 0.5) -> int:
    """Start (samples) of the ``n_out``-sample window of a clip with the most speech activity, on a ``step_s``
    grid; ties go to the window nearest the clip's centre (a cut of a dialogue scene, not of its pause)."""
    last = speech.size - n_out
    if last <= 0:
        return 0
    step = max(1, int(round(step_s * sr)))
    starts = list(range(0, last + 1, step))
    centre = last / 2
    return max(starts, key=lambda a: (round(_active(speech[a : a + n_out], sr), 3), -abs(a - centre)))


def build_fixed_sets(
    root: str | os.PathLike | None = None,
    split: str = "test",
    sample_rates: Sequence[int] = (16000, 22050),
    n_clips: int = 200,
    snrs: Sequence[float] = (0.0, -10.0, -20.0),
    clip_s: float = 12.0,
    seed: int = 0,
    wideband_hz: float = 5000.0,
    level_dbfs: float = -20.0,
    conditions: Sequence[str] = (),
    log=print,
) -> dict[str, int]:
    """Write the fixed sets of ``split`` (``test`` or ``val``) under ``ROOT/fixed/<rate>/<split>/``.

    The same clips serve every set: clip ``k`` is music track/offset ``k`` plus dialogue ``k``, mixed at
    each SNR exactly. Arrays: ``music.npy``, ``speech.npy``, ``ooi.npy`` (float32, ``(n, clip_s*rate)``,
    each clip at unit RMS... scaled by the gains in the set's CSV, see :func:`load_fixed_set`).

    Bandwidth (DATA.md caveat): only speech sources whose measured band edge is >= ``wideband_hz`` are
    used when there are any in the split; if a clip's speech band is below 90 % of the Nyquist frequency,
    its music and speech are both low-passed to that band so that music above the dialogue's band
    cannot be identified for free. Each CSV row records ``speech_band_hz`` and ``lowpass_hz`` (0: none).

    ``conditions`` (names in :data:`bgmid.data.transforms.CONDITIONS`, ``all`` for every one; none by default, so
    the sets above are unchanged) add sets of the same clips "as broadcasters air them", named by
    :func:`condition_set_names`: the clip's music is transformed (``speed``, ``tempo``, ``pitch``, ``broadcast``,
    ``aac64``; from ``clip_s·speed·tempo`` s of the track) and then low-passed like its base clip and mixed with
    the same speech at each of the condition's SNRs (-10 dB; speed changes also 0 dB); ``short5`` cuts the
    mixture to 5 s (the window with the most speech; SNR exact over the excerpt); ``broadcast`` also writes the
    speech-only set through the chain (``<split>_speech_broadcast``). Their arrays are ``music_<condition>.npy``
    (and ``speech_<condition>.npy``), their CSVs add :data:`CONDITION_FIELDS`; ``track_offset_s`` is the track
    time of the clip's time 0 in the track's own time line.
    Returns {set name: clips}.
    """
    root = Path(root) if root else default_root()
    cond_names = resolve_conditions(conditions)
    base = Corpus(root, 16000)
    music = sorted(base.items("music", split), key=lambda r: r["id"])
    ooi = sorted(base.items("music", "ooi"), key=lambda r: r["id"])
    speech = base.items("speech", split)
    if not music or not speech:
        raise BgmidError(f"split '{split}' has {len(music)} music tracks and {len(speech)} speech lines; "
                         "run 'bgmid data fetch' first (or a bigger preset).")
    srcs = _speech_sources(speech)
    bands = {name: source_band_hz(base, recs, seed=seed) for name, recs in srcs.items()}
    wide = [n for n in sorted(srcs) if bands[n] >= wideband_hz]
    use = wide or sorted(srcs)
    log(f"{split}: speech sources and band edges: "
        + ", ".join(f"{n} {bands[n]:.0f} Hz{'' if n in use else ' (not used)'}" for n in sorted(srcs)))
    rng = np.random.default_rng([seed, 1 if split == "test" else 2])
    slots = _clip_slots(music, clip_s, rng, n_clips)
    oslots = _clip_slots(ooi, clip_s, rng, len(slots)) if ooi else []
    hours = np.sqrt([sum(r["duration_s"] for r in srcs[u]) for u in use])  # sqrt: more voices
    plans = []  # each clip's dialogue from one source, drawn by sqrt(hours): big sources do not crowd out
    for _ in range(len(slots)):
        src = use[int(rng.choice(len(use), p=hours / hours.sum()))]
        plans.append((src, plan_dialogue(rng, srcs[src], clip_s)))
    counts: dict[str, int] = {}
    for sr in sample_rates:
        cor = Corpus(root, sr)
        cor.ensure(music + ooi + speech)
        n = int(round(clip_s * sr))
        out = root / "fixed" / str(sr) / split
        out.mkdir(parents=True, exist_ok=True)
        M = np.zeros((len(slots), n), np.float32)
        S = np.zeros((len(slots), n), np.float32)
        O = np.zeros((len(oslots), n), np.float32)
        meta = []
        for k, ((tr, off), (src, plan)) in enumerate(zip(slots, plans, strict=True)):
            m = cor.crop(tr["id"], int(round(off * sr)), n)
            s = render_dialogue(cor, plan, n)
            band = min(bands[src], sr / 2)
            lp = band if band < 0.9 * sr / 2 else 0.0
            if lp:
                m, s = _lowpass(m, sr, lp), _lowpass(s, sr, lp)
            M[k] = m / _rms(m)
            S[k] = s / _rms(s)
            meta.append(dict(tr=tr, off=off, src=src, plan=plan, band=band, lp=lp))
        for k, (tr, off) in enumerate(oslots):
            o = cor.crop(tr["id"], int(round(off * sr)), n)
            lp = meta[k]["lp"] if k < len(meta) else 0.0
            if lp:
                o = _lowpass(o, sr, lp)
            O[k] = o / _rms(o)
        for name, arr in (("music", M), ("speech", S), ("ooi", O)):
            tmp = out / f".{name}.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, out / f"{name}.npy")
        target = 10 ** (level_dbfs / 20)

        def gains(m: np.ndarray | None, s: np.ndarray | None, snr: float | None,
                  target: float = target) -> tuple[float, float]:
            return mix_gains(m, s, snr, target)

        def write(name: str, rows: list[dict], out: Path = out) -> None:
            tmp = out / f".{name}.csv.tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, out / f"{name}.csv")
            counts[name] = len(rows)

        def row(name, k, tr, off, snr, gm, gs, mt, sr: int = sr) -> dict:
            return {
                "clip": k, "set": name, "music_track_id": tr["id"] if tr else "",
                "music_title": tr["title"] if tr else "", "music_package": tr["package"] if tr else "",
                "track_offset_s": round(off, 3) if tr else "", "snr_db": snr, "music_gain": f"{gm:.8g}",
                "speech_gain": f"{gs:.8g}", "speech_source": mt["src"] if gs else "",
                "speech_lines": " ".join(f"{ln.item_id}@{ln.start_s:.3f}" for ln in mt["plan"]) if gs else "",
                "speech_band_hz": round(mt["band"]) if gs else "", "lowpass_hz": round(mt["lp"]),
                "clip_s": clip_s, "sample_rate": sr,
            }

        for snr in snrs:
            name = f"{split}_{snr:g}dB"
            rows = []
            for k, mt in enumerate(meta):
                gm, gs = gains(M[k], S[k], snr)
                rows.append(row(name, k, mt["tr"], mt["off"], snr, gm, gs, mt))
            write(name, rows)
        write(f"{split}_music", [row(f"{split}_music", k, mt["tr"], mt["off"], "inf", *gains(M[k], None, None), mt)
                                 for k, mt in enumerate(meta)])
        write(f"{split}_speech", [row(f"{split}_speech", k, None, 0.0, "-inf", *gains(None, S[k], None), mt)
                                  for k, mt in enumerate(meta)])
        write(f"{split}_ooi", [row(f"{split}_ooi", k, tr, off, "inf", *gains(O[k], None, None), meta[k])
                               for k, (tr, off) in enumerate(oslots)])
        for snr in snrs[:2]:
            name = f"{split}_ooi_{snr:g}dB"
            write(name, [row(name, k, tr, off, snr, *gains(O[k], S[k], snr), meta[k])
                         for k, (tr, off) in enumerate(oslots)])
        for cname in cond_names:
            _write_condition_sets(cor, out, split, cname, meta, M, S, n, clip_s, gains, row, counts, log)
        info = {
            "split": split, "sample_rate": sr, "clip_s": clip_s, "clips": len(meta), "ooi_clips": len(oslots),
            "snrs": list(snrs), "speech_bands_hz": {s: bands[s] for s in use}, "seed": seed,
            "level_dbfs": level_dbfs, "sets": fixed_set_names(split, snrs, cond_names),
        }
        if cond_names:
            info["conditions"] = cond_names
        (out / "info.json").write_text(json.dumps(info, indent=1))
        log(f"  {out}: {len(meta)} clips from {len({id(m['tr']) for m in meta})} tracks, "
            f"{len(oslots)} out-of-index clips")
    return counts


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def _write_condition_sets(cor: Corpus, out: Path, split: str, cname: str, meta: list[dict], M: np.ndarray,
                          S: np.ndarray, n: int, clip_s: float, gains, row, counts: dict[str, int], log) -> None:
    """The sets of one condition (see :func:`build_fixed_sets`): arrays, then one CSV per set."""
    import time

    from bgmid.data.transforms import _fit, get_condition

    t0 = time.time()
    cond = get_condition(cname)
    sr = cor.sr
    extra = {"condition": cond.name, "speed": f"{cond.speed:.8g}", "tempo": f"{cond.tempo:.8g}",
             "pitch_semitones": f"{cond.pitch_semitones:g}", "music_array": f"music_{cond.name}",
             "speech_array": "speech"}
    offs = [mt["off"] for mt in meta]
    if cond.excerpt_s:  # a cut of the base clip: music and speech windows, each back at unit RMS
        n_out = min(n, int(round(cond.excerpt_s * sr)))
        Mc = np.zeros((len(meta), n_out), np.float32)
        Sc = np.zeros((len(meta), n_out), np.float32)
        for k in range(len(meta)):
            a = _excerpt_start(S[k], sr, n_out)
            m, s = M[k, a : a + n_out], S[k, a : a + n_out]
            Mc[k], Sc[k] = m / _rms(m), s / _rms(s)
            offs[k] = meta[k]["off"] + a / sr
        extra["speech_array"] = f"speech_{cond.name}"
        _save_npy(out / f"speech_{cond.name}.npy", Sc)
        set_clip_s = n_out / sr
    else:
        Mc = np.zeros((len(meta), n), np.float32)
        for k, mt in enumerate(meta):
            m = _condition_music(cor, mt["tr"]["id"], mt["off"], cond, n)
            if mt["lp"]:
                m = _lowpass(m, sr, mt["lp"])
            Mc[k] = m / _rms(m)
        set_clip_s = clip_s
    _save_npy(out / f"music_{cond.name}.npy", Mc)

    def write(name: str, rows: list[dict]) -> None:
        tmp = out / f".{name}.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS + CONDITION_FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, out / f"{name}.csv")
        counts[name] = len(rows)

    for snr in cond.snrs_db:
        name = f"{split}_{snr:g}dB_{cond.name}"
        rows = []
        for k, mt in enumerate(meta):
            r = row(name, k, mt["tr"], offs[k], snr, *gains(Mc[k], Sc[k] if cond.excerpt_s else S[k], snr), mt)
            rows.append({**r, "clip_s": set_clip_s, **extra})
        write(name, rows)
    if cond.speech_negatives:  # the dialogue through the same processing, music-free (false-match checks)
        Sp = np.zeros_like(S)
        for k, mt in enumerate(meta):
            s = _fit(cond.apply(S[k], sr), S.shape[1])
            if mt["lp"]:
                s = _lowpass(s, sr, mt["lp"])
            Sp[k] = s / _rms(s)
        _save_npy(out / f"speech_{cond.name}.npy", Sp)
        name = f"{split}_speech_{cond.name}"
        write(name, [{**row(name, k, None, 0.0, "-inf", *gains(None, Sp[k], None), mt), **extra,
                      "music_array": "", "speech_array": f"speech_{cond.name}"} for k, mt in enumerate(meta)])
    log(f"  {out}: condition {cond.name} ({cond.description}) in {time.time() - t0:.1f} s")


@dataclass
class FixedClip:
    """One clip of a fixed set: float32 arrays at the set's rate and the ground truth.

    A condition's clip (:func:`condition_set_names`) plays the track at ``track_offset_s + speed·tempo·τ`` at
    clip time ``τ`` (``meta["track_offset_s"]``), with frequencies ×``speed·2**(pitch_semitones/12)``; the
    clips of the unchanged sets have ``condition == ""`` and factors 1, 1, 0.
    """

    mix: np.ndarray
    music: np.ndarray  #: the music as it is in the mixture (zeros for speech-only)
    speech: np.ndarray  #: the speech as it is in the mixture (zeros for music-only)
    meta: dict  #: the CSV row (music_track_id, track_offset_s, snr_db, speech_band_hz, lowpass_hz, ...)
    speed: float = 1.0  #: resampling factor (tempo and pitch), e.g. 25/24 for the PAL speed-up
    tempo: float = 1.0  #: tempo factor with pitch kept (time compression)
    pitch_semitones: float = 0.0  #: transposition with tempo kept
    condition: str = ""  #: the condition's name (transforms.CONDITIONS), "" for the unchanged sets


def mix_gains(m: np.ndarray | None, s: np.ndarray | None, snr: float | None, target: float) -> tuple[float, float]:
    """Gains of unit-RMS music ``m`` and speech ``s`` (either may be None) for a music-to-speech ratio of ``snr``
    dB (None: speech unscaled), the mix then at ``target`` RMS and never clipping (peak <= 0.99): the rule of
    every fixed set."""
    gs = 0.0 if s is None else (1.0 if snr is None else 10 ** (-snr / 20))
    gm = 0.0 if m is None else 1.0
    mix = (gm * m if m is not None else 0) + (gs * s if s is not None else 0)
    g = target / _rms(mix)
    peak = float(np.max(np.abs(mix))) * g
    if peak > 0.99:
        g *= 0.99 / peak
    return gm * g, gs * g


def load_fixed_set(root: str | os.PathLike | None, name: str, sample_rate: int = 16000,
                   limit: int | None = None) -> list[FixedClip]:
    """Load fixed set ``name`` (e.g. ``test_-10dB``, ``val_0dB``, ``test_music``, ``test_ooi``) at
    ``sample_rate``: a list of :class:`FixedClip` with ``mix == music + speech``. ``limit`` takes the
    first clips (a quick subset that keeps the balance over tracks, as clips are spread round-robin)."""
    root = Path(root) if root else default_root()
    split = name.split("_", 1)[0]
    d = root / "fixed" / str(int(sample_rate)) / split
    if not (d / f"{name}.csv").exists():
        have = sorted(p.stem for p in d.glob("*.csv")) if d.is_dir() else []
        raise BgmidError(f"{d / (name + '.csv')}: no such fixed set. Run 'bgmid data mix --root {root} "
                         f"--sr {sample_rate}' (add '--conditions NAME...' for the conditions' sets); sets: "
                         f"{', '.join(have or fixed_set_names(split))}.")
    with open(d / f"{name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if limit is not None:
        rows = rows[:limit]
    is_ooi = "_ooi" in split_condition(name)[0]
    first = rows[0] if rows else {}
    M = np.load(d / f"{first.get('music_array') or ('ooi' if is_ooi else 'music')}.npy", mmap_mode="r")
    S = np.load(d / f"{first.get('speech_array') or 'speech'}.npy", mmap_mode="r")
    out = []
    for r in rows:
        k = int(r["clip"])
        gm, gs = float(r["music_gain"]), float(r["speech_gain"])
        m = (np.asarray(M[k]) * np.float32(gm)).astype(np.float32)
        s = (np.asarray(S[k]) * np.float32(gs)).astype(np.float32)
        out.append(FixedClip(mix=m + s, music=m, speech=s, meta=r, speed=float(r.get("speed") or 1.0),
                             tempo=float(r.get("tempo") or 1.0),
                             pitch_semitones=float(r.get("pitch_semitones") or 0.0),
                             condition=r.get("condition") or ""))
    return out


def export_wavs(root: str | os.PathLike | None, name: str, sample_rate: int, out_dir: str | os.PathLike,
                limit: int = 10) -> list[Path]:
    """Write the first ``limit`` clips of a fixed set as WAV (mix, music, speech) for listening."""
    from bgmid.audio import write_wav

    paths = []
    for c in load_fixed_set(root, name, sample_rate, limit):
        k = int(c.meta["clip"])
        for part in ("mix", "music", "speech"):
            p = Path(out_dir) / f"{name}_{k:04d}_{part}.wav"
            write_wav(p, getattr(c, part), sample_rate)
            paths.append(p)
    return paths
