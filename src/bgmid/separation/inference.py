"""Inference tuning of the spectrogram separators: the same stems, sooner.

Separation is most of ``bgmid identify``'s and ``bgmid monitor``'s time, and a trained network need not run at
inference the way it ran in training. Three things change nothing but the cost (each tested against the plain
torch path in ``tests/test_separation_inference.py``):

* :func:`fuse_batchnorm` -- eval-mode BatchNorm is an affine map per channel, so it folds into the weights and
  bias of the (transposed) convolution before it: one pass over each activation instead of two;
* :class:`OnnxMaskNet` -- the mask network exported (by :func:`export_mask_net`, from the loaded weights; no
  graph is shipped: the first run exports it into the models cache, :func:`mask_net_graph`) and run by ONNX
  Runtime, whose CPU kernels run the U-Net about 1.4x as fast as torch's (the strided transposed convolutions of
  the decoder are most of the network's time). A dependency of bgmid; where it is missing (a
  platform without its wheels) the torch path runs;
* :func:`inference_model` -- both, on a copy (the registry's module is left as trained).

Two more changes live with the model: speech as the mixture minus the music (one inverse STFT,
:meth:`bgmid.separation.spectral.SpectrogramMaskModel.forward`), and the U-Net's inference chunks on the STFT
frame grid (1.2 samples separated per output sample instead of 2.0, :func:`bgmid.separation.apply.default_plan`),
which changes the stems slightly and is measured, not assumed: ``benchmarks/separator_speed.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bgmid.errors import BgmidError

#: ``auto``: ONNX Runtime when it is installed and the model is a spectrogram mask model, else torch
BACKENDS = ("auto", "torch", "onnx")


def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into ``conv`` in place: y = s * (W x + b - mean) + beta, s = gamma / sqrt(var + eps)."""
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    w = conv.weight.detach()
    # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights are (in, out / groups, kh, kw)
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
    conv.weight = nn.Parameter(w * s.reshape(shape), requires_grad=False)
    conv.bias = nn.Parameter((b - bn.running_mean) * s + bn.bias.detach(), requires_grad=False)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every BatchNorm2d that directly follows a convolution inside an
    ``nn.Sequential`` is folded into it (and replaced by ``nn.Identity``). Same outputs within float rounding."""
    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(1, len(seq)):
            conv, bn = seq[i - 1], seq[i]
            if isinstance(bn, nn.BatchNorm2d) and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) \
                    and conv.groups == 1 and bn.track_running_stats:
                _fold(conv, bn)
                seq[i] = nn.Identity()
    return fused


def has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class _MaskNet(nn.Module):
    """``model.mask_net`` as a module of its own, so it can be exported alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.mask_net(feats)


