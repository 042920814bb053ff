"""Batched generation with per-row stopping, on any causal LM: greedy by default, or seeded
sampling at a temperature.

Rows are sorted by length (less padding), left-padded with explicit position ids, and each
row stops on EOS or when ``stop(text)`` says so; the batch ends when every
row has stopped. A row's output is the same as it would be alone (greedy is deterministic,
and padding is masked).

Sampling (``temperature > 0``): each row has its own ``torch.Generator`` seeded with its
entry of ``seeds``; at every step the row draws one uniform number u from it and takes the
first token whose cumulative probability (softmax of logits / T, vocabulary order) exceeds u
(inverse-CDF sampling). So a row's sample depends only on its prompt, its seed and T, not on
which other rows share its batch.

Public entry: :func:`generate`.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from metacog.model.arch import input_device, kv_cache, kv_kwargs
from metacog.model.ragged import is_ragged
from metacog.readout.batching import body_and_head, left_pad, prefix_split, shared_inputs


def _eos_ids(tok, model) -> set[int]:
    ids = set()
    for src in (getattr(tok, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    from metacog.model.arch import stop_token_strings

    for t in stop_token_strings(model):
        i = tok.convert_tokens_to_ids(t) if t in getattr(tok, "get_vocab", lambda: {})() else None
        if isinstance(i, int) and i >= 0:
            ids.add(i)
    return ids


def _pick(logits: torch.Tensor, temperature: float, gens: list | None) -> torch.Tensor:
    """Next token per row: arg-max, or inverse-CDF sampling with each row's own generator."""
    if not temperature or temperature <= 0 or gens is None:
        return logits.argmax(-1)
    p = torch.softmax(logits.float() / float(temperature), dim=-1)
    cdf = p.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g) for g in gens]).to(cdf.device) * cdf[:, -1]
    nxt = torch.searchsorted(cdf, u.unsqueeze(-1)).squeeze(-1)
    return nxt.clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def greedy_batch(lm, prompts: list[list[int]], max_new_tokens: int, stop: Callable[[str], bool] | None = None,
                 temperature: float = 0.0, seeds: list[int] | None = None, repeat: int = 1,
                 share_prefix: bool = True) -> list[str]:
    """Greedy (or, with ``temperature > 0`` and ``seeds``, sampled) continuation of each
    prompt (one batch), decoded without special tokens.

    ``repeat`` > 1: ``repeat`` continuations per prompt that share one prefill (the prompt's
    KV cache and first logits are copied ``repeat`` times after the prefill forward); output
    row ``i * repeat + j`` is prompt ``i``'s ``j``-th, with ``seeds`` given per output row.
    Each copy is the row the unshared path would prefill on its own, so the continuations
    equal those of ``repeat`` separate copies of the prompt (up to float rounding).

    ``share_prefix``: a common prefix of the prompts runs once and its cache is repeated
    (:func:`metacog.readout.batching.prefix_split`: under ragged attention the chat template's
    system turn, decided row by row; the remainders are middle-padded after it).

    Rows that have finished are dropped from the KV cache (once a quarter of the live rows
    are done), so a batch costs the sum of its rows' lengths, not rows × the longest.

    Raises:
        ValueError: ``temperature > 0`` without one seed per prompt."""
    model, tok = lm.model, lm.tokenizer
    dev = input_device(model)
    past = None
    ragged = is_ragged(model)
    single = ragged and len(prompts) * int(repeat) == 1
    if single:  # bf16 matmuls with one row take another kernel than with two or more: never run one row
        prompts = list(prompts) * 2
        seeds = None if seeds is None else list(seeds) * 2
    P, use = prefix_split(lm, prompts, max_new_tokens) if share_prefix else (0, None)
    if P:  # the prompts' shared prefix (the chat template's system turn) runs once
        try:
            ids, att, pos, past = shared_inputs(body_and_head(model)[0], prompts, P, tok.pad_token_id, dev, use)
        except AttributeError:
            past = None
    if past is None:
        ids, att, pos = left_pad(prompts, tok.pad_token_id, dev)
    repeat = int(repeat)
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    B = ids.shape[0] * repeat
    eos_set = _eos_ids(tok, model)
    eos = torch.tensor(sorted(eos_set), device=dev)
    gen: list[list[int]] = [[] for _ in range(B)]
    alive = torch.arange(B, device=dev)  # original row of each live cache row
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # per live row
    gens = None
    if temperature and temperature > 0:
        if seeds is None or len(seeds) != B:
            raise ValueError("sampling needs one seed per prompt")
        gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
    cur_ids, cur_pos, cur_att = ids, pos, att
    for step in range(max_new_tokens):
        out = model(input_ids=cur_ids, attention_mask=cur_att, position_ids=cur_pos, **kv_kwargs(model, past), use_cache=True, logits_to_keep=1)
        past = kv_cache(out)
        logits = out.logits[:, -1, :]
        if step == 0 and repeat > 1:  # the shared prefill: copy each prompt's cache and logits to its rows
            past.batch_repeat_interleave(repeat)
            logits = logits.repeat_interleave(repeat, dim=0)
            cur_pos, cur_att = cur_pos.repeat_interleave(repeat, dim=0), cur_att.repeat_interleave(repeat, dim=0)
        nxt = _pick(logits, temperature, None if gens is None else [gens[int(r)] for r in alive])
        for j, (r, t) in enumerate(zip(alive.tolist(), nxt.tolist())):
            if not done[j]:
                gen[r].append(t)
        done |= torch.isin(nxt, eos)
        if stop is not None:
            for j in (~done).nonzero().flatten().tolist():
                if stop(tok.decode(gen[int(alive[j])], skip_special_tokens=True)):
                    done[j] = True
        if bool(done.all()):
            break
        cur_ids = nxt.unsqueeze(-1)
        cur_pos = cur_pos[:, -1:] + 1
        cur_att = torch.cat([cur_att, torch.ones((cur_att.shape[0], 1), dtype=cur_att.dtype, device=dev)], dim=1)
        if int(done.sum()) * 4 >= len(done) and hasattr(past, "batch_select_indices"):
            keep = (~done).nonzero().flatten()
            if ragged and len(keep) < 2:  # keep two rows (see `single`); the finished one stays finished
                keep = torch.cat([keep, done.nonzero().flatten()[: 2 - len(keep)]]).sort().values
            past.batch_select_indices(keep)
            alive, done = alive[keep], done[keep]
            cur_ids, cur_pos, cur_att = cur_ids[keep], cur_pos[keep], cur_att[keep]
    texts = []
    for row in gen[:1] if single else gen:
        cut = next((i for i, t in enumerate(row) if t in eos_set), len(row))
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts


