"""Audio input and output: decode any container or codec, resample, stream in blocks.

Every stage of bgmid consumes mono float32 numpy arrays at a known sample rate. This module is the one place
where files become such arrays. Decoding goes through PyAV (the ffmpeg libraries inside its wheel), which
identifies a file by its content, not by its extension (game packages ship OGG files without an extension),
and reads the audio track of video containers (MP4, MKV, MPEG-TS) as readily as WAV or MP3. Resampling uses
soxr (high quality, streaming-capable).

Long programmes are never loaded whole: :func:`stream` yields fixed-size blocks with overlap, and keeps only
one block plus the decoder state in memory.

Live sources (``udp://``, ``rtp://``, ``srt://``, ``http(s)://`` streams, HLS playlists) are opened here too
(:func:`open_live`, with open/read time-outs) and decoded by the same loop as files (:func:`decode_frames`); the
audio stream of a container with several (a multi-programme MPEG-TS, a film with dubbed tracks) is chosen by
:func:`select_stream`, for files and streams alike. Reconnecting is :mod:`bgmid.live`'s.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError
from bgmid.paths import shown

__all__ = [
    "AudioError",
    "AudioInfo",
    "AudioWarning",
    "Blocker",
    "LIVE_SCHEMES",
    "centre_split",
    "decode_frames",
    "is_url",
    "load_channels",
    "surround_pieces",
    "open_live",
    "parse_stream_spec",
    "select_stream",
    "info",
    "load",
    "read_tags",
    "require_regular_file",
    "stream",
    "OwnedBlock",
    "OwningBlocker",
    "owned_blocks",
    "resample",
    "resample_pieces",
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


class AudioWarning(UserWarning):
    """A file was read, but not all of it: truncated or damaged after some audio. The message names the file."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (cheap: nothing is decoded)."""

    path: str
    sample_rate: int  #: Hz, of the first audio stream
    channels: int
    duration_s: float  #: seconds; estimated from the container, may be 0.0 when the container does not say
    codec: str
    container: str


#: URL schemes read as live streams (anything PyAV's ffmpeg opens as a network protocol, and ``device://`` for a
#: capture device, :mod:`bgmid.livesource`); a name without one of these prefixes is a file.
LIVE_SCHEMES = ("udp", "rtp", "srt", "http", "https", "tcp", "rtmp", "rtmps", "rtsp", "hls", "icecast", "device")


