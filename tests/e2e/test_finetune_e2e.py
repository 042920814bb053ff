"""End to end on the embedded model (SmolLM2-135M-Instruct): a study on a few dozen items,
a handful of LoRA updates, evaluation on the eval split. Marked e2e (a couple of minutes)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ws(tmp_path_factory, real_study):
    from conftest import copy_workspace

    torch.set_num_threads(1)
    return copy_workspace(real_study, tmp_path_factory.mktemp("ft-e2e") / "smol")


def test_real_target_tokens(real_lm):
    from metacog.finetune.targets import encode_example

    tok = real_lm.tokenizer
    rec = dict(id="x", question="What is the capital of Peru?", answer="The capital of Peru is Lima.", target=73,
               choices=None, kind="short")
    ex = encode_example(tok, True, rec, "inline", "assistant")
    lab = [t for t in ex.labels if t != -100]
    assert tok.decode(lab).endswith("Lima.\nConfidence: 73%<|im_end|>")
    ec = encode_example(tok, True, rec, "inline", "confidence")
    assert tok.convert_ids_to_tokens([t for t in ec.labels if t != -100]) == ["Ġ", "7", "3", "%"]  # digits split


def test_probe_targeted_run_and_evaluation(ws, real_lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from metacog.finetune import FinetuneSettings, create_run, execute, run_evaluation
    from metacog.finetune.targets import read_targets
    from metacog.stages.study import load_items

    s = FinetuneSettings(epochs=None, max_updates=4, batch_size=4, grad_accum=1, val_fraction=0.1)
    run = create_run(ws, s)
    st = execute(ws, run.id, lm=real_lm)
    assert st["status"] == "done" and st["updates_run"] == 4
    assert 0 < st["epochs_run"] <= 1
    items = load_items(ws)
    tg = read_targets(run.file("targets.jsonl"))
    assert set(tg["id"]) <= set(items.loc[items["split"] == "train", "id"])
    # standard PEFT adapter
    base = AutoModelForCausalLM.from_pretrained(real_lm.source, dtype=torch.float32)
    pm = PeftModel.from_pretrained(base, str(run.adapter_dir))
    assert sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n) > 0
    ev = run_evaluation(ws, run.id, lm=real_lm)
    h = ev["headline"]
    n_eval = int((items["split"] == "eval").sum())
    assert h["n_eval"] == n_eval
    assert 0.0 <= h["accuracy_ft"] <= 1.0
    assert h["auroc_probe"] is not None
    per = pd.read_parquet(run.file("per_item.parquet"))
    assert set(per["id"]) == set(items.loc[items["split"] == "eval", "id"])
    assert json.loads(run.file("eval.json").read_text())["split"] == "eval"


def test_trained_value_moves_the_exact_readout(ws, real_lm):
    """The tokens trained on are the tokens the 0-100 readout scores: a few updates towards a
    constant 37 pull the eval items' expected value towards 37."""
    from metacog.finetune import FinetuneSettings, create_run, execute

    s = FinetuneSettings(targets="constant", constant_value=37, epochs=2, max_updates=6, batch_size=4, grad_accum=1,
                         lr=3e-3, loss_on="confidence", val_fraction=0.0)
    run = create_run(ws, s)
    execute(ws, run.id, lm=real_lm)
    from metacog.data import prompts
    from metacog.readout.values import read_values
    from metacog.finetune.backends.peft_backend import load_adapter_model
    from metacog.stages.study import results_table

    df = results_table(ws)
    ev = df[df["split"] == "eval"]
    pre = [prompts.encode_inline(real_lm.tokenizer, True, q, a).ids for q, a in zip(ev["question"], ev["answer"])]
    ft = load_adapter_model(real_lm, run.adapter_dir)
    before = np.abs(read_values(real_lm, pre).expected - 37).mean()
    after = np.abs(read_values(ft, pre).expected - 37).mean()
    assert after < 0.5 * before, (before, after)
