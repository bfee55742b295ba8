"""Identification accuracy, false matches, speed and index size on real music (issue #2's targets).

Uses the corpus built by ``bgmid data fetch`` (music of the Debian game-soundtrack packages, speech of the
voice-acting packages) and its cached index (:func:`bgmid.evaluate.library.open_corpus_index`, the one
``bgmid evaluate`` uses: every music track except the ``ooi`` split; built once, fingerprint speed from its
build). Queries are 12 s excerpts at random offsets (clean, and with white noise at 0 dB SNR); an answer at another
offset counts as an identical repeat by :mod:`bgmid.evaluate.repeats` (the criterion behind the report's figures
too); negatives are speech-only clips and clips of the never-indexed ``ooi`` music. Latency is measured against
the same index padded with decoys to ``--fill-to`` tracks (cached as well). Prints a JSON report.

    .venv/bin/python benchmarks/identification.py --preset p1 --clips 200
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bgmid.data.corpus import default_root, items, load_item, load_manifest
from bgmid.evaluate.library import fingerprint_items, open_corpus_index
from bgmid.evaluate.repeats import RepeatCheck
from bgmid.fingerprint import PRESETS, QueryOptions
from bgmid.match import Matcher, vote

CACHE_SR = 22050


def _audio(root: Path, rec: dict) -> np.ndarray:
    return np.asarray(load_item(root, rec["id"], CACHE_SR), dtype=np.float32) / 32768.0


def audfprint_size_estimate(landmarks: list[tuple[int, np.ndarray, np.ndarray]], n_bits: int = 20, depth: int = 100,
                            maxtime_bits: int = 14) -> int:
    """Bytes of an audfprint database holding the same landmarks, in audfprint's own layout.

    audfprint keeps a (2**hashbits, bucketsize) uint32 table of (track id << maxtimebits | time) entries
    plus per-hash counts and pickles it through gzip; we build that table from the landmarks bgmid extracted
    (every one, including the stop words bgmid does not store; hash folded to ``n_bits``, time modulo
    2**maxtime_bits, buckets capped at ``depth`` as audfprint does) and measure the gzip-pickled size. An
    estimate of the format, not a run of audfprint (it is not installable here).
    """
    table = np.zeros((2**n_bits, depth), np.uint32)
    counts = np.zeros(2**n_bits, np.int32)
    for tid, h, tm in landmarks:
        t = np.full(h.size, tid, np.int64)
        tm = np.asarray(tm, np.int64)
        h = (h.astype(np.int64) % (2**n_bits)).astype(np.int64)
        val = ((t.astype(np.uint64) << np.uint64(maxtime_bits)) | (tm.astype(np.uint64) % (2**maxtime_bits)))
        order = np.argsort(h, kind="stable")
        h, val = h[order], val[order]
        first = np.searchsorted(h, h)
        slot = np.arange(h.size) - first + counts[h]
        ok = slot < depth
        table[h[ok], slot[ok]] = val[ok].astype(np.uint32)
        np.add.at(counts, h, 1)
    with tempfile.NamedTemporaryFile(suffix=".pklz") as f:
        with gzip.open(f.name, "wb") as g:
            pickle.dump({"table": table, "counts": counts}, g, pickle.HIGHEST_PROTOCOL)
        return Path(f.name).stat().st_size


def positives(root: Path, store, matcher: Matcher, queries: list, clip_s: float, rng: np.random.Generator
              ) -> tuple[dict, list[tuple[int, bool]]]:
    """Top-1, offset and repeat-aware accuracy of the queries, clean and with white noise at 0 dB; and the best
    scores of every query with whether they named the right track (for calibration)."""
    repeat = RepeatCheck(root, clip_s)  # the one repeat criterion, shared with bgmid evaluate
    report, pos_scores = {}, []
    for cond in ("clean", "noise_0dB"):
        ok = ok_off = ok_loop = 0
        times = []
        for r, x, start in queries:
            if cond == "noise_0dB":
                x = x + rng.standard_normal(x.size).astype(np.float32) * np.sqrt(np.mean(x**2))
            t0 = time.perf_counter()
            m = matcher.identify(x, CACHE_SR)
            times.append(time.perf_counter() - t0)
            lm = matcher.landmarks(x, CACHE_SR)
            v = vote(store, lm, top=2, max_postings=matcher.max_postings)
            if v.scores.size:
                right = store.track(int(v.track_ids[0])).content_hash == r["id"]
                pos_scores.append((int(v.scores[0]), bool(right)))
            if m and store.track(m[0].track_id).content_hash == r["id"]:
                ok += 1
                exact = abs(m[0].track_offset_s - start) <= 0.1
                ok_off += exact
                ok_loop += exact or repeat(r["id"], start, m[0].track_offset_s)
        report[cond] = {"top1": round(ok / len(queries), 4), "top1_offset_0.1s": round(ok_off / len(queries), 4),
                        "top1_offset_0.1s_or_identical_repeat": round(ok_loop / len(queries), 4),
                        "identify_ms_median": round(1000 * float(np.median(times)), 2)}
    return report, pos_scores


def negatives(store, matcher: Matcher, pools: list[tuple[str, list[dict]]], n: int, excerpt) -> tuple[dict, list]:
    """False matches on speech-only clips and never-indexed music, with the negatives' best scores."""
    neg_scores = []
    false: dict = {}
    false_detail: list[dict] = []
    for name, pool in pools:
        n_false = 0
        if not pool:
            continue
        for r in excerpt.rng.choice(np.array(pool, dtype=object), n):
            x, _ = excerpt(r)
            lm = matcher.landmarks(x, CACHE_SR)
            v = vote(store, lm, top=2, max_postings=matcher.max_postings)
            neg_scores.append(int(v.scores[0]) if v.scores.size else 0)
            fm = matcher.match_landmarks(lm)
            n_false += bool(fm)
            if fm:
                false_detail.append({"clip": r["id"], "kind": name, "matched": store.track(fm[0].track_id).title,
                                     "score": fm[0].score})
        false[name] = round(n_false / n, 4)
    report = {"false_match_rate": false, "false_matches": false_detail,
              "negative_top_scores": {"max": max(neg_scores or [0]),
                                      "p99": float(np.percentile(neg_scores or [0], 99))}}
    return report, neg_scores


