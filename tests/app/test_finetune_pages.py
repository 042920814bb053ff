"""The Fine-tune and Results pages under streamlit's AppTest, on a tiny workspace with a
finished, evaluated run: targets preview, absurd settings refused on the page, launch from the
page (a real background process), the live panel, and every Results figure."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from finetune_helpers import tiny_model_and_workspace

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
FT_PAGE, RES_PAGE = "pages/5_Fine-tune.py", "pages/6_Results.py"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from metacog.finetune import FinetuneSettings, create_run, execute, run_evaluation

    cache = tmp_path_factory.mktemp("ft-cache")
    ws, lm = tiny_model_and_workspace(cache, "ft")
    run = create_run(ws, FinetuneSettings(epochs=1, batch_size=4, grad_accum=2, lr=5e-3), name="done")
    execute(ws, run.id, lm=lm)
    run_evaluation(ws, run.id, lm=lm)
    return cache


@pytest.fixture
def env(cache, monkeypatch):
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    return cache


def _open(page):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = "ft"
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at


def _titles(at):
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_finetune_page_preview_and_runs(env):
    at = _open(FT_PAGE)
    assert at.title[0].value == "Fine-tune"
    titles = _titles(at)
    assert any(t.startswith("Fine-tuning targets, train split, n=") for t in titles), titles
    assert any(t.startswith("Loss, run ") for t in titles), titles
    labels = {m.label: m.value for m in at.metric}
    assert int(labels["training items"]) > 0 and int(labels["updates planned"]) > 0
    # the probe positions offered are the ones this (two-pass) study probed, in array order
    from metacog.core.settings import POSITIONS

    assert list(at.selectbox(key="ft-pos-ft").options) == list(POSITIONS)
    reg = [d.value for d in at.dataframe if "updates_planned" in d.value.columns][0]
    assert (reg["status"] == "done").any()
    assert any(b.label.startswith("Re-evaluate") for b in at.button)


def test_a_failed_re_evaluation_does_not_read_as_the_runs_state(env):
    """A run evaluated once whose later evaluation attempt failed: the page says the attempt
    failed and that the result shown is the earlier one (a warning), not an error box beside a
    success box."""
    from metacog.core.workspace import Workspace
    from metacog.finetune.runs import get_run, list_runs

    ws = Workspace(env / "workspaces" / "ft")
    run = get_run(ws, list_runs(ws).query("status == 'done'")["run"].iloc[0])
    assert run.eval_result()
    run.set_status(eval_status="failed", eval_error="the eval split has no items left")
    try:
        at = _open(FT_PAGE)  # no error box
        assert any("The last evaluation attempt failed: the eval split has no items left" in w.value
                   and "earlier evaluation" in w.value for w in at.warning)
        assert any(s.value.startswith("Evaluated on") for s in at.success)
    finally:
        run.set_status(eval_status="done", eval_error=None)


def test_an_evaluation_of_earlier_study_answers_is_named_stale(env, capsys):
    """eval.json records the study answers its base side read; once the study's answers change
    (a rerun, e.g. with two-pass switched) the run's evaluation is named stale on the Results
    and Fine-tune pages, in `metacog runs` (eval_note) and in the run's CLI report."""
    from metacog.core.workspace import Workspace, atomic_write_json
    from metacog.finetune.evaluate import eval_stale
    from metacog.finetune.runs import get_run, list_runs

    ws = Workspace(env / "workspaces" / "ft")
    run = get_run(ws, list_runs(ws).query("evaluated")["run"].iloc[0])
    ev = run.eval_result()
    assert ev["study_answers"] == ws.stage_record("answers")["key"] and eval_stale(ws, ev) is None
    assert list_runs(ws).set_index("run").loc[run.id, "eval_note"] == ""
    atomic_write_json(run.file("eval.json"), {**ev, "study_answers": "an-earlier-answers-key"})
    try:
        assert list_runs(ws).set_index("run").loc[run.id, "eval_note"].startswith("stale: evaluated against earlier answers")
        from streamlit.testing.v1 import AppTest

        for page in (RES_PAGE, FT_PAGE):
            at = AppTest.from_file(APP, default_timeout=120)
            at.query_params["ws"] = "ft"
            at.query_params["run"] = run.id
            at.run()
            at.switch_page(page)
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            assert any("evaluated against earlier answers of this study" in w.value and run.id in w.value for w in at.warning), page
        from metacog.finetune.cli import _report

        _report(ws, run.id)
        out = capsys.readouterr().out
        assert "note: evaluated against earlier answers" in out and f"metacog evaluate --workspace {ws.root} --run {run.id}" in out
        # an eval.json from before the record: stale when the study's answers were written after it
        old = {k: v for k, v in ev.items() if k != "study_answers"}
        rec = ws.stage_record("answers")
        assert eval_stale(ws, {**old, "finished": "2000-01-01T00:00:00"}) is not None
        assert eval_stale(ws, {**old, "finished": "2999-01-01T00:00:00"}) is None
        assert rec["finished"] <= ev["finished"] and eval_stale(ws, old) is None
    finally:
        atomic_write_json(run.file("eval.json"), ev)


