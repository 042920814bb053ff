"""Activation patching on a tiny random Llama: exactness, causality, fast path = one forward per
cell, random positions, model → model with a PEFT adapter, workspace sweeps (stop/resume,
files), bad input, and the CLI. Statistics are in test_patching_stats.py; the embedded model
end to end is marked e2e."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from finetune_helpers import make_adapter

from metacog import patching as P
from metacog.data import prompts
from metacog.readout.values import read_values

torch.set_num_threads(1)

ALL_POS = ("confidence", "last_prompt", "last_answer", "random:3", "token:6")


def _side(lm, q, a, label, model_label="base"):
    return P.make_side(lm, q, a, label, model_label=model_label)


@pytest.fixture(scope="module")
def pair(tiny_lm):
    s = _side(tiny_lm, "What is the capital of France?", "Paris", "a")
    t = _side(tiny_lm, "What is the capital of Japan? (3)", "Tokyo is the capital.", "b")
    return P.Pair(0, s, t, "item")


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("component,h", [("resid", 0), ("resid", 2), ("resid", 3), ("attn", 1), ("mlp", 3)])
def test_patching_a_state_with_itself_changes_nothing_exactly(tiny_lm, pair, component, h):
    """The reference path (the model's own forward with the patch hook) is bit-identical."""
    t = pair.target
    tr = P.trace(t, tree=False)
    base = read_values(tiny_lm, [t.ids])
    for p in (t.positions["confidence"], t.positions["last_prompt"], 5):
        with P.patch_hook(tiny_lm.model, component, h, p, tr.state(component, h, p)):
            r = read_values(tiny_lm, [t.ids])
        assert np.array_equal(r.probs, base.probs) and np.array_equal(r.other, base.other)


def test_self_pair_has_zero_shift_in_the_engine(tiny_lm):
    """A pair whose source is its target: every cell's shift is exactly 0 (the engine sees the
    state is the target's own); and computed anyway, the fast path agrees to rounding."""
    t = _side(tiny_lm, "What is the capital of Kenya?", "Nairobi", "k")
    pr = P.Pair(0, t, copy.copy(t), "model")
    spec = P.PatchSpec(layers=(0, 1, 2, 3), positions=("confidence", "last_prompt", "token:4"), components=("resid", "attn", "mlp"))
    df = P.patch_pair(pr, spec)
    assert (df["shift"] == 0).all() and df["answer_unchanged"].all() and df["small_denominator"].all()
    prep = P.prepare_pair(pr, spec)
    for plan in prep.plans:
        cells = P.patch_position_fast(t, prep.tgt_trace, plan.target, P.variants_for(prep, plan, spec))
        for c in cells:
            np.testing.assert_allclose(c.probs, prep.tgt_read.probs[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("component,h", [("resid", 0), ("resid", 1), ("resid", 3), ("attn", 2), ("mlp", 1)])
def test_patch_leaves_every_earlier_position_unchanged(tiny_lm, pair, component, h):
    t, s = pair.target, pair.source
    ids = torch.tensor([t.ids])
    src = P.trace(s, tree=False)
    with torch.no_grad():
        z0 = tiny_lm.model(input_ids=ids).logits[0]
        for p in (4, t.positions["last_prompt"], t.positions["confidence"]):
            vec = src.state(component, h, min(p, s.T - 1)) + 0.5
            with P.patch_hook(tiny_lm.model, component, h, p, vec, first_call_only=False):
                z = tiny_lm.model(input_ids=ids).logits[0]
            assert torch.equal(z[:p], z0[:p])
            assert not torch.equal(z[p], z0[p])  # the patch does act (the test can fail)


def test_trace_readout_equals_read_values(tiny_lm):
    """score_trie over the trace's own forward = confidence.read_values (the shared rule)."""
    for q, a in [("What is the capital of Peru?", "Lima"), ("Q?", "0.99"), ("What is the chemical symbol for gold?", "Au")]:
        t = _side(tiny_lm, q, a, "x")
        tr = P.trace(t, tree=True, window=P.answer_window(t))
        r = read_values(tiny_lm, [t.ids])
        np.testing.assert_allclose(tr.readout.probs, r.probs, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tr.readout.expected, r.expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ fast = reference
def _compare(fast: pd.DataFrame, ref: pd.DataFrame):
    assert len(fast) == len(ref) > 0
    keys = ["component", "layer", "position"]
    f = fast.sort_values(keys).reset_index(drop=True)
    r = ref.sort_values(keys).reset_index(drop=True)
    assert (f[keys + ["target_pos", "source_pos"]] == r[keys + ["target_pos", "source_pos"]]).all().all()
    np.testing.assert_allclose(np.stack(f["probs"]), np.stack(r["probs"]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(f["ev_patched"], r["ev_patched"], rtol=0, atol=1e-4)
    assert (f["answer_unchanged"] == r["answer_unchanged"]).all() and (f["answer_flips"] == r["answer_flips"]).all()
    assert (f["argmax_patched"] == r["argmax_patched"]).all()


def test_fast_path_equals_one_forward_per_cell(tiny_lm, pair):
    spec = P.PatchSpec(layers=(0, 1, 2, 3), positions=ALL_POS, components=("resid", "attn", "mlp"), seed=3)
    fast = P.patch_pair(pair, spec, "fast", max_batch=5)  # several batches
    ref = P.patch_pair(pair, spec, "reference")
    _compare(fast, ref)
    assert fast["ev_patched"].nunique() > 10  # patches do move the readout
    assert (~fast["answer_unchanged"]).any()  # and some change the greedy answer


def test_layer_started_path_equals_full_forward_path(tiny_lm, pair):
    spec = P.PatchSpec(layers=(0, 1, 2, 3), positions=("confidence", "random:2", "last_prompt"), components=("resid", "attn", "mlp"))
    prep = P.prepare_pair(pair, spec)
    assert P.supports_skip(tiny_lm)
    for plan in prep.plans:
        vs = P.variants_for(prep, plan, spec)
        a = P.patch_position_fast(pair.target, prep.tgt_trace, plan.target, vs, skip=True)
        b = P.patch_position_fast(pair.target, prep.tgt_trace, plan.target, vs, skip=False)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.probs, y.probs, rtol=1e-5, atol=1e-8)
            assert x.answer_flips == y.answer_flips


def test_eager_attention_gives_the_same_cells(tiny_lm, pair):
    """The tree masks are boolean for SDPA and additive for eager attention: same numbers."""
    import dataclasses

    eager_model = copy.deepcopy(tiny_lm.model)
    eager_model.config._attn_implementation = "eager"
    for mod in eager_model.modules():
        if hasattr(mod, "config") and hasattr(mod.config, "_attn_implementation"):
            mod.config._attn_implementation = "eager"
    elm = dataclasses.replace(tiny_lm, model=eager_model)
    spec = P.PatchSpec(layers=(1, 3), positions=("confidence", "last_prompt"), components=("resid", "mlp"))
    pe = P.Pair(0, dataclasses.replace(pair.source, lm=elm), dataclasses.replace(pair.target, lm=elm), "item")
    a = P.patch_pair(pair, spec)
    b = P.patch_pair(pe, spec)
    np.testing.assert_allclose(np.stack(a["probs"]), np.stack(b["probs"]), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------ positions
def test_random_positions_reproducible_never_slot_never_special(tiny_lm):
    tok = tiny_lm.tokenizer
    specials = P.special_ids(tok)
    qs = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
          ("Which country is Lima in?", "Peru, I think"), ("What is the atomic number of carbon?", "6")]
    sides = [_side(tiny_lm, q, a, f"i{k}") for k, (q, a) in enumerate(qs)]
    for kind in ("item", "model"):
        for s in sides:
            for t in sides:
                if kind == "item" and s is t:
                    continue
                pr = P.Pair(0, s, t if kind == "item" else s, kind)
                slot = pr.target.positions["confidence"]
                start = P.shared_prefix(s.ids, t.ids) if kind == "item" else 0
                for seed in (0, 1, 7):
                    a = P.draw_random_positions(pr, 5, seed)
                    assert a == P.draw_random_positions(pr, 5, seed)  # reproducible
                    assert len(a) == 5 == len(set(a)) and a == sorted(a)
                    assert slot not in a
                    assert all(pr.target.ids[i] not in specials for i in a)
                    assert all(i >= start for i in a)  # item → item: not in the shared prefix
                draws = {tuple(P.draw_random_positions(pr, 3, sd)) for sd in range(12)}
                assert len(draws) > 1  # the seed matters
    # special tokens exist in these sequences (so the exclusion is tested)
    assert any(i in specials for i in sides[0].ids)


SYSTEM_TEMPLATE = (  # SmolLM2-style: a default system prompt when the conversation has none
    "{% if messages[0]['role'] != 'system' %}{{'<|im_start|>system\nYou are a helpful AI assistant. Answer the trivia "
    "question with the capital of the country.<|im_end|>\n'}}{% endif %}"
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ITEMS = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo is the capital."),
         ("Which country is Lima in?", "Peru, I think"), ("What is the atomic number of carbon?", "6"),
         ("What is the chemical symbol for gold?", "Au")]


def _item_ranges(lm, q, a):
    """Independently of token_classes: the question's tokens are those of the prompt text up to
    the question's end minus those up to its start (the tokenisation of a prefix ending at a
    pre-tokenizer boundary; a space before the question belongs to its first word, "ĠWhat"),
    and the answer's are the answer segment."""
    tok = lm.tokenizer
    e = prompts.encode_inline(tok, lm.is_chat, q, a)
    text = prompts.answer_prompt_text(tok, lm.is_chat, q)
    q0 = text.rfind(q)
    add = not lm.is_chat

    def n(t):
        return len(tok(t, add_special_tokens=add)["input_ids"])

    return e, (n(text[:q0].rstrip(" ")), n(text[: q0 + len(q)])), e.spans["answer"]


@pytest.fixture(scope="module", params=["chat+system", "plain"])
def lm_formats(request, tiny_lm, tiny_tok):
    import dataclasses

    if request.param == "plain":
        return dataclasses.replace(tiny_lm, is_chat=False)
    tok = copy.deepcopy(tiny_tok)
    tok.chat_template = SYSTEM_TEMPLATE
    return dataclasses.replace(tiny_lm, tokenizer=tok)


def test_random_positions_come_from_the_items_own_tokens(lm_formats):
    """Default (random_from="item"): every drawn position is a question or answer token (checked
    against spans computed independently), never the system prompt, chat markup, the
    Question:/Answer: scaffold or the Confidence: suffix; the pool is all of those item tokens
    (minus the slot and special tokens); "template" draws only outside them; rows name the class."""
    lm = lm_formats
    sides = [_side(lm, q, a, f"i{k}") for k, (q, a) in enumerate(ITEMS)]
    n_q = n_a = 0
    for k, (q, a) in enumerate(ITEMS):
        e, (q0, q1), (a0, a1) = _item_ranges(lm, q, a)
        assert sides[k].ids == e.ids and q1 > q0 and a1 > a0
        item = set(range(q0, q1)) | set(range(a0, a1))
        pr = P.Pair(0, sides[k], sides[k], "model")
        assert set(P.random_pool(pr)) == item  # all of the item's tokens, nothing else
        tpl = set(P.random_pool(pr, "template"))
        assert tpl and not (tpl & item) and e.positions["confidence"] not in tpl
        assert set(P.random_pool(pr, "all")) == item | tpl
        if lm.is_chat:  # the system prompt is there, and none of it is drawable by default
            sys_end = e.ids.index(lm.tokenizer.convert_tokens_to_ids("<|im_end|>"))
            assert sys_end > 10 and not (item & set(range(sys_end)))
        for seed in range(20):
            for j in range(len(sides)):
                pair = P.Pair(0, sides[j], sides[k], "item" if j != k else "model")
                for i in P.draw_random_positions(pair, 4, seed):
                    assert i in item, (i, q)
                    n_q += q0 <= i < q1
                    n_a += a0 <= i < a1
        spec = P.PatchSpec(positions=("confidence", "random:4"), seed=3)
        plans = P.resolve_positions(P.Pair(0, sides[k], sides[k], "model"), spec)
        for pl in plans:
            want = "question" if q0 <= pl.target < q1 else "answer" if a0 <= pl.target < a1 else "template"
            assert pl.target_class == want and pl.source_class == want  # model → model: same token
        assert {pl.target_class for pl in plans if pl.kind == "random"} <= {"question", "answer"}
        tp = P.resolve_positions(P.Pair(0, sides[k], sides[k], "model"), P.PatchSpec(positions=("random:4",), random_from="template"))
        assert tp and all(pl.target_class == "template" and pl.target in tpl for pl in tp)
    assert n_q > 0 and n_a > 0  # both kinds of item token get drawn


def test_random_from_is_checked_and_sides_need_their_classes(tiny_lm):
    with pytest.raises(P.PatchError, match="random_from"):
        P.PatchSpec(random_from="system")
    e = prompts.encode_inline(tiny_lm.tokenizer, tiny_lm.is_chat, "What is the capital of France?", "Paris")
    bare = P.Side(tiny_lm, list(e.ids), dict(e.positions), "x")
    with pytest.raises(P.PatchError, match="token classes"):
        P.draw_random_positions(P.Pair(0, bare, bare, "model"), 3, 0)
    mc = P.make_side(tiny_lm, "Which is a capital?", "Paris", "m", choices=["Paris", "Peru"])
    toks = [tiny_lm.tokenizer.decode([t]) for t, c in zip(mc.ids, mc.classes) if c == "question"]
    assert "Peru" in "".join(toks) and "Options" not in "".join(toks)  # option texts are the item's, labels are not


def test_resolved_positions_name_the_right_tokens(tiny_lm, pair):
    spec = P.PatchSpec(positions=ALL_POS, seed=1)
    plans = {p.label: p for p in P.resolve_positions(pair, spec)}
    s, t = pair.source, pair.target
    for name in P.NAMED:
        assert plans[name].target == t.positions[name] and plans[name].source == s.positions[name]
    assert plans["token6"].target == 6
    # aligned source positions: identical scaffold tokens map to the same token
    for p in plans.values():
        if p.kind == "random" and t.ids[p.target] in s.ids:
            assert 0 <= p.source < s.T
    assert t.ids[plans["confidence"].target] == s.ids[plans["confidence"].source]


def test_alignment_maps_shared_runs_one_to_one():
    src = [1, 2, 3, 10, 11, 4, 5, 6]
    tgt = [1, 2, 3, 20, 21, 22, 23, 4, 5, 6]
    a = P.align(src, tgt)
    assert list(a[:3]) == [0, 1, 2] and list(a[-3:]) == [5, 6, 7]
    assert all(3 <= x <= 4 for x in a[3:7])


# ------------------------------------------------------------------------------ model → model (PEFT)
def test_model_to_model_with_a_peft_adapter(tiny_lm, tmp_path):
    adir = make_adapter(tiny_lm, tmp_path / "run1" / "adapter", meta={"base_weights_hash": tiny_lm.weights_hash})
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    ft = P.load_adapter_model(tiny_lm, adir, "run:run1")
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_lm.model.parameters()))  # shared base untouched
    assert not any("lora" in n for n, _ in tiny_lm.model.named_modules())
    q, a = "What is the capital of Germany?", "Berlin"
    base_side, ft_side = _side(tiny_lm, q, a, "base", "base"), _side(ft, q, a, "run:run1", "run:run1")
    spec = P.PatchSpec(layers=(0, 1, 2, 3), positions=("confidence", "last_prompt", "random:2"), components=("resid", "attn", "mlp"))
    for src, tgt in ((ft_side, base_side), (base_side, ft_side)):  # adapter → base, and the reverse
        pr = P.Pair(0, src, tgt, "model")
        fast = P.patch_pair(pr, spec)
        _compare(fast, P.patch_pair(pr, spec, "reference"))
        assert fast["direction"].iloc[0] == f"{src.model_label}→{tgt.model_label}"
        assert abs(fast["denom"].iloc[0]) > 0  # the adapter changes the readout
        # same prompt: positions are the same tokens; embeddings identical → h=0 resid is a no-op
        assert (fast["target_pos"] == fast["source_pos"]).all()
        assert (fast[(fast.component == "resid") & (fast.layer == 0)]["shift"] == 0).all()
        # the last block's output feeds only its own position's logits: elsewhere it cannot
        # move the readout; at the slot it scales every value's P by P(" "), so E[v] stays
        # (up to look-aheads crossing the "." tolerance) and only the mass on "other" moves
        last = fast[(fast.component == "resid") & (fast.layer == 3)]
        assert (last[last.position != "confidence"]["shift"].abs() < 1e-5).all()
        assert (last["shift"].abs() < 1e-3).all()
        at_slot = last[last.position == "confidence"].iloc[0]
        assert abs(at_slot["other_patched"] - P.read_side(tgt).other[0]) > 1e-6


def test_adapter_from_another_base_model_is_refused(tiny_lm, tiny_tok, tmp_path):
    from conftest import make_tiny_llama

    other = make_tiny_llama(tiny_tok, d=48, seed=1)
    bad = make_adapter(tiny_lm, tmp_path / "other" / "adapter", model=other)
    with pytest.raises(P.PatchError, match="does not fit|another base model|does not have"):
        P.load_adapter_model(tiny_lm, bad, "run:other")
    stamped = make_adapter(tiny_lm, tmp_path / "stamped" / "adapter", meta={"base_weights_hash": "0123456789abcdef"})
    with pytest.raises(P.PatchError, match="weights"):
        P.check_adapter(tiny_lm, stamped)


# ------------------------------------------------------------------------------ workspace sweeps
@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    """A workspace (answers + activations) on the tiny Llama saved to disk, so load_model and
    the CLI can load it by path."""
    from conftest import make_tiny_llama, make_tokenizer

    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study

    root = tmp_path_factory.mktemp("patch-ws")
    mdir = root / "model"
    tok = make_tokenizer()
    make_tiny_llama(tok).save_pretrained(str(mdir))
    tok.save_pretrained(str(mdir))
    ms = ModelSettings(model=str(mdir), dtype="float32", device="cpu", threads=1)
    lm = load_model(ms)
    study = StudySettings(dataset="world-facts", limit=12, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=8)
    run_study(root / "ws", ms, study, lm=lm, stages=("answers", "activations"))
    from metacog.core.workspace import Workspace

    return Workspace(root / "ws"), lm


def test_sweep_writes_table_csv_and_summary(tiny_ws):
    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=None, positions=("confidence", "random:2"), components=("resid", "mlp"))
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=3, by="ev")
    assert len(plan.pairs) == 3 and plan.pairs[0].kind == "item"
    ev = P.item_table(ws).set_index("id")["ev_inline"]
    for pr in plan.pairs:  # high into low
        assert ev[pr.source.item_id] >= ev[pr.target.item_id]
    ids = [pr.source.item_id for pr in plan.pairs] + [pr.target.item_id for pr in plan.pairs]
    assert len(set(ids)) == len(ids)
    s = P.run_grid(ws, plan)
    d = P.grid_dir(ws, plan.grid_id)
    res = pd.read_parquet(d / "results.parquet")
    csv = pd.read_csv(d / "results.csv")
    assert len(res) == len(csv) == 3 * 3 * 3 * 2 == s["n_rows"]  # pairs × layers × positions × components
    assert "probs" not in csv.columns and len(res["probs"].iloc[0]) == 101
    saved = json.loads((d / "patching.json").read_text())
    assert saved["complete"] and set(saved["gradients"]) == {"resid/confidence", "resid/random", "mlp/confidence", "mlp/random"}
    g = saved["gradients"]["resid/confidence"]["normalised"]
    assert g["n_layers"] in (0, 3) and g["unit"] == "pair" and g["n_pairs"] <= 3 and len(g["ci"]) == 2 and "rho_of_means" in g
    assert set(saved["contrasts"]) == {"resid/confidence-random", "mlp/confidence-random"}
    assert saved["tests"]["correction"] == "holm" and len(saved["layers"]["resid/confidence"]["p_holm"]) == 3
    # random positions: the item's own tokens, each row naming its class, counted in the summary
    rnd = res[res["position_kind"] == "random"]
    assert set(rnd["position_class"]) <= {"question", "answer"} and (res.loc[res["position"] == "confidence", "position_class"] == "template").all()
    assert saved["random_positions"]["from"] == "item" and sum(saved["random_positions"]["classes"].values()) == 3 * 2
    # small denominators are flagged and counted, never dropped
    small = res[res["small_denominator"]]
    assert small["normalised"].isna().all() and res.loc[~res["small_denominator"], "normalised"].notna().all()
    assert saved["n_small_denominator"] == small["pair"].nunique()
    assert len(P.load_pairs(ws, plan.grid_id)) == 3
    assert P.list_grids(ws)[0]["grid_id"] == plan.grid_id
    # the same sweep again is not recomputed
    assert P.run_grid(ws, plan)["seconds"] == s["seconds"]


def test_stopped_sweep_keeps_finished_rows_and_resumes(tiny_ws):
    from metacog.core.runtime import Stopped

    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=(1, 3), positions=("confidence", "last_answer", "random:1"), seed=5)
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=2, by="ev")
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # stops after a few units

    with pytest.raises(Stopped):
        P.run_grid(ws, plan, should_stop=stop)
    part = P.load_results(ws, plan.grid_id)
    summ = ws.read_json(f"patching/{plan.grid_id}/patching.json")
    assert 0 < len(part) < 2 * 3 * 2 and not summ["complete"] and summ["n_rows"] == len(part)
    full = P.run_grid(ws, plan)
    res = P.load_results(ws, plan.grid_id)
    assert full["complete"] and len(res) == 2 * 3 * 2
    keys = ["pair", "position", "layer", "component"]
    m = part.merge(res, on=keys, suffixes=("_a", "_b"))
    assert len(m) == len(part) and np.array_equal(m["ev_patched_a"], m["ev_patched_b"])  # kept rows are the final ones
    # and equal an uninterrupted run
    other = P.plan_grid(ws, lm, "high", "low", P.PatchSpec(layers=(1, 3), positions=("confidence", "last_answer", "random:1"), seed=5),
                         n_pairs=2, by="ev")
    pd.testing.assert_frame_equal(P.patch_pair(other.pairs[0], other.spec).sort_values(["position", "layer"]).reset_index(drop=True)[["ev_patched"]],
                                  res[res.pair == 0].sort_values(["position", "layer"]).reset_index(drop=True)[["ev_patched"]])


