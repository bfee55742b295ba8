"""``bgmid batch``: an archive monitored on a process pool (and on Ray, tests/test_cluster.py) gives each
programme the cue sheet ``bgmid monitor`` gives it alone; finished programmes are skipped on a re-run; a failed
one is retried and then reported; a worker killed mid-batch costs a retry, not the batch."""

import json
import os
import signal
import threading
import time
from concurrent.futures import Future

import pytest
from archive import PROG_S, assert_same_as_monitor

from bgmid.batch import BatchJob, LocalPool, expand_inputs, output_names, run_batch
from bgmid.cli import main
from bgmid.fingerprint.presets import QueryOptions
from bgmid.monitor import MonitorConfig


def test_batch_cli_equals_monitor_and_resumes(archive, built_index, monitored, tmp_path, capsys):
    out = tmp_path / "sheets"
    args = ["batch", "--db", str(built_index), "--separator", "none", "--out", str(out), "--workers", "2",
            "--json", str(archive)]
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["programmes"], s["done"], s["skipped"], s["failed"]) == (3, 3, 0, 0)
    assert s["cues"] == sum(len(obj["cues"]) for obj, _ in monitored.values())
    assert s["hours"] == pytest.approx(3 * PROG_S / 3600, abs=1e-3) and s["x_real_time"] > 0
    assert_same_as_monitor(out, monitored)

    assert main(args) == 0  # nothing changed: everything is skipped
    s = json.loads(capsys.readouterr().out)
    assert (s["done"], s["skipped"]) == (0, 3)

    assert main(args[:-2] + ["--min-cue", "3", "--json", str(archive)]) == 0  # another option: done again
    s = json.loads(capsys.readouterr().out)
    assert (s["done"], s["skipped"]) == (3, 0)


def test_failed_programme_is_reported_and_the_batch_goes_on(archive, built_index, monitored, tmp_path, capsys):
    bad = tmp_path / "in" / "broken.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    lst = tmp_path / "list.txt"
    lst.write_text("# the archive and a damaged file\n" + "\n".join(
        [str(p) for p in sorted(archive.glob("*.wav"))] + ["in/broken.wav"]) + "\n")
    out = tmp_path / "sheets"
    code = main(["batch", "--db", str(built_index), "--separator", "none", "--out", str(out), "--workers", "2",
                 "--json", f"@{lst}"])
    captured = capsys.readouterr()
    assert code == 1
    s = json.loads(captured.out)
    assert (s["done"], s["failed"]) == (3, 1)
    assert "broken.wav" in s["failures"][0]["programme"] and "broken.wav" in captured.err
    assert_same_as_monitor(out, monitored)


def test_programme_failing_on_its_worker_is_retried_then_reported(archive, built_index, tmp_path):
    """A programme that decodes in the driver's header read but fails on the worker (here: replaced by a
    non-audio file after the batch started) is tried 1 + retries times and then reported."""
    victim = tmp_path / "late.wav"
    victim.write_bytes((archive / "prog0.wav").read_bytes())
    job = BatchJob(db=str(built_index), config=MonitorConfig(), options=QueryOptions(), alteration="auto")
    pool = LocalPool(1)

    def on_start(total_s: float, n: int) -> None:
        victim.write_bytes(b"not audio at all" * 100)

    try:
        rep = run_batch(job, [str(victim), str(archive / "prog1.wav")], tmp_path / "o", pool, 1, retries=2,
                        on_start=on_start)
    finally:
        pool.shutdown()
    by = {o.name: o for o in rep.outcomes}
    assert by["late"].status == "failed" and by["late"].attempts == 3 and by["late"].error
    assert by["prog1"].status == "done" and by["prog1"].cues >= 1


def test_killed_local_worker_is_retried(archive, built_index, monitored, tmp_path):
    paths = [str(p) for p in sorted(archive.glob("*.wav"))]
    job = BatchJob(db=str(built_index))
    pool = LocalPool(2)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            pids = pool.pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    th = threading.Thread(target=killer, daemon=True)
    try:
        rep = run_batch(job, paths, tmp_path / "o", pool, 2, retries=2,
                        on_start=lambda total, n: th.start())
    finally:
        th.join(5)
        pool.shutdown()
    s = rep.summary()
    assert killed and s["retries"] >= 1
    assert (s["done"], s["failed"]) == (3, 0)
    assert_same_as_monitor(tmp_path / "o", monitored)


