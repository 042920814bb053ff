"""Read and write the residual stream at (layer, position) during the model's own forward.

Hidden state index ``h`` (0..n_layers) names the residual stream *entering* decoder block
``h`` for h = 0 (the embeddings, as the model itself scales them) and *leaving* block
``h-1`` for h >= 1. Unlike ``output_hidden_states`` in transformers 5 (whose last entry is
the final-norm output), every index here is the raw residual stream, so layers are
comparable and patchable. The states are read by forward hooks while the model runs its own
forward with its own causal mask — never by calling layers by hand.

Public entry: :func:`capture_residual` (read) and :func:`patch_residual` (write).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from metacog.model.loading import decoder_layers


def block_output(output):
    """The hidden state of a block's (or sub-layer's) output, which may be a tuple."""
    return output[0] if isinstance(output, tuple) else output


def replace_output(output, new):
    """``output`` with its hidden state replaced by ``new`` (same tuple shape)."""
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    return new


@contextlib.contextmanager
def edit_hook(module, fn: Callable[[torch.Tensor], torch.Tensor], pre: bool = False,
              when: Callable[[], bool] | None = None) -> Iterator[None]:
    """While active, ``module``'s output hidden state (its input hidden state with ``pre``)
    becomes ``fn(h)`` on the calls where ``when()`` is true (every call by default; ``when``
    may count calls or check the thread)."""
    if pre:

        def hook(m, args, kwargs):
            if when is not None and not when():
                return None
            if args:
                return (fn(args[0]),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = fn(kwargs["hidden_states"])
            return args, kwargs

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    else:

        def hook(m, args, output):
            if when is not None and not when():
                return None
            return replace_output(output, fn(block_output(output)))

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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
            per_layer[i + 1] = gather(block_output(output))
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
    by ``fn(h)`` (``h``: ``[B, T, d]``) before the rest of the model sees it.

    Raises:
        ValueError: ``hidden_index`` outside 0..n_layers."""
    layers = decoder_layers(model)
    if not 0 <= hidden_index <= len(layers):
        raise ValueError(f"hidden-state index {hidden_index} is outside 0..{len(layers)}")
    module, pre = (layers[0], True) if hidden_index == 0 else (layers[hidden_index - 1], False)
    with edit_hook(module, fn, pre):
        yield
