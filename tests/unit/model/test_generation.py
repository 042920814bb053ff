"""Batched greedy generation equals one-row-at-a-time greedy decoding."""
import torch

from metacog.data import prompts
from metacog.model.generation import generate, greedy_batch


def _reference(lm, ids, n):
    """Plain greedy loop without cache or padding (independent implementation)."""
    seq = list(ids)
    out = []
    for _ in range(n):
        with torch.no_grad():
            t = int(lm.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        if t == lm.tokenizer.eos_token_id:
            break
        out.append(t)
        seq.append(t)
    return lm.tokenizer.decode(out, skip_special_tokens=True)


def test_batched_equals_single_and_reference(tiny_lm):
    tok = tiny_lm.tokenizer
    ps = [prompts.encode_answer_prompt(tok, True, q).ids for q in
          ["What is the capital of France?", "Kenya?", "A much longer question about the capital city of Japan, please?"]]
    batched = generate(tiny_lm, ps, 7, batch_size=3)
    assert batched == [greedy_batch(tiny_lm, [p], 7)[0] for p in ps]
    assert batched == [_reference(tiny_lm, p, 7) for p in ps]


def test_stop_function_and_compaction(tiny_lm):
    tok = tiny_lm.tokenizer
    ps = [prompts.encode_answer_prompt(tok, True, f"Question number {i}?").ids for i in range(6)]
    full = generate(tiny_lm, ps, 8, batch_size=6)
    # stopping some rows early (forces cache compaction) leaves the other rows unchanged
    stopped = generate(tiny_lm, ps, 8, batch_size=6, stop=lambda t: len(t) >= 3 and hash(t) % 2 == 0)
    for f, s in zip(full, stopped):
        assert f.startswith(s)


def test_shared_prefill_samples_equal_separate_copies_of_the_prompt(tiny_lm):
    """repeat=k (self-consistency's k samples from one prefill) gives, seed for seed, the
    samples of k separate copies of each prompt, and its first forward holds one row per
    prompt, not k (so the prompt's token-forwards drop k-fold)."""
    tok = tiny_lm.tokenizer
    ps = [prompts.encode_answer_prompt(tok, True, q).ids for q in
          ["What is the capital of France?", "Kenya?", "A much longer question about the capital city of Japan, please?"]]
    k = 4
    seeds = [1000 + i for i in range(len(ps) * k)]
    copies = [p for p in ps for _ in range(k)]
    rows = []
    hook = tiny_lm.model.register_forward_pre_hook(lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        shared = generate(tiny_lm, ps, 6, batch_size=32, temperature=1.0, seeds=seeds, repeat=k)
        first_shared = rows[0]
        rows.clear()
        separate = generate(tiny_lm, copies, 6, batch_size=32, temperature=1.0, seeds=seeds)
        first_separate = rows[0]
    finally:
        hook.remove()
    assert shared == separate
    assert len(set(shared)) > len(ps)  # the seeds do draw different samples of one prompt
    assert first_shared[0] == len(ps) and first_separate[0] == len(ps) * k
    assert first_shared[1] == first_separate[1] == max(len(p) for p in ps)
    # greedy: every copy equals the prompt's one greedy continuation; batches split by output rows
    greedy = generate(tiny_lm, ps, 6, batch_size=5, repeat=2)
    assert greedy == [g for g in generate(tiny_lm, ps, 6) for _ in range(2)]


def test_shared_prompt_prefix_runs_once_and_changes_nothing(tiny_lm):
    """The chat template's common start runs once per batch (its cache repeated, the rest
    middle-padded): continuations equal the unshared path's, and the batch's first forward
    is the prefix alone (batch 1)."""
    from metacog.readout.values import shared_prefix_len

    tok = tiny_lm.tokenizer
    common = tok.encode("Please answer the following trivia question carefully, briefly and truthfully, in English:",
                        add_special_tokens=False)  # a system turn of its own (the tiny template has a short one)
    ps = [common + prompts.encode_answer_prompt(tok, True, q).ids for q in
          ["What is the capital of France?", "Kenya?", "A much longer question about the capital city of Japan, please?"]]
    P = shared_prefix_len(ps, tiny_lm.model, 7)
    assert P >= max(8, len(common))
    shapes = []
    body = tiny_lm.model.model
    fwd = body.forward  # recorded by a wrapper, not a hook: a hook on the model turns the shared prefix off

    def recording(*a, **kw):
        shapes.append(tuple(kw["input_ids"].shape))
        return fwd(*a, **kw)
    body.forward = recording
    try:
        shared = greedy_batch(tiny_lm, ps, 7)
        first = shapes[:2]
    finally:
        del body.forward
    assert first[0] == (1, P) and first[1] == (3, max(len(p) for p in ps) - P)
    assert shared == greedy_batch(tiny_lm, ps, 7, share_prefix=False) == [_reference(tiny_lm, p, 7) for p in ps]
    seeds = [5, 6, 7]
    assert greedy_batch(tiny_lm, ps, 7, temperature=1.0, seeds=seeds) == \
        greedy_batch(tiny_lm, ps, 7, temperature=1.0, seeds=seeds, share_prefix=False)
