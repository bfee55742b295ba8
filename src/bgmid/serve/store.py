"""The review server's persistent state: jobs, programmes, their cues and the audit trail, in one SQLite file.

``<data>/bgmid-serve.sqlite`` in WAL mode (readers never wait for the writer), one connection per thread
(:class:`ReviewStore` keeps them in a ``threading.local``) and per worker process, ``busy_timeout`` so that
concurrent writers queue instead of failing, and every edit in one ``BEGIN IMMEDIATE`` transaction that writes
the cue and its audit row together: an edit is either saved with its audit record or not at all.

A programme's cues are stored as the JSON contract's cue objects (:func:`bgmid.cuesheet.cue_to_dict`) plus their
offset ``parts``; a reviewer's edits change that object, the audit row keeps the object before and after. The
reviewed cue sheet (:meth:`ReviewStore.reviewed_result`) is the programme's :class:`~bgmid.monitor.MonitorResult`
with the rejected cues left out, so it is written by :mod:`bgmid.cuesheet` like any monitor output.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bgmid.cuesheet import cue_to_dict
from bgmid.monitor import Cue, CuePart, MonitorResult

__all__ = ["CUE_STATUSES", "DB_NAME", "ReviewStore", "cue_from_dict", "utc_now"]

#: The state file's name inside the data folder.
DB_NAME = "bgmid-serve.sqlite"
#: A cue's review status: as detected (``pending``), confirmed or removed by a reviewer.
CUE_STATUSES = ("pending", "accepted", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    source TEXT NOT NULL, name TEXT NOT NULL, options TEXT NOT NULL, duration_s REAL,
    created TEXT NOT NULL, started TEXT, finished TEXT, error TEXT, programme_id INTEGER);
CREATE TABLE IF NOT EXISTS programmes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL,
    audio TEXT NOT NULL, duration_s REAL NOT NULL, separator TEXT NOT NULL, alteration TEXT NOT NULL,
    levels TEXT NOT NULL, truth TEXT, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cues (
    programme_id INTEGER NOT NULL REFERENCES programmes(id), n INTEGER NOT NULL, status TEXT NOT NULL,
    origin TEXT NOT NULL, data TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (programme_id, n));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, programme_id INTEGER NOT NULL, cue_n INTEGER, at TEXT NOT NULL,
    who TEXT NOT NULL, token_name TEXT NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT);
"""


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds (``2026-12-01T12:00:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _curve(a: np.ndarray | None) -> list[float] | None:
    """A per-second level curve (dB) as JSON numbers, one decimal; -inf (digital silence) as -120."""
    if a is None:
        return None
    return [round(float(v), 1) if np.isfinite(v) else -120.0 for v in np.asarray(a, np.float64)]


def cue_record(cue: Cue) -> dict:
    """A detected cue as stored: the JSON contract's object plus its offset runs (``parts``)."""
    d = cue_to_dict(cue)
    d["parts"] = [vars(p).copy() for p in cue.parts]
    return d


def cue_from_dict(d: dict) -> Cue:
    """A stored cue object back as a :class:`~bgmid.monitor.Cue` (for :mod:`bgmid.cuesheet`'s writers)."""
    return Cue(
        track_id=int(d["track_id"]), programme_start_s=float(d["programme_start_s"]),
        programme_end_s=float(d["programme_end_s"]), track_start_s=float(d["track_start_s"]),
        track_end_s=float(d["track_end_s"]), score=int(d.get("score", 0)), confidence=float(d.get("confidence", 0)),
        parts=[CuePart(**p) for p in d.get("parts", [])], msr_db=d.get("msr_db"),
        usage=d.get("usage", "background"), seq=int(d.get("seq", 0)), title=d.get("title", ""),
        path=d.get("path", ""), extra=dict(d.get("metadata", {})), speed=float(d.get("speed", 1.0)),
        tempo=float(d.get("tempo", 1.0)), pitch_semitones=float(d.get("pitch_semitones", 0.0)),
    )


class ReviewStore:
    """Jobs, programmes, cues and audit rows in ``<data>/bgmid-serve.sqlite``; safe to share between threads
    (a connection per thread) and processes (WAL, busy timeout, immediate transactions for writes)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().executescript(_SCHEMA)  # idempotent; executescript runs in its own transaction

    # -- connections -------------------------------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken up front, so two concurrent
        read-modify-write edits cannot interleave)."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._con().execute(sql, args).fetchall()

    # -- jobs --------------------------------------------------------------------------------------------
    def add_job(self, job_id: str, kind: str, source: str, name: str, options: dict) -> None:
        with self.write() as con:
            con.execute("INSERT INTO jobs (id, kind, status, source, name, options, created) VALUES (?,?,?,?,?,?,?)",
                        (job_id, kind, "queued", source, name, json.dumps(options), utc_now()))

    def update_job(self, job_id: str, **fields) -> None:
        """Set some of a job's columns (``status``, ``progress``, ``started``, ``finished``, ``error``, ...)."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as con:
            con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def job(self, job_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        d = dict(rows[0])
        d["options"] = json.loads(d["options"])
        return d

    def jobs(self, limit: int = 20) -> list[dict]:
        """The latest jobs, newest first."""
        rows = self._rows("SELECT * FROM jobs ORDER BY created DESC, rowid DESC LIMIT ?", (max(1, limit),))
        return [{**dict(r), "options": json.loads(r["options"])} for r in rows]

    def fail_unfinished_jobs(self, why: str) -> int:
        """Mark jobs a previous server left queued or running as failed (their worker is gone)."""
        with self.write() as con:
            cur = con.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ? "
                              "WHERE status IN ('queued', 'running')", (why, utc_now()))
            return cur.rowcount

    # -- programmes --------------------------------------------------------------------------------------
    def add_programme(self, result: MonitorResult, source: str, audio: str, name: str, title: str,
                      truth: list[dict] | None = None, job_id: str | None = None) -> int:
        """Store a monitor result (cues pending review) and, with ``job_id``, finish its job, atomically.
        ``source`` is the file monitored, ``audio`` the file the review page plays (the same, or a copy the
        browser can decode)."""
        levels = {"level_db": _curve(result.level_db), "music_db": _curve(result.music_db),
                  "speech_db": _curve(result.speech_db)}
        now = utc_now()
        with self.write() as con:
            cur = con.execute(
                "INSERT INTO programmes (name, title, source, audio, duration_s, separator, alteration, levels, "
                "truth, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (name, title, source, audio, round(result.duration_s, 3), result.separator,
                 json.dumps(result.alteration), json.dumps(levels), None if truth is None else json.dumps(truth), now))
            pid = int(cur.lastrowid)
            for c in result.cues:
                con.execute("INSERT INTO cues VALUES (?,?,?,?,?,?)",
                            (pid, c.seq, "pending", "detected", json.dumps(cue_record(c)), now))
            if job_id is not None:
                con.execute("UPDATE jobs SET status = 'done', progress = 1.0, finished = ?, programme_id = ? "
                            "WHERE id = ?", (now, pid, job_id))
        return pid

    def programmes(self) -> list[dict]:
        rows = self._rows(
            "SELECT p.id, p.name, p.title, p.duration_s, p.separator, p.created, "
            "COUNT(c.n) AS cues, SUM(c.status = 'pending') AS pending, SUM(c.status = 'rejected') AS rejected "
            "FROM programmes p LEFT JOIN cues c ON c.programme_id = p.id GROUP BY p.id ORDER BY p.id DESC")
        return [{**dict(r), "pending": int(r["pending"] or 0), "rejected": int(r["rejected"] or 0)} for r in rows]

    def programme(self, pid: int) -> dict | None:
        """One programme with its levels, truth and cues (each cue: ``n``, ``status``, ``origin`` and its object)."""
        rows = self._rows("SELECT * FROM programmes WHERE id = ?", (pid,))
        if not rows:
            return None
        d = dict(rows[0])
        for k in ("alteration", "levels", "truth"):
            d[k] = None if d[k] is None else json.loads(d[k])
        d["cues"] = self.cues(pid)
        return d

    def cues(self, pid: int) -> list[dict]:
        rows = self._rows("SELECT * FROM cues WHERE programme_id = ? ORDER BY n", (pid,))
        return [{"n": r["n"], "status": r["status"], "origin": r["origin"], "updated": r["updated"],
                 **json.loads(r["data"])} for r in rows]

    def reviewed_result(self, pid: int) -> MonitorResult | None:
        """The programme's cue sheet as reviewed: rejected cues out, edits in, in programme order, renumbered
        1..n; a :class:`~bgmid.monitor.MonitorResult` for :mod:`bgmid.cuesheet`'s writers."""
        prog = self.programme(pid)
        if prog is None:
            return None
        kept = sorted((c for c in prog["cues"] if c["status"] != "rejected"),
                      key=lambda c: (c["programme_start_s"], c["n"]))
        cues = []
        for seq, c in enumerate(kept, 1):
            cue = cue_from_dict(c)
            cue.seq = seq
            cues.append(cue)
        return MonitorResult(programme=prog["name"], duration_s=prog["duration_s"], cues=cues,
                             level_db=np.zeros(0), separator=prog["separator"],
                             alteration=prog["alteration"] or {})

    # -- edits (each with its audit row, in one transaction) ---------------------------------------------
    def edit_cue(self, pid: int, n: int, change, who: str, token_name: str, action: str) -> dict | None:
        """Apply ``change(status, data) -> (status, data)`` to cue ``n`` and audit it; None if there is no such
        cue. ``change`` runs inside the write transaction, so it sees the latest saved state."""
        with self.write() as con:
            rows = con.execute("SELECT status, data FROM cues WHERE programme_id = ? AND n = ?", (pid, n)).fetchall()
            if not rows:
                return None
            before = {"status": rows[0]["status"], **json.loads(rows[0]["data"])}
            status, data = change(rows[0]["status"], json.loads(rows[0]["data"]))
            now = utc_now()
            con.execute("UPDATE cues SET status = ?, data = ?, updated = ? WHERE programme_id = ? AND n = ?",
                        (status, json.dumps(data), now, pid, n))
            after = {"status": status, **data}
            self._audit(con, pid, n, who, token_name, action, before, after, now)
        return after

    def add_cue(self, pid: int, data: dict, who: str, token_name: str) -> int:
        """A cue the reviewer found (status ``accepted``, origin ``reviewer``); returns its number."""
        with self.write() as con:
            n = int(con.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM cues WHERE programme_id = ?",
                                (pid,)).fetchone()[0])
            data = {**data, "seq": n}
            now = utc_now()
            con.execute("INSERT INTO cues VALUES (?,?,?,?,?,?)",
                        (pid, n, "accepted", "reviewer", json.dumps(data), now))
            self._audit(con, pid, n, who, token_name, "add", None, {"status": "accepted", **data}, now)
        return n

    @staticmethod
    def _audit(con: sqlite3.Connection, pid: int, n: int | None, who: str, token_name: str, action: str,
               before: dict | None, after: dict | None, at: str) -> None:
        con.execute("INSERT INTO audit (programme_id, cue_n, at, who, token_name, action, before, after) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (pid, n, at, who, token_name, action, None if before is None else json.dumps(before),
                     None if after is None else json.dumps(after)))

    def audit(self, pid: int) -> list[dict]:
        """Every edit of a programme's cues, oldest first: who, when (UTC), what before and after."""
        rows = self._rows("SELECT * FROM audit WHERE programme_id = ? ORDER BY id", (pid,))
        out = []
        for r in rows:
            d = dict(r)
            d["before"] = None if d["before"] is None else json.loads(d["before"])
            d["after"] = None if d["after"] is None else json.loads(d["after"])
            out.append(d)
        return out