def test_pool_broken_between_programmes_is_renewed(archive, built_index, monitored, tmp_path):
    """A worker that dies while no programme runs on it (e.g. while warming up) breaks the pool before a
    submission: the programme is retried on a renewed pool, like one whose worker died mid-task."""
    from concurrent.futures.process import BrokenProcessPool

    from bgmid.batch import run_programme

    class BreaksOnce(LocalPool):
        renewed = 0

        def submit(self, fn, *args):
            if fn is run_programme and not self.renewed:
                raise BrokenProcessPool("a worker died before this submission")
            return super().submit(fn, *args)

        def renew(self) -> None:
            self.renewed += 1
            super().renew()

    paths = [str(p) for p in sorted(archive.glob("*.wav"))]
    pool = BreaksOnce(2)
    try:
        rep = run_batch(BatchJob(db=str(built_index)), paths, tmp_path / "o", pool, 2, retries=1)
    finally:
        pool.shutdown()
    s = rep.summary()
    assert pool.renewed == 1 and s["retries"] == 1 and (s["done"], s["failed"]) == (3, 0)
    assert_same_as_monitor(tmp_path / "o", monitored)


def test_inputs_and_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/show.wav", "b/show.wav", "b/notes.txt"):
        (tmp_path / p).write_bytes(b"x")
    lst = tmp_path / "l.txt"
    lst.write_text("a/show.wav\n\n# comment\n")
    got = expand_inputs([str(tmp_path / "b"), f"@{lst}"])
    assert got == [str(tmp_path / "b" / "show.wav"), str(tmp_path / "a" / "show.wav")]
    assert output_names(got) == ["show", "show-2"]
    assert main(["batch", "--db", str(tmp_path), "--out", str(tmp_path / "o"), str(tmp_path / "nope.wav")]) == 2


def test_head_start_monitors_programmes_until_the_workers_are_warm(archive, built_index, monitored, tmp_path):
    """The driver's head start (``bgmid batch --ray local`` while the cluster starts) monitors programmes
    itself until run_batch's workers are warm: run_batch stops it then, takes every programme it claimed as in
    flight (the same cue sheets), runs only the rest on the workers, and hands none of the claimed out again."""
    from bgmid import batch

    paths = [str(p) for p in sorted(archive.glob("*.wav"))]
    job = BatchJob(db=str(built_index))
    head = batch.HeadStart(job, paths, tmp_path / "o")
    assert list(head.started) == [paths[0]]  # the first is claimed at once
    sent: list[str] = []

    class SlowToWarm(LocalPool):
        """Its workers are 'warm' only once the head start has finished two programmes (a slow cluster)."""

        def submit(self, fn, *args):
            if fn is batch.warm_worker:
                fut: Future = Future()

                def later() -> None:
                    deadline = time.monotonic() + 120
                    while sum(f.done() for f in head.started.values()) < 2 and time.monotonic() < deadline:
                        time.sleep(0.02)
                    fut.set_result(None)

                threading.Thread(target=later, daemon=True).start()
                return fut
            if fn is batch.run_programme:
                sent.append(args[1])
            return super().submit(fn, *args)

    pool = SlowToWarm(1)
    try:
        rep = run_batch(job, paths, tmp_path / "o", pool, 1, started=head)
    finally:
        pool.shutdown()
    claimed = list(head.started)
    assert len(claimed) >= 2 and claimed == paths[:len(claimed)]
    assert head._claim() is None  # stopped: it claims nothing more
    s = rep.summary()
    assert (s["done"], s["failed"], s["retries"]) == (3, 0, 0)
    assert sorted(sent) == paths[len(claimed):]
    assert_same_as_monitor(tmp_path / "o", monitored)
    assert batch.HeadStart(job, paths, tmp_path / "o").started == {}  # all done: nothing to start


def test_failed_head_start_is_retried_on_the_workers(archive, built_index, monitored, tmp_path):
    paths = [str(p) for p in sorted(archive.glob("*.wav"))]
    broken: Future = Future()
    broken.set_exception(RuntimeError("the driver's thread failed"))
    pool = LocalPool(2)
    try:
        rep = run_batch(BatchJob(db=str(built_index)), paths, tmp_path / "o", pool, 2, retries=1,
                        started={paths[1]: broken})
    finally:
        pool.shutdown()
    s = rep.summary()
    assert (s["done"], s["failed"], s["retries"]) == (3, 0, 1), s["failures"]
    assert_same_as_monitor(tmp_path / "o", monitored)
