"""The verbal-confidence parser and the exact 0–100 readout."""
import math

import numpy as np
import pytest
import torch

from metacog.data import prompts
from metacog.readout.values import (
    build_trie,
    expected_value,
    parse_answer,
    parse_confidence,
    parse_inline,
    read_values,
)
from metacog.testing import read_values_naive


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Confidence: 73%", 73),
        ("confidence 5", 5),
        ("My confidence level is 88 percent.", 88),
        ("I am 90% sure.", 90),
        ("0.9999", 99.99),
        ("Confidence: 0.85", 85),
        ("The answer is 100.", 100),
        ("99.999999", 99.999999),
        ("Confidence: 250%", None),
        ("no number here", None),
        ("", None),
        ("1.0", 100),
        ("1", 1),  # an integer 1 is 1%, not a fraction
    ],
)
def test_parse_confidence(text, expected):
    got = parse_confidence(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_inline_keeps_numbers_in_answers():
    a, c = parse_inline("The atomic number of carbon is 6.")
    assert a == "The atomic number of carbon is 6." and c is None
    a, c = parse_inline("Paris. Confidence: 95%")
    assert a == "Paris" and c == 95
    a, c = parse_inline("Answer: Lima\nConfidence: 80")
    assert a == "Lima" and c == 80
    a, c = parse_inline("Tokyo\n\nI am 99% confident.")
    assert a == "Tokyo" and c == 99
    assert parse_answer("\n\n  Answer: Nairobi (confidence 70%)") == "Nairobi"


def test_expected_value():
    p = np.zeros((2, 101))
    p[0, 30], p[0, 70] = 0.25, 0.25  # renormalised: mean 50
    p[1, 100] = 0.1
    np.testing.assert_allclose(expected_value(p), [50.0, 100.0])
    assert np.isnan(expected_value(np.zeros((1, 101))))[0]


def test_trie_covers_every_value_with_its_own_tokenisation(tiny_tok):
    trie = build_trie(tiny_tok)
    assert len(trie.value_ids) == 101
    for v, ids in enumerate(trie.value_ids):
        assert tiny_tok.decode(list(ids)) == f" {v}"
        # walking the trie from the terminal node back to the root spells the value's tokens
        node, path = int(trie.terminal[v]), []
        while node >= 0:
            path.append(int(trie.token[node]))
            node = int(trie.parent[node])
        assert tuple(reversed(path)) == ids
    # digits are split: " 73" is three tokens, so values really are multi-token
    assert len(trie.value_ids[73]) == 3
    assert trie.dot_id >= 0


def _prefixes(tok):
    return [
        prompts.encode_inline(tok, True, "What is the capital of France?", "Paris").ids,
        prompts.encode_two_pass(tok, True, "What is the capital of Kenya?", "Nairobi").ids,
        prompts.encode_inline(tok, True, "Q?", "A").ids,
    ]


def test_tree_readout_equals_naive_reference(tiny_lm):
    """The batched tree-attention readout equals one full forward per value (independent code)."""
    pre = _prefixes(tiny_lm.tokenizer)
    r = read_values(tiny_lm, pre, dot_tol=0.0)  # every look-ahead scored: the exact rule
    for i, p in enumerate(pre):
        naive = read_values_naive(tiny_lm, p)
        np.testing.assert_allclose(r.probs[i], naive, rtol=1e-4, atol=1e-9)


def test_distribution_plus_other_is_one_and_nonnegative(tiny_lm):
    r = read_values(tiny_lm, _prefixes(tiny_lm.tokenizer))
    assert (r.probs >= 0).all() and (r.other >= 0).all()
    np.testing.assert_allclose(r.probs.sum(1) + r.other, 1.0, atol=1e-9)
    assert (r.probs.sum(1) > 0).all()


def test_total_probability_of_all_number_strings(tiny_lm):
    """Independent check of the whole rule: enumerate every path the trie scores by brute
    force. P(" ") · Σ over digit strings ... computed by exhaustive search over digit tokens
    up to 3 digits must equal the readout's Σ_v P(v) plus the mass of 1–3 digit numbers
    above 100 (which the readout assigns to `other`)."""
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    pre = _prefixes(tok)[0]
    trie = build_trie(tok)
    digit_ids = {d: tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    sp = trie.value_ids[0][0]  # the space token shared by every value
    digit_mask = trie.digit_mask
    dot = trie.dot_id

    @torch.no_grad()
    def dist(seq):
        return torch.softmax(model(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)

    def p_end(seq):
        p = dist(seq)
        e = 1.0 - float(p @ digit_mask) - float(p @ trie.dotdigit_mask)
        return e - float(p[dot]) * float(dist(seq + [dot]) @ digit_mask)

    total_int = 0.0  # P(a 1-3 digit integer without leading zeros, or "0", then the end)
    above = 0.0
    p_sp = float(dist(pre)[sp])
    for a in range(10):
        s1 = pre + [sp, digit_ids[a]]
        p1 = p_sp * float(dist(pre + [sp])[digit_ids[a]])
        total_int += p1 * p_end(s1)
        if a == 0:
            continue  # no leading zeros: "05" is not a value
        for b in range(10):
            s2 = s1 + [digit_ids[b]]
            p2 = p1 * float(dist(s1)[digit_ids[b]])
            total_int += p2 * p_end(s2)
            for c in range(10):
                s3 = s2 + [digit_ids[c]]
                p3 = p2 * float(dist(s2)[digit_ids[c]])
                e3 = p3 * p_end(s3)
                total_int += e3
                if 100 * a + 10 * b + c > 100:
                    above += e3
    r = read_values(tiny_lm, [pre], dot_tol=0.0)
    assert math.isclose(r.probs[0].sum(), total_int - above, rel_tol=1e-4)


def test_lone_dot_lookahead(tiny_lm):
    """Mass of "0.<digit>" must not be read as the value 0: compare with and without the
    look-ahead computed by hand."""
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    trie = build_trie(tok)
    pre = _prefixes(tok)[0]
    ids0 = list(trie.value_ids[0])
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([pre + ids0])).logits[0, -1].float(), -1)
        q = torch.softmax(model(input_ids=torch.tensor([pre + ids0 + [trie.dot_id]])).logits[0, -1].float(), -1)
    naive_dot_as_end = 1 - float(p @ trie.digit_mask)
    exact = naive_dot_as_end - float(p[trie.dot_id]) * float(q @ trie.digit_mask)
    r = read_values(tiny_lm, [pre])
    v0_path = r.probs[0, 0] / exact
    assert r.probs[0, 0] == pytest.approx(v0_path * exact)
    assert exact < naive_dot_as_end  # the look-ahead removed "0.x" mass


def test_padding_does_not_change_readout(tiny_lm):
    pre = _prefixes(tiny_lm.tokenizer)
    together = read_values(tiny_lm, pre).probs
    alone = np.stack([read_values(tiny_lm, [p]).probs[0] for p in pre])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-8)