def test_finetune_page_refuses_absurd_settings(env):
    at = _open(FT_PAGE)
    at.number_input(key="ft-lr-ft").set_value(0.0).run()
    assert not at.exception
    errs = [e.value for e in at.error]
    assert any("learning rate must be > 0" in e for e in errs), errs
    assert not any(b.label.startswith("Launch") for b in at.button)
    at.number_input(key="ft-lr-ft").set_value(2e-4).run()
    at.number_input(key="ft-ep-ft").set_value(1).run()
    at.number_input(key="ft-mu-ft").set_value(0).run()
    assert any(b.label.startswith("Launch") for b in at.button)


def test_launch_from_the_page(env):
    from metacog.finetune.runs import list_runs
    from metacog.core.workspace import Workspace

    ws = Workspace(env / "workspaces" / "ft")
    before = set(list_runs(ws)["run"])
    at = _open(FT_PAGE)
    at.number_input(key="ft-mu-ft").set_value(2).run()
    at.number_input(key="ft-thr-ft").set_value(1).run()
    at.checkbox(key="ft-ev-ft").uncheck().run()
    launch = [b for b in at.button if b.label.startswith("Launch")][0]
    launch.click().run()
    assert not at.exception, [e.value for e in at.exception]
    new = set(list_runs(ws)["run"]) - before
    assert len(new) == 1
    rid = new.pop()
    t = time.time()
    while time.time() - t < 120 and list_runs(ws).set_index("run").loc[rid, "status"] != "done":
        time.sleep(0.5)
    reg = list_runs(ws).set_index("run")
    assert reg.loc[rid, "status"] == "done" and reg.loc[rid, "updates_run"] == 2


def test_results_page(env):
    at = _open(RES_PAGE)
    assert at.title[0].value == "Results"
    titles = _titles(at)
    # the tiny model never writes a readable number, so the page falls back to the 0-100 distribution
    assert any("never wrote a readable number" in i.value for i in at.info)
    for want in ("AUROC of E[v] inline, base vs fine-tuned, eval split", "Reliability before/after (E[v] inline)",
                 "E[v] inline before/after", "Per-item E[v] inline: before vs after", "Re-trained probes by layer", "Loss, 1 run(s)"):
        assert any(t.startswith(want) for t in titles), (want, titles)
    head = at.dataframe[0].value
    assert "AUROC" in head.columns and "→" in head["accuracy"].iloc[0]
    # a tiny eval split is said in words, and the readout table has the ECE's CI and calibrated null
    assert any("Read these numbers with care" in w.value and "eval split has only" in w.value for w in at.warning)
    ro = next(d.value for d in at.dataframe if "ECE CI" in d.value.columns)
    assert "ECE if calibrated (p95)" in ro.columns and ro["ECE CI"].str.startswith("[").any()
    items = [d.value for d in at.dataframe if "open" in d.value.columns]
    assert items and items[0]["open"].iloc[0].startswith("Item_explorer?item=")
    at.selectbox(key="res-ro-ft").set_value("argmax_two_pass").run()
    assert not at.exception
    assert any(t.startswith("Reliability before/after (argmax two-pass)") for t in _titles(at))
