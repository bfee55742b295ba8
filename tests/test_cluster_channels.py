"""Live channels on Ray actors (``bgmid monitor --channels ... --ray``): two UDP channels streamed by ffmpeg on
127.0.0.1 to a local Ray cluster, one actor per channel; one actor is killed (``ray.kill(no_restart=False)``),
Ray restarts it and the supervisor runs its channel again, and both channels write the cues of their
programmes."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_live import RATE, _port, _records, _send, _stop, needs_ffmpeg, prog  # noqa: F401 (prog: a fixture)
from test_monitor_e2e import CUES

from bgmid.channels import Channel, ChannelJob
from bgmid.live import LIVE_BLOCK_S, LiveConfig
from bgmid.monitor import MonitorConfig


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    src = str(Path(__file__).parents[1] / "src")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def _until(cond, timeout: float, what: str) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _cues(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if '"type": "cue"' in x]


@pytest.mark.slow
@needs_ffmpeg
def test_channels_on_ray_actors_and_a_killed_actor_is_restarted(ray_cluster, built_index, prog, tmp_path):  # noqa: F811
    from bgmid.cluster_channels import NAMESPACE, supervise_ray

    pa, pb = _port(), _port()
    cfg = MonitorConfig(block_s=LIVE_BLOCK_S)
    jobs = [ChannelJob(Channel(n, f"udp://127.0.0.1:{port}", stream), str(built_index), str(tmp_path / f"{n}.jsonl"),
                       None, cfg, LiveConfig(name=n, stream=stream, read_timeout_s=2.0, idle_timeout_s=6.0))
            for n, port, stream in (("a", pa, None), ("b", pb, "eng"))]
    log, final = io.StringIO(), {}
    sup = threading.Thread(target=lambda: final.update(supervise_ray(jobs, status_every_s=0.5, log=log,
                                                                      ray=ray_cluster)), daemon=True)
    sup.start()
    senders = []
    try:
        _until(lambda: "channel a: started" in log.getvalue() and "channel b: started" in log.getvalue(), 90,
               "both channel actors started")
        _until(lambda: "a                down" in log.getvalue() and "b                down" in log.getvalue(), 30,
               "both channels monitoring")
        time.sleep(0.5)  # the sockets are bound once av.open runs
        # channel a at a third of the speed: killed after its first cue, with most of its programme left
        senders = [_send(prog["ts"], f"udp://127.0.0.1:{pa}?pkt_size=1316", rate=RATE / 3),
                   _send(prog["two"], f"udp://127.0.0.1:{pb}?pkt_size=1316", map_all=True)]
        _until(lambda: len(_cues(tmp_path / "a.jsonl")) >= 1, 60, "channel a's first cue")
        ray_cluster.kill(ray_cluster.get_actor("bgmid-channel-a", namespace=NAMESPACE), no_restart=False)
        _until(lambda: "channel a: died" in log.getvalue(), 30, "the supervisor saw channel a die")
        sup.join(150)
    finally:
        _stop(*senders)
    text = log.getvalue()
    assert not sup.is_alive(), text
    assert final["a"]["restarts"] == 1 and final["b"]["restarts"] == 0, text
    started = [line for line in text.splitlines() if "channel a: started" in line]
    assert len(started) == 2 and started[0].split("pid ")[1] != started[1].split("pid ")[1]  # a new process
    assert [r["title"] for r in _cues(tmp_path / "b.jsonl")] == [f"track{i:02d}" for i, *_ in CUES]
    a = [r for r in _records(tmp_path / "a.jsonl") if r["type"] == "cue"]
    restart = [k for k in range(1, len(a)) if a[k]["seq"] == 1]  # the restarted actor numbers its cues afresh
    assert len(restart) == 1 and a[-1]["title"] == "track04"
    assert a[restart[0]]["start_utc"] > a[restart[0] - 1]["start_utc"]
