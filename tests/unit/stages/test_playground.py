"""The Playground backend and page, and the logit lens of the exact readout (metacog.stages.playground).

The lens is checked against the readout itself: at the last layer it equals read_values with the
same look-ahead rule, on a tiny random model; the page answers a typed question and an item, with
an adapter side by side, under AppTest (tiny model injected)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_items

ROOT = Path(__file__).resolve().parents[3]


def test_lens_last_layer_equals_the_readout(tiny_lm):
    from metacog.readout.values import read_values
    from metacog.stages.playground import item_prefix, lens_readout

    for q, a in (("What is the capital of France?", "Paris"), ("What is the capital of Peru?", "Lima")):
        pre = item_prefix(tiny_lm, q, a)
        lens = lens_readout(tiny_lm, pre)
        assert list(lens["layer"]) == list(range(tiny_lm.n_layers + 1))
        r = read_values(tiny_lm, [pre], dot_tol=math.inf)
        np.testing.assert_allclose(np.array(lens.iloc[-1]["probs"]), r.probs[0], rtol=1e-6, atol=1e-12)
        assert lens.iloc[-1]["unresolved"] == pytest.approx(float(r.unresolved[0]), rel=1e-6)
        # earlier layers read something else (the lens is not a constant)
        assert not np.allclose(np.array(lens.iloc[0]["probs"]), r.probs[0])
        assert ((lens["mass"] >= 0) & (lens["mass"] <= 1 + 1e-9)).all()


def test_play_matches_the_answers_stage(tmp_path, tiny_lm):
    """An item answered in the playground gets the answer, grade, verbal confidences and
    readout the study stages give it (same prompts, parser, grader; an item's numbers do not
    depend on its batch)."""
    from metacog.stages.activations import run_activations
    from metacog.stages.answers import answers_key, run_answers
    from metacog.stages.playground import play
    from metacog.core.settings import StudySettings
    from metacog.core.workspace import Workspace

    study = StudySettings(max_new_tokens=6, confidence_max_new_tokens=4, batch_size=1)
    items = tiny_items(3)
    ws = Workspace(tmp_path / "w")
    ans = run_answers(ws, tiny_lm, items, study)
    run_activations(ws, tiny_lm, items, ans, answers_key(tiny_lm, items, study), batch_size=1)
    ro = ws.read_parquet("readout.parquet")
    for i in range(3):
        it = items.iloc[i]
        p = play(tiny_lm, it["question"], gold=list(it["answers"]), study=study, lens=False)
        a = ans[ans["row"] == i].iloc[0]
        assert p.answer == a["answer"] and p.correct == bool(a["correct"])
        assert (p.verbal_inline is None and np.isnan(a["verbal_inline"])) or p.verbal_inline == a["verbal_inline"]
        assert p.ev_inline == pytest.approx(float(ro.loc[ro["row"] == i, "ev_inline"].iloc[0]), abs=1e-3)


def test_play_refuses_an_empty_question(tiny_lm):
    from metacog.stages.playground import play

    with pytest.raises(ValueError, match="question"):
        play(tiny_lm, "   ")


def test_playground_page(tmp_path, monkeypatch, tiny_lm):
    from streamlit.testing.v1 import AppTest

    from metacog.app import ui
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study

    cache = tmp_path / "cache"
    root = cache / "workspaces" / "pg"
    run_study(root, ModelSettings(threads=1), StudySettings(dataset="world-facts", limit=24, max_new_tokens=4,
                                                            confidence_max_new_tokens=4, batch_size=8, probe_folds=3),
              lm=tiny_lm)
    # the tiny model answers nothing right, so no probe is fitted: store seeded random probe weights
    from metacog.core.workspace import atomic_save_npy

    from metacog.core.workspace import Workspace
    from metacog.stages.study import probe_positions

    H, d, P = tiny_lm.n_layers + 1, tiny_lm.d_model, len(probe_positions(Workspace(root)))
    assert P == 3  # two-pass off: the inline positions
    rng = np.random.default_rng(0)
    atomic_save_npy(root / "probes" / "coef.npy", rng.normal(0, 0.1, (H, P, d)).astype(np.float32))
    atomic_save_npy(root / "probes" / "intercept.npy", np.zeros((H, P), np.float32))
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    ui.set_model_loader(lambda settings: tiny_lm)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params["ws"] = "pg"
        at.run()
        at.switch_page("pages/10_Playground.py").run()
        assert not at.exception, [e.value for e in at.exception]
        at.text_input(key="pg-q").set_value("What is the capital of Kenya?")
        at.text_input(key="pg-gold").set_value("Nairobi")
        at.button(key="pg-ask").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        md = " ".join(m.value for m in at.markdown)
        assert "answer:" in md and "verbal inline" in md and ":red[**incorrect**]" in md  # gibberish is graded wrong
        assert len(at.get("plotly_chart")) >= 3  # distribution, probes by layer, lens
        # an item of the workspace
        at.radio(key="pg-src").set_value("an item of this workspace").run()
        at.button(key="pg-ask").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert "gold:" in " ".join(m.value for m in at.markdown)
    finally:
        ui.set_model_loader(None)


def test_item_explorer_search_navigation_and_lens(tmp_path, monkeypatch, tiny_lm):
    from streamlit.testing.v1 import AppTest

    from metacog.app import ui
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study

    cache = tmp_path / "cache"
    root = cache / "workspaces" / "ie"
    run_study(root, ModelSettings(threads=1), StudySettings(dataset="world-facts", limit=24, max_new_tokens=4,
                                                            confidence_max_new_tokens=4, batch_size=8, probe_folds=3),
              lm=tiny_lm, stages=("answers", "activations"))
    items = __import__("pandas").read_parquet(root / "items.parquet")
    ev = items[items["split"] == "eval"]["id"].tolist()
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    ui.set_model_loader(lambda settings: tiny_lm)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params["ws"] = "ie"
        at.query_params["item"] = ev[0]
        at.run()
        at.switch_page("pages/4_Item_explorer.py").run()
        sb = at.selectbox(key="ie-item")
        assert sb.value == ev[0]
        opts = [o.split(" — ")[0] for o in sb.options]  # shown as "id — question"
        nxt = opts[(opts.index(ev[0]) + 1) % len(opts)]
        at.button(key="ie-next").click().run()
        assert at.selectbox(key="ie-item").value == nxt
        at.button(key="ie-prev").click().run()
        assert at.selectbox(key="ie-item").value == ev[0]
        # a search that the pinned item does not match: the pinned item is not shown, the count is true
        other = items[~items["id"].isin([ev[0]])].iloc[0]
        at.text_input(key="ie-q").set_value(other["id"]).run()
        sb = at.selectbox(key="ie-item")
        assert ev[0] not in [o.split(" — ")[0] for o in sb.options] and "(1 match)" in sb.label
        # the lens
        at.button(key="ie-lens-go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(getattr(c, "key", "") == "fig-item-lens" for c in at.get("plotly_chart"))
    finally:
        ui.set_model_loader(None)
