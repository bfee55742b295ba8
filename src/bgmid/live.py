"""Live monitoring: a broadcast stream in around the clock, each cue written as soon as it closes.

:class:`bgmid.monitor.Monitor` reads a programme to its end and then merges its window hits into cues. On the
air there is no end, so this module runs the same pipeline block by block (``Monitor._analyse`` and
``Monitor._feed``: the monitor's block layout and ownership, :class:`bgmid.audio.OwnedBlock`, the postings and
the sliding windows of ``_WindowVoter``) and settles cues as the stream goes by (:func:`split_final`): a cue
is final once no future window can extend it, join a loop to it or shadow it, that is once the voting frontier
is more than ``max(max_gap_s, loop_gap_s, link_gap_s)`` past its evidence. Final hits go through the file
monitor's :func:`~bgmid.monitor.merge_segments` / :func:`~bgmid.monitor.segments_to_cues` and leave memory; so
do old postings (the voter drops them), old level seconds and old wall-clock anchors.

Waiting for ``link_gap_s`` (30 s: same-offset segments that far apart are one cue) would put a cue's line
about 45-55 s after the music stops. So a cue is *written* as soon as it is settled but for that link
(:meth:`LiveMonitor._early`: ``split_final`` without ``link_gap_s``, about ``max_gap_s`` + a window + up to a
block + ``context_s`` after the music stops), and once it is final the record is amended if it changed: a
``cue_update`` (same ``cue_id``) when a link made it longer or the usage estimate moved, a ``cue_retract`` for a
piece the link took into an earlier cue. Applying them in order gives the file run's cues.

The input is read by a thread (:class:`_Reader`) so that a slow analysis never stalls the network: it opens
the source (:func:`bgmid.audio.open_live`; ``srt://`` and capture devices ``device://FORMAT/NAME`` through
:mod:`bgmid.livesource`), decodes the chosen audio stream (:func:`bgmid.audio.decode_frames`, the files' loop),
resamples, stamps each piece with its arrival time (UTC) and queues it. When the stream drops (read time-out,
end of an HTTP stream, a refused connection, the ffmpeg process ending) it reconnects with doubling back-off;
the analysis side closes the stretch of audio before the gap (its open cues are flushed), writes a
``signal_loss`` record when audio comes back, and starts a fresh stretch: programme time counts received
audio only, and a cue never spans a gap. ``idle_timeout_s`` ends the run after that long without audio;
:meth:`LiveMonitor.stop` (SIGTERM/SIGINT in the CLI) flushes the open cues and returns.

``alteration="auto"`` holds the channel's first ``alteration_scan_s`` of audio, estimates its speed / tempo /
pitch once from it (the file monitor's :meth:`~bgmid.monitor.Monitor._alteration`) and undoes it on the rest of
the stream (:class:`bgmid.alterations.UndoStream`), reconnections included; a given alteration is undone from
the start.

Records (:class:`JsonlWriter`, one JSON object per line, UTC ISO-8601 times):

* ``{"type": "cue", "channel", "cue_id", **cue_to_dict(cue), "start_utc", "end_utc", "emitted_utc"}``: the cue
  contract of ``monitor --json`` (:func:`bgmid.cuesheet.cue_to_dict`, programme times in seconds of received
  audio; ``seq`` = ``cue_id``) plus the wall-clock time its audio arrived and when the line was written;
* ``{"type": "cue_update", ...}``: the same fields; replaces the record with its ``cue_id``;
* ``{"type": "cue_retract", "channel", "cue_id", "merged_into", "start_utc", "emitted_utc"}``: the cue
  ``cue_id`` is no more (``merged_into``: the cue that took it in, or null);
* ``{"type": "signal_loss", "channel", "start_utc", "end_utc", "duration_s", "programme_s", "reason"}``: a gap,
  from the last audio received to the first after it, at programme time ``programme_s``;
* ``{"type": "alteration", "channel", "speed", "tempo", "pitch_semitones", "from_s", "evidence",
  "emitted_utc"}``: the ``auto`` estimate, from the first ``from_s`` seconds, before any cue.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bgmid.alterations import NONE, Alteration, UndoStream
from bgmid.audio import AudioError, Blocker, OwnedBlock, is_url
from bgmid.cuesheet import cue_to_dict
from bgmid.monitor import (
    Cue,
    Monitor,
    MonitorConfig,
    Segment,
    WindowHit,
    _Levels,
    _WindowVoter,
    accept_segment,
    merge_loops,
    merge_segments,
    segments_to_cues,
)

__all__ = ["LIVE_BLOCK_S", "JsonlWriter", "LiveConfig", "LiveMonitor", "LiveStats", "split_final", "utc"]

#: Block length (s) of live monitoring: a cue can only be settled once the block holding its last evidence plus
#: ``context_s`` has arrived, so blocks are shorter than the file monitor's 60 s (more context overhead: 16 s
#: analysed per 10 s of audio).
LIVE_BLOCK_S = 10.0


def utc(t: float) -> str:
    """A wall-clock time (``time.time()`` seconds) as ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LiveConfig:
    """How a live source is read and kept up; times in seconds."""

    name: str = ""  #: channel name written in every record
    stream: int | str | None = None  #: audio stream (:func:`bgmid.audio.select_stream`; None: the first)
    open_timeout_s: float = 10.0  #: longest wait to connect and get the first packets
    read_timeout_s: float = 5.0  #: no packet for this long: the signal is lost (reconnect)
    idle_timeout_s: float | None = None  #: end after this long without audio (None: never, keep reconnecting)
    backoff_s: float = 0.5  #: first wait before reconnecting; doubles per failed attempt ...
    backoff_max_s: float = 30.0  #: ... up to this
    queue_s: float = 600.0  #: audio buffered between the reader and the analysis (a slow analysis blocks beyond)
    levels_keep_s: float = 1800.0  #: level history kept for the usage estimate (its reference median)
    options: dict = field(default_factory=dict)  #: extra ffmpeg options for the source (strings)
    #: ``alteration="auto"``: seconds of the channel's first audio the estimate reads (held back meanwhile)
    alteration_scan_s: float = 120.0