MAX_BATCH_TOKENS = 8192  # padded tokens per batch (rows x longest row); one longer row runs alone


def batches_by_length(seqs: list[list[int]], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> Iterable[list[int]]:
    """Index batches of similar length, longest first (so memory peaks early).

    A batch holds at most ``batch_size`` rows and, since every row is padded to the batch's
    longest, at most ``max_tokens`` padded tokens (rows x longest); a row longer than that
    runs alone. So one long item does not pad dozens of short ones to its length: sorting
    alone would put the longest item with the next-longest ``batch_size - 1`` (short) ones.
    Ties in length keep the input order, so the batches are a function of the lengths."""
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    batch: list[int] = []
    for i in order:
        longest = len(seqs[batch[0]]) if batch else len(seqs[i])
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * longest > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def generate(lm, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 32, stop=None, progress=None,
             should_stop=None, temperature: float = 0.0, seeds: list[int] | None = None, repeat: int = 1) -> list[str]:
    """Greedy continuations for many prompts, in the input order (or seeded samples: one seed
    per output, ``temperature > 0``). ``prompts`` are token-id lists (no padding); the result is
    one decoded string per output (special tokens skipped, cut at EOS), at most ``max_new_tokens``
    tokens; a row ends once ``stop(text so far)`` is true (the text that triggered it is kept:
    callers parse it). ``repeat`` > 1: that many continuations per prompt from one shared prefill
    (:func:`greedy_batch`), output ``i * repeat + j``; a batch holds at most ``batch_size`` output
    rows. ``progress(k)`` is called with the number of rows just finished; ``should_stop()`` is
    checked before each batch.

    Raises:
        Stopped: ``should_stop()`` was true before a batch (finished rows are lost: callers chunk).
        ValueError: ``temperature > 0`` without one seed per output."""
    from metacog.core.runtime import check_stop

    r = max(1, int(repeat))
    out: list[str | None] = [None] * (len(prompts) * r)
    for idx in batches_by_length(prompts, max(1, batch_size // r), max(1, MAX_BATCH_TOKENS // r)):
        check_stop(should_stop)
        rows = [i * r + j for i in idx for j in range(r)]
        texts = greedy_batch(lm, [prompts[i] for i in idx], max_new_tokens, stop, temperature=temperature,
                             seeds=None if seeds is None else [seeds[k] for k in rows], repeat=r)
        for k, t in zip(rows, texts):
            out[k] = t
        if progress:
            progress(len(rows))
    return out  # type: ignore[return-value]
