"""``bgmid serve``: a self-hosted HTTP API and review page for the people who file cue sheets.

:mod:`~bgmid.serve.app` (routes), :mod:`~bgmid.serve.store` (SQLite state and audit trail),
:mod:`~bgmid.serve.jobs` (monitor jobs in a worker pool), :mod:`~bgmid.serve.security` (tokens, allowed roots,
upload limits, signed audio URLs), :mod:`~bgmid.serve.media` (audio the browser can play) and ``static/`` (the
review page: plain HTML, CSS and JavaScript, no build step). Needs the ``serve`` extra (FastAPI, uvicorn).
"""
