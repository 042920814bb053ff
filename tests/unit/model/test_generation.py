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
