"""Fine-tuning: settings and update counting, train-only out-of-fold targets, exact target
tokens, resume = uninterrupted, adapter round trip, bad input refused before any work.

Everything runs on a tiny random Llama saved to disk and a workspace made by the real
stages (see finetune_helpers.py); one thread.
"""
from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from finetune_helpers import build_workspace, load_tiny, save_tiny_model, write_fake_probes

from metacog.finetune import FinetuneSettings, SettingsError, TargetError, build_targets, create_run, execute, make_plan
from metacog.finetune.backends.common import begin_dir, commit_dir, latest_checkpoint, update_batches
from metacog.finetune.runs import get_run, list_runs
from metacog.finetune.settings import lr_factor, updates_per_epoch
from metacog.finetune.targets import encode_example, read_targets, to_target, turn_end_ids

FAST = dict(batch_size=4, grad_accum=2, lr=5e-3, checkpoint_every=2, val_fraction=0.1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="module")
def lm(tiny_dir):
    torch.set_num_threads(1)
    return load_tiny(tiny_dir)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, lm):
    return build_workspace(tmp_path_factory.mktemp("ws") / "tiny", lm, n=60)


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run.adapter_dir / "adapter_model.safetensors"))


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(rank=0), "rank must be a positive integer"),
        (dict(lr=0.0), "learning rate must be > 0"),
        (dict(lr=-1e-4), "learning rate must be > 0"),
        (dict(lr=float("nan")), "learning rate must be > 0"),
        (dict(lr=3.0), "absurd"),
        (dict(epochs=None, max_updates=None), "how long to train"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(dropout=1.0), "dropout"),
        (dict(batch_size=0), "batch size"),
        (dict(grad_accum=0), "accumulation"),
        (dict(targets="oracle"), "targets must be one of"),
        (dict(targets="file"), "needs a target file"),
        (dict(format="three-pass"), "format must be"),
        (dict(early_stop_patience=2, val_fraction=0.0), "needs validation items"),
        (dict(constant_value=101, targets="constant"), "0..100"),
        (dict(probe_position="nowhere"), "probe position"),
        (dict(target_modules=()), "target_modules"),
    ],
)
def test_absurd_settings_are_refused(kw, msg):
    with pytest.raises(SettingsError, match=msg):
        FinetuneSettings(**kw)


def test_update_counting():
    assert updates_per_epoch(10, 4, 2) == (3, 2)  # 3 batches -> updates of 2 and 1 batch
    assert updates_per_epoch(32, 4, 4) == (8, 2)
    assert updates_per_epoch(33, 4, 4) == (9, 3)
    s = FinetuneSettings(batch_size=4, grad_accum=2, epochs=3)
    p = make_plan(s, 10)
    assert (p.batches_per_epoch, p.updates_per_epoch, p.updates_planned, p.epochs_planned) == (3, 2, 6, 3.0)
    assert p.group_sizes == (2, 1)
    assert p.epoch_of(1) == pytest.approx(2 / 3) and p.epoch_of(2) == 1.0 and p.epoch_of(6) == 3.0
    # a cap below epochs x updates/epoch: the plan says so in updates AND epochs
    p = make_plan(s.replace(max_updates=3), 10)
    assert p.updates_planned == 3 and p.epochs_planned == 1.5
    # max_updates alone must fit one pass over the data (SCIENCE.md bug 4)
    assert make_plan(s.replace(epochs=None, max_updates=2), 10).updates_planned == 2
    with pytest.raises(SettingsError, match="more than the data allows"):
        make_plan(s.replace(epochs=None, max_updates=3), 10)
    # 300 items, batch 4 x accumulation 4, 3 epochs = 57 updates (75 batches/epoch -> 19 updates)
    assert make_plan(FinetuneSettings(epochs=3), 300).updates_planned == 57


def test_data_order_covers_each_example_once_per_epoch():
    s = FinetuneSettings(batch_size=4, grad_accum=2, epochs=2, seed=7)
    p = make_plan(s, 11)
    for e in range(2):
        seen = [i for k in range(e * p.updates_per_epoch, (e + 1) * p.updates_per_epoch) for b in update_batches(p, 7, k) for i in b]
        assert sorted(seen) == list(range(11))
    assert update_batches(p, 7, 0) == update_batches(p, 7, 0)
    assert update_batches(p, 7, 0) != update_batches(p, 8, 0)


