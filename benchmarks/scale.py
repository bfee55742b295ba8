"""Scale-out benchmarks (issue 16): batch throughput on workers, indexing speed against audfprint, query time
against growing catalogues, single index vs shards. Not tests: figures depend on the machine and its load, which
every report records (``os.getloadavg`` before and after, and the core count).

``batch``: the same programmes through one ``bgmid monitor`` process (all programmes in one run), ``bgmid batch
--workers W`` (local process pool), ``bgmid batch --ray local --workers W`` (an embedded cluster started by the
command) and, with ``--ray-running``, ``bgmid batch --ray auto`` on a cluster started beforehand (``ray start
--head``, as a deployment runs one); wall-clock seconds of each command, throughput against monitor's, and whether
every programme's cue sheet is identical to monitor's; and the machine's ceiling: ``--workers`` independent ``bgmid
monitor`` processes run at once on shares of the programmes (no scheduler at all). ``--rounds R`` interleaves the
configurations (each round runs all of them, a different one first), so a change in the machine's load hits every
configuration, and reports per-round ratios and their medians; ``--repeat K`` monitors K hard-linked copies of the
programme set (a longer archive, whose fixed start-up costs weigh as in a real one)::

    python benchmarks/scale.py batch --programmes 6 --workers 2 --separator none --rounds 3 --repeat 2 --ray-running

``index``: the same WAV files (decoded corpus tracks, written to a temporary folder) indexed by ``bgmid index``
(1 process, ``--jobs 2``, ``--ray local --jobs 2``, with ``--ray-running`` also ``--ray auto --jobs 2`` on a running
cluster) and by audfprint (its public source, github:dpwe/audfprint, cloned to /tmp and run with its own
requirements in a venv, ``--ncores 1`` and ``2``), in interleaved ``--rounds``; wall and CPU seconds, x real
time, index bytes per hour of music, per-round speed ratios and medians::

    git clone https://github.com/dpwe/audfprint /tmp/audfprint
    python3 -m venv /tmp/afp && /tmp/afp/bin/pip install numpy scipy docopt joblib psutil
    python benchmarks/scale.py index --tracks 30 --rounds 3 --ray-running --audfprint /tmp/audfprint \
        --audfprint-python /tmp/afp/bin/python

``query``: 12 s excerpts of real tracks (clean) looked up and scored (:func:`bgmid.match.lookup` +
:func:`bgmid.match.score_offsets`, as one window of ``monitor``) against catalogues of growing size made of the
real tracks plus decoys (:mod:`bgmid.evaluate.library`: real tracks' landmarks with every hash XOR-ed by a
random constant, so real posting statistics), single index vs the same catalogue split into shards (in process):
median and p90 milliseconds per query, index bytes, answers identical. Catalogues above the base's size are
grown, single and sharded together, by :func:`grow_catalogues` under ``--work`` (resumable; ~11 GB + 12 GB at
100,000 tracks)::

    python benchmarks/scale.py query --sizes 1000,10000,100000 --shards 4 --queries 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "bgmid"
PROGRAMMES = CACHE / "bench" / "monitor" / "programmes"
DEFAULT_DB = CACHE / "index" / "p1-81ba01b17eac"  # the 103 real corpus tracks (format 3)


def machine() -> dict:
    return {"cores": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (and theirs): a load-independent cost. Ray's workers
    are the raylet's children, not ours, so Ray runs report wall time only."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _bgmid(*args: str, src: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and result of one bgmid command, run from this tree's ``src`` (or ``src``)."""
    env = {**os.environ, "PYTHONPATH": src or str(HERE.parent / "src")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bgmid.cli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:  # every benchmark input is readable: any failure is the benchmark's
        raise RuntimeError(f"bgmid {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return wall, p


# -- batch -----------------------------------------------------------------------------------------------


def _programme_copies(progs: list[str], repeat: int, folder: Path) -> list[str]:
    """``repeat`` hard-linked copies of every programme under distinct names (a longer archive of the same
    programmes: the batch's fixed start-up costs weigh what they would in a real archive, not in an hour)."""
    out = []
    for k in range(repeat):
        for pr in progs:
            dst = folder / f"r{k}-{Path(pr).name}"
            try:
                os.link(pr, dst)
            except OSError:
                shutil.copyfile(pr, dst)
            out.append(str(dst))
    return out


def _ray_head(cpus: int) -> dict:
    """A running Ray cluster on this machine (``ray start --head``), as a deployment has one: ``--ray auto``
    then pays no cluster start. Its workers import this tree's bgmid."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_bin, "start", "--head", f"--num-cpus={cpus}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, env=env)
    return env


def _ray_stop(env: dict) -> None:
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, env=env)


def _medians(rounds: list[dict]) -> dict:
    keys = rounds[0].keys()
    return {k: round(float(np.median([r[k] for r in rounds])), 2) for k in keys}


#: W independent ``bgmid monitor`` processes at once, each on its share of the programmes: no scheduler, no
#: driver, nothing shared. What W cores of this machine give any W-way split of the work, the ceiling for a batch.
CEILING = "ceiling_parallel_monitors"


def _parallel_monitors(opts: list[str], progs: list[str], workers: int, folder: Path) -> float:
    """Wall seconds of ``workers`` ``bgmid monitor`` processes started together, programmes dealt out in turn
    (the benchmark's programmes are of equal length), until the last one ends."""
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "bgmid.cli", "monitor", *opts, *progs[k::workers], "--out",
                               str(folder / f"part{k}.json")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env) for k in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"bgmid monitor (ceiling) failed ({p.returncode}): {err[-2000:]}")
    return time.perf_counter() - t0


def bench_batch(a: argparse.Namespace) -> dict:
    """Interleaved rounds (every configuration once per round, so a change in the machine's load hits them all):
    wall seconds of each command, throughput ratios per round and their medians."""
    progs = sorted(str(p) for p in PROGRAMMES.glob("*.wav"))[: a.programmes]
    if not progs:
        raise SystemExit(f"no programmes under {PROGRAMMES}: run benchmarks/monitor.py once to generate them")
    import soundfile as sf

    opts = ["--db", str(a.db), "--separator", a.separator]
    out: dict = {"separator": a.separator, "workers": a.workers, "rounds": a.rounds, "machine_before": machine(),
                 "runs": {}}
    configs = {"batch_local_pool": [], "batch_ray_local": ["--ray", "local"]}
    if a.ray_running:
        configs["batch_ray_running_cluster"] = ["--ray", "auto"]
    srcs = {label: None for label in configs}
    if a.compare_src:  # the same --ray local batch from another checkout's src (an interleaved A/B)
        configs["batch_ray_local_compare"] = ["--ray", "local"]
        srcs["batch_ray_local_compare"] = a.compare_src
        out["compare_src"] = a.compare_src
    env = _ray_head(a.workers) if a.ray_running else None
    try:
        with tempfile.TemporaryDirectory(prefix="bgmid-scale-") as tmp:
            t = Path(tmp)
            progs = _programme_copies(progs, a.repeat, t)
            hours = sum(sf.info(p).duration for p in progs) / 3600
            out.update(programmes=len(progs), hours=round(hours, 4), repeat=a.repeat)
            walls: dict[str, list[float]] = {k: [] for k in ["monitor_1_process", *configs, CEILING]}
            batch_walls: dict[str, list[float]] = {k: [] for k in configs}
            same = True
            for r in range(a.rounds):
                order = ["monitor_1_process", *configs, CEILING]
                order = order[r % len(order):] + order[: r % len(order)]  # who goes first changes per round
                for label in order:
                    if label == "monitor_1_process":
                        wall, _ = _bgmid("monitor", *opts, *progs, "--out", str(t / "monitor.json"))
                        walls[label].append(wall)
                        continue
                    if label == CEILING:
                        walls[label].append(_parallel_monitors(opts, progs, a.workers, t / f"ceiling-{r}"))
                        continue
                    d = t / f"{label}-{r}"
                    wall, p = _bgmid("batch", *opts, "--out", str(d), "--workers", str(a.workers), "--json",
                                     *configs[label], *progs, src=srcs[label])
                    walls[label].append(wall)
                    batch_walls[label].append(json.loads(p.stdout.strip().splitlines()[-1])["wall_s"])
                one = json.loads((t / "monitor.json").read_text())
                one = one if isinstance(one, list) else [one]
                for label in configs:
                    d = t / f"{label}-{r}"
                    same &= all(json.loads((d / f"{Path(pr).stem}.json").read_text()) == obj
                                for pr, obj in zip(progs, one))
            per_round = [{k: walls["monitor_1_process"][r] / walls[k][r] for k in [*configs, CEILING]}
                         for r in range(a.rounds)]
            for label, ws in walls.items():
                out["runs"][label] = {"wall_s": [round(w, 2) for w in ws],
                                      "median_wall_s": round(float(np.median(ws)), 2),
                                      "x_real_time": round(hours * 3600 / float(np.median(ws)), 1)}
                if label in batch_walls:
                    out["runs"][label]["batch_only_wall_s"] = batch_walls[label]  # without the command's start
            out["speedup_vs_monitor_per_round"] = [{k: round(v, 2) for k, v in pr.items()} for pr in per_round]
            out["speedup_vs_monitor_median"] = _medians(per_round)
            out["identical_to_monitor"] = same
    finally:
        if env is not None:
            _ray_stop(env)
    out["machine_after"] = machine()
    return out


# -- index -----------------------------------------------------------------------------------------------


def _corpus_wavs(n: int, folder: Path) -> float:
    """The first ``n`` decoded corpus tracks (16 kHz) as WAV files in ``folder``; returns their hours."""
    import soundfile as sf

    total = 0.0
    for f in _music_files()[:n]:
        x = np.load(f)
        sf.write(folder / f"{f.stem}.wav", x, 16000, subtype="PCM_16")
        total += x.shape[0] / 16000
    return total / 3600


def _timed(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {p.stderr[-2000:]}")
    return time.perf_counter() - t0


def _size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def bench_index(a: argparse.Namespace) -> dict:
    """Interleaved rounds of every indexer on the same WAV files (each round runs them all, the first one changing
    per round): wall and CPU seconds, index sizes, and per-round speed ratios against audfprint with medians."""
    out: dict = {"machine_before": machine(), "rounds": a.rounds, "runs": {}}
    env = None
    with tempfile.TemporaryDirectory(prefix="bgmid-scale-") as tmp:
        t = Path(tmp)
        (t / "wav").mkdir()
        hours = _corpus_wavs(a.tracks, t / "wav")
        files = sorted(str(p) for p in (t / "wav").glob("*.wav"))
        out.update(tracks=len(files), hours=round(hours, 3))
        runs: dict[str, list[str]] = {"bgmid_1_process": [], "bgmid_pool_2": ["--jobs", "2"]}
        if not a.no_ray:
            runs["bgmid_ray_local_2"] = ["--ray", "local", "--jobs", "2"]
            if a.ray_running:
                runs["bgmid_ray_running_cluster_2"] = ["--ray", "auto", "--jobs", "2"]
                env = _ray_head(2)
        afp = [a.audfprint_python, str(Path(a.audfprint) / "audfprint.py")] if a.audfprint else None
        labels = [*runs, *(["audfprint_ncores_1", "audfprint_ncores_2"] if afp else [])]
        wall: dict[str, list[float]] = {k: [] for k in labels}
        cpu: dict[str, list[float]] = {k: [] for k in labels}
        size: dict[str, int] = {}
        try:
            for r in range(a.rounds):
                for label in labels[r % len(labels):] + labels[: r % len(labels)]:
                    db = t / f"{label}-{r}"
                    c0 = _children_cpu()
                    if label in runs:
                        w, _ = _bgmid("index", "--db", str(db), *runs[label], str(t / "wav"))
                    else:
                        db = db.with_suffix(".pklz")
                        w = _timed(afp + ["new", "--dbase", str(db), "--ncores", label[-1], *files], cwd=a.audfprint)
                    wall[label].append(w)
                    if "ray" not in label:  # Ray's workers are not our children: no CPU figure
                        cpu[label].append(_children_cpu() - c0)
                    size[label] = _size(db)
                    shutil.rmtree(db, ignore_errors=True) if db.is_dir() else db.unlink(missing_ok=True)
        finally:
            if env is not None:
                _ray_stop(env)
        for label in labels:
            med = float(np.median(wall[label]))
            row = {"wall_s": [round(x, 2) for x in wall[label]], "median_wall_s": round(med, 2),
                   "x_real_time": round(hours * 3600 / med, 1), "bytes": size[label],
                   "mb_per_hour": round(size[label] / 1e6 / hours, 3)}
            if cpu[label]:
                row["median_cpu_s"] = round(float(np.median(cpu[label])), 1)
            out["runs"][label] = row
        if afp:
            per_round = []
            for r in range(a.rounds):
                row = {}
                for ref in ("audfprint_ncores_1", "audfprint_ncores_2"):
                    for label in runs:
                        row[f"{label}_vs_{ref}"] = wall[ref][r] / wall[label][r]
                row["cpu_bgmid_1_vs_audfprint_1"] = cpu["audfprint_ncores_1"][r] / cpu["bgmid_1_process"][r]
                per_round.append(row)
            out["speed_vs_audfprint_per_round"] = [{k: round(v, 2) for k, v in x.items()} for x in per_round]
            out["speed_vs_audfprint_median"] = _medians(per_round)
        else:
            out["audfprint"] = "not measured (no --audfprint source given)"
    out["machine_after"] = machine()
    return out


# -- query -----------------------------------------------------------------------------------------------


def decoy_catalogue(base: Path, size: int, target: Path) -> Path:
    """``target``: the index at ``base`` (real tracks + decoys) grown to ``size`` tracks with more decoys, written
    in bulk (one segment per copy of ``base``: ``import_tracks``), each copy's hashes XOR-ed by its own constant
    (the decoy rule of :mod:`bgmid.evaluate.library`, applied to whole copies)."""
    from bgmid.index import open_index
    from bgmid.index.base import TrackMeta

    if (target / "built.json").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    with open_index(base) as src:
        n0 = len(src.tracks())
        metas = {m.track_id: m for m in src.tracks()}
        parts = [seg.postings() for seg in src._segments]
        h, tid, tm = (np.concatenate(p) for p in zip(*parts, strict=True))
        stops = src.stop_words
        preset = src.preset
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("write.lock", "built.json"))
    rng = np.random.default_rng(16)
    ids = sorted(metas)
    with open_index(target, write=True) as dst:
        for c in range(1, int(np.ceil(size / n0))):
            n = min(n0, size - c * n0)
            take = set(ids[:n])
            sel = np.isin(tid, list(take))
            shift = c * (max(ids) + 1)
            new = [TrackMeta(f"decoy-{c}-{m.track_id}", "", m.duration_s, f"decoy-{c}-{m.content_hash}",
                             m.n_hashes, {}, m.track_id + shift) for m in (metas[i] for i in ids[:n])]
            x = np.uint32(rng.integers(1, 2**20))
            dst.import_tracks(new, h[sel] ^ x, tid[sel] + shift, tm[sel], stops=stops)
            print(f"  catalogue {target.name}: {c * n0 + n} tracks", file=sys.stderr)
    (target / "built.json").write_text(json.dumps({"tracks": size, "base": str(base), "preset": preset.name}))
    return target


def _decoy_xors(n: int) -> list[int]:
    """The XOR constant of decoy copies 1..n (copy ``c`` is ``[c - 1]``: the draws of :func:`decoy_catalogue`)."""
    rng = np.random.default_rng(16)
    return [int(rng.integers(1, 2**20)) for _ in range(n)]


def _built(single: Path, sharded: Path) -> int:
    """Tracks of a finished (or partly grown) catalogue pair, 0 when there is none."""
    try:
        n = int(json.loads((single / "built.json").read_text())["tracks"])
    except (OSError, ValueError, KeyError):
        return 0
    return n if (sharded / "shards.json").exists() and (sharded / "built.json").exists() else 0


def _link_copy(src: Path, dst: Path) -> None:
    """``dst`` a copy of index folder ``src``: segment files hard-linked (immutable), everything else copied."""
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("write.lock"))
    for f in dst.rglob("meta.sqlite*"):
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)


