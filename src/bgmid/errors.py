"""Errors a user can act on. Each message names what was wrong, with which file, and what to do."""


class BgmidError(RuntimeError):
    """Base class: the CLI prints the message (no traceback) and exits with status 2."""
