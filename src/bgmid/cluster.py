"""Ray, the optional scale-out engine (``pip install 'bgmid[cluster]'``), behind one small seam.

bgmid does not schedule work across machines itself: Ray does (embedded on one machine with no set-up, the same
code on a cluster). Everything in bgmid imports and runs without Ray; the modules that can use it ask
:func:`require_ray` at the moment Ray is asked for, so a missing Ray is one clear error, never an ImportError
at start-up.

:class:`RayExecutor` gives Ray tasks the ``submit() -> concurrent.futures.Future`` shape of the standard
library's executors, so the batch runner and the indexer have one code path for a local process pool and a
cluster (``ObjectRef.future()`` is Ray's own bridge to ``concurrent.futures``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from bgmid.errors import BgmidError

#: What the error says to install.
INSTALL_HINT = "install bgmid[cluster] (pip install 'bgmid[cluster]', which brings Ray)"


class RayMissing(BgmidError):
    """Ray was asked for (``--ray``) but is not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayMissing` with what to install."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"Ray is not installed: {INSTALL_HINT}.") from None
    return ray


def connect(address: str = "local", num_cpus: int | None = None) -> Any:
    """Join (or start) a Ray cluster: ``local`` starts an embedded one on this machine with ``num_cpus`` CPUs
    (default: all), anything else is a cluster address (``ray://host:10001`` or ``host:6379``, or ``auto`` for the
    cluster this machine is a node of). Reuses a connection this process already has. Returns ``ray``."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":  # a new embedded cluster, even where one started by 'ray start' runs on this machine
        ray.init(address="local", num_cpus=num_cpus, **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BgmidError(f"--ray {address}: cannot join the Ray cluster ({exc}). Start one with "
                             "'ray start --head' or use --ray local.") from None
    return ray


@contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None) -> Iterator[Any]:
    """:func:`connect` for the length of a command; disconnects (and stops an embedded cluster) only if it
    connected, so a caller that already uses Ray keeps its cluster."""
    ray = require_ray()
    started = not ray.is_initialized()
    connect(address, num_cpus)
    try:
        yield ray
    finally:
        if started:
            if address == "local":
                _drop_autoscaler()
            ray.shutdown()


def _drop_autoscaler() -> None:
    """Kill an embedded cluster's autoscaler monitor before ``ray.shutdown`` stops the rest.

    The monitor answers SIGTERM by reporting its own end to the GCS, which ``ray.shutdown`` waits for up to a
    second per process: measured, 1.0 of its 1.37 s on this machine. A cluster of one machine has nothing to
    scale, so it is killed outright. Ray's private node handle: where a Ray version lacks it, nothing is done
    and ``ray.shutdown`` stops the monitor as before.
    """
    try:
        from ray._private import worker

        for proc in worker._global_node.all_processes.get("monitor", []):
            proc.process.kill()
            proc.process.wait(timeout=1)
    except Exception:  # noqa: BLE001 - an optimisation only; ray.shutdown does the real work
        pass


def cluster_gpus(ray: Any) -> float:
    """GPUs in the cluster (0 on a CPU-only one)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def _unwrapped(fut: Future) -> Future:
    """``fut`` with a task's own exception in place of Ray's wrapper (``RayTaskError.cause``: an unreadable
    file fails with its one-line :class:`~bgmid.audio.AudioError`, not a remote traceback); a dead worker
    stays Ray's ``WorkerCrashedError``."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            out.set_result(f.result())
        except BaseException as exc:  # handed on, as the caller's future's exception
            cause = getattr(exc, "cause", None)
            out.set_exception(cause if isinstance(cause, BaseException) else exc)

    fut.add_done_callback(done)
    return out


class RayExecutor:
    """``submit(fn, *args) -> Future`` on Ray tasks (the :class:`concurrent.futures.Executor` shape).

    ``resources`` are the task's Ray options (``num_cpus``, ``num_gpus``, ...). Ray's own retries are off
    (``max_retries=0``): the caller retries failed work itself, the same way for every executor, so a task
    whose worker died is reported like one that raised.
    """

    def __init__(self, ray: Any, resources: dict | None = None):
        self.ray = ray
        self.resources = {"num_cpus": 1, **(resources or {}), "max_retries": 0}
        self._remote: dict[Callable, Any] = {}

    def submit(self, fn: Callable, *args: Any) -> Future:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn).options(**self.resources)
        return _unwrapped(self._remote[fn].remote(*args).future())

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to stop: the cluster outlives the executor (the caller disconnects when it is done)."""


# -- separation as its own stage -------------------------------------------------------------------------


class _SeparatorServer:
    """A Ray actor holding one loaded separator (on a GPU where the cluster has them): the separation stage of
    a batch, called block by block by the programmes' CPU tasks (:class:`RemoteSeparator`)."""

    def __init__(self, name: str, device: str, threads: int | None):
        from bgmid.separation.registry import resolve_separator

        self.sep = resolve_separator(name, device, command="batch")
        if self.sep is None:
            raise BgmidError(f"separator {name!r}: nothing to run in a separation stage")
        self.name = str(getattr(self.sep, "name", name))
        if threads:  # the monitor's thread policy, set once: calls run concurrently (one per calling programme)
            import torch

            torch.set_num_threads(int(threads))
        self.blocks = 0  #: blocks separated (a test's evidence that the stage did the work)

    def info(self) -> tuple[int, str]:
        return int(self.sep.sample_rate), self.name

    def served(self) -> int:
        return self.blocks

    def separate(self, mono: Any) -> tuple[Any, Any]:
        self.blocks += 1
        return self.sep.separate(mono)


class RemoteSeparator:
    """A :class:`~bgmid.separation.Separator` whose ``separate`` runs on separator actors (one call per monitor
    block, the actors taken in turn), so the monitor that holds it (:class:`bgmid.monitor.Monitor`, unchanged)
    reads, fingerprints and matches on its own CPU while the network runs where the stage was placed. Picklable
    (Ray actor handles travel with it): it goes to the programme tasks inside their job."""

    def __init__(self, actors: list, sample_rate: int, name: str):
        self.actors, self.sample_rate, self.name = list(actors), int(sample_rate), name
        self._turn = 0
        #: identifies the stage (a worker that kept a monitor for another stage builds a new one)
        self.key = ",".join(a._actor_id.hex() for a in self.actors)

    def separate(self, mono: Any) -> tuple[Any, Any]:
        ray = require_ray()
        actor = self.actors[self._turn % len(self.actors)]
        self._turn += 1
        return ray.get(actor.separate.remote(mono))


def separator_stage(ray: Any, name: str, device: str, threads: int | None, workers: int,
                    cpu_share: float = 0.5) -> tuple[RemoteSeparator, dict]:
    """Start the separation stage of a batch: one actor per GPU (``num_gpus=1``, ``device`` made ``cuda``) on a
    cluster with GPUs, else ``workers`` CPU actors of ``cpu_share`` CPU each (a programme's task takes the other
    share: a programme slot is one CPU, whichever stage is busy). An actor separates the blocks of several
    programmes at once (threads, ``max_concurrency=workers``), so programmes whose blocks go to one actor do not
    queue. Actors are restarted if they die, and their calls retried. Returns the separator the programme tasks
    use and the Ray options those tasks should take."""
    gpus = cluster_gpus(ray)
    if gpus > 0:
        n, opts, task = max(1, int(gpus)), {"num_gpus": min(1.0, gpus), "num_cpus": 0}, {"num_cpus": 1}
        device = "cuda" if device == "cpu" else device
    else:
        n, opts, task = workers, {"num_cpus": cpu_share}, {"num_cpus": 1.0 - cpu_share}
    cls = ray.remote(_SeparatorServer).options(**opts, max_restarts=-1, max_task_retries=3,
                                               max_concurrency=max(1, workers))
    actors = [cls.remote(name, device, threads) for _ in range(n)]
    rate, shown_name = ray.get(actors[0].info.remote())
    return RemoteSeparator(actors, rate, shown_name), task


def stop_stage(ray: Any, sep: RemoteSeparator | None) -> None:
    """End a stage's actors (they would otherwise live as long as the cluster)."""
    for a in [] if sep is None else sep.actors:
        ray.kill(a)