def test_lr_schedules():
    assert lr_factor("constant", 5, 10, 0) == 1.0
    assert lr_factor("cosine", 0, 10, 0) == 1.0
    assert lr_factor("cosine", 5, 10, 0) == pytest.approx(0.5)
    assert lr_factor("linear", 5, 10, 0) == pytest.approx(0.5)
    assert lr_factor("cosine", 0, 10, 4) == pytest.approx(0.25)  # warm-up


# ------------------------------------------------------------------------------ targets
def test_probe_targets_are_out_of_fold_train_only(ws):
    from metacog.stages.study import load_items, probe_positions

    items = load_items(ws)
    oof = np.load(ws.path("probes", "oof.npy"))
    best = ws.read_json("probes/best.json")
    df, info = build_targets(ws, FinetuneSettings())
    train_ids = set(items.loc[items["split"] == "train", "id"])
    assert set(df["id"]) == train_ids  # every training item, and only those
    assert (df["split"] == "train").all()
    pi = probe_positions(ws, oof).index(best["position"])
    want = to_target(oof[df["row"].to_numpy(), best["layer"], pi])
    assert np.array_equal(df["target"].to_numpy(), want)  # the stored cross-fitted p, not a refit
    assert info["probe"]["layer"] == best["layer"] and info["probe"]["is_best"]
    assert df["role"].value_counts()["val"] == round(0.1 * len(df))
    assert df["assistant_text"].iloc[0].endswith(f"\nConfidence: {df['target'].iloc[0]}%")


def test_targets_never_use_eval_rows_even_when_oof_has_them(tmp_path, ws):
    import shutil

    from metacog.stages.study import load_items
    from metacog.core.workspace import Workspace

    w2 = Workspace(tmp_path / "copy")
    shutil.copytree(ws.root, w2.root, ignore=shutil.ignore_patterns("runs", ".lock-*"))
    items = load_items(w2)
    ev = items["split"].to_numpy() != "train"

    def mark(oof):  # eval/calibration rows get a value no train row has
        oof[ev] = 0.424242
        oof[~ev] = np.clip(oof[~ev], 0.0, 0.3)
        return oof

    write_fake_probes(w2, mark)
    df, _ = build_targets(w2, FinetuneSettings())
    assert not (df["target"] == 42).any()
    assert df["target"].max() <= 30


def test_control_targets(ws):
    base, _ = build_targets(ws, FinetuneSettings())
    sh, _ = build_targets(ws, FinetuneSettings(targets="shuffled"))
    assert list(sh["id"]) == list(base["id"])
    assert sorted(sh["target"]) == sorted(base["target"])  # same distribution
    assert not np.array_equal(sh["target"].to_numpy(), base["target"].to_numpy())  # permuted
    bi, info = build_targets(ws, FinetuneSettings(targets="binary"))
    assert set(bi["target"]) <= {0, 100}
    assert (bi["target"] == 100).sum() == (bi["target"] == 0).sum() == info["balanced"]["per_class"]
    assert (bi["target"].eq(100) == bi["correct"]).all()
    co, info = build_targets(ws, FinetuneSettings(targets="constant"))
    assert co["target"].nunique() == 1 and co["target"].iloc[0] == info["constant"]
    c7, _ = build_targets(ws, FinetuneSettings(targets="constant", constant_value=7))
    assert (c7["target"] == 7).all()


