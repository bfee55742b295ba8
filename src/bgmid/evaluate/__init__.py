"""``bgmid evaluate``: the reference paper's experiments on our corpus, reproducibly, with one command.

What matters for this project is the identification rate after separation, not SDR (the paper: SDR ranked
MMDenseNet first, identification ranked Wave-U-Net first), so both are measured on the same fixed test sets and
set against each other.

* :mod:`bgmid.evaluate.library` -- the reference index of the corpus, built once and cached (also what
  ``bgmid demo`` and the benchmarks index);
* :mod:`bgmid.evaluate.bss` -- BSS Eval (mir_eval, guarded); SI-SDR and SNR (defined in :mod:`bgmid.metrics`);
* :mod:`bgmid.evaluate.separators` -- the separators under evaluation; stage 1, separate a set;
* :mod:`bgmid.evaluate.identification` -- the evaluation grid (separator x input x preset x query x threshold)
  as typed stages: identify a set -> rows, score, cost;
* :mod:`bgmid.evaluate.repeats` -- when a right-track answer at another offset counts (looped music);
* :mod:`bgmid.evaluate.report` -- Markdown/CSV/PNG report (one function per section), run log,
  :func:`best_configuration`.

The corpus manifest's hash is :func:`bgmid.data.corpus.manifest_sha256` (re-exported here).
"""

from __future__ import annotations

from bgmid.data.corpus import manifest_sha256
from bgmid.evaluate.bss import bss_eval, si_sdr, snr
from bgmid.evaluate.identification import (
    EvalSettings,
    QuerySpec,
    SeparatorEntry,
    default_sets,
    entry_for,
    evaluate,
    resolve_separators,
)
from bgmid.evaluate.library import build_corpus_index, open_corpus_index
from bgmid.evaluate.report import best_configuration, load_report, write_report

__all__ = [
    "EvalSettings",
    "QuerySpec",
    "SeparatorEntry",
    "best_configuration",
    "bss_eval",
    "build_corpus_index",
    "default_sets",
    "entry_for",
    "evaluate",
    "load_best",
    "load_report",
    "manifest_sha256",
    "open_corpus_index",
    "resolve_separators",
    "si_sdr",
    "snr",
    "write_report",
]


def load_best(path: str = "reports/shipped/best.json") -> dict:
    """The best configuration a report found (``{}`` when there is no such file): for identify/monitor defaults."""
    import json
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "best.json"
    return json.loads(p.read_text()) if p.exists() else {}
