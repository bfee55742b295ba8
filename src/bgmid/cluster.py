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
    if address == "local":
        ray.init(num_cpus=num_cpus, **kw)
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
            ray.shutdown()


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
