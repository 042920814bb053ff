"""Ragged attention (metacog.model.ragged): each row attends over its own keys only, so in
bfloat16 an item's numbers are bit-identical alone and in a batch — the attention kernel, the
families that run SDPA, the loader's choice, and the stage key that keeps precisions apart."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metacog.model.loading as loading
from families import build
from metacog.model import ragged


class _Attn(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def readout_alone_equals_batched(lm, prompts) -> None:
    """Each prompt's 0–100 probabilities and captured states (its last two positions) are
    bit-identical read alone and read in one batch with the others."""
    from metacog.readout.values import read_values

    caps = [[len(p) - 2, len(p) - 1] for p in prompts]
    together = read_values(lm, prompts, capture=caps)
    for i, (p, c) in enumerate(zip(prompts, caps)):
        one = read_values(lm, [p], capture=[c])
        np.testing.assert_array_equal(one.probs[0], together.probs[i])
        assert torch.equal(torch.as_tensor(one.states[0]), torch.as_tensor(together.states[i]))



def _padded(rows, T, dt):
    """Left-pad each [H, n, D] row to T; the boolean causal mask of the padded batch [B,1,T,T]."""
    B = len(rows)
    m = torch.zeros(B, 1, T, T, dtype=torch.bool)
    x = torch.zeros(B, rows[0].shape[0], T, rows[0].shape[-1], dtype=dt)
    for b, r in enumerate(rows):
        n = r.shape[1]
        x[b, :, T - n :] = r
        m[b, 0, T - n :, T - n :] = torch.ones(n, n, dtype=torch.bool).tril()
    return x, m


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_each_row_equals_its_computation_alone_and_padding_queries_are_zero(dt):
    g = torch.Generator().manual_seed(0)
    lens = [5, 40, 17, 40, 1]
    qs = [torch.randn(9, n, 64, generator=g).to(dt) for n in lens]
    ks = [torch.randn(3, n, 64, generator=g).to(dt) for n in lens]
    vs = [torch.randn(3, n, 64, generator=g).to(dt) for n in lens]
    T = max(lens)
    q, m = _padded(qs, T, dt)
    k, _ = _padded(ks, T, dt)
    v, _ = _padded(vs, T, dt)
    mod = _Attn()
    out, _ = ragged.ragged_attention(mod, q, k, v, m, scaling=0.125)
    for b, n in enumerate(lens):
        alone, _ = ragged.ragged_attention(mod, qs[b][None], ks[b][None], vs[b][None], None, scaling=0.125)
        assert torch.equal(out[b, T - n :], alone[0]), b
        assert torch.count_nonzero(out[b, : T - n]) == 0  # padding queries
    # an additive float mask reads the same as the boolean one
    fm = torch.zeros(m.shape, dtype=dt).masked_fill(~m, torch.finfo(dt).min)
    assert torch.equal(ragged.ragged_attention(mod, q, k, v, fm, scaling=0.125)[0], out)


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("Tq,Tk", [(45, 60), (64, 64), (1, 33)])
def test_a_mask_shared_by_the_batch_takes_the_gather_free_layout_bit_for_bit(dt, Tq, Tk, monkeypatch):
    """Patching's tree passes give every row one [1, 1, Tq, Tk] mask: the layout is computed
    once (not per batch size) and the rows run without gathers, with exactly the numbers of
    the general per-row layout (the same mask expanded to [B, 1, Tq, Tk]) and of each row alone."""
    g = torch.Generator().manual_seed(2)
    B = 5
    q = torch.randn(B, 9, Tq, 64, generator=g).to(dt)
    k = torch.randn(B, 3, Tk, 64, generator=g).to(dt)
    v = torch.randn(B, 3, Tk, 64, generator=g).to(dt)
    m = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)
    if Tq > 1:
        m[Tq // 2 :, 3] = False  # a tree-like hole: key 3 is still attended by the first queries
    shared = m.view(1, 1, Tq, Tk)
    mod = _Attn()
    taken = []
    monkeypatch.setattr(ragged, "_take", lambda x, idx, f=ragged._take: taken.append(1) or f(x, idx))
    fast, _ = ragged.ragged_attention(mod, q, k, v, shared, scaling=0.125)
    assert not taken  # the gather-free layout
    general, _ = ragged.ragged_attention(mod, q, k, v, shared.expand(B, 1, Tq, Tk).clone(), scaling=0.125)
    assert taken  # the per-row layout
    assert torch.equal(fast, general)
    for b in (0, 3) if dt == torch.bfloat16 else ():  # (float32 kernels block by row count: module docstring)
        alone, _ = ragged.ragged_attention(mod, q[b : b + 1], k[b : b + 1], v[b : b + 1], shared, scaling=0.125)
        assert torch.equal(alone[0], fast[b])
    # a shared mask with a key nobody attends falls back to the per-row layout, same numbers
    hole = shared.clone()
    hole[..., 0] = False
    taken.clear()
    a, _ = ragged.ragged_attention(mod, q, k, v, hole, scaling=0.125)
    assert taken
    assert torch.equal(a, ragged.ragged_attention(mod, q, k, v, hole.expand(B, 1, Tq, Tk).clone(), scaling=0.125)[0])


def _zero_take(x, idx):
    """The layout's gather with zero padding slots (how it was computed before)."""
    x = torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], 1, x.shape[3])], dim=2)
    return x.gather(2, idx[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_padding_slots_copied_not_zeroed_give_the_same_bits(dt, monkeypatch):
    """The gather fills padding slots with a copy of a real key/value/query instead of zeros
    (one copy of K and V per layer instead of two): masked keys get -inf and an exact 0 weight,
    so every real output is bit-identical to the zero-padded layout — decode steps of
    left-padded rows, padded prefills, and tree-shaped masks."""
    g = torch.Generator().manual_seed(3)
    lens = [5, 40, 17, 33, 2, 40]
    T = max(lens)
    cases = []
    q, m = _padded([torch.randn(9, n, 64, generator=g).to(dt) for n in lens], T, dt)  # prefill, left padding
    k, _ = _padded([torch.randn(3, n, 64, generator=g).to(dt) for n in lens], T, dt)
    v, _ = _padded([torch.randn(3, n, 64, generator=g).to(dt) for n in lens], T, dt)
    cases.append((q, k, v, m))
    cases.append((q[:, :, -1:], k, v, m[:, :, -1:]))  # a decode step: one query per row over its keys
    tree = m.clone()
    tree[:, :, T // 2 :, T // 3] = False  # holes, as the trie's tree masks have
    cases.append((q, k, v, tree))
    mod = _Attn()
    for qq, kk, vv, mm in cases:
        new, _ = ragged.ragged_attention(mod, qq, kk, vv, mm, scaling=0.125)
        with monkeypatch.context() as mp:
            mp.setattr(ragged, "_take", _zero_take)
            old, _ = ragged.ragged_attention(mod, qq, kk, vv, mm, scaling=0.125)
        assert torch.isfinite(new).all()
        assert torch.equal(new, old)


def test_rows_match_reference_attention_numerically():
    """Not only self-consistent: each row is ordinary causal attention over its keys."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 9, 12, 16, generator=g)
    k = torch.randn(1, 3, 12, 16, generator=g)
    v = torch.randn(1, 3, 12, 16, generator=g)
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True).transpose(1, 2)
    qp, m = _padded([q[0]], 15, torch.float32)
    kp, _ = _padded([k[0]], 15, torch.float32)
    vp, _ = _padded([v[0]], 15, torch.float32)
    out, _ = ragged.ragged_attention(_Attn(), qp, kp, vp, m, scaling=16 ** -0.5)
    torch.testing.assert_close(out[:, 3:], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "mistral", "gemma3", "phi3", "gpt2"])
def test_families_running_sdpa_are_bit_identical_alone_and_batched(tiny_tok, name):
    from metacog.model.generation import generate
    from metacog.model.loading import wrap

    m = build(name, tiny_tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tiny_tok, spec="tiny", name=f"tiny-{name}")
    head = "you are a helpful assistant answer the question then say how confident you are "
    prompts = [tiny_tok.encode(head + t) for t in ("the capital of france is", "two and two make four and", "a",
                                                   "the quick brown fox jumps over the lazy dog again")]
    alone = [generate(lm, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert generate(lm, prompts, max_new_tokens=5, batch_size=4) == alone
    readout_alone_equals_batched(lm, prompts)


def test_eager_only_families_are_refused(tiny_tok):
    m = build("gemma2", tiny_tok)
    with pytest.raises(ValueError, match="wraps SDPA"):
        ragged.enable(m)


def test_auto_is_ragged_bfloat16_only_on_cpus_with_bf16_units_and_sdpa_families(tiny_tok, monkeypatch):
    """``auto`` picks the fastest batch-invariant choice: bfloat16 (ragged attention) where the CPU
    has bf16 arithmetic and the family runs SDPA; float32 on other CPUs, for eager-only families
    (no ragged attention: bf16 there is batch-dependent) and without a config."""
    from families import config

    cpu = torch.device("cpu")
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert loading.resolve_dtype("auto", cpu, config("llama", tiny_tok)) == torch.bfloat16
    assert loading.resolve_dtype("auto", cpu, config("gemma2", tiny_tok)) == torch.float32  # eager only
    assert loading.resolve_dtype("auto", cpu) == torch.float32
    assert loading.resolve_dtype("float32", cpu, config("llama", tiny_tok)) == torch.float32
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    assert loading.resolve_dtype("auto", cpu, config("llama", tiny_tok)) == torch.float32
    assert loading.resolve_dtype("bfloat16", cpu, config("llama", tiny_tok)) == torch.bfloat16


def test_loader_switches_bfloat16_on_cpu_to_ragged_attention(tmp_path, tiny_tok):
    from families import save
    from metacog.core.settings import ModelSettings

    d = save("llama", tiny_tok, tmp_path / "llama")
    loading.clear_loaded()
    lm = loading.load_model(ModelSettings(model=str(d), dtype="bfloat16", threads=1))
    assert ragged.is_ragged(lm.model) and lm.describe()["attention"] == ragged.NAME
    lm32 = loading.load_model(ModelSettings(model=str(d), dtype="float32", threads=1))
    assert not ragged.is_ragged(lm32.model) and lm32.describe()["attention"] == "sdpa"
    loading.clear_loaded()


def test_answers_key_keeps_precisions_apart_and_float32_keys_unchanged(tiny_lm, tiny_tok):
    from conftest import make_tiny_llama, tiny_items
    from metacog.core.settings import StudySettings, stable_hash
    from metacog.model.loading import wrap
    from metacog.stages.answers import ANSWERS_VERSION, answers_key, items_fingerprint

    items = tiny_items(6)
    st = StudySettings()
    before = stable_hash("answers", ANSWERS_VERSION, tiny_lm.weights_hash, tiny_lm.is_chat, items_fingerprint(items),
                         st.max_new_tokens, st.confidence_max_new_tokens, st.prompt_style, st.mc_scoring, "inline-only")
    assert answers_key(tiny_lm, items, st) == before  # float32: the key studies had before
    m = make_tiny_llama(tiny_tok).to(torch.bfloat16)
    plain = wrap(m, tiny_tok, spec="tiny", name="tiny", weights_hash=tiny_lm.weights_hash)
    k_plain = answers_key(plain, items, st)
    ragged.enable(m)
    k_ragged = answers_key(plain, items, st)
    assert len({before, k_plain, k_ragged}) == 3


def test_a_workspace_keeps_the_precision_its_study_ran_in(tmp_path):
    """``auto`` resolves per machine and version; a workspace's later loads use what its study
    recorded in model.json, so a float32 study is not resumed, patched or steered in bfloat16."""
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    ws = Workspace(tmp_path / "w")
    ws.init(ModelSettings(), StudySettings())
    assert ws.settings()[0].dtype == "auto"  # nothing ran yet
    for rec in ("float32", "bfloat16"):
        ws.write_json("model.json", {"dtype": rec, "attention": "sdpa"})
        assert ws.settings()[0].dtype == rec
    ws2 = Workspace(tmp_path / "w2")
    ws2.init(ModelSettings(dtype="float32"), StudySettings())
    ws2.write_json("model.json", {"dtype": "bfloat16"})
    assert ws2.settings()[0].dtype == "float32"  # an explicit setting is what it says


@pytest.mark.e2e
def test_embedded_model_in_bfloat16_across_runs(tmp_path):
    """Ragged bfloat16 on the embedded SmolLM2-135M-Instruct, through the study's own stages:
    the 10 items of a `--limit 10 --batch-size 4` run get, in a `--limit 24 --batch-size 16`
    run, the same answer texts and verbal replies, E[v] and cached states at every position and
    layer, bit for bit. Two things broke it before they were fixed: a row's query count (set by
    the batch's longest prompt) changed its last positions' states in layers 25–30, and a decode
    step with one live row took bf16's one-row matmul kernel, which rounds differently from the
    many-row one (one long answer of ten diverged)."""
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace
    from metacog.stages.activations import load_states
    from metacog.stages.study import load_items, run_study

    def run(limit, bs):
        d = tmp_path / f"n{limit}"
        run_study(d, ModelSettings(dtype="bfloat16", threads=2), StudySettings(limit=limit, batch_size=bs),
                  stages=("answers", "activations"))
        ws = Workspace(d)
        assert ws.read_json("model.json")["attention"] == ragged.NAME
        items = load_items(ws)
        df = items[["row", "id"]].merge(ws.read_parquet("answers.parquet"), on=["row", "id"]).merge(
            ws.read_parquet("readout.parquet"), on="row").set_index("id")
        return df, {p: np.asarray(a) for p, a in load_states(ws).items()}

    (a, sa), (b, sb) = run(10, 4), run(24, 16)
    assert set(a.index) <= set(b.index)
    same = [i for i in a.index if a.loc[i, "answer_text"] == b.loc[i, "answer_text"]]
    assert len(same) == len(a), [i for i in a.index if i not in same]
    for item in same:
        ra, rb = a.loc[item], b.loc[item]
        assert ra["ev_inline"] == rb["ev_inline"], item
        assert ra["verbal_inline"] == rb["verbal_inline"] or (ra["verbal_inline"] != ra["verbal_inline"] and rb["verbal_inline"] != rb["verbal_inline"]), item
        for p in sa:
            np.testing.assert_array_equal(sa[p][int(ra["row"])], sb[p][int(rb["row"])], err_msg=f"{item} {p}")



def test_generation_never_runs_one_row_under_ragged_attention(tiny_tok):
    """bf16's one-row matmul rounds differently from the many-row one: under ragged attention a
    lone prompt runs as two rows and compaction keeps two rows, so every forward has ≥ 2 rows;
    the text is the one the batch gives."""
    from metacog.model.generation import greedy_batch
    from metacog.model.loading import wrap

    m = build("llama", tiny_tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tiny_tok, spec="tiny", name="tiny-llama")
    rows = []
    h = m.register_forward_pre_hook(lambda mod, args, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    prompts = [tiny_tok.encode(t) for t in ("the capital of france is", "two and two make", "a b c d", "hello world again")]

    def stop(text):
        return len(text) > 12
    try:
        alone = greedy_batch(lm, [prompts[0]], 6)
        assert min(rows) == 2 and len(alone) == 1
        rows.clear()
        batch = greedy_batch(lm, prompts, 10, stop=stop)
        assert min(rows) >= 2 and len(batch) == 4
    finally:
        h.remove()
    assert greedy_batch(lm, prompts[:1] + prompts[1:2], 6)[0] == alone[0]


SYSTEM_TEMPLATE = (
    "{{'<|im_start|>system\\nYou are answering trivia questions. State your confidence from 0 to 100.<|im_end|>\\n'}}"
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3", "phi3"])
def test_template_prefix_is_shared_and_split_by_the_row_alone(name):
    """Under ragged attention the chat template's system turn runs once as a shared prefix
    (saving its tokens per row) where the row alone decides the split: a chat prompt splits
    after the template prefix whatever its batch; a row that does not start with it computes its
    whole prompt. Answers, readout, captured states and reply-label probabilities are
    bit-identical alone, in a batch and in a mixed batch, and the prefix forward runs."""
    from conftest import make_tokenizer
    from metacog.data import prompts as pr
    from metacog.model.generation import generate
    from metacog.model.loading import wrap
    from metacog.readout.batching import prefix_split, template_prefix
    from metacog.readout.values import read_labels

    tok = make_tokenizer()
    tok.chat_template = SYSTEM_TEMPLATE
    m = build(name, tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tok, spec="tiny", name=f"tiny-{name}")
    pre = template_prefix(lm)
    assert len(pre) >= 12
    chat = [pr.encode_answer_prompt(tok, True, q).ids for q in
            ("What is the capital of France?", "Which country is Lima in?", "What is the atomic number of carbon?")]
    plain = tok.encode("Question: What is the chemical symbol for gold? Answer:")  # no template: no split
    assert all(p[: len(pre)] == pre for p in chat) and plain[: len(pre)] != pre
    mixed = chat + [plain]
    from metacog.model.arch import tree_mask_ok

    fits = [tree_mask_ok(m, len(p) + 5) for p in chat]  # a sliding window the keys could overrun: no split
    P, use = prefix_split(lm, mixed, 5)
    if all(fits):
        assert P == len(pre) and use == [True, True, True, False]
        assert prefix_split(lm, chat[:1], 5) == (len(pre), None)  # a batch of one splits where a batch does
    else:
        assert name == "gemma3" and not any(fits) and P == 0
    shapes = []
    fwd = m.model.forward  # recorded by a wrapper, not a hook: a hook on the model turns the split off

    def recording(*a, **kw):
        shapes.append(tuple(kw["input_ids"].shape))
        return fwd(*a, **kw)
    m.model.forward = recording
    try:
        alone = [generate(lm, [p], max_new_tokens=5, batch_size=1)[0] for p in mixed]
        assert ((2, len(pre)) in shapes) == bool(P)  # the prefix forward ran (as two rows: no bf16 forward has one)
        assert generate(lm, mixed, max_new_tokens=5, batch_size=4) == alone
        assert generate(lm, chat, max_new_tokens=5, batch_size=3) == alone[:3]
        readout_alone_equals_batched(lm, mixed)
        labels = ("Yes", "No")
        lab = read_labels(lm, mixed, labels, batch_size=4)
        for i, p in enumerate(mixed):
            np.testing.assert_array_equal(read_labels(lm, [p], labels, batch_size=1)[0], lab[i])
    finally:
        m.model.forward = fwd


def test_prefix_split_follows_the_batch_only_outside_ragged_attention(tiny_lm):
    """float32 keeps the batch's common prefix as the split (rounding-level effect); the
    split of a single row is none there (nothing to share)."""
    from metacog.readout.batching import prefix_split

    a = tiny_lm.tokenizer.encode("You are answering trivia questions. What is the capital of France?")
    b = tiny_lm.tokenizer.encode("You are answering trivia questions. Which country is Lima in?")
    P, use = prefix_split(tiny_lm, [a, b], 5)
    assert P >= 8 and use is None
    assert prefix_split(tiny_lm, [a], 5) == (0, None)


def test_patching_steering_and_labels_are_bit_identical_whatever_the_batch(tiny_tok):
    """The other stages that run the model, under ragged bfloat16 (the embedded model's run is
    ``bench/bench_invariance_stages.py``): patched cells with ``max_batch`` 32 vs 2 and pairs
    computed in either order; the steered readout, verbal reply and regenerated answer of an
    item alone vs in a batch of four; P(True)'s label probabilities (whose batches share their
    common prefix) alone vs batched."""
    from metacog import patching as P
    from metacog.data import prompts
    from metacog.model.loading import wrap
    from metacog.readout.values import read_labels
    from metacog.steering.intervene import steered_answers, steered_readout

    m = build("llama", tiny_tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tiny_tok, spec="tiny", name="tiny-llama-bf16")
    qa = [("What is the capital of France?", "Paris"), ("What is the capital of Japan? (3)", "Tokyo is the capital."),
          ("two and two make", "four"), ("the quick brown fox jumps over the lazy dog", "again and again")]
    sides = [P.make_side(lm, q, a, f"s{i}") for i, (q, a) in enumerate(qa)]
    pairs = [P.Pair(0, sides[0], sides[1], "item"), P.Pair(1, sides[2], sides[3], "item")]
    spec = P.PatchSpec(layers=tuple(range(lm.n_layers + 1)), positions=("confidence", "last_prompt", "random:2"),
                       components=("resid", "attn", "mlp"), seed=3)
    wide = [P.patch_pair(p, spec, "fast", max_batch=32) for p in pairs]
    narrow = [P.patch_pair(p, spec, "fast", max_batch=2) for p in reversed(pairs)][::-1]
    for a, b in zip(wide, narrow):
        assert a["ev_patched"].nunique() > 5  # the patches move the readout
        for col in ("ev_patched", "argmax_patched", "answer_flips", "kl", "other_patched"):
            np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)
        np.testing.assert_array_equal(np.stack(a["probs"]), np.stack(b["probs"]))

    encs = [prompts.encode_inline(tiny_tok, lm.is_chat, q, a, None, "plain") for q, a in qa]
    pids = [prompts.encode_answer_prompt(tiny_tok, lm.is_chat, q, None, "plain").ids for q, _ in qa]
    vec = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0)).numpy() * 4
    together = steered_readout(lm, encs, 1, vec, "from-answer")
    answers = steered_answers(lm, pids, 1, vec, 6)
    for i in range(len(qa)):
        alone = steered_readout(lm, encs[i : i + 1], 1, vec, "from-answer")
        for col in ("ev", "argmax", "other", "verbal_text"):
            assert alone[col].iloc[0] == together[col].iloc[i], (i, col)
        assert steered_answers(lm, pids[i : i + 1], 1, vec, 6) == answers[i : i + 1], i

    head = "you are a helpful assistant answer the question then say how confident you are "
    queries = [tiny_tok.encode(head + q + " " + a) for q, a in qa]
    batched = read_labels(lm, queries, ("True", "False"), batch_size=4)
    for i, q in enumerate(queries):
        np.testing.assert_array_equal(read_labels(lm, [q], ("True", "False"), batch_size=1)[0], batched[i])


def test_adapters_on_a_ragged_base_run_in_its_dtype_and_are_batch_invariant(tiny_tok, tmp_path):
    """An adapter loaded for evaluation or patching on a ragged bfloat16 base has bfloat16 LoRA
    weights (peft's default float32 LoRA matmuls round by the batch's row count, which changed 2
    of 8 real answers with the workspace batch size); on a float32 base they stay float32. The
    adapted model's answers and readout are bit-identical alone and in a batch."""
    from finetune_helpers import make_adapter
    from metacog.finetune.backends.peft_backend import load_adapter_model
    from metacog.model.generation import generate
    from metacog.model.loading import wrap
    from metacog.readout.values import read_values

    m = build("llama", tiny_tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tiny_tok, spec="tiny", name="tiny-llama-bf16")
    ad = make_adapter(lm, tmp_path / "ad")
    ft = load_adapter_model(lm, ad)
    lora = {p.dtype for n, p in ft.model.named_parameters() if "lora_" in n}
    assert lora == {torch.bfloat16}
    lm32 = wrap(build("llama", tiny_tok), tiny_tok, spec="tiny", name="tiny-llama")
    ft32 = load_adapter_model(lm32, make_adapter(lm32, tmp_path / "ad32"))
    assert {p.dtype for n, p in ft32.model.named_parameters() if "lora_" in n} == {torch.float32}
    ps = [tiny_tok.encode(t) for t in ("the capital of france is", "two and two make four and", "a b c",
                                       "the quick brown fox jumps over the lazy dog again and again")]
    alone = [generate(ft, [p], max_new_tokens=6, batch_size=1)[0] for p in ps]
    assert generate(ft, ps, max_new_tokens=6, batch_size=4) == alone
    together = read_values(ft, ps)
    for i, p in enumerate(ps):
        np.testing.assert_array_equal(read_values(ft, [p]).probs[0], together.probs[i])


def test_no_shared_prefix_while_hooks_index_positions(tmp_path):
    """Patching's reference path and steering put hooks that index token positions of the
    forward they see; a shared prefix would split that forward (an IndexError, or a patch at the
    wrong token). With any hook on the model there is no split, and a reference patched cell
    runs under ragged bfloat16 with a chat template that has a system turn."""
    from conftest import make_tokenizer
    from metacog import patching as P
    from metacog.model.loading import wrap
    from metacog.readout.batching import has_hooks, prefix_split, template_prefix

    tok = make_tokenizer()
    tok.chat_template = SYSTEM_TEMPLATE
    m = build("llama", tok).to(torch.bfloat16)
    ragged.enable(m)
    lm = wrap(m, tok, spec="tiny", name="tiny-llama-bf16")
    src = P.make_side(lm, "What is the capital of France?", "Paris", "src")
    tgt = P.make_side(lm, "Which country is Lima in?", "Peru", "tgt")
    assert prefix_split(lm, [tgt.ids], 5)[0] == len(template_prefix(lm)) > 0
    h = m.model.layers[0].register_forward_hook(lambda *a: None)
    try:
        assert has_hooks(m) and prefix_split(lm, [tgt.ids, src.ids], 5) == (0, None)
    finally:
        h.remove()
    assert not has_hooks(m)
    spec = P.PatchSpec(layers=(1, 2), positions=("confidence",), seed=0)
    pair = P.Pair(0, src, tgt, "item")
    ref = P.patch_pair(pair, spec, "reference")
    fast = P.patch_pair(pair, spec, "fast")
    assert len(ref) == len(fast) == 2 and ref["ev_patched"].notna().all()


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_patching_baseline_is_the_cells_own_computation(tiny_tok, dt):
    """A patch that writes the target's own state, forced through the fast path, reproduces the
    clean target readout the shifts are measured from, exactly: the baseline comes from the same
    forward layout as the cells (in bfloat16 a separately computed readout rounds apart, with one
    sign for every cell of an item: a bias a sign test would read as an effect)."""
    from metacog import patching as P
    from metacog.model.loading import wrap
    from metacog.readout.values import expected_value

    m = build("llama", tiny_tok).to(dt)
    if dt == torch.bfloat16:
        ragged.enable(m)
    lm = wrap(m, tiny_tok, spec="tiny", name="tiny-llama")
    spec = P.PatchSpec(layers=tuple(range(1, lm.n_layers + 1)), positions=("confidence", "random:2"), seed=1)
    for q, a in (("What is the capital of France?", "Paris"), ("two and two make", "four and so on")):
        s = P.make_side(lm, q, a, "t")
        prep = P.prepare_pair(P.Pair(0, s, s, "item"), spec, "fast")
        ev_t = float(prep.tgt_read.expected[0])
        for pl in prep.plans:
            cells = P.patch_position_fast(s, prep.tgt_trace, pl.target, P.variants_for(prep, pl, spec), False, 32)
            shifts = [float(expected_value(c.probs[None])[0]) - ev_t for c in cells]
            if dt == torch.bfloat16:
                assert shifts == [0.0] * len(cells), (q, pl.label, shifts)
            else:  # float32: the query count moves matmul blocking, by rounding only
                assert max(abs(x) for x in shifts) < 1e-6, (q, pl.label, shifts)


@pytest.mark.e2e
def test_embedded_patching_baseline_is_the_cells_own_computation():
    """The same on the embedded model in bfloat16, on the item where a separately computed clean
    readout (read_values) sat 0.063 points above every forced no-op cell of the fast path."""
    from metacog import patching as P
    from metacog.core.settings import ModelSettings
    from metacog.model.loading import load_model
    from metacog.readout.values import expected_value

    lm = load_model(ModelSettings(model="default", dtype="bfloat16", threads=2))
    s = P.make_side(lm, "What is the atomic number of carbon?", "The atomic number of carbon is 6.", "t")
    spec = P.PatchSpec(layers=tuple(range(1, lm.n_layers + 1)), positions=("confidence",), seed=0)
    prep = P.prepare_pair(P.Pair(0, s, s, "item"), spec, "fast")
    pl = prep.plans[0]
    cells = P.patch_position_fast(s, prep.tgt_trace, pl.target, P.variants_for(prep, pl, spec), False, 32)
    ev_t = float(prep.tgt_read.expected[0])
    assert [float(expected_value(c.probs[None])[0]) - ev_t for c in cells] == [0.0] * lm.n_layers


def test_cpu_bf16_detection_can_be_overridden(monkeypatch, tiny_tok):
    """METACOG_CPU_BF16=0 makes auto float32 on a CPU with bf16 units (and =1 the reverse)."""
    from families import config

    cpu = torch.device("cpu")
    monkeypatch.setenv("METACOG_CPU_BF16", "0")
    assert not loading.cpu_supports_bf16()
    assert loading.resolve_dtype("auto", cpu, config("llama", tiny_tok)) == torch.float32
    monkeypatch.setenv("METACOG_CPU_BF16", "1")
    assert loading.resolve_dtype("auto", cpu, config("llama", tiny_tok)) == torch.bfloat16
