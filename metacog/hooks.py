"""Read and write the residual stream at (layer, position) during the model's own forward.

Hidden state index ``h`` (0..n_layers) names the residual stream *entering* decoder block
``h`` for h = 0 (the embeddings, as the model itself scales them) and *leaving* block
``h-1`` for h >= 1. Unlike ``output_hidden_states`` in transformers 5 (whose last entry is
the final-norm output), every index here is the raw residual stream, so layers are
comparable and patchable. The states are read by forward hooks while the model runs its own
forward with its own causal mask — never by calling layers by hand.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from .models import decoder_layers


def _block_output(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_output(output, new):
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    return new


@contextlib.contextmanager
def capture_residual(model, index: torch.Tensor, out: list) -> Iterator[None]:
    """While active, each forward appends to ``out`` a tensor ``[B, P, n_layers+1, d]``
    of the residual stream at token indices ``index`` (``[B, P]`` long, per row).

    Only the requested positions are kept (gathered inside the hooks), so memory does
    not grow with the number of layers times the sequence length.
    """
    layers = decoder_layers(model)
    per_layer: list[torch.Tensor | None] = [None] * (len(layers) + 1)
    handles = []

    def gather(h: torch.Tensor) -> torch.Tensor:
        idx = index.to(h.device).unsqueeze(-1).expand(-1, -1, h.shape[-1])
        return torch.gather(h, 1, idx).detach()

    def pre0(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        per_layer[0] = gather(h)

    handles.append(layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
    for i, layer in enumerate(layers):

        def post(module, args, output, i=i):
            per_layer[i + 1] = gather(_block_output(output))
            if i == len(layers) - 1:
                out.append(torch.stack(per_layer, dim=2))

        handles.append(layer.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def patch_residual(model, hidden_index: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, the residual stream at hidden-state index ``hidden_index`` is replaced
    by ``fn(h)`` (``h``: ``[B, T, d]``) before the rest of the model sees it."""
    layers = decoder_layers(model)
    if not 0 <= hidden_index <= len(layers):
        raise ValueError(f"hidden-state index {hidden_index} is outside 0..{len(layers)}")
    if hidden_index == 0:

        def pre(module, args, kwargs):
            if args:
                return (fn(args[0]),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = fn(kwargs["hidden_states"])
            return args, kwargs

        handle = layers[0].register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(module, args, output):
            return _replace_output(output, fn(_block_output(output)))

        handle = layers[hidden_index - 1].register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()