def test_grids_written_under_the_old_sweep_names_still_load_and_resume(tiny_ws):
    """A grid saved before "sweep" became "grid" (same patching/<id>/ directory; ``sweep_id``
    in its JSON, a ``sweep`` column in its tables): listed, loaded and resumed under the new
    names, and a finished one is not recomputed; the old function names warn and still work."""
    from metacog.core.runtime import Stopped

    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=(1, 2), positions=("confidence", "random:1"), seed=23)
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=2, by="ev")
    calls = {"n": 0}
    with pytest.raises(Stopped):
        P.run_grid(ws, plan, should_stop=lambda: (calls.__setitem__("n", calls["n"] + 1) or calls["n"] > 2))
    d = P.grid_dir(ws, plan.grid_id)

    def to_old_layout():
        for f in ("spec.json", "patching.json"):
            if (d / f).exists():
                j = json.loads((d / f).read_text())
                j["sweep_id"] = j.pop("grid_id")
                (d / f).write_text(json.dumps(j))
        for f in list((d / "parts").glob("*.parquet")) + [d / "results.parquet"]:
            if f.exists():
                pd.read_parquet(f).rename(columns={"grid": "sweep"}).to_parquet(f)

    to_old_layout()
    old = P.load_results(ws, plan.grid_id)
    assert len(old) and "grid" in old.columns and "sweep" not in old.columns and (old["grid"] == plan.grid_id).all()
    meta = next(m for m in P.list_grids(ws) if m["grid_id"] == plan.grid_id)
    assert "sweep_id" not in meta and not meta["complete"]
    full = P.run_grid(ws, plan)  # resumes from the old parts
    res = P.load_results(ws, plan.grid_id)
    assert full["complete"] and full["grid_id"] == plan.grid_id and len(res) == 2 * 2 * 2
    assert "sweep" not in res.columns and (res["grid"] == plan.grid_id).all()
    to_old_layout()  # a finished grid in the old layout: returned as saved, under the new key
    again = P.run_grid(ws, plan)
    assert again["seconds"] == full["seconds"] and again["grid_id"] == plan.grid_id and "sweep_id" not in again
    with pytest.warns(DeprecationWarning, match="use grid_dir"):
        assert P.sweep_dir(ws, plan.grid_id) == d


