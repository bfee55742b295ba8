"""Tune the query analysis and the match threshold on the real corpus.

Against the corpus index (:func:`bgmid.evaluate.library.open_corpus_index`: every music track except the ``ooi``
split, cached), for each query configuration (density factor, fan-out factor, shifts) computes the best-track
scores of positive queries (12 s excerpts of indexed tracks: clean, white noise at 0 dB, real speech at -10 dB
without separation) and of negatives (speech-only clips, never-indexed music), then reports, at the threshold that
keeps false matches <= 1 %, the share of positives found. The chosen threshold and a logistic confidence fit
go into ``bgmid.match.CALIBRATION``.

    .venv/bin/python benchmarks/query_tuning.py --preset p1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bgmid.data.corpus import default_root, items, load_item, load_manifest
from bgmid.evaluate.library import open_corpus_index
from bgmid.fingerprint import QueryOptions
from bgmid.match import Matcher, accept, vote

SR = 22050


def fit_confidence(arr: np.ndarray) -> list[float]:
    """Logistic fit of P(correct) on (ln score, ln ratio) over every query (negatives count as incorrect)."""
    from scipy.optimize import minimize

    X = np.c_[np.ones(len(arr)), np.log(np.maximum(arr[:, 0], 1)), np.log(np.maximum(arr[:, 1], 1))]
    y = arr[:, 2]

    def loss(w):
        z = X @ w
        return float(np.sum(np.logaddexp(0, z) - y * z)) + 1e-3 * float(w @ w)

    return [round(float(v), 3) for v in minimize(loss, np.zeros(3), method="BFGS").x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(default_root()))
    ap.add_argument("--preset", default="p1")
    ap.add_argument("--clips", type=int, default=80)
    ap.add_argument("--negatives", type=int, default=150)
    ap.add_argument("--configs", default="2,2,1;2,1,1;3,2,1", help="density,fanout,shifts;...")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.root)
    man = load_manifest(root)
    rng = np.random.default_rng(args.seed)
    music = [r for r in items(man, "music") if r["split"] != "ooi"]
    ooi = items(man, "music", "ooi")
    speech = items(man, "speech", "test") or items(man, "speech")

    def audio(rec):
        return np.asarray(load_item(root, rec["id"], SR), np.float32) / 32768.0

    def crop(x, n):
        s = int(rng.integers(0, max(1, x.size - n)))
        return x[s:s + n], s / SR

    n = 12 * SR
    speech_pool = [audio(r) for r in rng.choice(np.array(speech, dtype=object), 400)]

    def dialogue(n):  # lines with pauses, like the data module's fixed sets
        out = np.zeros(n, np.float32)
        pos = int(rng.uniform(0, 0.5) * SR)
        while pos < n:
            line = speech_pool[int(rng.integers(len(speech_pool)))]
            m = min(line.size, n - pos)
            out[pos:pos + m] += line[:m]
            pos += m + int(rng.uniform(0.15, 1.0) * SR)
        return out

    pos_q = []
    for r in rng.choice(np.array(music, dtype=object), args.clips):
        x, s = crop(audio(r), n)
        pm = np.mean(x**2) + 1e-12
        noise = rng.standard_normal(n).astype(np.float32) * np.sqrt(pm)
        sp = dialogue(n)
        sp *= np.sqrt(pm / (np.mean(sp**2) + 1e-12) * 10.0)  # music 10 dB below speech
        pos_q.append((r["id"], s, {"clean": x, "noise0": x + noise, "speech-10": x + sp}))
    neg_q = [crop(audio(r), n)[0] for r in rng.choice(np.array(ooi, dtype=object), args.negatives // 2)]
    neg_q += [dialogue(n) for _ in range(args.negatives - len(neg_q))]

    store, _ = open_corpus_index(root, args.preset, log=lambda m: print(m, file=sys.stderr))  # as bgmid evaluate's
    with store:
        results = {}
        for cfg in args.configs.split(";"):
            d, f, sh = (float(v) for v in cfg.split(","))
            m = Matcher(store, QueryOptions(density_factor=d, fanout_factor=f, shifts=int(sh)))

            def feats(x, m=m):
                v = vote(store, m.landmarks(x, SR), top=2, max_postings=m.max_postings)
                if not v.scores.size:
                    return 0, 1.0, None
                second = float(v.scores[1]) if v.scores.size > 1 else 1.0
                return int(v.scores[0]), v.scores[0] / max(1.0, second), store.track(int(v.track_ids[0])).content_hash

            rows = []  # (score, ratio, correct, kind)
            for x in neg_q:
                s_, r_, _ = feats(x)
                rows.append((s_, r_, 0, "neg"))
            for tid, _s, qs in pos_q:
                for cond in ("clean", "noise0", "speech-10"):
                    s_, r_, t_ = feats(qs[cond])
                    rows.append((s_, r_, int(t_ == tid), cond))
            arr = np.array([(a_, b_, c_) for a_, b_, c_, _ in rows], float)
            kinds = np.array([k for *_, k in rows])
            ok = accept(arr[:, 0].astype(int), arr[:, 1])
            row = {"false_match_rate": round(float(ok[kinds == "neg"].mean()), 4),
                   "neg_max_score": int(arr[kinds == "neg", 0].max())}
            for cond in ("clean", "noise0", "speech-10"):
                sel = kinds == cond
                row[cond] = round(float((ok[sel] & (arr[sel, 2] == 1)).mean()), 3)
            row["confidence_fit_w"] = fit_confidence(arr)
            results[cfg] = row
            print(cfg, row, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
