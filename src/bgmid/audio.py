"""Audio input and output: decode any container or codec, resample, stream in blocks.

Every stage of bgmid consumes mono float32 numpy arrays at a known sample rate. This module is the one place
where files become such arrays. Decoding goes through PyAV (the ffmpeg libraries inside its wheel), which
identifies a file by its content, not by its extension (game packages ship OGG files without an extension),
and reads the audio track of video containers (MP4, MKV, MPEG-TS) as readily as WAV or MP3. Resampling uses
soxr (high quality, streaming-capable).

Long programmes are never loaded whole: :func:`stream` yields fixed-size blocks with overlap, and keeps only
one block plus the decoder state in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError

__all__ = [
    "AudioError",
    "AudioInfo",
    "info",
    "load",
    "stream",
    "resample",
    "write_wav",
    "AUDIO_EXTENSIONS",
]

#: Extensions looked at when a folder is walked. Files are still identified by content when named explicitly.
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .m4a .aac .mp4 .m4v .mkv .mka .webm .ts .mts .m2ts .mpg .mpeg "
    ".mov .avi .wma .aif .aiff .au .snd .ac3".split()
)


class AudioError(BgmidError):
    """A file could not be read as audio. The message names the file and says what to do."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (cheap: nothing is decoded)."""

    path: str
    sample_rate: int  #: Hz, of the first audio stream
    channels: int
    duration_s: float  #: seconds; estimated from the container, may be 0.0 when the container does not say
    codec: str
    container: str


def _open(path: str | os.PathLike):
    import av

    p = str(path)
    if not os.path.exists(p):
        raise AudioError(f"{p}: no such file. Check the path.")
    if os.path.isdir(p):
        raise AudioError(f"{p}: is a folder, not an audio file.")
    try:
        container = av.open(p, mode="r")
    except Exception as exc:  # PyAV raises many error types (InvalidDataError, FFmpegError, ...)
        raise AudioError(
            f"{p}: cannot be decoded as audio ({exc.__class__.__name__}: {exc}). "
            "Is it a complete audio or video file? Re-encode it (e.g. to FLAC or WAV) and try again."
        ) from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{p}: contains no audio stream (only {len(container.streams)} other streams).")
    return container


def info(path: str | os.PathLike) -> AudioInfo:
    """Read sample rate, channels, duration (s) and codec of ``path`` without decoding it."""
    container = _open(path)
    try:
        st = container.streams.audio[0]
        duration = 0.0
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        ctx = st.codec_context
        return AudioInfo(
            path=str(path),
            sample_rate=int(ctx.sample_rate or st.rate or 0),
            channels=int(ctx.channels if hasattr(ctx, "channels") else len(ctx.layout.channels)),
            duration_s=max(0.0, duration),
            codec=str(ctx.name),
            container=str(container.format.name),
        )
    finally:
        container.close()


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono ``x`` (float32) from ``sr_in`` Hz to ``sr_out`` Hz with soxr's high-quality filter."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def _decoded_blocks(path: str | os.PathLike, start_s: float = 0.0) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 samples, native sample rate) as the decoder produces them.

    Channels are averaged to mono. Errors in the middle of a stream (a truncated or corrupt file) raise
    :class:`AudioError` naming the file, except that a file which yielded audio before the damage keeps what
    was read: broadcasters' recordings are often cut off at the end and that audio is still useful.
    """
    import av

    container = _open(path)
    produced = False
    try:
        st = container.streams.audio[0]
        st.thread_type = "AUTO"
        if start_s > 0:
            try:
                container.seek(int(start_s * 1_000_000), any_frame=False, backward=True)
            except Exception:  # unseekable streams: decode from the start and drop samples
                pass
        resampler = av.AudioResampler(format="flt", layout="mono")
        try:
            for frame in container.decode(st):
                sr = frame.sample_rate
                t0 = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    if start_s > 0 and t0 is not None and t0 < start_s:
                        skip = int(round((start_s - t0) * sr))
                        arr = arr[skip:]
                        t0 = start_s
                    if arr.size:
                        produced = True
                        yield arr, sr
            for out in resampler.resample(None):
                arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                if arr.size:
                    produced = True
                    yield arr, out.sample_rate
        except av.error.FFmpegError as exc:
            if not produced:
                raise AudioError(
                    f"{path}: decoding failed ({exc}). The file is corrupt or not audio; re-encode or replace it."
                ) from exc
    finally:
        container.close()


def load(
    path: str | os.PathLike,
    sr: int | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to mono float32, optionally resampled to ``sr`` Hz.

    ``start_s`` and ``duration_s`` (seconds) select a part without decoding the rest where the container
    allows seeking. Returns ``(samples, sample_rate)``. For hour-long programmes use :func:`stream`.
    """
    chunks: list[np.ndarray] = []
    native = None
    need = None
    got = 0
    for arr, rate in _decoded_blocks(path, start_s):
        native = rate
        if duration_s is not None and need is None:
            need = int(round(duration_s * rate))
        chunks.append(arr)
        got += arr.size
        if need is not None and got >= need:
            break
    if native is None:
        raise AudioError(f"{path}: holds no decodable audio samples (empty or silent stream).")
    x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if need is not None:
        x = x[:need]
    if sr is not None and sr != native:
        x = resample(x, native, sr)
        return x, sr
    return x, native


