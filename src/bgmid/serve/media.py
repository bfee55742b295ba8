"""Audio the review page can play: the file itself when browsers decode its format, else a FLAC copy.

Programmes arrive as MPEG-TS, MKV or MP4 and reference tracks may have no extension at all (the corpus has
extensionless OGG); ``<audio>`` needs a format it knows and a file it can seek in with range requests. Such
files are decoded once (streamed: memory does not grow with length) into ``<data>/cache/`` as mono FLAC at
:data:`PLAY_SR`, written under a temporary name and renamed, so a half-written copy is never served.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import soundfile as sf

__all__ = ["BROWSER_TYPES", "PLAY_SR", "media_type", "playable"]

#: Extensions browsers play in ``<audio>`` and their media types.
BROWSER_TYPES = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".flac": "audio/flac", ".m4a": "audio/mp4", ".aac": "audio/aac", ".webm": "audio/webm",
}
#: Sample rate of the playable copies (Hz): enough for a reviewer to recognise the music and the dialogue.
PLAY_SR = 22050

_lock = threading.Lock()  # one transcode of a file at a time (two requests for it share the result)


def media_type(path: str | os.PathLike) -> str:
    return BROWSER_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def playable(src: str | os.PathLike, cache_dir: str | os.PathLike, key: str) -> Path:
    """``src`` if browsers play its format, else its FLAC copy ``<cache_dir>/<key>.flac`` (made on first use).
    Raises :class:`bgmid.audio.AudioError` when ``src`` cannot be decoded."""
    from bgmid.audio import resampled_pieces

    src = Path(src)
    if src.suffix.lower() in BROWSER_TYPES:
        return src
    out = Path(cache_dir) / f"{key}.flac"
    with _lock:
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        try:
            with sf.SoundFile(tmp, "w", samplerate=PLAY_SR, channels=1, format="FLAC") as f:
                for piece in resampled_pieces(src, PLAY_SR):
                    f.write(piece)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    return out
