"""Chunked overlap-add inference: any length, flat memory, numpy in and out.

Why chunked: the networks are trained on short segments (1.5 s), their cost grows with length, and an hour of
broadcast audio does not fit through a network at once. Each chunk is separated on its own; neighbouring chunks
overlap and are cross-faded with complementary sin²/cos² ramps placed away from the chunk edges (the first and
last ``edge`` samples of each chunk, which lack context, get zero weight). Chunk offsets are multiples of the
model's ``quantum`` (its total down-sampling in samples), so away from the signal's ends the result equals what
the model would give on the whole signal whenever the model's receptive field fits in the discarded margin; a
model whose receptive field is wider than its chunk states a finer grid (``inference_quantum``), which
separates fewer samples twice.

:func:`separate_stream` is the core: it consumes blocks and yields finished output as soon as no later chunk
can change it, so memory is bounded by a few chunks whatever the input length.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ChunkFn = Callable[[np.ndarray], np.ndarray]  # (B, C) float32 -> (B, 2, C) float32


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk length ``chunk``, hop ``hop``, zero-weight ``edge`` and ramp length ``ramp`` (samples)."""

    chunk: int
    hop: int
    edge: int
    ramp: int

    @property
    def front_pad(self) -> int:
        # at least edge + ramp so the first real sample is in the flat part of the first chunk; a multiple of
        # the hop so chunk starts sit on the same grid as whole-signal inference
        return int(math.ceil((self.edge + self.ramp) / self.hop) * self.hop)

    def window(self) -> np.ndarray:
        """Weights over one chunk: 0 (edge), sin² ramp up, 1, cos² ramp down at ``hop + edge``, 0."""
        w = np.zeros(self.chunk, np.float64)
        r = self.ramp
        up = np.sin(0.5 * np.pi * (np.arange(r) + 0.5) / r) ** 2 if r else np.zeros(0)
        w[self.edge : self.edge + r] = up
        w[self.edge + r : self.hop + self.edge] = 1.0
        w[self.hop + self.edge : self.hop + self.edge + r] = 1.0 - up  # cos² = 1 - sin²: sums to exactly 1
        return w


def plan_chunks(chunk: int, quantum: int = 1, overlap: float = 0.25) -> ChunkPlan:
    """A plan for ``chunk``-sample chunks whose hop is a multiple of ``quantum``; ``overlap`` is the fraction
    of each chunk given to the zero-weight edges and the cross-fade (split evenly: edge, ramp, edge)."""
    third = int(chunk * overlap / 3)
    hop = (chunk - 3 * third) // quantum * quantum
    if hop <= 0:
        raise ValueError(f"chunk {chunk} too short for quantum {quantum} and overlap {overlap}")
    spare = chunk - hop - 2 * third  # >= third; what is left after the hop and both edges is the ramp
    ramp = min(spare, third if third else spare)
    edge = third
    return ChunkPlan(chunk=chunk, hop=hop, edge=edge, ramp=ramp)


def separate_stream(blocks: Iterable[np.ndarray], fn: ChunkFn, plan: ChunkPlan, batch: int = 4
                    ) -> Iterator[np.ndarray]:
    """Separate a stream of mono blocks; yields (2, n) float32 pieces which concatenate to the whole output
    (same length as the concatenated input). Positions below are in padded coordinates (real sample 0 is at
    ``front_pad``); chunk ``k`` starts at ``k * hop``."""
    C, H, E = plan.chunk, plan.hop, plan.edge
    w = plan.window().astype(np.float32)
    P = plan.front_pad
    inbuf = np.zeros(P, np.float32)  # input from in_off on
    in_off = 0
    acc = np.zeros((2, 0), np.float32)  # weighted output sum from emitted on
    emitted = P
    n_real = 0
    next_start = 0
    last_start: int | None = None
    pending: list[int] = []

    def process() -> Iterator[np.ndarray]:
        nonlocal inbuf, in_off, acc, emitted, pending
        x = np.stack([inbuf[s - in_off : s - in_off + C] for s in pending])
        y = fn(x) * w  # (B, 2, C)
        end = pending[-1] + C
        grow = end - emitted - acc.shape[1]
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((2, grow), np.float32)], axis=1)
        for s, yk in zip(pending, y, strict=True):
            lo = s - emitted  # negative only over the zero-weight head of the chunk
            skip = max(0, -lo)
            acc[:, lo + skip : lo + C] += yk[:, skip:]
        # the next chunk's weight is zero before next_start + E, so everything before that is final
        upto = min(next_start + E, P + n_real)
        k = upto - emitted
        if k > 0:
            yield acc[:, :k].copy()
            acc = acc[:, k:]
            emitted = upto
        pending = []
        inbuf = inbuf[next_start - in_off :]
        in_off = next_start

    for block in blocks:
        block = np.asarray(block, np.float32).reshape(-1)
        n_real += block.size
        inbuf = np.concatenate([inbuf, block])
        while next_start + C <= in_off + inbuf.size:
            pending.append(next_start)
            last_start = next_start
            next_start += H
            if len(pending) >= batch:
                yield from process()
    # tail: zero-pad until the last chunk's flat part reaches past the end of the signal
    while last_start is None or last_start + H + E < P + n_real:
        short = next_start + C - (in_off + inbuf.size)
        if short > 0:
            inbuf = np.concatenate([inbuf, np.zeros(short, np.float32)])
        pending.append(next_start)
        last_start = next_start
        next_start += H
        if len(pending) >= batch:
            yield from process()
    if pending:
        yield from process()
    elif emitted < P + n_real:  # pragma: no cover - the loop above always leaves work or nothing to emit
        yield acc[:, : P + n_real - emitted].copy()