def test_target_file_checks(ws, tmp_path):
    from metacog.stages.study import load_items

    items = load_items(ws)
    tr = items[items["split"] == "train"]["id"].tolist()
    ev = items[items["split"] == "eval"]["id"].tolist()
    good = tmp_path / "t.jsonl"
    good.write_text("".join(json.dumps({"id": i, "target": 10 + k}) + "\n" for k, i in enumerate(tr[:12])))
    df, _ = build_targets(ws, FinetuneSettings(targets="file", targets_file=str(good), val_fraction=0.0))
    assert sorted(df["target"]) == list(range(10, 22))
    leak = tmp_path / "leak.csv"
    leak.write_text("id,target\n" + "".join(f"{i},50\n" for i in tr[:5] + ev[:1]))
    with pytest.raises(TargetError, match="outside the training split"):
        build_targets(ws, FinetuneSettings(targets="file", targets_file=str(leak)))
    out = tmp_path / "out.csv"
    out.write_text(f"id,target\n{tr[0]},50\n{tr[1]},101\n{tr[2]},-3\n")
    with pytest.raises(TargetError, match="not integers in 0..100"):
        build_targets(ws, FinetuneSettings(targets="file", targets_file=str(out)))
    frac = tmp_path / "frac.csv"
    frac.write_text(f"id,target\n{tr[0]},0.73\n")
    with pytest.raises(TargetError, match="not integers"):
        build_targets(ws, FinetuneSettings(targets="file", targets_file=str(frac)))
    unk = tmp_path / "unk.jsonl"
    unk.write_text(json.dumps({"id": "nope", "target": 3}) + "\n")
    with pytest.raises(TargetError, match="not items of this workspace"):
        build_targets(ws, FinetuneSettings(targets="file", targets_file=str(unk)))


def test_an_eval_item_in_a_run_target_file_fails(ws):
    """If anything ever wrote an eval item into a run's targets.jsonl, training refuses it."""
    run = create_run(ws, FinetuneSettings(max_updates=1, epochs=None, **FAST))
    p = run.file("targets.jsonl")
    recs = [json.loads(x) for x in p.read_text().splitlines()]
    recs[0]["split"] = "eval"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(TargetError, match="not in the training split"):
        read_targets(p)
    with pytest.raises(TargetError):
        execute(ws, run.id, lm=load_tiny_cached(ws))
    assert get_run(ws, run.id).status()["status"] == "failed"


def load_tiny_cached(ws):
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings

    m, _ = ws.settings()
    return load_model(ModelSettings(model=m.model, dtype="float32", device="cpu", threads=1))


def test_target_tokens_are_the_readout_tokens(lm):
    from metacog.data import prompts
    from metacog.readout.values import get_trie

    tok = lm.tokenizer
    trie = get_trie(tok)
    rec = dict(id="x", question="What is the capital of Peru?", answer="Lima", target=73, choices=None, kind="short")
    ex = encode_example(tok, True, rec, "inline", "assistant")
    enc = prompts.encode_inline(tok, True, rec["question"], "Lima")
    n = len(enc.ids)
    assert ex.input_ids[:n] == enc.ids  # exactly the prompt + answer + "\nConfidence:" the readout uses
    v = list(trie.value_ids[73])
    assert ex.input_ids[n : n + len(v)] == v  # exactly the tokens whose probability the readout measures
    pct = tok("%", add_special_tokens=False)["input_ids"]
    assert ex.input_ids[n + len(v) : n + len(v) + len(pct)] == pct
    assert ex.input_ids[n + len(v) + len(pct):] == turn_end_ids(tok, True)
    # loss on the assistant turn: from the answer on; the prompt is masked
    a0 = enc.spans["answer"][0]
    assert all(x == -100 for x in ex.labels[:a0]) and ex.labels[a0:] == ex.input_ids[a0:]
    # loss on the confidence tokens only: value + "%"
    ec = encode_example(tok, True, rec, "inline", "confidence")
    assert [t for t in ec.labels if t != -100] == v + pct
    # two-pass: the confidence prefix starts the assistant turn
    e2 = encode_example(tok, True, rec, "two-pass", "assistant")
    enc2 = prompts.encode_two_pass(tok, True, rec["question"], "Lima")
    assert e2.input_ids[: len(enc2.ids)] == enc2.ids
    assert e2.input_ids[len(enc2.ids) : len(enc2.ids) + len(v)] == v
    assert tok.decode(e2.input_ids[enc2.spans["conf"][0]:]).startswith("Confidence: 73%")