def export_mask_net(model: nn.Module) -> bytes:
    """The ONNX graph (bytes) of ``model.mask_net`` on (B, 1, F', T') features, batch and time dynamic. Made
    from the loaded weights every time (no exported file is kept), with torch's TorchScript exporter."""
    import warnings
    from io import BytesIO

    f = model.n_fft // 2
    example = torch.zeros(1, 1, f, model.grid * 2)
    buf = BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices of the exporter, not of our graph
        torch.onnx.export(_MaskNet(model).eval(), (example,), buf, input_names=["feats"], output_names=["mask"],
                          dynamic_axes={"feats": {0: "batch", 3: "frames"}, "mask": {0: "batch", 3: "frames"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


#: bump when :func:`export_mask_net` changes (opset, names, axes): graphs cached by an older export are ignored
EXPORT_VERSION = 1


def graph_key(model: nn.Module) -> str:
    """What a cached graph of ``model``'s mask network is named by: a hash of its class, constructor arguments,
    weights, torch version and :data:`EXPORT_VERSION` (other weights, another graph)."""
    import hashlib
    import json

    h = hashlib.sha256()
    meta = {"class": type(model).__name__, "kwargs": getattr(model, "init_kwargs", None),
            "torch": torch.__version__, "export": EXPORT_VERSION}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"{type(model).__name__.lower()}-{h.hexdigest()[:20]}"


def graph_path(model: nn.Module, cache: str | os.PathLike | None = None) -> Path:
    """Where the exported graph of ``model`` is cached: in ``cache``, else ``$BGMID_ONNX_CACHE``, else ``onnx/``
    in the models cache (``$BGMID_CACHE``, else ``~/.cache/bgmid/models``: :func:`bgmid.separation.pretrained.
    models_cache`)."""
    from bgmid.separation.pretrained import models_cache

    env = os.environ.get("BGMID_ONNX_CACHE")
    folder = Path(cache or env).expanduser() if cache or env else models_cache() / "onnx"
    return folder / f"{graph_key(model)}.onnx"


def mask_net_graph(model: nn.Module, cache: str | os.PathLike | None = None, fresh: bool = False) -> bytes:
    """The ONNX graph of ``model``'s mask network: read from :func:`graph_path` when an earlier run exported
    it (an export takes about a second, several times a short query's separation), else exported and written
    there (atomically; a cache that cannot be written only costs the export next time). ``fresh``: export
    again and overwrite."""
    path = graph_path(model, cache)
    if not fresh:
        try:
            return path.read_bytes()
        except OSError:
            pass
    graph = export_mask_net(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_bytes(graph)
        os.replace(tmp, path)
    except OSError:
        pass
    return graph


class OnnxMaskNet:
    """A mask network run by ONNX Runtime: tensor in, tensor out, like ``mask_net``.

    One session per thread count, made on first use: the sessions follow the torch thread policy of the call
    (:func:`bgmid.separation.registry.torch_threads`), since ONNX Runtime fixes its thread count per session.
    A cached graph that ONNX Runtime cannot load (damaged) is exported again.
    """

    def __init__(self, model: nn.Module, cache: str | os.PathLike | None = None) -> None:
        if not has_onnxruntime():
            raise BgmidError("the onnx separator backend needs onnxruntime: pip install onnxruntime onnx.")
        self.model, self.cache = model, cache
        self.graph = mask_net_graph(model, cache)
        self._sessions: dict[int, Any] = {}

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between kernels: on cores shared with other work, spinning worker threads take the
        # time the others need (two threads: 33 ms per 4 chunks spinning, 11 ms not, at load 3.5)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self.graph, so, providers=["CPUExecutionProvider"])

    def session(self, threads: int) -> Any:
        if threads not in self._sessions:
            try:
                self._sessions[threads] = self._new_session(threads)
            except Exception:  # noqa: BLE001 - onnxruntime raises its own types for an unreadable graph
                self.graph = mask_net_graph(self.model, self.cache, fresh=True)
                self._sessions[threads] = self._new_session(threads)
        return self._sessions[threads]

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(feats.detach().cpu().numpy(), dtype=np.float32)
        (y,) = self.session(max(1, torch.get_num_threads())).run(None, {"feats": x})
        return torch.from_numpy(y)


def resolve_backend(model: nn.Module, backend: str = "auto") -> str:
    """``torch`` or ``onnx`` for ``backend``: ``auto`` is ``onnx`` for a spectrogram mask model on CPU when
    onnxruntime is installed."""
    from bgmid.separation.spectral import SpectrogramMaskModel

    if backend not in BACKENDS:
        raise BgmidError(f"unknown separator backend '{backend}'; choose one of: {', '.join(BACKENDS)}.")
    mask_model = isinstance(model, SpectrogramMaskModel)
    if backend == "onnx" and not mask_model:
        raise BgmidError(f"the onnx backend runs spectrogram mask models only, not {type(model).__name__}.")
    if backend == "auto":
        cpu = all(p.device.type == "cpu" for p in model.parameters())
        return "onnx" if mask_model and cpu and has_onnxruntime() else "torch"
    return backend


def inference_model(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A copy of ``model`` for inference only: BatchNorm folded, and on the ``onnx`` backend its mask network
    run by ONNX Runtime (:attr:`SpectrogramMaskModel.mask_backend`). ``inference_backend`` records which."""
    chosen = resolve_backend(model, backend)
    fast = fuse_batchnorm(model)
    for attr in ("registry_name", "init_kwargs"):
        if hasattr(model, attr):
            setattr(fast, attr, getattr(model, attr))
    if chosen == "onnx":
        fast.mask_backend = OnnxMaskNet(fast)
    fast.inference_backend = chosen
    return fast