def stream(
    path: str | os.PathLike,
    sr: int,
    block_s: float,
    hop_s: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, block)`` over the whole file at ``sr`` Hz with bounded memory.

    Blocks are ``block_s`` seconds long (the last may be shorter) and start every ``hop_s`` seconds
    (default: no overlap). Resampling is streamed through soxr so block edges carry no filter artefacts.
    """
    hop_s = block_s if hop_s is None else hop_s
    block, hop = int(round(block_s * sr)), int(round(hop_s * sr))
    for start, x in stream_samples(path, sr, block, hop):
        yield start / sr, x


def stream_samples(path: str | os.PathLike, sr: int, block: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """Like :func:`stream` with block length, hop and start positions counted in samples at ``sr``."""
    import soxr

    if not 0 < hop <= block:
        raise ValueError(f"hop must be in (0, block], got hop={hop}, block={block}")
    pending: list[np.ndarray] = []
    n_pending = 0
    buf = np.zeros(0, np.float32)
    pos = 0  # sample index (at sr) of buf[0]
    rs = None
    native = None

    def take(y: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal buf, pos
        buf = np.concatenate([buf, y.astype(np.float32, copy=False)])
        while buf.size >= block:
            yield pos, buf[:block].copy()
            buf = buf[hop:]
            pos += hop

    for arr, rate in _decoded_blocks(path):
        if native is None:
            native = rate
            if rate != sr:
                rs = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
        # gather decoder frames into ~0.5 s pieces: fewer concatenations and soxr calls
        pending.append(arr)
        n_pending += arr.size
        if n_pending >= rate // 2:
            y = np.concatenate(pending)
            pending, n_pending = [], 0
            yield from take(rs.resample_chunk(y) if rs is not None else y)
    if native is None:
        raise AudioError(f"{path}: holds no decodable audio samples (empty or silent stream).")
    y = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    yield from take(rs.resample_chunk(y, last=True) if rs is not None else y)
    # the tail: blocks that start before the end and were not yet emitted as full blocks
    while buf.size > 0 and (buf.size > block - hop or pos == 0):
        yield pos, buf[:block].copy()
        if buf.size <= block:
            break
        buf = buf[hop:]
        pos += hop


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    """Write mono or (n, channels) float audio to a WAV file atomically (temp file + rename)."""
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    data = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    sf.write(str(tmp), data, sr, subtype=subtype, format="WAV")
    os.replace(tmp, p)
    return p


def iter_audio_files(paths: list[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted) into audio file paths.

    Named files are yielded whatever their extension (content decides); inside folders only files with a
    known audio/video extension or with no extension at all (as in some game packages) are taken.
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file() and (q.suffix.lower() in AUDIO_EXTENSIONS or q.suffix == ""):
                    yield q
        else:
            yield p
