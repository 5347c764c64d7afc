"""quadra: convert, check and run QuadraNet models on CPUs, from Python.

The engine is the Rust ``quadra-cpu`` crate (the same code as the ``quadra`` command line);
this package reads what PyTorch hands it and returns numpy arrays. It never imports torch.

>>> import quadra
>>> model = quadra.convert(net.state_dict(), "quadranet25-xxs", dtype="w8a8", min_cosine=0.999)
>>> model.report["accuracy"]["min_cosine"]          # w8a8 against f32
>>> logits = model.run(x)                             # x: float32 [N, 3, 224, 224]
>>> model.save("model.qnet")                          # for the device

Errors are ``quadra.Error`` subclasses: ``FormatError`` (weights, config, model file or
image that cannot be read or do not fit), ``ShapeError`` (an input array of the wrong
shape), ``ArgumentError`` (an argument quadra cannot use) and ``IoError`` (a file that
could not be read or written). Their messages are the command line's.
"""

import json as _json
import os as _os

from . import _quadra
from ._quadra import (
    ArgumentError,
    Error,
    FormatError,
    IoError,
    Model,
    Session,
    ShapeError,
    __version__,
    presets,
)

__all__ = [
    "convert",
    "load",
    "preprocess",
    "benchmark",
    "latency_table",
    "Model",
    "Session",
    "Error",
    "FormatError",
    "ShapeError",
    "ArgumentError",
    "IoError",
    "presets",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _size(input_size):
    """``224`` or ``(h, w)`` as ``(h, w)``."""
    if isinstance(input_size, int):
        return (input_size, input_size)
    try:
        h, w = input_size
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ArgumentError(
            f"input_size {input_size!r}: give an int (square) or (height, width)"
        ) from None


def _config(config):
    """A config as ``(kind, text, name)``: a preset name, a dict in the JSON schema, or a
    path to a JSON file."""
    if isinstance(config, dict):
        return ("json", _json.dumps(config), "config dict")
    if isinstance(config, (str, _os.PathLike)):
        path = _os.fspath(config)
        if _os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    return ("json", f.read(), path)
            except OSError as e:
                raise IoError(f"cannot read {path}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise FormatError(f"{path}: not a UTF-8 JSON config") from None
        if path.endswith(".json") or _os.sep in path:
            raise IoError(f"cannot read {path}: no such file")
        return ("preset", path, path)
    raise ArgumentError(
        f"config must be a preset name, a dict or a path to a JSON file, not {type(config).__name__}"
    )


def _tensor(name, value):
    """A state_dict value as ``(name, array, dtype name)``, without importing torch: a
    torch tensor is detached and moved to the CPU (bfloat16, which numpy lacks, is widened
    to float32 first); anything else goes through ``numpy.asarray``."""
    import numpy as np

    dtype = None
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu()
        dtype = str(value.dtype).replace("torch.", "")
        if dtype == "bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if dtype is None:
        dtype = "bfloat16" if arr.dtype.name == "bfloat16" else arr.dtype.name
    if arr.dtype.kind != "f":
        return (name, np.zeros(0, np.float32), dtype)
    return (name, arr, dtype)


def convert(
    weights,
    config,
    dtype="f32",
    *,
    min_cosine=None,
    check_input=None,
    input_size=224,
    meta=None,
    precision=None,
):
    """Convert PyTorch weights into a quadra model, checked, in memory.

    weights: a path to a safetensors file (``safetensors.torch.save_file(net.state_dict(),
        path)``), or a mapping of names to arrays: a PyTorch ``state_dict()`` works as it
        is (tensors are read through ``.numpy()``, torch is not imported), as does a dict
        of numpy arrays. Every key is checked against the architecture; a ``module.``
        prefix on every key (DistributedDataParallel) is removed.
    config: a preset name (``quadra.presets``), a dict in the JSON config schema
        (in_chans, num_classes, dims, depths or blocks, kernels, expansion), or a path to
        such a JSON file.
    dtype: how the matrices are stored: "f32", "f16", "int8" (weight-only) or "w8a8"
        (int8 weights and int8 pointwise GEMMs).
    min_cosine: with "w8a8", keep the fewest, most sensitive units (a block, or the stem,
        downsample and head layers) in f32 until the worst logits cosine against f32 on
        the check inputs reaches this (e.g. 0.999).
    check_input: float32 ``[N, C, H, W]`` inputs for the accuracy check and the
        min_cosine search; deterministic random ones at ``input_size`` if None.
    input_size: 224 or (h, w), for the random check inputs.
    meta: a dict merged into the model file's metadata (e.g. a training report).
    precision: the arithmetic the model runs at by default, recorded in its metadata:
        "f32", or "fp16" (the pointwise GEMMs in half precision on aarch64 CPUs with
        FEAT_FP16; f32 elsewhere, which ``model.describe()`` says). Pair "fp16" with
        dtype "f16".

    Returns a ``quadra.Model``; ``model.report`` is the conversion report as a dict
    (per-tensor quantisation error, units kept in f32, cosine and top-1 agreement with f32).
    """
    if isinstance(weights, (str, _os.PathLike)):
        w = _os.fspath(weights)
        source = w
    elif hasattr(weights, "items"):
        w = [_tensor(str(k), v) for k, v in weights.items()]
        source = "state_dict"
    else:
        raise ArgumentError(
            "weights must be a path to a safetensors file or a mapping of names to arrays "
            f"(a state_dict), not {type(weights).__name__}"
        )
    kind, text, cname = _config(config)
    meta_json = None
    if meta is not None and not isinstance(meta, dict):
        raise ArgumentError("meta must be a dict")
    if precision is not None:
        if precision not in ("f32", "fp16"):
            raise ArgumentError(f"unknown precision {precision!r}: use 'f32' or 'fp16'")
        meta = dict(meta or {}, precision=precision)
    if meta is not None:
        meta_json = _json.dumps(meta)
    return _quadra._convert(
        w,
        source,
        kind,
        text,
        cname,
        str(dtype),
        None if min_cosine is None else float(min_cosine),
        check_input,
        _size(input_size),
        meta_json,
    )


def load(model):
    """Load a ``.qnet`` model file (mapped, validated once) or a model file's bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _quadra._load(bytes(model))
    return _quadra._load(model)


def preprocess(image, size=224, *, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """An image as the model's input, float32 ``[1, 3, h, w]``: torchvision's evaluation
    transform ``Resize(resize) + CenterCrop(size) + ToTensor() + Normalize(mean, std)``,
    with Pillow's bilinear resize to the bit (what ``quadra infer --image`` does).

    image: a path to a PNG or JPEG file (EXIF orientation applied), the file's bytes, or
        an ``[H, W, 3]`` uint8 RGB array.
    size: the crop, 224 or (h, w). resize: the shorter side after resizing (default 8/7
        of the crop: 256 for 224).
    """
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    return _quadra._preprocess(
        image,
        _size(size),
        resize,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
    )


def _target(model_or_config):
    if isinstance(model_or_config, Model):
        return model_or_config
    return _config(model_or_config)


def benchmark(model, *, threads=1, iters=20, warmup=3, input_size=224):
    """Latency of ``model`` (a Model, or a config run with random weights) on this
    machine: whole forward passes and ``Session.run``, as the ``quadra-bench`` binary
    measures them. Returns a dict: latency_ms and session_ms (median, mean, p10, p90,
    min), images_per_s, gflops_per_s and its fraction of the FMA peak, kernels, arena
    bytes. The GIL is released while it measures."""
    bench, _ = _quadra._measure(
        _target(model), int(threads), int(iters), int(warmup), _size(input_size), False
    )
    return bench


def latency_table(model_or_config, *, input_size=224, threads=1, iters=20, warmup=3, candidates=True):
    """The per-layer latency table (ProxylessNAS keys, as ``quadra-bench --lut-yaml``
    writes): every layer of the network as it ran here, and with ``candidates`` every
    candidate block (K in 3, 5, 7; E in 2, 4) at every stage's shape. A dict of key ->
    {mean, median, p10, p90 (ms), runs, source}."""
    _, table = _quadra._measure(
        _target(model_or_config),
        int(threads),
        int(iters),
        int(warmup),
        _size(input_size),
        bool(candidates),
    )
    return table
