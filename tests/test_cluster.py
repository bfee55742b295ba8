"""bgmid on a local Ray cluster (2 CPUs, started once for the module): a batch gives the single-process cue
sheets, and a worker process killed mid-batch costs a retry, not the batch. Without Ray, asking for it is one
clear error."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from archive import assert_same_as_monitor

from bgmid.batch import BatchJob, run_batch


def test_missing_ray_is_a_clear_error(monkeypatch):
    from bgmid.cluster import RayMissing, require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like
    with pytest.raises(RayMissing, match=r"bgmid\[cluster\]"):
        require_ray()


def test_batch_on_ray_without_ray_is_one_clear_error_and_starts_nothing(monkeypatch, archive, built_index,
                                                                         tmp_path, capsys):
    from bgmid import batch
    from bgmid.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(batch, "HeadStart", lambda *a: pytest.fail("a head start without Ray"))
    assert main(["batch", "--db", str(built_index), "--out", str(tmp_path / "o"), "--ray", "local",
                 str(archive)]) == 2
    assert "bgmid[cluster]" in capsys.readouterr().err


def test_embedded_cluster_is_stopped_whole_and_its_autoscaler_killed_outright():
    """``ray_session('local')`` ends every process of the cluster it started; the autoscaler monitor, whose
    SIGTERM handler costs ``ray.shutdown`` a second, is killed outright first (this also fails if a Ray
    version no longer has the private handle it goes through). A process of its own: the module's cluster
    below must not be the one stopped."""
    import json
    import subprocess

    pytest.importorskip("ray")
    code = (
        "import json\n"
        "from ray._private import worker\n"
        "from bgmid import cluster\n"
        "with cluster.ray_session('local', num_cpus=1):\n"
        "    procs = {k: [p.process for p in v] for k, v in worker._global_node.all_processes.items()}\n"
        "    cluster._drop_autoscaler()\n"
        "    monitor = [p.returncode for p in procs['monitor']]\n"
        "print(json.dumps({'monitor': monitor, 'pids': [p.pid for v in procs.values() for p in v],\n"
        "                  'alive': [p.pid for v in procs.values() for p in v if p.poll() is None]}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["monitor"] == [-signal.SIGKILL]
    assert len(got["pids"]) >= 4 and got["alive"] == []  # gcs, raylet, monitor, log monitor, ...: all ended


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    src = str(Path(__file__).parents[1] / "src")  # the workers import this tree's bgmid, as the driver does
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def _task_pids(name: str) -> list[int]:
    """Ray worker processes running a task of ``name`` (Ray titles them ``ray::NAME`` while they run it)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(f"ray::{name}".encode()):
                pids.append(int(d.name))
    return pids