@pytest.fixture(scope="module")
def tiny_runs(tiny_ws):
    ws, lm = tiny_ws
    make_adapter(lm, ws.path("runs", "r1", "adapter"), meta={"base_weights_hash": lm.weights_hash})
    make_adapter(lm, ws.path("runs", "r-other", "adapter"), meta={"base_weights_hash": "another-model"})
    from conftest import make_tiny_llama

    # no metacog metadata at all: only its shapes tell that it was made for another base model
    other = make_tiny_llama(lm.tokenizer, d=48, seed=1)
    make_adapter(lm, ws.path("runs", "r-shape", "adapter"), model=other)
    return ws


def test_model_to_model_sweep_from_a_run(tiny_ws, tiny_runs):
    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=(1, 2, 3), positions=("confidence", "random:1"))
    plan = P.plan_grid(ws, lm, "r1", "base", spec, n_pairs=2, split="all")
    assert [p.kind for p in plan.pairs] == ["model", "model"]
    assert plan.pairs[0].source.ids == plan.pairs[0].target.ids
    s = P.run_grid(ws, plan)
    assert s["n_rows"] == 2 * 3 * 2 and s["kind"] == "model"
    rev = P.plan_grid(ws, lm, "base", "r1", spec, n_pairs=2, split="all")
    assert rev.grid_id != plan.grid_id and rev.pairs[0].direction == "base→run:r1"