def test_multi_digit_tokenizer():
    """A tokenizer with whole-number tokens (" 73" one token) gets a depth-1 trie whose values
    still each use their own tokenisation, and digits after them still continue the number."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, ".": 2, "%": 3, "x": 4}
    for v in range(101):
        vocab[f"Ġ{v}"] = len(vocab)
    for d in range(10):
        vocab[str(d)] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="x"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    class Tok(PreTrainedTokenizerFast):
        def __call__(self, text, add_special_tokens=True, **kw):
            return {"input_ids": [vocab["Ġ" + text.strip()]] if text.startswith(" ") else [vocab.get(text, 4)]}

    tok = Tok(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    trie = build_trie(tok)
    assert all(len(ids) == 1 for ids in trie.value_ids)
    assert trie.n_nodes == 101 * 2  # each value + its "." look-ahead
    assert trie.digit_mask[vocab["7"]] == 1 and trie.digit_mask[vocab["Ġ7"]] == 0


def test_lazy_dot_lookahead_is_bounded(tiny_lm):
    """Skipping a value's "." look-ahead changes its probability by at most P(path)·P("."),
    which is below dot_tol and summed into `unresolved`."""
    pre = _prefixes(tiny_lm.tokenizer)
    full = read_values(tiny_lm, pre, dot_tol=0.0)
    assert (full.unresolved == 0).all()
    for tol in (1e-9, 1e-4, 1e-2):
        lazy = read_values(tiny_lm, pre, dot_tol=tol, ev_tol=0.0)  # the per-value rule alone
        diff = np.abs(lazy.probs - full.probs)
        assert (diff <= tol + 1e-12).all()
        assert (diff.sum(1) <= lazy.unresolved + 1e-12).all()


def test_readout_is_the_same_under_eager_attention(tiny_tok):
    """The tree mask must mean the same to every attention implementation."""
    from conftest import make_tiny_llama
    from metacog.model.loading import wrap

    sdpa = wrap(make_tiny_llama(tiny_tok), tiny_tok)
    eager_model = make_tiny_llama(tiny_tok)
    eager_model.config._attn_implementation = "eager"
    eager = wrap(eager_model, tiny_tok)
    pre = _prefixes(tiny_tok)
    np.testing.assert_allclose(read_values(sdpa, pre, dot_tol=0).probs, read_values(eager, pre, dot_tol=0).probs, rtol=1e-4, atol=1e-9)


def test_ev_budget_skips_the_smallest_lookaheads_within_a_certified_bound(tiny_lm):
    """The default rule (docs/SCIENCE.md): the look-aheads of smallest P(path)·P(".") are skipped
    while 100·U/S_low <= ev_tol. Against the full readout (dot_tol=0): Σ|Δp| <= unresolved and
    |ΔE[v]| <= ev_bound <= ev_tol; a larger budget scores fewer look-aheads; the skipped ones
    are exactly the smallest."""
    from metacog.readout.values import EV_TOL

    pre = _prefixes(tiny_lm.tokenizer)
    full = read_values(tiny_lm, pre, dot_tol=0.0)
    assert (full.lookaheads == 101).all() and (full.ev_bound == 0).all()
    counts, moved = [], 0.0
    for ev_tol in (1e-4, EV_TOL, 0.05, 1.0, 20.0):
        # dot_tol ~0: the budget alone decides (with DOT_TOL the random model's many w < 1e-9
        # alone can exceed a small budget: then ev_bound > ev_tol, still certified)
        r = read_values(tiny_lm, pre, dot_tol=1e-300, ev_tol=ev_tol)
        diff = np.abs(r.probs - full.probs)
        assert (diff.sum(1) <= r.unresolved + 1e-12).all()
        dev = np.abs(r.expected - full.expected)
        assert (dev <= r.ev_bound + 1e-9).all() and (r.ev_bound <= ev_tol + 1e-12).all(), (ev_tol, dev, r.ev_bound)
        assert ((r.lookaheads == 101) == (r.unresolved == 0)).all()
        counts.append(r.lookaheads.sum())
        moved = max(moved, float(dev.max()))
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]  # the budget does skip look-aheads
    assert moved > 0  # and skipping moves E[v], within its bound

    r = read_values(tiny_lm, pre)  # the defaults: still certified
    assert (np.abs(r.expected - full.expected) <= r.ev_bound + 1e-9).all()
    assert (np.abs(r.probs - full.probs).sum(1) <= r.unresolved + 1e-12).all()


@pytest.mark.e2e
def test_real_model_pruned_readout_is_within_its_certified_bound(real_lm):
    """SmolLM2-135M on real world-facts prefixes (inline and two-pass, right and wrong
    answers): the default readout against the full one (dot_tol=0): every value's probability
    within the item's `unresolved` (summed), E[v] within `ev_bound` <= EV_TOL points."""
    from metacog.readout.values import EV_TOL
    from metacog.data import load_dataset

    tok = real_lm.tokenizer
    items = load_dataset("world-facts", limit=10, seed=0).head(3)
    golds = [str(list(a)[0]) for a in items["answers"]]
    pre = [prompts.encode_inline(tok, True, q, g).ids for q, g in zip(items["question"], golds)]
    pre += [prompts.encode_two_pass(tok, True, items["question"].iloc[0], golds[1]).ids]
    full = read_values(real_lm, pre, dot_tol=0.0)
    r = read_values(real_lm, pre)
    diff = np.abs(r.probs - full.probs)
    assert (diff.sum(1) <= r.unresolved + 1e-12).all()
    assert (np.abs(r.expected - full.expected) <= r.ev_bound + 1e-9).all()
    assert (r.ev_bound <= EV_TOL + 1e-12).all() and (full.lookaheads == 101).all()


