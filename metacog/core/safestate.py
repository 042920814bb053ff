"""Training state (optimizer, scheduler, RNG) stored without pickle: safetensors + JSON.

A checkpoint's ``state.pt`` used to be a ``torch.save`` pickle, and resuming unpickled it —
so a planted file could run code on ``metacog finetune --resume``. Nothing metacog reads is
ever unpickled: :func:`save_state` splits a nested Python structure into its tensors
(``state.safetensors``, loaded by safetensors, which can only produce tensors) and a JSON
skeleton (``state.json``) that says where each tensor goes. :func:`load_state` rebuilds it and
refuses anything else, including a legacy ``state.pt``.

Supported values: dict (any JSON-able keys: str, int, float, bool, None), list, tuple, str,
int, float (NaN and ±inf kept), bool, None, ``torch.Tensor`` and ``numpy.ndarray``. That covers
``torch.optim`` and ``lr_scheduler`` state dicts and :mod:`random` / numpy / torch RNG states.

Public entry: :func:`save_state` / :func:`load_state` (raises :class:`UnsafeStateError`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

TENSORS = "state.safetensors"
SKELETON = "state.json"
LEGACY = "state.pt"
FORMAT = "metacog.safestate/1"


class UnsafeStateError(ValueError):
    """A state file that is not in the safe format (a legacy pickle, or a malformed skeleton)."""


def _encode(obj: Any, tensors: dict, path: str):
    import torch

    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": name}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise TypeError(f"{path}: dict key of type {type(k).__name__} cannot be stored safely")
            items.append([k, _encode(v, tensors, f"{path}.{k}")])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"{path}: a {type(obj).__name__} cannot be stored safely (tensors, arrays, numbers, strings, "
                    "lists, tuples and dicts only)")


def _decode(node: Any, tensors: dict, where: str):
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if isinstance(node, dict):
        if len(node) != 1:
            raise UnsafeStateError(f"{where}: malformed state skeleton (object with keys {sorted(node)[:4]})")
        (tag, val), = node.items()
        if tag in ("__tensor__", "__ndarray__"):
            if val not in tensors:
                raise UnsafeStateError(f"{where}: names tensor {val!r}, which the tensor file does not hold")
            return tensors[val] if tag == "__tensor__" else tensors[val].numpy()
        if tag == "__dict__":
            return {k: _decode(v, tensors, where) for k, v in val}
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, where) for v in val)
        if tag == "__float__":
            if val not in ("nan", "inf", "-inf"):
                raise UnsafeStateError(f"{where}: bad float {val!r}")
            return float(val)
        raise UnsafeStateError(f"{where}: unknown tag {tag!r} in the state skeleton")
    if node is None or isinstance(node, (str, int, float, bool)):
        return node
    raise UnsafeStateError(f"{where}: unexpected value in the state skeleton")


def save_state(directory: str | Path, obj: Any) -> None:
    """Write ``obj`` as ``directory/state.safetensors`` + ``directory/state.json`` (through the
    workspace store's guarded atomic writes). Raises ``TypeError`` for values that cannot be
    stored without pickle."""
    from safetensors.torch import save

    from metacog.core.workspace import atomic_write_bytes, atomic_write_json

    tensors: dict = {}
    skeleton = _encode(obj, tensors, "state")
    d = Path(directory)
    atomic_write_bytes(d / TENSORS, save(tensors) if tensors else save({}))
    atomic_write_json(d / SKELETON, {"format": FORMAT, "state": skeleton})


def load_state(directory: str | Path) -> Any:
    """Read what :func:`save_state` wrote. Never unpickles: a directory holding only a legacy
    pickled ``state.pt`` (or a skeleton of another format) raises :class:`UnsafeStateError`
    with a message saying what to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    sk = d / SKELETON
    if not sk.is_file():
        if (d / LEGACY).exists():
            raise UnsafeStateError(
                f"{d / LEGACY} is a pickled training state (metacog before 0.2, or a planted file); metacog never "
                "unpickles files, since a pickle can run code. Delete the run's checkpoints/ to restart it, or train a new run.")
        raise UnsafeStateError(f"{d} has no {SKELETON}: not a metacog checkpoint")
    try:
        meta = json.loads(sk.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise UnsafeStateError(f"{sk} is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UnsafeStateError(f"{sk} is not a {FORMAT} state file")
    try:
        tensors = load_file(str(d / TENSORS))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsafeStateError(f"{d / TENSORS} cannot be read as safetensors ({str(e)[:120]})") from None
    return _decode(meta.get("state"), tensors, str(sk))