def latency(root: Path, preset: str, fill_to: int, seed: int, shifts: int, queries: list, jobs: int) -> dict:
    """Query latency against the corpus index padded with decoys to ``fill_to`` tracks (see
    :mod:`bgmid.evaluate.library`: real tracks' landmarks with every hash XOR-ed by a random constant)."""
    store, _ = open_corpus_index(root, preset, jobs=jobs, fill_to=fill_to, decoy_seed=seed, log=_log)
    with store:
        matcher = Matcher(store, QueryOptions(shifts=shifts))  # the stop-word limit grows with the index
        lat = []
        for _r, x, _start in queries[:100]:
            t0 = time.perf_counter()
            matcher.identify(x, CACHE_SR)
            lat.append(time.perf_counter() - t0)
        t_an = []
        for _r, x, _start in queries[:100]:
            t0 = time.perf_counter()
            matcher.landmarks(x, CACHE_SR)
            t_an.append(time.perf_counter() - t0)
        return {
            **{k: v for k, v in store.stats().items() if k != "path"},
            "max_postings": matcher.max_postings,
            "identify_ms_median": round(1000 * float(np.median(lat)), 2),
            "identify_ms_p90": round(1000 * float(np.percentile(lat, 90)), 2),
            "analysis_ms_median": round(1000 * float(np.median(t_an)), 2),
        }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


class _Excerpts:
    """Random ``clip_s`` excerpts of corpus items (their 22,050 Hz cache), drawn from ``rng``."""

    def __init__(self, root: Path, clip_s: float, rng: np.random.Generator):
        self.root, self.n, self.rng = root, int(clip_s * CACHE_SR), rng

    def __call__(self, r: dict) -> tuple[np.ndarray, float]:
        x = load_item(self.root, r["id"], CACHE_SR)
        start = int(self.rng.integers(0, max(1, x.shape[0] - self.n)))
        return np.asarray(x[start:start + self.n], np.float32) / 32768.0, start / CACHE_SR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(default_root()))
    ap.add_argument("--preset", default="p1", choices=sorted(PRESETS))
    ap.add_argument("--clips", type=int, default=200, help="positive queries per condition")
    ap.add_argument("--negatives", type=int, default=100, help="speech-only and out-of-index clips, each")
    ap.add_argument("--clip-s", type=float, default=12.0)
    ap.add_argument("--density", type=float, default=None, help="override the preset's peaks/s")
    ap.add_argument("--fanout", type=int, default=None, help="override the preset's fan-out")
    ap.add_argument("--shifts", type=int, default=1)
    ap.add_argument("--fill-to", type=int, default=1000, help="pad the index to this many tracks for timing")
    ap.add_argument("--audfprint", action="store_true", help="also estimate audfprint's DB size (slow)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for building the (cached) corpus indexes")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    root = Path(args.root)
    man = load_manifest(root)
    overrides = [f"{k}={v}" for k, v in (("density", args.density), ("fanout", args.fanout)) if v]
    preset = args.preset + (":" + ",".join(overrides) if overrides else "")  # a variant has its own cached index
    music = [r for r in items(man, "music") if r["split"] != "ooi"]
    rng = np.random.default_rng(args.seed)
    store, info = open_corpus_index(root, preset, jobs=args.jobs, log=_log)  # the corpus index bgmid evaluate uses
    report: dict = {"preset": store.preset.to_dict(), "tracks": len(music)}
    st = store.stats()
    report["index"] = {**st, "hours": round(info["hours"], 2), "bytes_per_hour": int(st["bytes"] / info["hours"])}
    report["fingerprint_x_realtime_one_core"] = info.get("fingerprint_x_realtime_one_core")  # measured at its build
    if args.audfprint:
        tid = {t.content_hash: t.track_id for t in store.tracks()}
        report["audfprint_size_estimate_bytes"] = audfprint_size_estimate(
            [(tid[fp.item_id], fp.hashes, fp.times) for fp in fingerprint_items(root, [r["id"] for r in music],
                                                                                 preset, args.jobs)])
    excerpt = _Excerpts(root, args.clip_s, rng)
    queries = [(r, *excerpt(r)) for r in rng.choice(np.array(music, dtype=object), args.clips)]
    with store:
        matcher = Matcher(store, QueryOptions(shifts=args.shifts))
        pos, pos_scores = positives(root, store, matcher, queries, args.clip_s, rng)
        neg, neg_scores = negatives(store, matcher, [("speech", items(man, "speech")),
                                                     ("out_of_index_music", items(man, "music", "ooi"))],
                                    args.negatives, excerpt)
    report.update(pos)
    report.update(neg)
    if args.fill_to > len(music):
        report["index_1000"] = latency(root, preset, args.fill_to, args.seed, args.shifts, queries, args.jobs)
    report["positive_scores"] = pos_scores
    report["negative_scores"] = neg_scores

    summary = {k: v for k, v in report.items() if k not in ("positive_scores", "negative_scores")}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