def test_shared_prefix_readout_and_states_equal_the_unshared_forward(tiny_lm):
    """read_values with the batch's common prefix run once: the same 0-100 distributions and the
    same captured states as the plain left-padded forward (float32 rounding)."""
    from metacog.readout.values import shared_prefix_len, get_trie

    tok = tiny_lm.tokenizer
    common = tok.encode("Please answer the following trivia question carefully, briefly and truthfully, in English:",
                        add_special_tokens=False)
    encs = [prompts.encode_inline(tok, True, q, a) for q, a in
            [("What is the capital of France?", "Paris"), ("Kenya?", "Nairobi, a city"), ("Q?", "A")]]
    pre = [common + e.ids for e in encs]
    cap = [[len(common) + e.positions["last_prompt"], len(common) + e.positions["confidence"]] for e in encs]
    assert shared_prefix_len(pre, tiny_lm.model, get_trie(tok).n_nodes + 101, before=min(min(c) for c in cap)) >= 8
    a = read_values(tiny_lm, pre, capture=cap, dot_tol=0.0)
    b = read_values(tiny_lm, pre, capture=cap, dot_tol=0.0, share_prefix=False)
    np.testing.assert_allclose(a.probs, b.probs, rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(a.states, b.states, rtol=1e-4, atol=1e-5)
    alone = read_values(tiny_lm, [pre[1]], capture=[cap[1]], dot_tol=0.0)
    np.testing.assert_allclose(a.probs[1], alone.probs[0], rtol=1e-4, atol=1e-10)
