"""The Methods page under streamlit's AppTest on a tiny workspace with computed methods: the
table (every method, CSV), AUROC bars, reliability diagrams side by side, risk-coverage curves,
post-hoc variants on demand; and the message when nothing has been computed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_helpers import build_workspace, tiny_model_and_workspace

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGE = "pages/9_Methods.py"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from metacog.methods import MethodSettings, run_methods

    cache = tmp_path_factory.mktemp("mt-cache")
    ws, lm = tiny_model_and_workspace(cache, "mt")
    _both_classes_in_calibration(ws)
    run_methods(ws, "verbal_inline,ev_inline,probe,p_true,self_consistency,relative_bt",
                MethodSettings(k_samples=2, n_comparisons=30, batch_size=8), lm=lm, on_error="raise")
    build_workspace(cache / "workspaces" / "empty", lm, n=30)
    _both_classes_in_calibration(build_workspace(cache / "workspaces" / "bg", lm, n=30))
    return cache


def _both_classes_in_calibration(ws):
    """The tiny model's calibration split may hold one class only; regrade two of its items
    (alias = the model's own answer) so the post-hoc calibrators can be fitted."""
    import pandas as pd

    from metacog.data.grading import normalize

    items = pd.read_parquet(ws.path("items.parquet"))
    ans = pd.read_parquet(ws.path("answers.parquet"))
    cal = ans[ans["split"] == "calibration"].sort_values("row")
    for r in cal["row"].tolist()[:3]:
        a = normalize(ans.loc[ans["row"] == r, "answer"].iloc[0]) or "zz"
        items.loc[items["row"] == r, "answers"] = pd.Series([[a]], index=items.index[items["row"] == r])
    ws.write_parquet("items.parquet", items)
    from metacog.stages.answers import items_key  # the answers stay those of these items: only their gold changed

    ws.write_parquet("answers.parquet", ans, lineage={**ws.lineage("answers.parquet"), "items": items_key(items)})


def _open(monkeypatch, cache, ws_name):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("METACOG_CACHE", str(cache))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws_name
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at


def _picks(at, name):
    """The method names the page offers (options read "name — cost")."""
    return {o.split(" — ")[0] for o in at.multiselect(key=f"mt-pick-{name}").options}


def _figs(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_methods_page_shows_table_and_figures(monkeypatch, cache):
    at = _open(monkeypatch, cache, "mt")
    assert at.title[0].value == "Methods"
    df = at.dataframe[0].value
    assert {"verbal_inline", "ev_inline", "probe", "p_true", "self_consistency", "relative_bt"} <= set(df["method"])
    assert set(df["calibration"]) == {"none"}
    assert ((df["auroc"].dropna() >= 0) & (df["auroc"].dropna() <= 1)).all()
    figs = _figs(at)
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert any(t.startswith("AUROC by method, eval split, n=") for t in titles)
    assert any(t.startswith("Reliability by method, eval split") for t in titles)
    rc = next(f for f in figs if f["layout"]["title"]["text"].startswith("Selective prediction"))
    assert {tr["meta"]["method"] for tr in rc["data"] if tr.get("meta")} >= {"probe", "p_true"}
    # post-hoc variants on demand
    at.multiselect(key="mt-kinds-mt").set_value(["platt", "isotonic"]).run()
    assert not at.exception
    df = at.dataframe[0].value
    assert {"probe+platt", "p_true+isotonic"} <= set(df["method"])


def test_methods_page_keeps_stale_results_out_and_says_so(monkeypatch, cache, tmp_path):
    """Scores computed on earlier answers of the workspace (its study was rerun with other
    settings) are not joined with today's correctness: the page names them in a warning and
    leaves them out of the table and the figures."""
    import shutil

    from metacog.core.workspace import Workspace

    d = cache / "workspaces" / "stale"
    shutil.copytree(cache / "workspaces" / "mt", d)
    ws = Workspace(d)
    md = ws.read_json("methods/p_true/meta.json")
    ws.write_json("methods/p_true/meta.json", {**md, "answers": "an-earlier-answers-key"})
    at = _open(monkeypatch, cache, "stale")
    assert any("computed on earlier answers" in w.value and "p_true" in w.value for w in at.warning)
    df = at.dataframe[0].value
    assert "p_true" not in set(df["method"]) and "probe" in set(df["method"])


def test_methods_page_without_results(monkeypatch, cache):
    at = _open(monkeypatch, cache, "empty")
    assert any("No method results yet" in i.value for i in at.info)
    assert {"verbal_two_pass", "ev_two_pass"} <= _picks(at, "empty")  # a two-pass study


def test_methods_page_offers_only_what_the_study_computed(monkeypatch, cache):
    """In a study run without --two-pass the two-pass baselines are not offered (a default Run
    would otherwise report them as failures), and the caption says why."""
    import dataclasses
    import shutil

    from metacog.core.settings import TWO_PASS_OFF
    from metacog.core.workspace import Workspace

    d = cache / "workspaces" / "inl"
    shutil.copytree(cache / "workspaces" / "empty", d)
    ws = Workspace(d)
    ms, study = ws.settings()
    ws.init(ms, dataclasses.replace(study, two_pass=False))
    at = _open(monkeypatch, cache, "inl")
    opts = _picks(at, "inl")
    assert "verbal_inline" in opts and not {"verbal_two_pass", "ev_two_pass"} & opts
    assert any("Not offered: verbal_two_pass, ev_two_pass" in c.value and TWO_PASS_OFF in c.value for c in at.caption)


def test_methods_page_runs_methods_in_the_background(monkeypatch, cache):
    from metacog.app import ui

    at = _open(monkeypatch, cache, "bg")
    assert any("No method results yet" in i.value for i in at.info)
    at.multiselect(key="mt-pick-bg").set_value(["verbal_inline", "ev_inline"])
    at.button(key="mt-run-bg").click().run()
    job = ui.job_kind("methods", "a methods run").get(cache / "workspaces" / "bg")
    assert job is not None and job.join(120).status == "done", job.error
    assert job.result == {"verbal_inline": "computed", "ev_inline": "computed"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Methods finished" in s.value for s in at.success)
    assert {"verbal_inline", "ev_inline"} == set(at.dataframe[0].value["method"])