def test_bad_input_is_refused_before_any_work(tiny_ws, tiny_runs, monkeypatch):
    ws, lm = tiny_ws
    called = []
    monkeypatch.setattr("metacog.patching.cells.trace", lambda *a, **k: called.append(1))
    monkeypatch.setattr("metacog.patching.fast.trace", lambda *a, **k: called.append(1))
    monkeypatch.setattr("metacog.patching.cells.read_values", lambda *a, **k: called.append(1))
    monkeypatch.setattr("metacog.patching.reference.read_values", lambda *a, **k: called.append(1))
    spec = P.PatchSpec(positions=("confidence", "token:999"))
    with pytest.raises(P.PatchError, match="outside the target sequence"):
        P.plan_grid(ws, lm, "high", "low", spec, n_pairs=2, by="ev")
    with pytest.raises(P.PatchError, match="outside this model"):
        P.parse_layers("0-40", lm.n_layers)
    with pytest.raises(P.PatchError, match="outside this model"):
        P.plan_grid(ws, lm, "high", "low", P.PatchSpec(layers=(2, 9)), n_pairs=2, by="ev")
    with pytest.raises(P.PatchError, match="neither an item"):
        P.plan_grid(ws, lm, "no-such-item", "low", P.PatchSpec(), n_pairs=2, by="ev")
    with pytest.raises(P.PatchError, match="not in this workspace"):
        P.plan_grid(ws, lm, "r1", "base", P.PatchSpec(), items=["nope"])
    with pytest.raises(P.PatchError, match="weights"):
        P.plan_grid(ws, lm, "r-other", "base", P.PatchSpec(), n_pairs=2)
    with pytest.raises(P.PatchError, match="does not fit|another base model|does not have"):
        P.plan_grid(ws, lm, "base", "r-shape", P.PatchSpec(), n_pairs=2)
    with pytest.raises(P.PatchError, match="outside the target sequence"):
        P.PatchSpec(positions=("confidence", "token:-1"))
    with pytest.raises(P.PatchError, match="outside this model"):
        P.plan_grid(ws, lm, "r1", "base", P.PatchSpec(layers=(-1, 1)), n_pairs=2)
    with pytest.raises(P.PatchError, match="not in this workspace's answers: nope"):
        P.plan_grid(ws, lm, "high", "low", P.PatchSpec(), n_pairs=2, by="ev", pool=["nope"])
    with pytest.raises(P.PatchError, match="no adapter 'no-such-run'.*runs in this workspace"):
        P.adapter_dir(ws, "no-such-run")
    with pytest.raises(P.PatchError, match="both be models"):
        P.plan_grid(ws, lm, "base", "low", P.PatchSpec(), n_pairs=2)
    with pytest.raises(P.PatchError, match="probes"):
        P.plan_grid(ws, lm, "high", "low", P.PatchSpec(), n_pairs=2, by="probe")
    with pytest.raises(P.PatchError):
        P.PatchSpec(positions=("confidence", "middle"))
    with pytest.raises(P.PatchError):
        P.PatchSpec(components=("resid", "ffn"))
    assert not called


