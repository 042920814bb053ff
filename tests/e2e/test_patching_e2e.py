"""End to end on the embedded model (SmolLM2-135M-Instruct, float32): a small real workspace,
an item → item sweep (high-E[v] items into low-E[v] items) written to disk, spot-checked
against one patched forward per cell; and, where the repository's cache holds a real
probe-targeted adapter of this model, a model → model sweep from it that the Patching page
renders (ρ for the slot and the random positions). Marked e2e (a few minutes on one thread)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metacog import patching as P
from metacog.readout.values import expected_value

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_ws(tmp_path_factory, real_lm):
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study
    from metacog.core.workspace import Workspace

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pt-real") / "workspaces" / "ws"  # a cache layout, so the app can open it
    study = StudySettings(dataset="world-facts", limit=10, max_new_tokens=16, confidence_max_new_tokens=6, batch_size=10)
    run_study(root, ModelSettings(dtype="float32", threads=1), study, lm=real_lm, stages=("answers", "activations"))
    return Workspace(root)


def test_item_to_item_sweep_on_the_embedded_model(real_ws, real_lm):
    spec = P.PatchSpec(layers=tuple(range(2, real_lm.n_layers + 1, 7)), positions=("confidence", "random:1"), seed=0)
    plan = P.plan_grid(real_ws, real_lm, "high", "low", spec, n_pairs=2, by="ev")
    s = P.run_grid(real_ws, plan)
    res = P.load_results(real_ws, plan.grid_id)
    assert s["complete"] and len(res) == 2 * len(spec.layers) * 2
    tok = real_lm.tokenizer
    for pr in plan.pairs:
        assert tok.convert_ids_to_tokens(pr.target.ids[pr.target.positions["confidence"]]) == ":"
        assert pr.source.item_id != pr.target.item_id
    assert (res["denom"] > 0).all()  # high E[v] into low E[v]
    assert set(res["position_kind"]) == {"confidence", "random"}
    assert not (res["target_pos"] == res["target_pos"].max()).all()
    assert res["answer_unchanged"][res["position_kind"] == "confidence"].all()  # the slot follows the answer
    assert "resid/confidence" in s["gradients"] and "resid/random" in s["gradients"]
    # spot check: the fast path equals one patched forward per cell
    prep = P.prepare_pair(plan.pairs[0], spec, method="reference")
    for plan_pos in prep.plans:
        for h in (spec.layers[0], spec.layers[-1]):
            v = prep.src_trace.state("resid", h, plan_pos.source)
            ref = P.patch_cell_reference(plan.pairs[0].target, "resid", h, plan_pos.target, v)
            row = res[(res.pair == 0) & (res.position == plan_pos.label) & (res.layer == h)].iloc[0]
            np.testing.assert_allclose(np.asarray(row["probs"], dtype=float), ref.probs, rtol=1e-3, atol=2e-5)
            assert abs(row["ev_patched"] - float(expected_value(ref.probs[None])[0])) < 1e-2  # float32 rounding, renormalised
            assert bool(row["answer_unchanged"]) == ref.answer_unchanged


ROOT = Path(__file__).resolve().parents[2]
# a real probe-targeted LoRA adapter of the default model (metacog finetune; git-ignored cache), used
# when a developer's cache has it; otherwise (CI) the test trains a short real run itself
REAL_RUN = ROOT / "cache" / "workspaces" / "default-world-facts-n200-s0" / "runs" / "20261123-044006-pilot2-probe"


def _adapter_run(real_ws) -> str:
    """Id of a run with a real adapter of the default model in ``real_ws``."""
    if (REAL_RUN / "adapter" / "adapter_config.json").exists():
        run = real_ws.path("runs", REAL_RUN.name)
        if not run.exists():
            shutil.copytree(REAL_RUN / "adapter", run / "adapter")
            shutil.copy(REAL_RUN / "settings.json", run / "settings.json")
        return REAL_RUN.name
    from metacog.finetune import FinetuneSettings, create_run, execute

    # constant targets need no probes (this workspace has answers and activations only)
    s = FinetuneSettings(targets="constant", constant_value=30, epochs=2, batch_size=4, grad_accum=1,
                         lr=2e-3, dropout=0.0, val_fraction=0.0, checkpoint_every=10)
    run = create_run(real_ws, s, name="e2e-constant", threads=1)
    st = execute(real_ws, run.id, threads=1)  # loads its own copy of the default model
    assert st["status"] == "done" and run.has_adapter(), st
    return run.id


def test_real_adapter_into_base_and_the_page_shows_it(real_ws, real_lm, monkeypatch):
    from metacog.app import ui

    run_id = _adapter_run(real_ws)
    spec = P.PatchSpec(layers=(4, 15, 26), positions=("confidence", "random:1"), seed=0)
    plan = P.plan_grid(real_ws, real_lm, run_id, "base", spec, n_pairs=2, split="all")
    assert plan.pairs[0].kind == "model" and plan.pairs[0].direction == f"run:{run_id}→base"
    s = P.run_grid(real_ws, plan)
    res = P.load_results(real_ws, plan.grid_id)
    assert s["complete"] and len(res) == 2 * 3 * 2
    assert (res["denom"].abs() > 0).all()  # the adapter moves the readout of the same sequence
    assert (res["target_pos"] == res["source_pos"]).all()
    # random positions are the item's own tokens, never SmolLM2's default system prompt (the audit found half of the
    # model → model draws there); the question tokens decode to the question itself
    assert set(res.loc[res["position_kind"] == "random", "position_class"]) <= {"question", "answer"}
    items = P.item_table(real_ws).set_index("id")
    tok = real_lm.tokenizer
    for pr in plan.pairs:
        t = pr.target
        sys_end = t.ids.index(tok.convert_tokens_to_ids("<|im_end|>"))
        assert "system" in tok.decode(t.ids[:sys_end]) and all(c == "template" for c in t.classes[:sys_end])
        q = tok.decode([i for i, c in zip(t.ids, t.classes) if c == "question"])
        assert q.strip() == str(items.loc[t.item_id, "question"]).strip()
    # the shared base model was not modified by loading the adapter
    assert not any("lora" in n for n, _ in real_lm.model.named_modules())

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("METACOG_CACHE", str(real_ws.root.parent.parent))
    ui.set_model_loader(lambda settings: real_lm)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.query_params["ws"] = real_ws.root.name
        at.run()
        at.switch_page("pages/7_Patching.py")
        at.run()
        assert not at.exception, at.exception
        next(sb for sb in at.selectbox if sb.key == "pt-show").set_value(plan.grid_id)
        at.run()
        assert not at.exception, at.exception
        metrics = {m.label: m.value for m in at.metric}
        rho_c = s["gradients"]["resid/confidence"]["normalised"]["rho"]
        assert metrics["ρ confidence slot"] == ("n/a" if rho_c is None else f"{rho_c:.2f}")  # the summary's ρ, on the page
        assert "ρ random positions" in metrics and metrics["pairs"] == "2"
        spec_json = json.loads(at.get("plotly_chart")[0].proto.spec)
        title = json.dumps(spec_json["layout"]["title"], ensure_ascii=False)
        assert f"run:{run_id}→base" in title  # the figure names the direction
        names = [t.get("name", "") for t in spec_json["data"]]
        assert any(n.startswith("confidence slot") for n in names) and any(n.startswith("random positions") for n in names)
    finally:
        ui.set_model_loader(None)