@dataclass
class LiveStats:
    """Running figures of one channel (the status line)."""

    connected: bool = False
    programme_s: float = 0.0  #: received audio analysed so far
    lag_s: float = 0.0  #: wall time between the newest analysed audio's arrival and the end of its analysis
    cues: int = 0
    gaps: int = 0
    started: float = field(default_factory=time.time)
    last_audio: float = 0.0  #: wall time the newest audio arrived


# -- settling cues ----------------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def split_final(hits: Sequence[WindowHit], frontier_s: float, frame_s: float,
                config: MonitorConfig | None = None) -> tuple[list[Segment], list[WindowHit]]:
    """Split window hits into the segments whose cues are settled and the hits still open.

    ``frontier_s``: start of the next window to be scored (every later hit has its first aligned landmark at
    or after it). A segment is closed when the frontier is more than ``max(max_gap_s, loop_gap_s, link_gap_s)``
    past its end: no later hit can extend it (:func:`merge_segments` bridges ``max_gap_s``), no later segment of
    its track can join it as a loop (:func:`merge_loops`, ``loop_gap_s``) or at its offset
    (:func:`~bgmid.monitor.link_same_offset`, ``link_gap_s``; such groups are settled together). Closed
    segments that are not accepted (:func:`accept_segment`) are dropped. Accepted and still-open segments are
    grouped into would-be cues
    (:func:`merge_loops`), and groups that could shadow one another (:func:`bgmid.monitor.suppress_shadows`:
    another track over at least ``shadow_overlap`` of the shorter cue; any overlap when a group is still open)
    are settled together: a set of groups is final when none of them is open. Returns the final segments (give
    them to :func:`segments_to_cues`: the same cues as the whole programme's) and the hits to keep.
    """
    config = config or MonitorConfig()
    link_gap = getattr(config, "link_gap_s", 0.0)  # same-offset segments this far apart are one cue
    settle = max(config.max_gap_s, config.loop_gap_s, link_gap)
    segs = merge_segments(hits, config)
    is_open = {id(s): frontier_s - s.end_s <= settle for s in segs}
    cand = [s for s in segs if is_open[id(s)] or accept_segment(s, config)]
    groups = merge_loops(cand, config)
    n = len(groups)
    opened = [any(is_open[id(s)] for s in g) for g in groups]
    pad = config.edge_pad_s
    spans = []
    for g, op in zip(groups, opened, strict=True):
        if op:
            spans.append((min(s.start_s for s in g), max(s.end_s for s in g)))
        else:  # the cue's own extent (widened by ``pad``), tighter than its segments'
            c = segments_to_cues(g, frame_s, config)
            spans.append((c[0].programme_start_s, c[0].programme_end_s) if c else
                         (min(s.start_s for s in g), max(s.end_s for s in g)))
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(n), key=lambda i: spans[i][0])
    for k, i in enumerate(order):  # pairs that overlap in time (sweep in start order)
        for j in order[k + 1:]:
            if spans[j][0] >= spans[i][1]:
                break
            if groups[i][0].track_id == groups[j][0].track_id:
                continue
            ov = _overlap(*spans[i], *spans[j])
            shorter = min(spans[i][1] - spans[i][0], spans[j][1] - spans[j][0])
            if opened[i] or opened[j] or ov >= config.shadow_overlap * (shorter - 2 * pad):
                parent[root(i)] = root(j)
    for i in range(n):  # groups that link_same_offset may join (same track, same offset, <= link_gap_s apart)
        for j in range(i + 1, n):
            if groups[i][0].track_id == groups[j][0].track_id and any(
                    abs(a.offset - b.offset) <= config.offset_tol_frames
                    and max(a.start_s, b.start_s) - min(a.end_s, b.end_s) <= link_gap
                    for a in groups[i] for b in groups[j]):
                parent[root(i)] = root(j)
    busy = {root(i) for i in range(n) if opened[i]}
    final: list[Segment] = []
    keep: list[WindowHit] = []
    for i, g in enumerate(groups):
        if root(i) in busy:
            for s in g:
                keep.extend(s.hits)
        else:
            final.extend(g)
    return final, keep


