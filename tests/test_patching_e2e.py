"""End to end on the embedded model (SmolLM2-135M-Instruct, float32): a small real workspace,
an item → item sweep (high-E[v] items into low-E[v] items) written to disk, spot-checked
against one patched forward per cell. Marked e2e (about two minutes on one CPU thread)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metacog import patching as P

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_ws(tmp_path_factory, real_lm):
    from metacog.settings import ModelSettings, StudySettings
    from metacog.study import run_study
    from metacog.workspace import Workspace

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pt-real") / "ws"
    study = StudySettings(dataset="world-facts", limit=10, max_new_tokens=16, confidence_max_new_tokens=6, batch_size=10)
    run_study(root, ModelSettings(dtype="float32", threads=1), study, lm=real_lm, stages=("answers", "activations"))
    return Workspace(root)


def test_item_to_item_sweep_on_the_embedded_model(real_ws, real_lm):
    spec = P.PatchSpec(layers=tuple(range(2, real_lm.n_layers + 1, 7)), positions=("confidence", "random:1"), seed=0)
    plan = P.plan_sweep(real_ws, real_lm, "high", "low", spec, n_pairs=2, by="ev")
    s = P.run_sweep(real_ws, plan)
    res = P.load_results(real_ws, plan.sweep_id)
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
            assert abs(row["ev_patched"] - float(P.expected_value(ref.probs[None])[0])) < 1e-2  # float32 rounding, renormalised
            assert bool(row["answer_unchanged"]) == ref.answer_unchanged