def test_workspace_without_answers_is_refused(tiny_ws, tmp_path):
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    _, lm = tiny_ws
    empty = Workspace(tmp_path / "empty").init(ModelSettings(model="tiny"), StudySettings())
    with pytest.raises(P.PatchError, match="no answers yet"):
        P.plan_grid(empty, lm, "high", "low", P.PatchSpec(), n_pairs=2)


def test_interrupted_sweep_keeps_finished_rows(tiny_ws, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the middle of a sweep: the finished units are written and
    summarised as incomplete, the interrupt propagates, and a re-run completes the rest."""
    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=(1, 2), positions=("confidence", "random:2"), seed=11)
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=2, by="ev")
    real = P.patch_position
    n = {"k": 0}

    def flaky(*a, **k):
        n["k"] += 1
        if n["k"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr("metacog.patching.run.patch_position", flaky)
    with pytest.raises(KeyboardInterrupt):
        P.run_grid(ws, plan)
    kept = P.load_results(ws, plan.grid_id)
    summ = ws.read_json(f"patching/{plan.grid_id}/patching.json")
    assert len(kept) == 3 * 2 and not summ["complete"] and summ["n_units_done"] == 3
    monkeypatch.setattr("metacog.patching.run.patch_position", real)
    assert P.run_grid(ws, plan)["complete"] and len(P.load_results(ws, plan.grid_id)) == 2 * 3 * 2


def test_cli_sweep_killed_with_sigterm_keeps_finished_rows(tiny_ws, monkeypatch, capsys):
    """`kill PID` of a running `metacog patch`: the finished units stay, the summary says
    incomplete, the exit code is 130, and the same command resumes to the full table."""
    import os
    import signal

    from metacog.cli import main

    ws, lm = tiny_ws
    argv = ["patch", "--workspace", str(ws.root), "--source", "high", "--target", "low", "--by", "ev", "--pairs", "2",
            "--layers", "1,3", "--positions", "confidence,random:1", "--seed", "7", "--quiet", "--threads", "1"]
    real = P.patch_position
    n = {"k": 0}

    def killed(*a, **k):
        n["k"] += 1
        if n["k"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread: the handler stops the sweep
        return real(*a, **k)

    monkeypatch.setattr("metacog.patching.run.patch_position", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI put the old handler back
    assert "stopped" in capsys.readouterr().err
    sid = P.list_grids(ws)[0]["grid_id"]
    summ = ws.read_json(f"patching/{sid}/patching.json")
    kept = P.load_results(ws, sid)
    assert not summ["complete"] and 0 < len(kept) < 2 * 2 * 2 and summ["n_rows"] == len(kept)
    monkeypatch.setattr("metacog.patching.run.patch_position", real)
    assert main(argv) == 0
    assert len(P.load_results(ws, sid)) == 2 * 2 * 2


def test_cli_patch(tiny_ws, capsys):
    from metacog.cli import main

    ws, lm = tiny_ws
    rc = main(["patch", "--workspace", str(ws.root), "--source", "high", "--target", "low", "--by", "ev", "--pairs", "2",
               "--layers", "1-3", "--positions", "confidence,last-prompt,random:2", "--seed", "1", "--quiet", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "resid/confidence" in out and "rho" in out
    s = json.loads((P.grid_dir(ws, P.list_grids(ws)[0]["grid_id"]) / "patching.json").read_text())
    g = s["gradients"]["resid/confidence"]["normalised"]
    line = next(x for x in out.splitlines() if x.strip().startswith("resid/confidence "))
    fmt = lambda x: "  n/a" if x is None else f"{x:.2f}"  # noqa: E731
    assert f"rho {fmt(g['rho'])} [{fmt(g['ci'][0])}, {fmt(g['ci'][1])}]" in line and f"n_pairs {g['n_pairs']} (unit pair)" in line
    assert "holm" in out and "sign-flip" in out and "random positions drawn from: item" in out
    assert "smallest attainable p" in out  # 2 pairs: no test can reach 0.05, and the CLI says so
    sid = P.list_grids(ws)[0]["grid_id"]
    res = P.load_results(ws, sid)
    assert len(res) == 2 * 3 * 4 and set(res["position_kind"]) == {"confidence", "last_prompt", "random"}
    assert main(["patch", "--workspace", str(ws.root), "--list"]) == 0
    assert sid in capsys.readouterr().out
    rc = main(["patch", "--workspace", str(ws.root), "--positions", "token:500", "--quiet", "--threads", "1", "--by", "ev"])
    assert rc == 2 and "outside the target sequence" in capsys.readouterr().err
    n_grids = len(P.list_grids(ws))
    for opt, val in (("--batch", "0"), ("--pairs", "0"), ("--seed", "-1")):  # refused before the model loads or a grid is written
        assert main(["patch", "--workspace", str(ws.root), opt, val, "--quiet", "--threads", "1", "--by", "ev"]) == 2
        err = capsys.readouterr().err
        assert f"{opt} must be an integer >= " in err and "model:" not in err and len(err.strip().splitlines()) == 1
    assert len(P.list_grids(ws)) == n_grids


def test_a_rerun_study_never_resumes_into_an_old_grid_and_old_grids_are_named_stale(tiny_ws, capsys):
    """A grid's id hashes its pairs' token sequences, so after a rerun whose answers changed the
    same command is another grid (never resumed into the old parts); the old grid stays listed,
    marked stale (CLI --list, list_grids), once the study's answers key moves on."""
    import dataclasses

    from metacog.cli import main

    ws, lm = tiny_ws
    spec = P.PatchSpec(layers=(1,), positions=("confidence",), seed=3)
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=1, by="ev")
    P.run_grid(ws, plan)
    t = plan.pairs[0].target
    other = dataclasses.replace(plan, pairs=[dataclasses.replace(plan.pairs[0], target=dataclasses.replace(t, ids=list(t.ids[:-1]) + [int(t.ids[-2])]))])
    assert other.grid_id != plan.grid_id  # same items and labels, another sequence: another grid
    g = next(s for s in P.list_grids(ws) if s["grid_id"] == plan.grid_id)
    assert g["study_answers"] == ws.stage_record("answers")["key"] and not g["stale"]
    rec = ws.stage_record("answers")
    ws.mark_stage("answers", "a-rerun-with-other-answers", n=rec.get("n"))
    try:
        assert next(s for s in P.list_grids(ws) if s["grid_id"] == plan.grid_id)["stale"]
        assert main(["patch", "--workspace", str(ws.root), "--list"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(plan.grid_id))
        assert "stale: made on earlier answers" in line
    finally:
        from metacog.core.workspace import atomic_write_json

        atomic_write_json(ws.path("stages", "answers.json"), rec)