# -- reading -----------------------------------------------------------------------------------------

#: Queue items of the reader: audio (samples at the monitor's rate, arrival time), a drop (time of the last
#: audio before it, reason), or the end of the input (reason).
_AUDIO, _DROP, _END = "audio", "drop", "end"


class _Reader(threading.Thread):
    """Reads a source into a queue: reconnects a URL with back-off; a file is read once, as fast as it decodes.

    A URL is opened by PyAV (:func:`bgmid.audio.open_live`); a protocol PyAV lacks (``srt://``) is read through
    the ffmpeg program (:class:`bgmid.livesource.FfmpegPipe`) from then on, and a capture device
    (``device://FORMAT/NAME``) by PyAV when it has FORMAT, else by ffmpeg; all three yield the same pieces."""

    def __init__(self, source: str, sr: int, cfg: LiveConfig, out: queue.Queue, stop: threading.Event):
        super().__init__(name=f"bgmid-live-reader-{cfg.name or source}", daemon=True)
        self.source, self.sr, self.cfg, self.out, self.stop_ev = source, sr, cfg, out, stop
        self.live = is_url(source)
        self.scheme = self.source.partition("://")[0].lower() if self.live else ""
        self.last_audio = time.time()  #: wall time the latest audio arrived (or the reader started)
        self.error: str | None = None
        self.finite = False  #: the open source declares a length (it ends rather than drops)
        self.ever_got = False  #: any audio read yet
        self.via_ffmpeg = False  #: read through the ffmpeg program (a protocol or device PyAV lacks)

    def _put(self, item: tuple) -> bool:
        while not self.stop_ev.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pieces(self) -> Iterator[np.ndarray]:
        from bgmid.audio import decode_frames, open_live, resample_pieces, resampled_pieces, select_stream
        from bgmid.livesource import DEVICE_SCHEME, open_device, parse_device

        if not self.live:
            yield from resampled_pieces(self.source, self.sr, self.cfg.stream)
            return
        c = self.cfg
        wait = c.open_timeout_s
        if c.idle_timeout_s is not None:  # do not wait to connect past the idle time-out
            wait = max(0.5, min(wait, c.idle_timeout_s - (time.time() - self.last_audio)))
        device = parse_device(self.source) if self.scheme == DEVICE_SCHEME else None
        # a lavfi graph (a generator) ends when it is done; a capture device that ends has dropped
        self.finite = device is not None and device[0] == "lavfi"
        if self.via_ffmpeg or (device is not None and device[0] not in _pyav_formats()):
            yield from self._ffmpeg_pieces(device, wait)
            return
        if device is not None:
            try:
                container = open_device(self.source, wait, c.read_timeout_s)
            except AudioError:
                if self.ever_got:  # it worked before: unplugged or busy for now, try again
                    raise AudioError(f"{self.source}: the device does not open now") from None
                raise
        else:
            try:
                container = open_live(self.source, wait, c.read_timeout_s, c.options)
            except AudioError as exc:
                import av

                if not isinstance(exc.__cause__, av.error.ProtocolNotFoundError):
                    raise
                self.via_ffmpeg = True  # PyAV's wheels carry no libsrt, for one: the ffmpeg program may
                yield from self._ffmpeg_pieces(None, wait)
                return
            # a source that declares its length (an HLS playlist with an end, a recording served over HTTP)
            # ends when it is read to the end; a broadcast stream (no length) that ends has dropped
            self.finite = container.duration is not None and container.duration > 0
        try:
            st = select_stream(container, c.stream, self.source)
            yield from resample_pieces(decode_frames(container, st), self.sr)
        finally:
            container.close()

    def _ffmpeg_pieces(self, device: tuple[str, str] | None, wait: float) -> Iterator[np.ndarray]:
        """The source through the ffmpeg program (:class:`bgmid.livesource.FfmpegPipe`): a URL of a protocol
        PyAV lacks, or ``device`` ``(format, name)`` of an input device PyAV lacks."""
        from bgmid.livesource import FfmpegPipe, SourceUnavailable, StreamDropped, device_text, ffmpeg_has

        try:
            exe = ffmpeg_has(device=device[0]) if device else ffmpeg_has(protocol=self.scheme)
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{self.source}: {exc}") from None
        pipe = FfmpegPipe(device[1] if device else self.source, self.sr, self.cfg.stream,
                          input_format=device[0] if device else None, open_timeout_s=wait,
                          read_timeout_s=self.cfg.read_timeout_s, exe=exe)
        try:
            yield from pipe.pieces()
        except StreamDropped as exc:
            if device is None or self.ever_got:
                raise
            # a device that never opened is a mistake in its name, not a drop to wait out
            raise SourceUnavailable(f"{self.source}: cannot open the {device[0]} device {device[1]!r} ({exc}); "
                                    f"{device_text()}.") from None

    def run(self) -> None:
        import av

        from bgmid.livesource import SourceUnavailable, StreamDropped

        wait = self.cfg.backoff_s
        while not self.stop_ev.is_set():
            got = False
            reason = "end of stream"
            try:
                for y in self._pieces():
                    if self.stop_ev.is_set():
                        return
                    if y.size:
                        got = self.ever_got = True
                        self.last_audio = time.time()
                        if not self._put((_AUDIO, y, self.last_audio)):
                            return
            except AudioError as exc:
                reason = str(exc)
                # a file that cannot be read, a protocol or device nothing here reads: nothing to reconnect to
                if (not self.live or isinstance(exc, SourceUnavailable)
                        or isinstance(exc.__cause__, av.error.ProtocolNotFoundError)):
                    self.error = reason
                    self._put((_END, reason))
                    return
            except av.error.FFmpegError as exc:  # read time-out (ExitError), connection reset, damaged packets
                reason = f"{exc.__class__.__name__}: {exc}"
            except StreamDropped as exc:  # the ffmpeg program ended or went silent
                reason = str(exc)
            if not self.live or (self.finite and reason == "end of stream"):
                self._put((_END, "end of file" if not self.live else "end of a stream of known length"))
                return
            if got:
                wait = self.cfg.backoff_s
                self._put((_DROP, self.last_audio, reason))
            idle = self.cfg.idle_timeout_s
            if idle is not None and time.time() - self.last_audio >= idle:
                why = "" if self.ever_got else f"; last attempt: {reason}"
                self._put((_END, f"no audio for {idle:g} s{why}"))
                return
            self.stop_ev.wait(wait)
            wait = min(2 * wait, self.cfg.backoff_max_s)


