"""Music-speech separation before fingerprinting: four networks (U-Net, Wave-U-Net, MMDenseNet,
Wave-DenseNet) behind one :class:`Separator` interface, with chunked inference for any length.

>>> sep = load_separator("wave-unet")          # shipped lite weights, offline
>>> music, speech = sep.separate(mono)          # mono float32 at sep.sample_rate
>>> sep = resolve_separator("auto")             # what --separator auto|none|NAME|PATH means (None: no separation)
>>> with torch_threads(2): ...                  # the thread policy (restored after the block)
>>> music, speech = separate_at(sep, x, 44100, threads=1)  # any rate in, stems at that rate and length out

Importing this package does not import torch (:mod:`bgmid.separation.registry` imports it where it is used).
"""

from bgmid.separation.registry import (
    DEFAULT_MODEL,
    Separator,
    TorchSeparator,
    available_models,
    build,
    load_checkpoint,
    load_separator,
    model_from_checkpoint,
    models_dir,
    resolve_separator,
    save_checkpoint,
    separate_at,
    threaded,
    torch_threads,
)

__all__ = [
    "DEFAULT_MODEL",
    "Separator",
    "TorchSeparator",
    "available_models",
    "build",
    "load_checkpoint",
    "load_separator",
    "model_from_checkpoint",
    "models_dir",
    "resolve_separator",
    "save_checkpoint",
    "separate_at",
    "threaded",
    "torch_threads",
]