# ------------------------------------------------------------------------------ training
def test_training_counts_updates_and_epochs(ws, lm):
    s = FinetuneSettings(epochs=2, **FAST)
    run = create_run(ws, s)
    st = execute(ws, run.id, lm=lm)
    plan = run.settings()["plan"]
    assert st["status"] == "done"
    assert st["updates_run"] == plan["updates_planned"] == 2 * plan["updates_per_epoch"]
    assert st["epochs_run"] == 2.0
    log = run.read_log()
    tr = log[log["kind"] == "train"]
    assert tr["update"].tolist() == list(range(1, plan["updates_planned"] + 1))
    assert np.isfinite(tr["loss"]).all()
    assert (log["kind"] == "val").sum() == 3  # before training and after each epoch
    assert run.has_adapter()
    assert not run.file("checkpoints").exists()  # removed once the run is done
    cfg = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    meta = json.loads((run.adapter_dir / "metacog.json").read_text())
    assert meta["base_weights_hash"] == lm.weights_hash and meta["updates_run"] == plan["updates_planned"]
    reg = list_runs(ws).set_index("run")
    assert reg.loc[run.id, "status"] == "done" and reg.loc[run.id, "updates_run"] == plan["updates_planned"]


def test_early_stop_records_what_ran(ws, lm):
    s = FinetuneSettings(epochs=6, eval_every=1, early_stop_patience=1, **{**FAST, "lr": 0.5, "val_fraction": 0.2})
    run = create_run(ws, s)
    st = execute(ws, run.id, lm=lm)
    plan = run.settings()["plan"]
    res = st["result"]
    assert st["status"] == "done"
    assert res["stopped"] == "early", res  # lr 0.5 makes validation loss rise quickly
    assert st["updates_run"] < plan["updates_planned"]
    meta = json.loads((run.adapter_dir / "metacog.json").read_text())
    assert meta["selected"] == "best validation loss" and meta["best_update"] == res["best_update"]
    assert st["epochs_run"] == pytest.approx(st["updates_run"] / plan["updates_per_epoch"], abs=0.5)


def _crash_at(k):
    def progress(done, total, msg):
        if done == k:
            raise RuntimeError(f"simulated kill after update {k}")
    return progress


def _crash_after_checkpoint(k):
    def on_checkpoint(update):
        if update == k:
            raise RuntimeError(f"simulated kill after checkpoint {k}")
    return {"on_checkpoint": on_checkpoint}


