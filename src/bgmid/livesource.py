"""Live sources PyAV's wheels cannot open themselves: ``srt://`` and capture devices, read through ffmpeg.

:mod:`bgmid.live` reads a stream URL with PyAV (:func:`bgmid.audio.open_live`). Two kinds of input need more:

* **Protocols PyAV's wheels lack** (``srt://``: no libsrt in them) are read by the ``ffmpeg`` program when it has
  the protocol (Debian's does): :class:`FfmpegPipe` spawns it to decode the chosen audio stream to raw mono
  float32 PCM at the monitor's rate on its stdout. The process exiting, or sending nothing for the read
  time-out, is the stream dropping, as a PyAV read error is: the live reader reconnects with back-off.
* **Capture devices**, named ``device://FORMAT/NAME``: ``FORMAT`` is an ffmpeg input device (libavdevice:
  ``alsa``, ``pulse``, ``oss``, ``jack``, ``lavfi``, ...) and ``NAME`` what that device calls its input
  (``device://alsa/hw:1,0``, ``device://pulse/default``, ``device://lavfi/sine=f=440``,
  ``device://lavfi/amovie=/srv/show.wav``). A format PyAV has is opened by PyAV (``av.open(NAME,
  format=FORMAT)``, :func:`open_device`), another one through :class:`FfmpegPipe` (``ffmpeg -f FORMAT -i
  NAME``). A device that cannot be opened is one :class:`SourceUnavailable` naming it and listing the device
  formats this machine offers (:func:`device_formats`).

:class:`SourceUnavailable` marks what reconnecting cannot mend (no ffmpeg, no such protocol or device
format, a device that does not open): the live reader ends with it instead of retrying.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterator

import numpy as np

from bgmid.audio import AudioError, parse_stream_spec

__all__ = ["DEVICE_SCHEME", "FfmpegPipe", "SourceUnavailable", "StreamDropped", "device_formats", "device_text",
           "ffmpeg_has", "open_device", "parse_device"]

#: The URL scheme of capture devices: ``device://FORMAT/NAME``.
DEVICE_SCHEME = "device"

#: ffmpeg input devices that capture or generate audio (libavdevice's names; ``lavfi`` is the virtual one).
AUDIO_DEVICES = ("alsa", "pulse", "oss", "jack", "openal", "sndio", "lavfi", "avfoundation", "dshow",
                 "audiotoolbox", "decklink")


class SourceUnavailable(AudioError):
    """A source that reconnecting cannot mend: the live reader stops instead of retrying."""


class StreamDropped(Exception):
    """The ffmpeg process ended or went silent: the stream dropped (the live reader reconnects)."""


@functools.cache
def _ffmpeg_lists() -> tuple[str, frozenset[str], frozenset[str]]:
    """(path of ffmpeg, its protocols, its input devices); ("", {}, {}) without ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return "", frozenset(), frozenset()

    def run(flag: str) -> str:
        try:
            return subprocess.run([exe, "-hide_banner", flag], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    protocols = frozenset(w.strip() for w in run("-protocols").splitlines()[1:] if w.strip().isidentifier())
    devices = frozenset(line.split()[1] for line in run("-devices").splitlines()
                        if len(line.split()) > 1 and line.split()[0] in ("D", "DE"))
    return exe, protocols, devices


def ffmpeg_has(protocol: str | None = None, device: str | None = None) -> str:
    """Path of the ``ffmpeg`` program when it reads ``protocol`` / the input ``device``; else a
    :class:`SourceUnavailable` saying what is missing."""
    exe, protocols, devices = _ffmpeg_lists()
    what = f"{protocol}://" if protocol else f"the {device} device"
    if not exe:
        raise SourceUnavailable(f"reading {what} needs the ffmpeg program (PyAV's wheels cannot), and there is "
                                "none on PATH: install it (apt-get install ffmpeg).")
    if protocol and protocol not in protocols:
        raise SourceUnavailable(f"{exe} has no {protocol} protocol (ffmpeg -protocols); install an ffmpeg built "
                                f"with it (Debian's has libsrt), or relay the stream to udp://127.0.0.1:5000.")
    if device and device not in devices:
        raise SourceUnavailable(f"{exe} has no {device} input device; {device_text()}.")
    return exe


def device_formats() -> dict[str, list[str]]:
    """The audio input device formats on this machine: ``{"pyav": [...], "ffmpeg": [...]}``."""
    import av

    return {"pyav": sorted(d for d in AUDIO_DEVICES if d in av.formats_available),
            "ffmpeg": sorted(d for d in AUDIO_DEVICES if d in _ffmpeg_lists()[2])}


def device_text() -> str:
    """The device formats here, for error messages."""
    f = device_formats()
    return (f"device formats here: {', '.join(f['pyav']) or 'none'} (PyAV), "
            f"{', '.join(f['ffmpeg']) or 'none'} (the ffmpeg program)")


def parse_device(url: str) -> tuple[str, str]:
    """``device://FORMAT/NAME`` -> ``(FORMAT, NAME)``; NAME may hold further slashes (a file in a lavfi graph)."""
    rest = url.partition("://")[2]
    fmt, _, name = rest.partition("/")
    if not fmt or not name:
        raise SourceUnavailable(f"{url}: name a capture device as device://FORMAT/NAME, e.g. device://alsa/hw:1,0, "
                                f"device://pulse/default or device://lavfi/sine=f=440; {device_text()}.")
    return fmt.lower(), name


def open_device(url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0):
    """Open ``device://FORMAT/NAME`` with PyAV (FORMAT must be one of PyAV's, see :func:`device_formats`);
    failure is a :class:`SourceUnavailable` naming the device and the formats there are."""
    import av

    fmt, name = parse_device(url)
    try:
        container = av.open(name, format=fmt, timeout=(open_timeout_s, read_timeout_s))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise SourceUnavailable(f"{url}: cannot open the {fmt} device {name!r} ({exc}); {device_text()}.") from exc
    if not container.streams.audio:
        container.close()
        raise SourceUnavailable(f"{url}: the {fmt} device {name!r} gives no audio; {device_text()}.")
    return container


def _map_arg(stream: int | str | None) -> str:
    """``--stream`` (:func:`bgmid.audio.parse_stream_spec`) as an ffmpeg ``-map`` stream specifier."""
    spec = parse_stream_spec(stream)
    if spec is None:
        return "0:a:0"
    if isinstance(spec, int):
        return f"0:a:{spec}"
    if spec.startswith("pid="):
        return f"0:i:{int(spec[4:])}"
    return f"0:a:m:language:{spec}"


class FfmpegPipe:
    """The ``ffmpeg`` program decoding one audio stream of ``source`` to mono float32 PCM at ``sr`` Hz on a pipe.

    ``source`` is a URL (``srt://...``) or, with ``input_format``, a device name (``-f alsa -i hw:0``).
    :meth:`pieces` yields the samples as they come, in pieces of about ``piece_s``, and returns when ffmpeg
    ends cleanly (the end of the stream); it raises :class:`StreamDropped` when ffmpeg fails or sends nothing
    for ``read_timeout_s`` (``open_timeout_s`` for the first audio), and :class:`SourceUnavailable` when ffmpeg
    says the chosen stream is not there. The process is always ended (terminated, then killed) when the
    generator is closed.
    """

    def __init__(self, source: str, sr: int, stream: int | str | None = None, input_format: str | None = None,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 5.0, piece_s: float = 0.5,
                 exe: str = "ffmpeg"):
        self.source, self.sr, self.stream, self.input_format = source, sr, stream, input_format
        self.open_timeout_s, self.read_timeout_s, self.piece = open_timeout_s, read_timeout_s, int(piece_s * sr)
        self.exe = exe

    def command(self) -> list[str]:
        fmt = ["-f", self.input_format] if self.input_format else ["-analyzeduration", "1000000",
                                                                   "-probesize", "262144"]
        return [self.exe, "-nostdin", "-hide_banner", "-loglevel", "error", *fmt, "-i", self.source,
                "-map", _map_arg(self.stream), "-vn", "-ac", "1", "-ar", str(self.sr), "-f", "f32le", "pipe:1"]

    def pieces(self) -> Iterator[np.ndarray]:
        proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        err: deque[str] = deque(maxlen=20)
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        fds = [out_fd, err_fd]
        buf, pending, n_pending = b"", [], 0
        wait = self.open_timeout_s
        last = time.monotonic()
        try:
            while out_fd in fds:
                ready, _, _ = select.select(fds, [], [], 0.2)
                if not ready:
                    if time.monotonic() - last > wait:
                        raise StreamDropped(f"no audio from ffmpeg for {wait:g} s")
                    continue
                for fd in ready:
                    data = os.read(fd, 1 << 16)
                    if fd == err_fd:
                        if data:
                            err.extend(data.decode("utf-8", "replace").splitlines())
                        else:
                            fds.remove(fd)
                        continue
                    if not data:
                        fds.remove(fd)
                        continue
                    last, wait = time.monotonic(), self.read_timeout_s
                    buf += data
                    n = len(buf) // 4 * 4
                    pending.append(np.frombuffer(buf[:n], np.float32))
                    buf = buf[n:]
                    n_pending += n // 4
                    if n_pending >= self.piece:
                        yield np.concatenate(pending)
                        pending, n_pending = [], 0
            if n_pending:
                yield np.concatenate(pending)
            rc = proc.wait(5)
            if rc == 0 and not err:
                return  # the end of the stream, as a PyAV read that ends
            text = " / ".join(err) or f"exit status {rc}"
            if "matches no streams" in text:
                raise SourceUnavailable(f"{self.source}: no audio stream {self.stream!r} (--stream): {text}")
            raise StreamDropped(f"ffmpeg ended: {text}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
            proc.stderr.close()
