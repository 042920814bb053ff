"""Hook points: where a patch is written in a decoder (the residual stream at hidden-state index
``h``, or the attention / MLP output of block ``h-1``), the hooks that write it, and a patch
itself (:class:`Variant`).

A hook acts only on forwards of the thread that installed it (:class:`ThreadOwner`), so a
patching grid and a study may share one model in one process."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from metacog.model import arch
from metacog.model.hooks import edit_hook
from metacog.model.loading import decoder_layers


def base_model(model):
    """The model under a PEFT wrapper (``get_base_model()``), else ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_blocks(model) -> torch.nn.ModuleList:
    """The decoder blocks of ``model`` (PEFT-unwrapped) in order: ``L`` blocks for hidden-state
    indices ``0..L`` (:func:`metacog.model.loading.decoder_layers`)."""
    return decoder_layers(base_model(model))


class ThreadOwner:
    """Hooks on a shared model act only on forwards of the thread that installed them."""

    def __init__(self):
        self.ident = threading.get_ident()

    def __bool__(self) -> bool:
        return threading.get_ident() == self.ident


def sublayer(block, component: str, model):
    """The module of ``block`` whose output is the ``component`` contribution (the family's
    declaration in :mod:`metacog.model.arch`: OPT's mlp is ``fc2``, Bloom's the dense projections)."""
    return arch.sublayer(block, component, arch.family(model))


def available_components(lm) -> tuple[str, ...]:
    """``resid`` always; ``attn`` / ``mlp`` where the decoder blocks expose those sub-layers."""
    blk = decoder_blocks(lm.model)[0]
    return ("resid",) + tuple(c for c in ("attn", "mlp") if sublayer(blk, c, lm.model) is not None)


@dataclass
class Variant:
    """One patch: the state ``vec`` ``[d_model]`` (the source's) written at (``component``, ``h``)
    — ``resid``: hidden-state index ``h``; ``attn``/``mlp``: the sub-layer output of block ``h-1``."""
    component: str
    h: int  # hidden-state index of the table ("layer")
    vec: torch.Tensor  # [d] the source state

    @property
    def block(self) -> int:
        """The first block whose computation differs from the unpatched target."""
        return self.h if self.component == "resid" else self.h - 1


@contextlib.contextmanager
def row_patch(module, rows: list[int], vecs: torch.Tensor, qi: int, owner, pre: bool = False, batch: int | None = None) -> Iterator[None]:
    """While active, rows ``rows`` of ``module``'s output (input with ``pre``) get ``vecs``
    at query index ``qi`` (only the first call in this thread)."""
    state = {"done": False}
    idx = torch.tensor(rows)

    def apply(h):
        shape = h.shape
        h = arch.as_btd(h.clone(), batch)  # sub-layers that see flattened tokens (OPT's fc2): [B*Q, d] -> [B, Q, d]
        h[idx, qi] = vecs.to(h.dtype)
        return h.reshape(shape)

    def first_in_owner() -> bool:
        if not owner or state["done"]:
            return False
        state["done"] = True
        return True

    with edit_hook(module, apply, pre, first_in_owner):
        yield


def hook_point(layers, component: str, h: int, model):
    """(module, pre?) where the patch of (``component``, ``h``) is written; ``layers``: the
    decoder blocks. ``resid``: the input of block 0 (``pre``; TransformerLens
    ``blocks.0.hook_resid_pre``) for ``h = 0``, else the output of block ``h-1``
    (``blocks.{h-1}.hook_resid_post``); ``attn``/``mlp``: block ``h-1``'s sub-layer output
    (``hook_attn_out``/``hook_mlp_out``; the module declared by :mod:`metacog.model.arch`)."""
    if component == "resid":
        return (layers[0], True) if h == 0 else (layers[h - 1], False)
    return sublayer(layers[h - 1], component, model), False


@contextlib.contextmanager
def patch_hook(model, component: str, h: int, pos: int, vec: torch.Tensor, first_call_only: bool = True,
               batch: int = 1) -> Iterator[None]:
    """While active, the (component, h) state at token ``pos`` of every row becomes ``vec``
    (only in the first forward when ``first_call_only``: the prefix pass of read_values).
    ``batch``: rows of the patched forward, for sub-layers whose output is flattened over tokens."""
    layers = decoder_blocks(model)
    mod, pre = hook_point(layers, component, h, model)
    owner = ThreadOwner()
    state = {"n": 0}

    def apply(x):
        shape = x.shape
        x = arch.as_btd(x.clone(), batch)  # flattened sub-layer outputs (OPT's fc2)
        x[:, pos] = vec.to(x.dtype)
        return x.reshape(shape)

    def active() -> bool:
        if not owner or (first_call_only and state["n"]):
            return False
        state["n"] += 1
        return True

    with edit_hook(mod, apply, pre, active):
        yield
