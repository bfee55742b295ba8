"""bgmid: identify the background music under speech in broadcast audio.

Data flows one way: ``audio -> (separation) -> fingerprint -> index / match -> report``.
"""

__version__ = "0.1.0"