def grow_catalogues(base: Path, size: int, work: Path, shards: int) -> tuple[Path, Path]:
    """``work/cat<size>`` (single index) and ``work/cat<size>-<shards>shards`` (the same catalogue sharded), grown
    together from ``base`` (real tracks + decoys) with more decoy copies of it, each copy's hashes XOR-ed by its
    own constant (:func:`decoy_catalogue`'s rule) and written in bulk, one segment per copy in the single index
    and one per shard (track ``t`` in shard ``t mod N``, as :func:`bgmid.index.shard.split_index` places it):
    the same content as growing the single index and splitting it, without decoding it again. Resumable (after
    each copy ``built.json`` records the tracks so far); starts from the largest smaller pair already in ``work``
    (hard-linked)."""
    from bgmid.index import open_index
    from bgmid.index.base import TrackMeta
    from bgmid.index.local import LocalStore
    from bgmid.index.shard import split_index

    single, sharded = work / f"cat{size}", work / f"cat{size}-{shards}shards"
    if _built(single, sharded) >= size:
        return single, sharded
    with open_index(base) as src:
        n0 = len(src.tracks())
        metas = {m.track_id: m for m in src.tracks()}
        stops = src.stop_words
    if _built(single, sharded) == 0:
        shutil.rmtree(single, ignore_errors=True)
        shutil.rmtree(sharded, ignore_errors=True)
        smaller = sorted((n, d) for d in work.glob("cat*") if d.is_dir() and d.name[3:].isdigit()
                         and n0 <= (n := int(d.name[3:])) < size
                         and _built(d, work / f"{d.name}-{shards}shards") == n)
        if smaller:
            n, d = smaller[-1]
            _link_copy(d, single)
            _link_copy(work / f"{d.name}-{shards}shards", sharded)
        else:
            _link_copy(base, single)
            (single / "built.json").write_text(json.dumps({"tracks": n0}))
            split_index(base, sharded, shards)
            (sharded / "built.json").write_text(json.dumps({"tracks": n0}))
    with open_index(base) as src:
        parts = [seg.postings() for seg in src._segments]
    h, tid, tm = (np.concatenate(p) for p in zip(*parts, strict=True))
    del parts
    order = np.lexsort((tm, tid, h))  # (hash, track, time): the order a copy's lists are encoded in
    h, tid, tm = h[order], tid[order], tm[order]
    del order
    first = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    counts = np.diff(np.append(first, h.size))
    ids = sorted(metas)
    n_copies = int(np.ceil(size / n0))
    xors = _decoy_xors(n_copies)
    have = _built(single, sharded)
    names = json.loads((sharded / "shards.json").read_text())["shards"]
    with open_index(single, write=True) as dst:
        stores = [LocalStore(sharded / nm, write=True) for nm in names]
        held = [{m.track_id for m in st.tracks()} for st in [dst, *stores]]  # a copy cut short is not redone
        try:
            for c in range(have // n0, n_copies):
                t0 = time.perf_counter()
                n = min(n0, size - c * n0)
                shift = c * (max(ids) + 1)
                new = [TrackMeta(f"decoy-{c}-{m.track_id}", "", m.duration_s, f"decoy-{c}-{m.content_hash}",
                                 m.n_hashes, {}, m.track_id + shift) for m in (metas[i] for i in ids[:n])]
                # the copy's lists in the order of their XOR-ed hashes, so the postings come sorted (no sort of
                # every posting: the encoder checks the order and skips its own)
                xk = h[first] ^ np.uint32(xors[c - 1])
                perm = np.argsort(xk, kind="stable")
                starts = np.concatenate([[0], np.cumsum(counts[perm])[:-1]])
                idx = np.repeat(first[perm] - starts, counts[perm]) + np.arange(h.size)
                ch, ct, ctm = h[idx] ^ np.uint32(xors[c - 1]), tid[idx] + shift, tm[idx]
                del idx
                if n < n0:
                    sel = np.isin(ct, [m.track_id for m in new])
                    ch, ct, ctm = ch[sel], ct[sel], ctm[sel]
                if new[0].track_id not in held[0]:
                    dst.import_tracks(new, ch, ct, ctm, stops=stops)
                for k, shard in enumerate(stores):
                    mine = [m for m in new if m.track_id % len(stores) == k]
                    if mine and mine[0].track_id not in held[k + 1]:
                        on = ct % len(stores) == k
                        shard.import_tracks(mine, ch[on], ct[on], ctm[on], stops=stops)
                done = c * n0 + n
                for d in (single, sharded):
                    (d / "built.json").write_text(json.dumps({"tracks": done, "base": str(base)}))
                print(f"  catalogues {single.name}: {done} tracks ({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr, flush=True)
        finally:
            for s in stores:
                s.close()
    return single, sharded


def _music_files() -> list[Path]:
    """The decoded corpus music tracks (16 kHz int16 caches), in id order."""
    from bgmid.data.corpus import items, load_manifest

    ids = sorted(r["id"] for r in items(load_manifest(CACHE), "music"))
    return [f for f in (CACHE / "audio" / "16000" / f"{i}.npy" for i in ids) if f.exists()]


def _excerpts(n: int, preset) -> list:
    """``n`` 12 s excerpts of real corpus music tracks (fingerprinted as queries)."""
    from bgmid.audio import resample
    from bgmid.fingerprint.landmarks import fingerprint
    from bgmid.fingerprint.presets import QueryOptions

    o = QueryOptions()
    files = [f for f in _music_files() if np.load(f, mmap_mode="r").size >= 16000 * 14]
    rng = np.random.default_rng(7)
    out = []
    for f in rng.choice(files, size=n, replace=len(files) < n):
        x = np.load(f, mmap_mode="r")
        s = int(rng.integers(0, x.size - 16000 * 12))
        y = resample(np.asarray(x[s: s + 16000 * 12], np.float32) / 32768.0, 16000, preset.sample_rate)
        out.append(fingerprint(y, preset, o.density_factor, o.fanout_factor))
    return out


def _time_queries(store, queries) -> tuple[list[float], list, list[float]]:
    """Wall and CPU milliseconds per query (CPU time of this process: what a query costs whatever else the
    machine runs; Ray actors' CPU is not in it) and the answers."""
    from bgmid.match import lookup, score_offsets

    times, answers, cpu = [], [], []
    for lm in queries:
        t0, c0 = time.perf_counter(), time.process_time()
        p = lookup(store, lm)
        v = score_offsets(p, 5)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        answers.append((v.track_ids.tolist(), v.scores.tolist(), len(p), len(lm)))
    return times, answers, cpu


def bench_query(a: argparse.Namespace) -> dict:
    from bgmid.index import open_index
    from bgmid.index.shard import split_index

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine_before": machine(), "shards": a.shards, "sizes": {}}
    base = Path(a.base)
    if a.ray_actors:
        from bgmid.cluster import connect

        connect("local", num_cpus=os.cpu_count())
    with open_index(base) as s:
        queries = _excerpts(a.queries, s.preset)
        n_base = len(s.tracks())
    for size in [int(x) for x in a.sizes.split(",")]:
        t0 = time.perf_counter()
        if size <= n_base:
            db, sh = base, work / f"cat{size}-{a.shards}shards"
            if not (sh / "shards.json").exists():
                shutil.rmtree(sh, ignore_errors=True)
                split_index(db, sh, a.shards)
        else:
            db, sh = grow_catalogues(base, size, work, a.shards)
        row: dict = {"build_s": round(time.perf_counter() - t0, 1)}
        answers = {}
        from bgmid.index.shard import RayShardedStore

        stores = [("single", open_index, db), (f"{a.shards}_shards", open_index, sh)]
        if a.ray_actors:
            stores.append((f"{a.shards}_shards_ray_actors", RayShardedStore, sh))
        for label, opener, path in stores:
            with opener(path) as store:
                _time_queries(store, queries[:3])  # warm the page cache and the directories
                ms, answers[label], cpu = _time_queries(store, queries)
                st = store.stats()
            row[label] = {"tracks": st["tracks"], "stored_postings": st["stored_postings"], "bytes": st["bytes"],
                          "median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
                          "median_cpu_ms": round(float(np.median(cpu)), 2),
                          "p90_cpu_ms": round(float(np.percentile(cpu, 90)), 2),
                          "queries": len(ms),
                          "mean_landmarks_per_query": round(float(np.mean([x[3] for x in answers[label]])), 1),
                          "mean_postings_per_query": round(float(np.mean([x[2] for x in answers[label]])), 1)}
        row["identical_answers"] = all(v == answers["single"] for v in answers.values())
        out["sizes"][str(size)] = row
        print(json.dumps({size: row}), file=sys.stderr)
    out["machine_after"] = machine()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    b = sub.add_parser("batch")
    b.add_argument("--programmes", type=int, default=4)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--separator", default="none")
    b.add_argument("--db", default=str(DEFAULT_DB))
    b.add_argument("--repeat", type=int, default=1, help="copies of the programme set (a longer archive)")
    b.add_argument("--compare-src", default=None, metavar="DIR",
                   help="also time --ray local from this src folder (another checkout's: an interleaved A/B)")
    i = sub.add_parser("index")
    i.add_argument("--tracks", type=int, default=40)
    i.add_argument("--audfprint", default=None, help="folder of audfprint's source (github:dpwe/audfprint)")
    i.add_argument("--audfprint-python", default="python3", help="a python with audfprint's requirements")
    i.add_argument("--no-ray", action="store_true", help="leave out the Ray run")
    q = sub.add_parser("query")
    q.add_argument("--sizes", default="1000,10000")
    q.add_argument("--shards", type=int, default=4)
    q.add_argument("--queries", type=int, default=40)
    q.add_argument("--base", default=str(next(iter(sorted(CACHE.glob("index/p1-fill1000-*"))), DEFAULT_DB)))
    q.add_argument("--ray-actors", action="store_true", help="also time the shards served by Ray actors")
    q.add_argument("--work", default="/tmp/bgmid-scale", help="where the grown catalogues are built (cached)")
    for p in (b, i):
        p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every configuration")
        p.add_argument("--ray-running", action="store_true",
                       help="also time --ray auto on a cluster started beforehand (ray start --head)")
    for p in (b, i, q):
        p.add_argument("--out", default=None, help="write the JSON report here (default benchmarks/results/)")
    a = ap.parse_args(argv)
    report = {"batch": bench_batch, "index": bench_index, "query": bench_query}[a.what](a)
    text = json.dumps(report, indent=1)
    print(text)
    dest = Path(a.out) if a.out else HERE / "results" / f"scale-{a.what}.json"
    dest.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