def is_url(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a network stream (``scheme://...`` with a scheme of :data:`LIVE_SCHEMES`)."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        return False
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in LIVE_SCHEMES


def parse_stream_spec(text: str | int | None) -> int | str | None:
    """``--stream`` as given: None (the first audio stream), an index among the audio streams (``"1"``: the
    second), ``pid=0x101`` / ``pid=257`` (the MPEG-TS packet id of the stream), or a language tag (``"eng"``,
    ``"fra"``: the stream's ``language`` metadata, as TS and MKV carry it)."""
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip()
    if not t:
        return None
    if t.isdigit():
        return int(t)
    if t.lower().startswith("pid="):
        try:
            return f"pid={int(t[4:], 0)}"
        except ValueError:
            raise AudioError(f"--stream {text}: a pid is a number (pid=0x101 or pid=257).") from None
    return t.lower()


def _describe_streams(container) -> str:
    """The audio streams of a container, for error messages: ``0: aac eng (pid 0x101), 1: mp2 fra ...``."""
    out = []
    for k, st in enumerate(container.streams.audio):
        lang = (st.metadata or {}).get("language", "")
        out.append(f"{k}: {st.codec_context.name}{' ' + lang if lang else ''} (pid {st.id:#x})")
    return ", ".join(out) or "none"


def select_stream(container, spec: int | str | None, name: str | os.PathLike = ""):
    """The audio stream ``spec`` (see :func:`parse_stream_spec`) of an opened container; a spec that matches
    none is an :class:`AudioError` listing the streams there are (so the user can pick one)."""
    audio = list(container.streams.audio)
    spec = parse_stream_spec(spec)
    if spec is None and audio:
        return audio[0]
    if isinstance(spec, int):
        if 0 <= spec < len(audio):
            return audio[spec]
    elif isinstance(spec, str) and spec.startswith("pid="):
        pid = int(spec[4:])
        for st in audio:
            if st.id == pid:
                return st
    elif isinstance(spec, str):
        for st in audio:
            if str((st.metadata or {}).get("language", "")).lower() == spec:
                return st
    raise AudioError(f"{shown(name)}: no audio stream {spec!r}; it has {_describe_streams(container)}. "
                     "Pick one with --stream INDEX, --stream LANG or --stream pid=PID.")


def require_regular_file(path: str | os.PathLike) -> None:
    """Refuse at once what is not a regular file: reading a FIFO, a device or a socket would block forever
    (or never end), so ``pipe.wav`` must fail with a message rather than hang ``index``/``identify``/``monitor``.

    Symlinks are followed; a loop or a dangling link is named as such.
    """
    import stat

    from bgmid.paths import shown

    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise AudioError(f"{shown(p)}: is a symbolic link to a missing file ({shown(os.readlink(p))}).") from None
        raise AudioError(f"{shown(p)}: no such file. Check the path.") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise AudioError(f"{shown(p)}: symbolic link loop; fix or remove the link.") from None
        raise AudioError(f"{shown(p)}: cannot read ({exc.strerror}); check permissions.") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{shown(p)}: is a folder, not an audio file.")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise AudioError(
            f"{shown(p)}: is {kind}, not a regular file; reading it could block forever. "
            "Save the audio to a file first."
        )


def _av_open(path: str):
    """``av.open`` for reading that never fails on a file's tags: metadata bytes that are not UTF-8 (Latin-1
    Vorbis comments, ID3 tags written on old systems) come through as surrogate escapes, decoded by
    :func:`decode_tag`."""
    import av

    return av.open(path, mode="r", metadata_errors="surrogateescape")


def _open(path: str | os.PathLike):
    require_regular_file(path)
    p = os.fspath(path)
    try:
        container = _av_open(p)
    except OSError as exc:  # PyAV's PermissionError, FileNotFoundError, OSError (EIO, ...) are OSErrors
        reason = exc.strerror or str(exc)
        raise AudioError(f"{shown(p)}: cannot read ({reason}); check permissions.") from exc
    except Exception as exc:  # PyAV raises many error types (InvalidDataError, FFmpegError, ...)
        raise AudioError(
            f"{shown(p)}: cannot be decoded as audio ({exc.__class__.__name__}: {exc}). "
            "Is it a complete audio or video file? Re-encode it (e.g. to FLAC or WAV) and try again."
        ) from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{shown(p)}: contains no audio stream (only {len(container.streams)} other streams).")
    return container


def open_live(url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0, options: dict | None = None):
    """Open a network stream for reading: ``av.open`` with time-outs (seconds: to connect and get the first
    packets; then the longest wait for more, after which a read raises :class:`av.error.ExitError`, which a
    caller treats as signal loss) and short probing (1 s of packets: a live stream has no index to read).
    ``options`` are ffmpeg protocol/demuxer options (strings), merged over the defaults: UDP survives a slow
    reader (``overrun_nonfatal``, a 50 MB receive FIFO). Errors are :class:`AudioError` naming the URL."""
    import av

    opts = {"analyzeduration": "1000000", "probesize": "262144"}
    scheme = url.partition("://")[0].lower()
    if scheme in ("udp", "rtp"):
        opts.update({"overrun_nonfatal": "1", "fifo_size": str(50_000_000 // 188)})
    opts.update(options or {})
    try:
        container = av.open(url, mode="r", options=opts, timeout=(open_timeout_s, read_timeout_s),
                            metadata_errors="surrogateescape")
    except av.error.ProtocolNotFoundError as exc:  # PyAV's wheels carry no libsrt, for one
        raise AudioError(
            f"{url}: this PyAV build cannot read {scheme}:// ({exc}). Relay it on the same machine, e.g. "
            f"'ffmpeg -i {url} -c copy -f mpegts udp://127.0.0.1:5000', and monitor udp://127.0.0.1:5000, or "
            "install PyAV built on a system ffmpeg that has it (pip install av --no-binary av)."
        ) from exc
    except Exception as exc:  # time-out, refused connection, 404, not a media stream
        raise AudioError(f"{url}: cannot open the stream ({exc.__class__.__name__}: {exc}).") from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{url}: the stream carries no audio (only {len(container.streams)} other streams).")
    return container


def decode_tag(value: object) -> str:
    """A metadata value as text: UTF-8 when its bytes are UTF-8, else Windows-1252, else Latin-1 (which
    decodes any bytes), so an old file's tags read as 'Café', not as mojibake or an error."""
    text = str(value)
    try:
        raw = text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escapes: keep what we have, printable
        return text.encode("utf-8", errors="replace").decode("utf-8")
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # pragma: no cover - latin-1 decodes every byte


def read_tags(path: str | os.PathLike) -> tuple[str, dict]:
    """Title and other tags (artist, album, composer, publisher, isrc, iswc, date, genre: what a cue sheet
    reports) from the file's metadata; the file
    name (shown readably) when it has no title tag. Tags in any legacy encoding are decoded (see
    :func:`decode_tag`); a file whose metadata cannot be read at all gets its name and no tags."""
    extra: dict = {}
    try:
        with _av_open(os.fspath(path)) as c:
            tags = {str(k).lower(): v for k, v in (c.metadata or {}).items()}
            if c.streams.audio:
                tags.update({str(k).lower(): v for k, v in (c.streams.audio[0].metadata or {}).items()})
    except Exception:
        tags = {}
    for k in ("artist", "album", "composer", "publisher", "isrc", "iswc", "date", "genre"):
        if tags.get(k):
            extra[k] = decode_tag(tags[k])
    title = decode_tag(tags["title"]) if tags.get("title") else ""
    return title or shown(Path(os.fspath(path)).stem), extra


def info(path: str | os.PathLike, stream: int | str | None = None) -> AudioInfo:
    """Read sample rate, channels, duration (s) and codec of ``path``'s audio stream ``stream``
    (:func:`select_stream`) without decoding it."""
    container = _open(path)
    try:
        st = select_stream(container, stream, path)
        duration = _declared_duration(container, st)
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


def _declared_duration(container, st=None) -> float:
    """Seconds the container says audio stream ``st`` (default: the first) lasts (0.0 when it does not say)."""
    st = container.streams.audio[0] if st is None else st
    if st.duration is not None and st.time_base is not None:
        return max(0.0, float(st.duration * st.time_base))
    if container.duration is not None:
        return max(0.0, container.duration / 1_000_000.0)
    return 0.0


#: A file is reported truncated when it decodes to less than this share of its declared duration ...
TRUNCATED_SHARE = 0.98
#: ... and at least this many seconds short (codec priming and padding make a few ms normal).
TRUNCATED_MIN_S = 1.0


#: Decoder delay (samples at the stream's rate) of codecs whose containers carry no priming information
#: (MPEG-TS and -PS, raw ADTS/AC-3 streams): ffmpeg drops it where the container says (MP4 edit lists, the LAME
#: header of an MP3 file, Matroska's codec delay, Ogg pre-skip) but not there, so the same programme would come
#: out ~10-20 ms late as MP2/AAC/AC-3 in a TS and fall on another STFT frame phase than its WAV. Measured with
#: ffmpeg's encoders (cross-correlation against the source): MPEG-1 layer II 481 (the polyphase filterbank),
#: layer III 529 (its decoder; an encoder's own padding is not known), AAC-LC 1024 (priming), AC-3/E-AC-3 256.
DECODER_DELAY = {"mp2": 481, "mp3": 529, "aac": 1024, "ac3": 256, "eac3": 256}

#: Containers without priming information (ffmpeg's demuxer names).
_NO_PRIMING_INFO = frozenset({"mpegts", "mpeg", "aac", "ac3", "eac3"})


def decoder_delay(container: str, codec: str, first_packet: bytes = b"") -> int:
    """Samples to drop at the start of a decoded stream so that it starts where the encoded audio did:
    :data:`DECODER_DELAY` for streams in :data:`_NO_PRIMING_INFO` containers (and raw MPEG layer II, which has
    no gapless header), else 0. MPEG audio in a TS is decoded by ffmpeg's ``mp3float`` whatever its layer; the
    layer is read from the first frame header (``first_packet``)."""
    kind = codec.removesuffix("float").removesuffix("fixed")
    if kind in ("mp2", "mp3") and len(first_packet) >= 2 and first_packet[0] == 0xFF:
        kind = {2: "mp2", 1: "mp3"}.get((first_packet[1] >> 1) & 3, kind)
    if container in _NO_PRIMING_INFO or (container == "mp3" and kind == "mp2"):
        return DECODER_DELAY.get(kind, 0)
    return 0


def _frames(container, st, first: list[bytes]) -> Iterator:
    """``container.decode(st)``, appending the first non-empty packet's first bytes to ``first`` (for
    :func:`decoder_delay`)."""
    for packet in container.demux(st):
        if packet.size and not first:
            first.append(bytes(packet)[:4])
        yield from packet.decode()


#: Mono PCM codecs read straight from their packets (dtype, scale to float): the resampler's conversion gives the
#: same float32 samples (tested), at a sixth of the cost, which dominated indexing WAV files.
_RAW_PCM = {"pcm_s16le": ("<i2", 1.0 / 32768.0), "pcm_f32le": ("<f4", 1.0)}


def _channels(st) -> int:
    cc = st.codec_context
    layout = getattr(cc, "layout", None)
    return int(getattr(layout, "nb_channels", 0) or getattr(cc, "channels", 0) or 0)


def _raw_pcm(container, st, dtype: str, scale: float) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`decode_frames` of a mono PCM stream: each packet's samples as float32, no decoder."""
    rate, size = int(st.codec_context.sample_rate), np.dtype(dtype).itemsize
    want = max(1, rate // 4) * size  # bytes per yielded array: a quarter second, not one 1,024-sample packet
    pending: list[bytes] = []
    n = 0

    def array() -> np.ndarray:
        buf = b"".join(pending)
        arr = np.frombuffer(buf, dtype, len(buf) // size).astype(np.float32)
        if scale != 1.0:
            arr *= np.float32(scale)
        return arr

    try:
        for packet in container.demux(st):
            if packet.size:
                pending.append(bytes(packet))
                n += packet.size
                if n >= want:
                    arr = array()
                    pending, n = [], 0
                    if arr.size:
                        yield arr, rate
    except Exception:  # the demuxer failed: what was read before the damage is handed on first, as before
        arr = array()
        if arr.size:
            yield arr, rate
        raise
    arr = array()
    if arr.size:
        yield arr, rate


def decode_frames(container, st, start_s: float = 0.0, layout: str = "mono") -> Iterator[tuple[np.ndarray, int]]:
    """Mono float32 samples and their sample rate (Hz) of stream ``st`` as the decoder produces them: channels
    averaged by a mono resampler (its tail flushed at the end), the decoder delay dropped
    (:func:`decoder_delay`), decoding that starts before ``start_s`` (a seek lands on an earlier packet)
    trimmed. The one decoding loop of files (:func:`_decoded_blocks`), live streams (:mod:`bgmid.live`) and
    surround files (:func:`surround_pieces`: another ``layout``, e.g. the stream's own ``"5.1"``, gives
    ``(channels, samples)`` arrays); decoder errors are raised as PyAV's, which each handles its own way."""
    import av

    mono = layout == "mono"
    raw = _RAW_PCM.get(st.codec_context.name)
    if mono and raw is not None and start_s <= 0 and _channels(st) == 1:
        yield from _raw_pcm(container, st, *raw)
        return
    resampler = av.AudioResampler(format="flt" if mono else "fltp", layout=layout)

    def arrays(out) -> np.ndarray:
        a = out.to_ndarray().astype(np.float32, copy=False)
        return a.reshape(-1) if mono else a.reshape(len(out.layout.channels), -1)

    delay: int | None = None  # decoder delay to drop (samples), known from the first packet
    to_drop = 0
    first: list[bytes] = []
    for frame in _frames(container, st, first):
        if delay is None:
            delay = decoder_delay(container.format.name, st.codec_context.name, first[0] if first else b"")
            to_drop = delay if start_s <= 0 else 0
        sr = frame.sample_rate
        t0 = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        for out in resampler.resample(frame):
            arr = arrays(out)
            if start_s > 0 and t0 is not None and t0 < start_s + delay / sr:
                # the decoded sample at pts t is the audio of t - delay
                skip = int(round((start_s - t0) * sr)) + delay
                arr = arr[..., skip:]
                t0 = start_s + delay / sr
            if to_drop:
                cut = min(to_drop, arr.shape[-1])
                arr, to_drop = arr[..., cut:], to_drop - cut
            if arr.shape[-1]:
                yield arr, sr
    for out in resampler.resample(None):
        arr = arrays(out)
        if arr.shape[-1]:
            yield arr, out.sample_rate


def _decoded_blocks(
    path: str | os.PathLike, start_s: float = 0.0, stream: int | str | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 samples, sample rate) of the audio stream ``stream`` (:func:`select_stream`; None:
    the first) as the decoder produces them (:func:`decode_frames`).

    Channels are averaged to mono. Errors in the middle of a stream (a truncated or corrupt file) raise
    :class:`AudioError` naming the file, except that a file which yielded audio before the damage keeps what
    was read (broadcasters' recordings are often cut off at the end and that audio is still useful), with an
    :class:`AudioWarning` saying how much was used. So does a file that ends cleanly well before the duration
    its header declares (a truncated MP3 or FLAC). A caller that stops early (``load`` with a duration) gets
    no warning.
    """
    import av

    container = _open(path)
    produced = False
    n_out = 0  # samples yielded
    rate = 0
    try:
        st = select_stream(container, stream, path)
        st.thread_type = "AUTO"
        declared = _declared_duration(container, st)
        if start_s > 0:
            try:
                container.seek(int(start_s * 1_000_000), any_frame=False, backward=True)
            except Exception:  # unseekable streams: decode from the start and drop samples
                pass
        damage = None
        try:
            for arr, sr in decode_frames(container, st, start_s):
                if arr.size:
                    produced = True
                    n_out += arr.size
                    rate = sr
                    yield arr, sr
        except av.error.FFmpegError as exc:
            if not produced:
                raise AudioError(
                    f"{shown(path)}: decoding failed ({exc}). The file is corrupt or not audio; "
                    "re-encode or replace it."
                ) from exc
            damage = exc
        got = start_s + (n_out / rate if rate else 0.0)
        # raw ADTS declares a duration estimated from the bit rate (a variable one): no evidence of damage
        short = (declared > 0 and got < TRUNCATED_SHARE * declared and declared - got > TRUNCATED_MIN_S
                 and container.format.name != "aac")
        if damage is not None or short:
            of = f" of {declared:.1f} s" if declared > got else ""
            why = f" ({damage.__class__.__name__}: {damage})" if damage is not None else ""
            warnings.warn(AudioWarning(
                f"{shown(path)}: truncated or damaged after {got:.1f} s{of}{why}; only the first {got:.1f} s "
                "are used"
            ), stacklevel=2)
    finally:
        container.close()


#: Channels of a surround layout that carry no dialogue in broadcast practice (ffmpeg's names): the front pair
#: and the surrounds; dialogue sits in the centre (FC), effects in the LFE.
SIDE_CHANNELS = frozenset({"FL", "FR", "BL", "BR", "SL", "SR", "FLC", "FRC", "BC", "TFL", "TFR", "TBL", "TBR"})


def centre_split(x: np.ndarray, channels: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Mono mix and a dialogue-poor signal of multichannel audio ``x`` (channels, samples) whose channel names
    (ffmpeg's: ``FL FR FC LFE BL BR`` for 5.1) are ``channels``.

    The mix is the mean of all channels but the LFE (what a mono receiver hears, up to a gain). In 5.1/7.1
    broadcasts the dialogue is mixed into the centre channel and the music across the others, so the mean of
    the :data:`SIDE_CHANNELS` without FC is a music-rich signal with little dialogue: an extra signal to
    fingerprint and pool (like a separator's music estimate, but free). None when there is no centre channel
    or fewer than two side channels (mono, stereo: the dialogue is in every channel)."""
    x = np.asarray(x, np.float32)
    keep = [i for i, c in enumerate(channels) if c != "LFE"] or list(range(len(channels)))
    mix = x[keep].mean(axis=0)
    side = [i for i, c in enumerate(channels) if c in SIDE_CHANNELS]
    if "FC" not in channels or len(side) < 2:
        return mix, None
    return mix, x[side].mean(axis=0)


def load_channels(path: str | os.PathLike, sr: int | None = None,
                  duration_s: float | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode ``path`` keeping its channel layout and return :func:`centre_split`'s ``(mix, side, rate)``,
    resampled to ``sr`` Hz (default the file's own), at most ``duration_s`` seconds. For surround programmes
    (5.1 dialogue in the centre); mono and stereo files give ``side`` None."""
    import av

    container = _open(path)
    try:
        st = container.streams.audio[0]
        names = [ch.name for ch in st.layout.channels]
        rs = av.AudioResampler(format="fltp", layout=st.layout.name, rate=st.codec_context.sample_rate)
        chunks: list[np.ndarray] = []
        rate = st.codec_context.sample_rate
        need = None if duration_s is None else int(round(duration_s * rate))
        got = 0
        for frame in container.decode(st):
            for out in rs.resample(frame):
                a = out.to_ndarray().reshape(len(names), -1)
                chunks.append(a)
                got += a.shape[1]
            if need is not None and got >= need:
                break
        if not chunks:
            raise AudioError(f"{shown(path)}: holds no decodable audio samples (empty or silent stream).")
        x = np.concatenate(chunks, axis=1)[:, :need]
    except av.error.FFmpegError as exc:
        raise AudioError(f"{shown(path)}: decoding failed ({exc}); re-encode or replace it.") from exc
    finally:
        container.close()
    mix, side = centre_split(x, names)
    if sr is not None and sr != rate:
        mix = resample(mix, rate, sr)
        side = None if side is None else resample(side, rate, sr)
        rate = sr
    return mix, side, rate


def surround_pieces(path: str | os.PathLike, sr: int) -> tuple[Iterator[np.ndarray], Iterator[np.ndarray]] | None:
    """Streamed :func:`centre_split` of the first audio stream of ``path``: its mix and its dialogue-poor side
    signal at ``sr`` Hz as two parallel iterators of pieces of equal sizes (one decoding pass by
    :func:`decode_frames`, so the decoder delay is dropped as for mono; two soxr
    streams; consume them in step: :func:`itertools.tee` holds what one has read ahead of the other). None when
    the stream has no centre channel to leave out (mono, stereo): use :func:`resampled_pieces` then."""
    import itertools

    import av

    container = _open(path)
    st = container.streams.audio[0] if container.streams.audio else None
    names = [ch.name for ch in st.layout.channels] if st is not None else []
    if st is None or centre_split(np.zeros((len(names), 1), np.float32), names)[1] is None:
        container.close()
        return None

    def split() -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        try:
            for x, rate in decode_frames(container, st, layout=st.layout.name):  # decoder delay dropped
                mix, side = centre_split(x, names)
                yield mix, side, rate
        except av.error.FFmpegError as exc:
            raise AudioError(f"{shown(path)}: decoding failed ({exc}); re-encode or replace it.") from exc
        finally:
            container.close()

    a, b = itertools.tee(split())
    return (resample_pieces(((m, r) for m, _, r in a), sr), resample_pieces(((x, r) for _, x, r in b), sr))


def load(
    path: str | os.PathLike,
    sr: int | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    stream: int | str | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` (its audio stream ``stream``, :func:`select_stream`) to mono float32, optionally
    resampled to ``sr`` Hz.

    ``start_s`` and ``duration_s`` (seconds) select a part without decoding the rest where the container
    allows seeking. Returns ``(samples, sample_rate)``. For hour-long programmes use :func:`stream`.
    """
    chunks: list[np.ndarray] = []
    native = None
    need = None
    got = 0
    for arr, rate in _decoded_blocks(path, start_s, stream):
        native = rate
        if duration_s is not None and need is None:
            need = int(round(duration_s * rate))
        chunks.append(arr)
        got += arr.size
        if need is not None and got >= need:
            break
    if native is None:
        raise AudioError(f"{shown(path)}: holds no decodable audio samples (empty or silent stream).")
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
    Blocker(block, hop)  # checks hop and block before anything is decoded
    for start, x in blocks_of(resampled_pieces(path, sr), block, hop):
        yield start / sr, x


class Blocker:
    """Cut consecutive pieces of one signal into blocks of ``block`` samples starting every ``hop`` samples.

    The one place that lays out overlapping blocks; :class:`OwningBlocker` adds which samples each block
    owns, for the streamed fingerprinter (:class:`~bgmid.fingerprint.landmarks.LandmarkStream`), long
    queries and the monitor. :meth:`push` a piece, get the blocks it completed as ``(start, block)`` (start in samples);
    :meth:`finish` gives the tail: the last, shorter block when it holds samples no earlier block held (or
    when nothing was emitted yet). Blocks are copies, so callers own them.
    """

    def __init__(self, block: int, hop: int):
        if not 0 < hop <= block:
            raise ValueError(f"hop must be in (0, block], got hop={hop}, block={block}")
        self.block, self.hop = block, hop
        self.buf = np.zeros(0, np.float32)  #: samples from ``pos`` on, as one array ...
        self._pending: list[np.ndarray] = []  #: ... followed by these pieces, joined only once a block is full
        self._n = 0  #: samples in ``buf`` and ``_pending`` together
        self.pos = 0  #: sample index of buf[0]
        self.total = 0  #: samples pushed so far

    def _joined(self) -> np.ndarray:
        """``buf`` with the pending pieces appended (one concatenation per emitted block, not per piece: pieces
        are ~0.5 s and blocks ~60 s, so joining on every push copied the block a hundred times over)."""
        if self._pending:
            self.buf = np.concatenate([self.buf, *self._pending]) if self.buf.size else \
                np.concatenate(self._pending)
            self._pending = []
        return self.buf

    def push(self, y: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        y = np.array(y, np.float32, copy=True).reshape(-1)  # a copy: the caller may reuse its buffer
        self.total += y.size
        self._pending.append(y)
        self._n += y.size
        if self._n < self.block:
            return
        self._joined()
        while self.buf.size >= self.block:
            yield self.pos, self.buf[: self.block].copy()
            self.buf = self.buf[self.hop :]
            self._n = self.buf.size
            self.pos += self.hop

    def held(self) -> np.ndarray:
        """The samples from ``pos`` on that no block has passed yet (a copy): what a caller that ends the signal
        its own way (a live stretch's tail block) takes instead of :meth:`finish`."""
        return self._joined().copy()

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        buf = self._joined()
        if buf.size > 0 and (buf.size > self.block - self.hop or self.pos == 0):
            yield self.pos, buf.copy()
        self.buf, self._n = buf[:0], 0


def blocks_of(pieces: Iterable[np.ndarray], block: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, block)`` over consecutive sample ``pieces`` of one signal, laid out by :class:`Blocker`."""
    b = Blocker(block, hop)
    for y in pieces:
        yield from b.push(y)
    yield from b.finish()


@dataclass
class OwnedBlock:
    """A block of a streamed signal and the samples it *owns*: what is decided from this block alone.

    Overlapping blocks give each sample context on both sides, but every sample (peak, landmark, separated
    sample) must be decided by exactly one block, the one where it sits in the core, away from the edges:
    ``own_lo:own_hi`` (absolute samples). The first block also owns its head (from 0) and the last one
    everything to the end, so together they own the signal once.
    """

    start: int  #: absolute sample of ``x[0]``
    x: np.ndarray
    own_lo: int  #: first owned sample (absolute)
    own_hi: int  #: one past the last owned sample (absolute; the end of the signal for the last block)
    last: bool

    @property
    def own(self) -> slice:
        """The owned samples as a slice of ``x``."""
        return slice(self.own_lo - self.start, self.own_hi - self.start)


class OwningBlocker:
    """Blocks of ``block`` samples every ``hop`` samples (:class:`Blocker`), each owning ``hop`` samples from
    ``ctx`` samples in: the one block-ownership rule of the streamed fingerprinter, long queries and the
    monitor. A block is handed out once the next one exists (or the signal has ended), since the last block
    owns more. :meth:`push` pieces, then :meth:`finish`."""

    def __init__(self, block: int, hop: int, ctx: int):
        if not 0 <= ctx <= block - hop:
            raise ValueError(f"ctx must be in [0, block - hop], got ctx={ctx}, block={block}, hop={hop}")
        self.blocker, self.ctx = Blocker(block, hop), int(ctx)
        self._held: tuple[int, np.ndarray] | None = None

    def _own(self, start: int, x: np.ndarray, last: bool) -> OwnedBlock:
        lo = 0 if start == 0 else start + self.ctx
        hi = start + x.size if last else start + self.ctx + self.blocker.hop
        return OwnedBlock(start, x, lo, hi, last)

    def push(self, y: np.ndarray) -> Iterator[OwnedBlock]:
        for blk in self.blocker.push(y):
            if self._held is not None:
                yield self._own(*self._held, last=False)
            self._held = blk

    def finish(self) -> Iterator[OwnedBlock]:
        for blk in self.blocker.finish():
            if self._held is not None:
                yield self._own(*self._held, last=False)
            self._held = blk
        if self._held is not None:
            yield self._own(*self._held, last=True)
            self._held = None


def owned_blocks(pieces: Iterable[np.ndarray], core: int, ctx: int) -> Iterator[OwnedBlock]:
    """:class:`OwnedBlock` s of ``core + 2 * ctx`` samples every ``core`` over consecutive sample ``pieces``
    (a decoded file, a stream, an array cut in pieces): each owns its ``core``, as :class:`OwningBlocker`."""
    ob = OwningBlocker(core + 2 * ctx, core, ctx)
    for y in pieces:
        yield from ob.push(y)
    yield from ob.finish()


def resampled_pieces(path: str | os.PathLike, sr: int, stream: int | str | None = None) -> Iterator[np.ndarray]:
    """The decoded file (its audio stream ``stream``, :func:`select_stream`) at ``sr`` Hz as consecutive pieces
    of about half a second (streamed soxr resampling, so piece edges carry no filter artefacts; the pieces
    concatenate to what :func:`load` returns)."""
    got = False
    for y in resample_pieces(_decoded_blocks(path, stream=stream), sr):
        got = True
        yield y
    if not got:
        raise AudioError(f"{shown(path)}: holds no decodable audio samples (empty or silent stream).")


def resample_pieces(decoded: Iterable[tuple[np.ndarray, int]], sr: int) -> Iterator[np.ndarray]:
    """Decoder output ``(samples, rate)`` (one rate throughout) at ``sr`` Hz, gathered into pieces of about half
    a second (fewer concatenations and soxr calls) and resampled by one soxr stream; nothing for no input."""
    import soxr

    pending: list[np.ndarray] = []
    n_pending = 0
    rs = None
    native = None
    for arr, rate in decoded:
        if native is None:
            native = rate
            if rate != sr:
                rs = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
        pending.append(arr)
        n_pending += arr.size
        if n_pending >= rate // 2:
            y = np.concatenate(pending)
            pending, n_pending = [], 0
            yield rs.resample_chunk(y) if rs is not None else y
    if native is None:
        return
    y = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    yield rs.resample_chunk(y, last=True) if rs is not None else y


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    """Write mono or (n, channels) float audio to a WAV file atomically (temp file + rename)."""
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    data = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    try:  # a bytes name: soundfile encodes str names strictly (undecodable bytes of a file name would fail)
        sf.write(os.fsencode(tmp), data, sr, subtype=subtype, format="WAV")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def iter_audio_files(paths: list[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted) into audio file paths.

    Named files are yielded whatever their extension (content decides); inside folders only entries with a
    known audio/video extension or with no extension at all (as in some game packages) are taken. Entries of
    a folder that are not regular files but look like audio (a FIFO ``feed.wav``, a broken symbolic link) are
    yielded too, so that the reader refuses them by name (:func:`require_regular_file`) instead of skipping
    them silently; folders (also linked ones) are not.
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if not q.is_dir() and (q.suffix.lower() in AUDIO_EXTENSIONS or q.suffix == ""):
                    yield q
        else:
            yield p