@pytest.mark.parametrize("where, k, resumes_at", [("update", 3, 2), ("update", 4, 2), ("checkpoint", 4, 4)])
def test_resume_gives_the_same_adapter(ws, lm, where, k, resumes_at):
    """Killed between checkpoints (after update 3 or 4, checkpoints every 2) or just after a
    checkpoint: the resumed run ends with exactly the adapter of an uninterrupted run with
    the same seed, and its log has each update once."""
    s = FinetuneSettings(epochs=2, dropout=0.1, **{**FAST, "checkpoint_every": 2})
    a = create_run(ws, s, name=f"full-{where}{k}")
    execute(ws, a.id, lm=lm)
    b = create_run(ws, s, name=f"killed-{where}{k}")
    with pytest.raises(RuntimeError, match="simulated kill"):
        if where == "update":
            execute(ws, b.id, lm=lm, progress=_crash_at(k))
        else:
            execute(ws, b.id, lm=lm, hooks_extra=_crash_after_checkpoint(k))
    assert get_run(ws, b.id).status()["status"] == "failed"
    assert not b.has_adapter()
    assert latest_checkpoint(b.path)[0] == resumes_at
    st = execute(ws, b.id, lm=lm)
    assert st["status"] == "done" and st["updates_run"] == a.settings()["plan"]["updates_planned"]
    wa, wb = _adapter(a), _adapter(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la, lb = a.read_log(), b.read_log()
    assert la[la["kind"] == "train"]["update"].tolist() == lb[lb["kind"] == "train"]["update"].tolist()
    np.testing.assert_array_equal(la[la["kind"] == "train"]["loss"].to_numpy(), lb[lb["kind"] == "train"]["loss"].to_numpy())


def test_cancel_then_resume(ws, lm):
    s = FinetuneSettings(epochs=1, **FAST)
    run = create_run(ws, s)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5  # a few micro-batches in

    st = execute(ws, run.id, lm=lm, should_stop=stop)
    assert st["status"] == "cancelled"
    k = latest_checkpoint(run.path)[0]
    assert 0 < k < run.settings()["plan"]["updates_planned"]
    st = execute(ws, run.id, lm=lm)
    assert st["status"] == "done" and st["updates_run"] == run.settings()["plan"]["updates_planned"]


def test_adapter_round_trip(ws, lm, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from metacog.finetune.backends.peft_backend import load_adapter_model

    s = FinetuneSettings(epochs=1, **FAST)
    run = create_run(ws, s)
    execute(ws, run.id, lm=lm)
    ids = torch.tensor([lm.tokenizer("What is the capital of Kenya? Nairobi", add_special_tokens=False)["input_ids"]])
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    pm = PeftModel.from_pretrained(fresh, str(run.adapter_dir)).eval()
    ft = load_adapter_model(lm, run.adapter_dir)
    with torch.no_grad():
        a = pm(input_ids=ids).logits
        b = ft.model(input_ids=ids).logits
        base = lm.model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (a - base).abs().max() > 1e-4  # the adapter does something
    # the base model the app holds was not modified in place
    with torch.no_grad():
        torch.testing.assert_close(lm.model(input_ids=ids).logits, base)


def test_training_in_place_leaves_the_callers_model_as_it_was(ws, lm):
    """owned=True trains the given model in place (no copy of a large model) and removes the
    LoRA layers afterwards; evaluation does the same."""
    from metacog.finetune import run_evaluation

    ids = torch.tensor([[1, 5, 9, 22, 40, 7]])
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits.clone()
    run = create_run(ws, FinetuneSettings(epochs=1, **FAST))
    execute(ws, run.id, lm=lm, owned=True, evaluate_after=True, eval_limit=10)
    assert run.eval_result()["items"]["n"] == 10
    run_evaluation(ws, run.id, lm=lm, owned=True, limit=10)
    assert not any("lora" in n for n, _ in lm.model.named_modules())
    assert not hasattr(lm.model, "peft_config")
    with torch.no_grad():
        torch.testing.assert_close(lm.model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_adapter_from_another_base_model_is_refused(ws, lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_llama, make_tokenizer
    from metacog.finetune.evaluate import check_adapter
    from metacog.finetune.runs import RunError

    other = make_tiny_llama(make_tokenizer(), d=48)
    pm = get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    pm.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(RunError, match="another base model"):
        check_adapter(tmp_path / "other", lm.weights_hash, lm)
    (tmp_path / "other" / "metacog.json").write_text(json.dumps({"base_weights_hash": "deadbeef", "base_model": "X"}))
    with pytest.raises(RunError, match="trained on another base model"):
        check_adapter(tmp_path / "other", lm.weights_hash)
    with pytest.raises(RunError, match="not a PEFT adapter"):
        check_adapter(tmp_path, lm.weights_hash)


def test_two_runs_in_one_workspace_are_serialised(ws, lm):
    """While the workspace's fine-tune lock is held, a second run waits (queued), then runs."""
    s = FinetuneSettings(epochs=1, **FAST)
    run = create_run(ws, s)
    out = {}
    with ws.lock("finetune"):
        t = threading.Thread(target=lambda: out.setdefault("st", execute(ws, run.id, lm=lm)))
        t.start()
        for _ in range(100):
            if get_run(ws, run.id).status().get("message", "").startswith("queued"):
                break
            time.sleep(0.05)
        st = get_run(ws, run.id).status()
        assert st["status"] == "queued" and st.get("updates_run", 0) == 0
        assert "waiting for the workspace's other fine-tuning job" in st["message"]
    t.join(120)
    assert out["st"]["status"] == "done"


def test_a_failed_write_leaves_the_previous_artifact(tmp_path):
    final = tmp_path / "adapter"
    tmp = begin_dir(final)
    (tmp / "w.bin").write_text("old")
    commit_dir(tmp, final)
    tmp = begin_dir(final)
    (tmp / "w.bin").write_text("new, half writ")
    # the process dies here (disk full, kill): nothing is renamed
    assert (final / "w.bin").read_text() == "old"
    tmp2 = begin_dir(final)  # the next attempt starts clean
    assert not any(tmp2.iterdir())


def test_workspace_without_probes_says_what_to_do(tmp_path):
    from metacog.core.workspace import Workspace

    with pytest.raises(Exception, match="metacog study"):
        create_run(Workspace(tmp_path / "nothing"), FinetuneSettings())


def test_too_many_updates_refused_before_any_work(ws):
    n_before = len(list_runs(ws))
    with pytest.raises(SettingsError, match="more than the data allows"):
        create_run(ws, FinetuneSettings(epochs=None, max_updates=10_000))
    assert len(list_runs(ws)) == n_before  # no run directory was made


# ------------------------------------------------------------------------------ evaluation
def test_evaluate_on_the_eval_split(ws, lm):
    from metacog.finetune import run_evaluation as evaluate
    from metacog.stages.study import load_items

    s = FinetuneSettings(epochs=1, **FAST)
    run = create_run(ws, s)
    execute(ws, run.id, lm=lm)
    ev = evaluate(ws, run.id, lm=lm)
    items = load_items(ws)
    eval_ids = set(items.loc[items["split"] == "eval", "id"])
    per = pd.read_parquet(run.file("per_item.parquet"))
    assert set(per["id"]) == eval_ids and len(per) == len(eval_ids)
    assert not set(read_targets(run.file("targets.jsonl"))["id"]) & eval_ids
    h = ev["headline"]
    assert h["n_eval"] == len(eval_ids)
    base = items.set_index("id").loc[per["id"]]
    ans = ws.read_parquet("answers.parquet").set_index("id").loc[per["id"]]
    assert h["accuracy_base"] == pytest.approx(ans["correct"].mean())
    assert ev["accuracy"]["right_to_wrong"] + ev["accuracy"]["wrong_to_right"] + ev["accuracy"]["unchanged"] == len(per)
    assert set(ev["readouts"]) >= {"ev_inline", "argmax_inline", "ev_two_pass", "argmax_two_pass"}
    for r in ev["readouts"].values():
        assert {"base", "ft", "unchanged", "recovery"} <= set(r)
    assert math.isfinite(h["auroc_probe"])
    rp = ev["retrained_probes"]
    assert "error" not in rp, rp
    assert rp["n"] == len(per)
    assert (base["split"] == "eval").all()
    sub = ev_sub_items(run)
    assert set(sub["id"]) == eval_ids and (sub["split"] == "eval").all()
    reg = list_runs(ws).set_index("run")
    assert bool(reg.loc[run.id, "evaluated"])


def ev_sub_items(run):
    return pd.read_parquet(run.file("eval", "items.parquet"))


def test_evaluation_refuses_base_results_of_another_precision(ws, lm, monkeypatch):
    """The base side of an evaluation is the study's own results: a model loaded in another dtype
    (``auto`` resolved differently since the study ran) must not be compared with them, and a
    run's model is loaded in the dtype the study recorded."""

    from metacog.finetune import run_evaluation as evaluate
    from metacog.finetune.evaluate import check_runtime
    from metacog.finetune.runner import _load_lm
    from metacog.finetune.runs import RunError

    run = create_run(ws, FinetuneSettings(epochs=1, **FAST))
    execute(ws, run.id, lm=lm)
    rec = ws.read_json("model.json")
    assert rec["dtype"] == "float32"
    check_runtime(ws, lm)  # same precision: fine
    ws.write_json("model.json", {**rec, "dtype": "bfloat16"})  # as if the study had run in bfloat16
    with pytest.raises(RunError, match=r"model.json: the study's base results were computed in bfloat16, but the model "
                                       r"is loaded in float32"):
        evaluate(ws, run.id, lm=lm)
    assert not run.file("eval.json").exists()
    seen = []
    monkeypatch.setattr("metacog.model.loading.load_model", lambda ms: seen.append(ms))
    _load_lm(run, None)
    assert seen[-1].dtype == run.settings()["model"]["dtype"] == "float32"  # an explicit dtype is kept (and refused above)
    st = json.loads(run.file("settings.json").read_text())
    st["model"]["dtype"] = "auto"
    run.file("settings.json").write_text(json.dumps(st))
    _load_lm(run, None)
    assert seen[-1].dtype == "bfloat16"  # auto follows the precision the study recorded
