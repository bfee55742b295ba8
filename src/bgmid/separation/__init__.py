"""Music-speech separation before fingerprinting: four networks (U-Net, Wave-U-Net, MMDenseNet,
Wave-DenseNet) behind one :class:`Separator` interface, with chunked inference for any length.

>>> sep = load_separator("wave-unet")          # shipped lite weights, offline
>>> music, speech = sep.separate(mono)          # mono float32 at sep.sample_rate
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
    save_checkpoint,
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
    "save_checkpoint",
]