def model_fn(model: torch.nn.Module, device: str | torch.device = "cpu") -> ChunkFn:
    """Wrap a (B, 1, N) -> (B, 2, N) network as a numpy chunk function (eval mode, no autograd)."""
    model.eval()

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device).unsqueeze(1)
            return model(t).float().cpu().numpy()

    return fn


def default_plan(model: torch.nn.Module, chunk: int | None = None, overlap: float | None = None) -> ChunkPlan:
    """The model's training segment as chunk (what it was trained on, or ``chunk`` samples), with the model's
    inference overlap and offset grid where it states them (``inference_overlap``, ``inference_quantum``:
    :class:`bgmid.separation.spectral.SpectrogramMaskModel`), else 0.25 and its ``quantum``."""
    if overlap is None:
        overlap = float(getattr(model, "inference_overlap", 0.25))
    quantum = getattr(model, "inference_quantum", None) or getattr(model, "quantum", 1)
    return plan_chunks(int(chunk or model.segment), int(quantum), overlap)


def separate_array(model: torch.nn.Module, mono: np.ndarray, chunk: int | None = None, batch: int = 4,
                   device: str | torch.device = "cpu", overlap: float | None = None, plan: ChunkPlan | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Separate a mono float32 array at the model's rate into (music, speech), each as long as the input, in
    ``plan``'s chunks (default: :func:`default_plan` with ``chunk`` and ``overlap``)."""
    mono = np.asarray(mono, np.float32).reshape(-1)
    if mono.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    plan = plan or default_plan(model, chunk, overlap)
    pieces = list(separate_stream([mono], model_fn(model, device), plan, batch))
    y = np.concatenate(pieces, axis=1)
    return np.ascontiguousarray(y[0]), np.ascontiguousarray(y[1])


@dataclass
class FileResult:
    """What :func:`separate_file` wrote and how fast."""

    music_path: Path
    speech_path: Path
    seconds: float  #: audio duration
    wall_s: float  #: processing time
    sample_rate: int = 0  #: Hz of the written stems

    @property
    def x_real_time(self) -> float:
        return self.seconds / self.wall_s if self.wall_s > 0 else math.inf


def output_stem(path: str | os.PathLike) -> str:
    """The name a file's stems are written under: its file name without extension (the whole name when it
    has none, as game packages' OGG files)."""
    return Path(path).stem if Path(path).suffix else Path(path).name


def unique_stems(paths: Iterable[str | os.PathLike]) -> list[str]:
    """:func:`output_stem` of each path, made distinct: inputs sharing a name (``a/x.wav``, ``b/x.wav``) get
    ``x``, ``x-2``, ``x-3`` ... in input order, skipping any name another input already has, so no input's
    stems overwrite another's."""
    stems = [output_stem(p) for p in paths]
    taken = set(stems)
    seen: set[str] = set()
    out = []
    for stem in stems:
        name, k = stem, 1
        while name in seen or (name != stem and name in taken):
            k += 1
            name = f"{stem}-{k}"
        seen.add(name)
        out.append(name)
    return out


def separate_file(model: torch.nn.Module, path: str | os.PathLike, out_dir: str | os.PathLike,
                  chunk: int | None = None, batch: int = 4, block_s: float = 30.0,
                  device: str | torch.device = "cpu", stem: str | None = None,
                  sample_rate: int | None = None) -> FileResult:
    """Separate any audio/video file into ``<stem>.music.wav`` and ``<stem>.speech.wav`` (16-bit) under
    ``out_dir``, streaming: decoded at the model's rate, separated and written block by block (flat memory).
    The stems are written at ``sample_rate`` Hz, by default the input's own rate (read from its header), so
    they line up with the input in an editor; the model's output is resampled back with soxr's HQ filter as
    it streams (:func:`bgmid.audio.resample`'s filter). ``stem`` defaults to :func:`output_stem`. The files
    appear complete or not at all: they are written as ``*.part`` and renamed at the end; on any error the
    ``*.part`` files are removed."""
    import soundfile as sf
    import soxr

    from bgmid.audio import info, stream

    sr = int(model.sample_rate)
    out_sr = int(sample_rate or info(path).sample_rate or sr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(path) if stem is None else stem
    paths = (out / f"{stem}.music.wav", out / f"{stem}.speech.wav")
    tmps = [p.with_name(p.name + ".part") for p in paths]
    t0 = time.perf_counter()
    n = 0
    blocks = (b for _, b in stream(path, sr, block_s))
    back = soxr.ResampleStream(sr, out_sr, 2, dtype="float32", quality="HQ") if out_sr != sr else None
    done = False
    try:
        # bytes paths: soundfile encodes str names strictly, which fails on undecodable bytes of a file name
        with sf.SoundFile(os.fsencode(tmps[0]), "w", out_sr, 1, "PCM_16", format="WAV") as fm, \
                sf.SoundFile(os.fsencode(tmps[1]), "w", out_sr, 1, "PCM_16", format="WAV") as fs:

            def write(y: np.ndarray) -> None:  # (n, 2) music, speech at out_sr
                y = np.clip(y, -1.0, 1.0)
                fm.write(y[:, 0])
                fs.write(y[:, 1])

            for piece in separate_stream(blocks, model_fn(model, device), default_plan(model, chunk), batch):
                n += piece.shape[1]
                y = np.ascontiguousarray(piece.T)
                write(back.resample_chunk(y) if back is not None else y)
            if back is not None:
                write(back.resample_chunk(np.zeros((0, 2), np.float32), last=True))
        for tmp, p in zip(tmps, paths, strict=True):
            os.replace(tmp, p)
        done = True
    finally:
        if not done:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
    return FileResult(paths[0], paths[1], n / sr, time.perf_counter() - t0, out_sr)