def test_ray_batch_equals_single_process_and_survives_a_killed_worker(ray_cluster, archive, built_index, monitored,
                                                                       tmp_path):
    from bgmid.cluster import RayExecutor

    paths = [str(p) for p in sorted(archive.glob("*.wav"))]
    job = BatchJob(db=str(built_index))
    ex = RayExecutor(ray_cluster, {"num_cpus": 1})
    rep = run_batch(job, paths, tmp_path / "a", ex, 2, retries=2, engine="ray")
    s = rep.summary()
    assert (s["done"], s["failed"], s["retries"], s["engine"]) == (3, 0, 0, "ray")
    assert_same_as_monitor(tmp_path / "a", monitored)

    killed: list[int] = []

    def killer() -> None:  # kill the first worker seen running a programme
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in _task_pids("run_programme")[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    th = threading.Thread(target=killer, daemon=True)
    rep = run_batch(job, paths, tmp_path / "b", ex, 2, retries=2, engine="ray", on_start=lambda t, n: th.start())
    th.join(5)
    s = rep.summary()
    assert killed, "no Ray worker was seen running a programme"
    assert (s["done"], s["failed"]) == (3, 0) and s["retries"] >= 1
    assert_same_as_monitor(tmp_path / "b", monitored)


def test_index_on_ray_equals_one_process(ray_cluster, music_dir, built_index, tmp_path, capsys):
    """``bgmid index --ray`` (the test's cluster: the command joins it and leaves it running) fingerprints on
    Ray workers and writes through this process: the same tracks, hash counts and postings as one process;
    an unreadable file is reported in one line."""
    import json

    from bgmid.cli import main
    from bgmid.index import open_index

    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "broken.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 200)
    db = tmp_path / "db"
    assert main(["index", "--db", str(db), "--ray", "local", "--jobs", "2", "--json", str(music_dir), str(bad)]) == 1
    out = capsys.readouterr()
    rep = json.loads(out.out)
    assert ray_cluster.is_initialized() and rep["added"] == 8 and len(rep["failed"]) == 1
    assert "Traceback" not in out.err and "broken.flac" in out.err
    with open_index(db) as a, open_index(built_index) as b:
        assert {(t.content_hash, t.n_hashes) for t in a.tracks()} == {(t.content_hash, t.n_hashes) for t in b.tracks()}
        sa, sb = a.stats(), b.stats()
        assert (sa["postings"], sa["stored_postings"], sa["stop_words"]) == \
            (sb["postings"], sb["stored_postings"], sb["stop_words"])


def test_shards_on_ray_actors_answer_as_the_single_index(ray_cluster, built_index, tmp_path):
    """A 3-shard catalogue served by one Ray actor per shard gives the single index's postings and cue sheets."""
    import numpy as np
    from archive import make_programme
    from conftest import SR

    from bgmid.cuesheet import result_to_dict
    from bgmid.index import open_index
    from bgmid.index.shard import RayShardedStore, split_index
    from bgmid.match import lookup
    from bgmid.monitor import Monitor

    split_index(built_index, tmp_path / "s3", 3)
    prog = make_programme(1)
    with open_index(built_index) as one, RayShardedStore(tmp_path / "s3") as actors:
        assert len(actors.actors) == 3 and actors.n_hashes == one.n_hashes
        from bgmid.audio import resample
        from bgmid.fingerprint.landmarks import fingerprint

        q = fingerprint(resample(prog[: SR * 12], SR, one.preset.sample_rate), one.preset, 2.0, 2.0)
        for limit in (None, 1):
            a, b = lookup(one, q, limit), lookup(actors, q, limit)
            ka = np.lexsort((a.off, a.tids, a.rows))
            kb = np.lexsort((b.off, b.tids, b.rows))
            for u, v in ((a.rows, b.rows), (a.tids, b.tids), (a.off, b.off)):
                np.testing.assert_array_equal(u[ka], v[kb])
        c1 = result_to_dict(Monitor(one).run_array(prog, SR, "p"))
        assert c1 == result_to_dict(Monitor(actors).run_array(prog, SR, "p")) and c1["cues"]


def test_separation_stage_on_its_own_actors_equals_monitor(ray_cluster, archive, built_index, tmp_path):
    """``--separator unet`` on Ray: the separator runs on stage actors (CPU placement here: this machine has no
    GPU, so the GPU placement, one actor per GPU with ``num_gpus=1``, is untested), the programme's task
    decodes, fingerprints and matches, and the cue sheet is the one ``bgmid monitor --separator unet`` writes."""
    import json

    from bgmid.batch import BatchJob, concrete
    from bgmid.cli import main
    from bgmid.cluster import RayExecutor, separator_stage, stop_stage

    prog = archive / "prog0.wav"
    alone = tmp_path / "alone.json"
    assert main(["monitor", "--db", str(built_index), "--separator", "unet", str(prog), "--out", str(alone)]) == 0
    job = concrete(BatchJob(db=str(built_index), separator="unet"))
    stage, task = separator_stage(ray_cluster, job.separator, job.device, job.config.separator_threads, 2)
    try:
        assert task == {"num_cpus": 0.5} and len(stage.actors) == 2 and stage.name == "unet"
        rep = run_batch(BatchJob(**{**job.__dict__, "stage": stage}), [str(prog)], tmp_path / "o",
                        RayExecutor(ray_cluster, task), 2, engine="ray")
        assert rep.summary()["done"] == 1
        served = sum(ray_cluster.get([a.served.remote() for a in stage.actors]))
    finally:
        stop_stage(ray_cluster, stage)
    assert served >= 1  # every block was separated by the stage
    obj = json.loads((tmp_path / "o" / "prog0.json").read_text())
    assert obj == json.loads(alone.read_text()) and obj["separator"] == "unet" and obj["cues"]


def test_cli_batch_on_ray_local_with_the_drivers_head_start(ray_cluster, archive, built_index, monitored, tmp_path,
                                                            capsys):
    """``bgmid batch --ray local``: the driver monitors the first programme while the cluster starts (here it
    is up already, so the head start and the workers overlap); the cue sheets are monitor's."""
    import json

    from bgmid.cli import main

    out = tmp_path / "sheets"
    assert main(["batch", "--db", str(built_index), "--separator", "none", "--out", str(out), "--ray", "local",
                 "--workers", "2", "--json", str(archive)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["done"], s["failed"], s["retries"], s["engine"]) == (3, 0, 0, "ray")
    assert_same_as_monitor(out, monitored)
