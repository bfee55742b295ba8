"""Live channels on a Ray cluster: ``bgmid monitor --channels CHANNELS.toml --ray local|ADDRESS``.

The same line-up, jobs and per-channel work as :mod:`bgmid.channels` (each channel runs
:func:`bgmid.channels._channel_main`: :class:`bgmid.live.LiveMonitor` writing its JSON lines), but each channel is
a Ray actor (:class:`ChannelActor`) instead of a local process, so a line-up can span the nodes of a cluster:

* **placement by load**: actors are created with Ray's ``SPREAD`` strategy, each reserving a share of a CPU
  (:data:`CHANNEL_CPUS`, a whole CPU for a channel with a separator), so channels go to the nodes with room and
  are spread over them rather than packed on the first;
* **restarted on failure**: an actor whose process dies (killed, out of memory, its node lost) is restarted by Ray
  (``max_restarts``); the supervisor (:func:`supervise_ray`) sees its ``run`` call fail, says so, and calls
  ``run`` again on the restarted actor after a doubling wait (1 s up to a minute), as the local supervisor does;
  a channel that ends on its own (``--idle-timeout``) is not restarted;
* **status lines per channel** as with local processes (:func:`bgmid.channels.status_line`), read from each
  actor (a threaded actor answers while it monitors), plus the node and process a channel runs on.

Actors are named ``bgmid-channel-<name>`` in the Ray namespace :data:`NAMESPACE` (``ray list actors`` shows them;
a test kills one by name). Cue files are written by the actor on its node, at ``--out`` there: on a cluster name
a folder every node mounts. SIGTERM/SIGINT of the supervisor stop every channel gracefully (open cues flushed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from bgmid.channels import ChannelJob, _channel_main, status_line

__all__ = ["CHANNEL_CPUS", "NAMESPACE", "ChannelActor", "run_channels_ray", "supervise_ray"]

#: Ray namespace of the channel actors.
NAMESPACE = "bgmid"
#: CPU share a channel without a separator reserves (live monitoring at real time uses a small part of a core);
#: with a separator it reserves a whole CPU.
CHANNEL_CPUS = 0.25


class ChannelActor:
    """One channel as a Ray actor (threaded: ``run`` monitors while ``figures``/``stop``/``where`` answer)."""

    def __init__(self, job: ChannelJob):
        self.job = job
        self.fig: dict = {}
        self.live: Any = None
        self.started = time.time()

    def put(self, item: tuple[str, dict]) -> None:
        """The status queue of :func:`bgmid.channels._channel_main`: the latest figures are kept here."""
        self.fig = item[1]

    def run(self) -> dict:
        """Monitor the channel until it ends on its own or is stopped; its last figures."""
        _channel_main(self.job, self, on_start=lambda live: setattr(self, "live", live))
        return self.fig

    def figures(self) -> dict:
        return self.fig

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def where(self) -> tuple[str, int, float]:
        """(node IP, process id, start time): a new process id means the actor was restarted."""
        import ray

        return ray.util.get_node_ip_address(), os.getpid(), self.started


def _actor_options(job: ChannelJob, max_restarts: int) -> dict:
    cpus = CHANNEL_CPUS if (job.separator or "none") == "none" else 1.0
    return {"name": f"bgmid-channel-{job.channel.name}", "namespace": NAMESPACE, "num_cpus": cpus,
            "scheduling_strategy": "SPREAD", "max_restarts": max_restarts, "max_concurrency": 4}


def supervise_ray(jobs: list[ChannelJob], status_every_s: float = 10.0, restart_max_s: float = 60.0, log=None,
                  max_restarts: int = -1, ray: Any = None) -> dict[str, dict]:
    """Run every job as a Ray actor (on the cluster this process is connected to, ``ray``) until all have ended
    on their own, or SIGTERM/SIGINT (in the main thread: every channel stopped, open cues flushed). An actor
    that dies is restarted by Ray and its channel run again after 1 s, doubling per death up to
    ``restart_max_s``. A status line per channel every ``status_every_s`` to ``log`` (default stderr). Returns
    the last figures of each channel, with its restarts."""
    from bgmid.cluster import require_ray

    ray = ray or require_ray()
    from ray.exceptions import GetTimeoutError, RayActorError

    log = log or sys.stderr
    remote = ray.remote(ChannelActor)

    def say(text: str) -> None:
        print(f"bgmid monitor: {text}", file=log, flush=True)

    names = [j.channel.name for j in jobs]
    by_name = {j.channel.name: j for j in jobs}
    figures: dict[str, dict] = {n: {"state": "starting"} for n in names}
    restarts, waits = dict.fromkeys(names, 0), dict.fromkeys(names, 1.0)
    actors = {n: remote.options(**_actor_options(by_name[n], max_restarts)).remote(by_name[n]) for n in names}
    runs: dict[Any, str] = {}
    due: dict[str, float] = dict.fromkeys(names, 0.0)  # when to call run (again)
    where: dict[str, Any] = {}  # a pending where() per channel: its placement, said once it is known
    stopping, stop_sent = threading.Event(), False
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)} if main \
        else {}
    next_status = time.time() + status_every_s
    try:
        while runs or due:
            now = time.time()
            for n, t in list(due.items()):
                if t <= now and not stopping.is_set():
                    del due[n]
                    runs[actors[n].run.remote()] = n
                    where[n] = actors[n].where.remote()
            if stopping.is_set() and not stop_sent:
                stop_sent = True
                due.clear()
                for n in set(runs.values()):
                    actors[n].stop.remote()
            for n, ref in list(where.items()):
                done, _ = ray.wait([ref], timeout=0)
                if done:
                    del where[n]
                    try:
                        ip, pid, _t = ray.get(ref)
                        say(f"channel {n}: started (node {ip}, pid {pid}) on {by_name[n].channel.url}")
                    except RayActorError:
                        pass  # died before it answered: its run fails too, and says so
            ready, _ = ray.wait(list(runs), num_returns=len(runs), timeout=0.3) if runs else ([], [])
            for ref in ready:
                n = runs.pop(ref)
                try:
                    fig = ray.get(ref)
                    figures[n] = {**fig, "state": "ended"}
                    say(f"channel {n}: ended ({fig.get('ended', 'stopped')})")
                except Exception as exc:  # the actor died (restarted by Ray) or the channel raised
                    if stopping.is_set():
                        figures[n]["state"] = "ended"
                        continue
                    restarts[n] += 1
                    figures[n]["state"] = "restarting"
                    why = "its process died" if isinstance(exc, RayActorError) else type(exc).__name__
                    say(f"channel {n}: died ({why}); restarting in {waits[n]:g} s")
                    due[n] = time.time() + waits[n]
                    waits[n] = min(2 * waits[n], restart_max_s)
            if time.time() >= next_status and runs:
                next_status = time.time() + status_every_s
                live = [n for n in names if n in runs.values()]
                try:
                    got = ray.get([actors[n].figures.remote() for n in live], timeout=5)
                except (GetTimeoutError, RayActorError):
                    got = [None] * len(live)
                for n, fig in zip(live, got):
                    if fig:
                        figures[n] = {**fig, "state": None}
                for n in names:
                    print(status_line(n, figures[n], restarts[n]), file=log, flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for a in actors.values():
            ray.kill(a, no_restart=True)
    return {n: {**f, "restarts": restarts[n]} for n, f in figures.items()}


def run_channels_ray(args) -> int:
    """``bgmid monitor --channels CHANNELS.toml --ray local|ADDRESS``: :func:`bgmid.channels.run_channels` with
    the channels on Ray actors (joining the cluster for the length of the command)."""
    from bgmid.channels import run_channels
    from bgmid.cluster import ray_session

    with ray_session(args.ray) as ray:
        return run_channels(args, supervisor=lambda jobs, **kw: supervise_ray(jobs, ray=ray, **kw))