def _pyav_formats() -> set[str]:
    import av

    return av.formats_available


# -- the monitor -------------------------------------------------------------------------------------


class _ShiftedLevels:
    """``_Levels`` over the recent past only: seconds before ``off`` are dropped (bounded memory on the air).
    Presents absolute sample positions to :meth:`Monitor._feed`."""

    def __init__(self, sr: int):
        self.sr, self.inner, self.off = sr, _Levels(sr), 0  # off: samples dropped (whole seconds)

    @property
    def n_samples(self) -> int:
        return self.inner.n_samples + self.off

    def add(self, signals: dict[str, np.ndarray], start: int, a: int, b: int) -> None:
        self.inner.add(signals, start - self.off, a, b)

    def drop_before(self, sample: int) -> None:
        k = max(0, (sample - self.off) // self.sr)
        if k <= 0:
            return
        self.inner.drop_seconds(k)
        self.off += k * self.sr


class _Stretch:
    """One continuous stretch of received audio (a new one after each signal loss).

    With an alteration the stretch runs on the undone time line (:class:`bgmid.alterations.UndoStream`: the
    track's scale, ``time_factor`` times the programme's), as the file monitor does; records are rescaled."""

    def __init__(self, mon: Monitor, base_s: float, alteration: Alteration):
        f = mon.samples_per_frame  # the file monitor's block layout (Monitor._blocks), in samples
        self.core, self.ctx = int(round(mon.core_frames * f)), int(round(mon.ctx_frames * f))
        self.blocker = Blocker(self.core + 2 * self.ctx, self.core)
        self.voter = _WindowVoter(mon.preset, mon.config)
        self.levels = _ShiftedLevels(mon.sr)
        self.base_s = base_s  #: programme time of the stretch's first sample
        self.alt = alteration
        self.undo = None if alteration.is_none else UndoStream(mon.sr, alteration)
        self.pending: list[WindowHit] = []
        self.clock: deque[tuple[int, float]] = deque()  #: (samples received, arrival time) anchors
        self.spans: deque[tuple[float, float, int]] = deque()  #: (start s, end s, track) of recent cues written
        self.written: list[_Written] = []  #: cues written early that a later link may still change

    def programme_s(self, t_s: float) -> float:
        """Programme time (received audio since the run started) of stretch time ``t_s`` (undone time line)."""
        return self.base_s + t_s / self.alt.time_factor

    def wall(self, t_s: float, sr: int) -> float:
        """Arrival time (wall clock) of stretch time ``t_s``, interpolated between the anchors."""
        k = np.array([a for a, _ in self.clock], np.float64) / sr
        w = np.array([b for _, b in self.clock], np.float64)
        if k.size == 1:
            return float(w[0] - (k[0] - t_s))
        return float(np.interp(t_s, k, w, left=w[0] - (k[0] - t_s), right=w[-1] + (t_s - k[-1])))


@dataclass
class _Written:
    """A would-be cue handled before it was settled (:meth:`LiveMonitor._early`): its segment group's key,
    stretch-time span, the record written (None: it gave no cue, or it has been settled) and the window hits
    it came from (held, so that it is known when they have been settled)."""

    key: tuple[int, float]
    track_id: int
    start_s: float
    end_s: float
    record: dict | None
    hits: list[WindowHit]

    @property
    def cue_id(self) -> int:
        return self.record["cue_id"]


def _group_key(group: Sequence[Segment]) -> tuple[int, float]:
    """A segment group's identity while its hits are pending: track and first hit time (stretch s)."""
    return group[0].track_id, round(min(s.start_s for s in group), 3)


def _shift(cue: Cue, dt: float, scale: float = 1.0) -> None:
    """Programme times of ``cue`` (its parts and usage parts too) to ``(t + dt) / scale``."""
    cue.programme_start_s = (cue.programme_start_s + dt) / scale
    cue.programme_end_s = (cue.programme_end_s + dt) / scale
    for p in cue.parts:
        p.programme_start_s = (p.programme_start_s + dt) / scale
        p.programme_end_s = (p.programme_end_s + dt) / scale
    cue.usage_parts = [((a + dt) / scale, (b + dt) / scale, u) for a, b, u in cue.usage_parts]


def _same(a: dict, b: dict) -> bool:
    """Two cue records say the same (the time they were written aside)."""
    skip = ("emitted_utc", "type")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


class LiveMonitor:
    """Monitor one source (URL, device or file) continuously; ``on_record`` gets every record (cues, their
    updates and retractions, signal losses, the alteration estimate)."""

    def __init__(self, monitor: Monitor, source: str, config: LiveConfig | None = None,
                 on_record: Callable[[dict], None] | None = None):
        self.mon, self.source = monitor, source
        self.cfg = config or LiveConfig()
        self.on_record = on_record or (lambda r: None)
        self.stats = LiveStats()
        self._stop = threading.Event()
        self.end_reason = ""
        self._playing: list[tuple[str, float, float]] = []
        self._next_id = 0
        c = monitor.config
        #: cues are written once settled without the same-offset link (max_gap_s, loop_gap_s), and amended
        #: when a link (link_gap_s) changes them; None when the link waits no longer than the rest
        early = getattr(c, "link_gap_s", 0.0) > max(c.max_gap_s, c.loop_gap_s)
        self._early_config = replace(c, link_gap_s=0.0) if early else None
        a = monitor.alteration
        #: the alteration undone on this stream; None while "auto" still gathers the audio to estimate it
        self.alteration: Alteration | None = a if isinstance(a, Alteration) else (NONE if a is None else None)
        self.alteration_evidence: list[dict] = []

    @staticmethod
    def live_config(config: MonitorConfig | None = None) -> MonitorConfig:
        """A monitor configuration with live blocks (:data:`LIVE_BLOCK_S`) unless a shorter block is set."""
        c = config or MonitorConfig()
        return c if c.block_s <= LIVE_BLOCK_S else replace(c, block_s=LIVE_BLOCK_S)

    def playing(self) -> list[tuple[str, float, float]]:
        """The cues running now (evidence enough to be a cue, not yet settled), as of the last block:
        ``(title, programme start s, seconds so far)``, for the terminal (readable from any thread)."""
        return self._playing

    def _update_playing(self, st: _Stretch) -> None:
        c = self.mon.config
        segs = [s for s in merge_segments(st.pending, c) if accept_segment(s, c)]
        f = st.alt.time_factor
        self._playing = [(self.mon.store.track(g[0].track_id).title, st.programme_s(min(s.start_s for s in g)),
                          (max(s.end_s for s in g) - min(s.start_s for s in g)) / f) for g in merge_loops(segs, c)]

    def held_s(self) -> float:
        """Seconds of audio held for the ``auto`` alteration estimate (0 once it is made), for the terminal."""
        return sum(y.size for y, _ in list(getattr(self, "_head", []))) / self.mon.sr

    def stop(self) -> None:
        """Ask the run to end: open cues are flushed (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> LiveStats:
        """Read until the source ends (a file), ``idle_timeout_s`` passes without audio, or :meth:`stop`."""
        sr = self.mon.sr
        q: queue.Queue = queue.Queue(maxsize=max(4, int(self.cfg.queue_s / 0.5)))
        reader_stop = threading.Event()
        reader = _Reader(self.source, sr, self.cfg, q, reader_stop)
        reader.start()
        self._stretch: _Stretch | None = None
        self._base_s = 0.0
        self._lost: tuple[float, str] | None = None  # (last audio before the gap, reason)
        self._head: list[tuple[np.ndarray, float]] = []  # audio held while "auto" estimates the alteration
        try:
            while not self._stop.is_set():
                try:
                    item = q.get(timeout=0.2)
                except queue.Empty:
                    continue
                kind = item[0]
                if kind == _AUDIO:
                    self._audio(item[1], item[2])
                elif kind == _DROP:
                    self._settle_alteration()
                    if self._stretch is not None:
                        self._base_s = self._close(self._stretch)
                        self._stretch = None
                    self.stats.connected = False
                    self._lost = (item[1], item[2])
                else:
                    self.end_reason = item[1]
                    break
            else:
                self.end_reason = "stopped"
        finally:
            reader_stop.set()
            self._settle_alteration()
            if self._stretch is not None:
                self._close(self._stretch)
            self.stats.connected = False
        if reader.error and not self.stats.programme_s:
            raise AudioError(reader.error)
        return self.stats

    # internals
    def _audio(self, y: np.ndarray, t_arr: float) -> None:
        """A piece of received audio: held while the alteration is estimated, else into the stretch."""
        self.stats.connected = True
        if self.alteration is None:
            self._head.append((y, t_arr))
            if sum(h.size for h, _ in self._head) >= self.cfg.alteration_scan_s * self.mon.sr:
                self._settle_alteration()
            return
        if self._stretch is None:
            self._stretch = _Stretch(self.mon, self._base_s, self.alteration)
            if self._lost is not None:
                self._gap(self._lost, t_arr - y.size / self.mon.sr, self._base_s)
                self._lost = None
        self._push(self._stretch, y, t_arr)

    def _settle_alteration(self) -> None:
        """``--alteration auto``: estimate it once from the audio held (the channel's first
        ``alteration_scan_s``, or less when the stream drops or ends first), as the file monitor does from a
        programme's first minutes (:meth:`bgmid.monitor.Monitor._alteration`), write an ``alteration``
        record and analyse the audio held."""
        if self.alteration is not None or not self._head:
            return
        head = np.concatenate([y for y, _ in self._head])
        self.alteration, self.alteration_evidence = self.mon._alteration(lambda: head)
        self.on_record({"type": "alteration", "channel": self.cfg.name, **self.alteration.to_dict(),
                        "from_s": round(head.size / self.mon.sr, 3), "evidence": self.alteration_evidence,
                        "emitted_utc": utc(time.time())})
        held, self._head = self._head, []
        for y, t_arr in held:
            self._audio(y, t_arr)

    def _gap(self, lost: tuple[float, str], back: float, programme_s: float) -> None:
        self.stats.gaps += 1
        self.on_record({"type": "signal_loss", "channel": self.cfg.name, "start_utc": utc(lost[0]),
                        "end_utc": utc(back), "duration_s": round(max(0.0, back - lost[0]), 3),
                        "programme_s": round(programme_s, 3), "reason": lost[1]})

    def _push(self, st: _Stretch, y: np.ndarray, t_arr: float, last: bool = False) -> None:
        if st.undo is not None:
            y = st.undo.push(y, last)
        st.clock.append((st.blocker.total + y.size, t_arr))
        self.stats.last_audio = t_arr
        for start, x in st.blocker.push(y):
            # handed on at once (bgmid.audio.OwningBlocker holds each block until the next exists: a block of
            # latency); a live block is never the last: the stretch's tail is, when it closes (_close)
            self._block(st, OwnedBlock(start, x, 0 if start == 0 else start + st.ctx, start + st.ctx + st.core,
                                       False))
            self.stats.lag_s = time.time() - t_arr

    def _block(self, st: _Stretch, blk: OwnedBlock) -> None:
        mon = self.mon
        mon._feed(st.voter, st.levels, blk, mon._analyse(blk.x))
        last = blk.last
        st.pending.extend(st.voter.hits)
        st.voter.hits = []
        self.stats.programme_s = st.programme_s(st.levels.n_samples / mon.sr)
        if last:
            final, st.pending = merge_segments(st.pending, mon.config), []
            self._emit(st, final, n_windows=st.voter.n_windows)
        else:
            frontier = st.voter.next_win * mon.preset.frame_s
            final, st.pending = split_final(st.pending, frontier, mon.preset.frame_s, mon.config)
            if final or st.written:  # (early cues whose hits left are resolved there)
                self._emit(st, final, None)
            if self._early_config is not None:
                self._early(st, frontier)
        self._update_playing(st)
        self._forget(st)

    def _forget(self, st: _Stretch) -> None:
        """Drop level seconds and clock anchors no open cue can need (bounded memory)."""
        sr = self.mon.sr
        oldest = min((h.start_s for h in st.pending), default=st.levels.n_samples / sr)
        keep_from = min(oldest - 60.0, st.levels.n_samples / sr - self.cfg.levels_keep_s)
        if keep_from > 0:
            st.levels.drop_before(int(keep_from * sr))
        while len(st.clock) > 2 and st.clock[1][0] / sr < oldest - 60.0:
            st.clock.popleft()
        while st.spans and st.spans[0][1] < st.levels.off / sr:
            st.spans.popleft()

    def _cues(self, st: _Stretch, segments: list[Segment], n_windows: int | None,
              config: MonitorConfig) -> list[Cue]:
        """Cues of settled ``segments`` (:func:`segments_to_cues`), annotated (metadata, usage), in stretch time."""
        mon = self.mon
        cues = segments_to_cues(segments, mon.preset.frame_s, config, n_windows_total=n_windows)
        if not cues:
            return []
        lv = st.levels
        off_s = lv.off / mon.sr
        curves = lv.inner.curves()
        for c in cues:
            _shift(c, -off_s)
        # usage needs only the cue's own audio (estimate_usage: the mix's frame powers or the separated levels)
        mon._annotate(cues, lv.inner.n_samples / mon.sr, curves["music"], curves["speech"], curves["frames"])
        for c in cues:
            _shift(c, off_s)
            st.spans.append((c.programme_start_s, c.programme_end_s, c.track_id))
        return cues

    def _record(self, st: _Stretch, c: Cue, cue_id: int, kind: str = "cue") -> dict:
        """The JSON record of cue ``c`` (stretch time; rescaled to programme time here, a copy)."""
        from copy import deepcopy

        sr, a = self.mon.sr, st.alt
        start_utc, end_utc = st.wall(c.programme_start_s, sr), st.wall(c.programme_end_s, sr)
        c = deepcopy(c)
        _shift(c, st.base_s * a.time_factor, a.time_factor)
        if not a.is_none:
            c.speed, c.tempo, c.pitch_semitones = a.speed, a.tempo, a.pitch_semitones
        c.seq = cue_id
        return {"type": kind, "channel": self.cfg.name, "cue_id": cue_id, **cue_to_dict(c),
                "start_utc": utc(start_utc), "end_utc": utc(end_utc), "emitted_utc": utc(time.time())}

    def _new_id(self) -> int:
        self._next_id += 1
        self.stats.cues += 1
        return self._next_id

    def _early(self, st: _Stretch, frontier_s: float) -> None:
        """Write the cues settled but for a same-offset link (``link_gap_s``) as soon as that is so: about
        ``max_gap_s`` + a window after the music stops instead of ``link_gap_s`` + a window."""
        frame_s, cfg = self.mon.preset.frame_s, self._early_config
        segs, _ = split_final(st.pending, frontier_s, frame_s, cfg)
        known = {w.key for w in st.written}
        fresh = [g for g in merge_loops(segs, cfg) if _group_key(g) not in known]  # a group's segments are fixed
        if not fresh:
            return
        cues = self._cues(st, [s for g in fresh for s in g], None, cfg)
        for g in fresh:
            lo, hi = min(s.start_s for s in g), max(s.end_s for s in g)
            c = next((c for c in cues if c.track_id == g[0].track_id
                      and _overlap(lo, hi, c.programme_start_s, c.programme_end_s) > 0), None)
            # a group that gives no cue (shadowed) is remembered too, so it is not tried again
            rec = None if c is None else self._record(st, c, self._new_id())
            span = (lo, hi) if c is None else (c.programme_start_s, c.programme_end_s)
            st.written.append(_Written(_group_key(g), g[0].track_id, *span, rec, [h for s in g for h in s.hits]))
            if rec is not None:
                self.on_record(rec)

    def _emit(self, st: _Stretch, segments: list[Segment], n_windows: int | None) -> None:
        """Write the settled cues of ``segments``: new ones as ``cue`` records; one written early (by
        :meth:`_early`) as nothing more when it came out the same, else as a ``cue_update`` of its record, and
        the early cues it took in (a same-offset link) or that came to nothing as ``cue_retract``."""
        for c in self._cues(st, segments, n_windows, self.mon.config):
            mine = [w for w in st.written if w.record is not None and w.track_id == c.track_id
                    and _overlap(w.start_s, w.end_s, c.programme_start_s, c.programme_end_s) > 0]
            if not mine:
                self.on_record(self._record(st, c, self._new_id()))
                continue
            first, rest = mine[0], mine[1:]
            rec = self._record(st, c, first.cue_id, "cue_update")
            if not _same(rec, first.record):
                self.on_record(rec)
            for w in rest:
                self._retract(w, first.cue_id)
            for w in mine:
                w.record = None  # settled
        pending = {id(h) for h in st.pending}
        keep = []
        for w in st.written:
            if any(id(h) in pending for h in w.hits):
                keep.append(w)
            elif w.record is not None:
                self._retract(w, None)  # settled, and no cue of the file run's any more (e.g. shadowed)
        st.written = keep

    def _retract(self, w: _Written, into: int | None) -> None:
        self.stats.cues -= 1
        self.on_record({"type": "cue_retract", "channel": self.cfg.name, "cue_id": w.cue_id, "merged_into": into,
                        "start_utc": w.record["start_utc"], "emitted_utc": utc(time.time())})

    def _close(self, st: _Stretch) -> float:
        """End a stretch: its tail block (all audio after the last full block's core) as the last block, so
        every open cue is settled. Returns the programme time where the next stretch starts."""
        if st.undo is not None:
            self._push(st, np.zeros(0, np.float32), st.clock[-1][1] if st.clock else time.time(), last=True)
        b = st.blocker
        if b.total > 0:
            x = b.held()
            self._block(st, OwnedBlock(b.pos, x, 0 if b.pos == 0 else b.pos + st.ctx, b.pos + x.size, True))
        return st.programme_s(b.total / self.mon.sr)


# -- output ------------------------------------------------------------------------------------------


class JsonlWriter:
    """Append records as JSON lines to ``path``, flushed per line; ``rotate`` ``"hour"``/``"day"`` starts a
    new file per UTC hour/day of the record's time (``show.jsonl`` -> ``show-20261201T13.jsonl`` /
    ``show-20261201.jsonl``)."""

    def __init__(self, path: str | Path, rotate: str | None = None):
        if rotate not in (None, "hour", "day"):
            raise ValueError(f"rotate must be 'hour' or 'day', got {rotate!r}")
        self.path, self.rotate = Path(path), rotate
        self._name: Path | None = None
        self._f = None

    def name_for(self, when: datetime) -> Path:
        if self.rotate is None:
            return self.path
        tag = when.strftime("%Y%m%dT%H") if self.rotate == "hour" else when.strftime("%Y%m%d")
        return self.path.with_name(f"{self.path.stem}-{tag}{self.path.suffix}")

    def write(self, rec: dict) -> Path:
        when = rec.get("start_utc") or rec.get("emitted_utc")
        t = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else datetime.now(UTC)
        name = self.name_for(t)
        if name != self._name:
            self.close()
            name.parent.mkdir(parents=True, exist_ok=True)
            self._f, self._name = open(name, "a", encoding="utf-8"), name
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        return name

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f, self._name = None, None
