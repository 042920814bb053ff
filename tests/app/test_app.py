"""The Streamlit app under streamlit.testing.v1.AppTest, on tiny workspaces built with the tiny
random model (no download): every page renders without an exception and shows its main chart;
"Run study" on the Workspace page runs a stage (tiny model injected with ui.set_model_loader)
and its artifacts appear; missing or half-done workspaces show a message, not a traceback.

Workspaces (built once per session under a tmp METACOG_CACHE):
- ``tiny``: answers + activations (+ probes when ``metacog.stages.probes`` exists) from the real
  pipeline (``run_study`` with the tiny model); its gibberish answers are all wrong and no
  confidence parses, so pages meet degenerate data (one class: AUROC undefined, no best probe);
- ``tiny-rich``: a copy whose grades and verbal confidences are replaced by seeded random ones
  (both classes, saturated confidences), with probes: fitted by ``metacog.stages.probes`` when the
  module exists, otherwise written synthetically in the artifact contract's format;
- ``half``: answers only.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGES = {
    "workspace": "pages/1_Workspace.py",
    "answers": "pages/2_Answers_and_confidence.py",
    "probes": "pages/3_Probes.py",
    "items": "pages/4_Item_explorer.py",
}
HAVE_PROBES = importlib.util.find_spec("metacog.stages.probes") is not None
TINY_STUDY = dict(dataset="world-facts", limit=24, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=8, two_pass=True)


# ----------------------------------------------------------------------------- workspaces
def build_workspaces(cache: Path, lm) -> dict[str, Path]:
    """Build the test workspaces under ``cache/workspaces`` (see module docstring)."""
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study, summarize
    from metacog.core.workspace import Workspace

    wsd = cache / "workspaces"
    wsd.mkdir(parents=True, exist_ok=True)
    model, study = ModelSettings(threads=1), StudySettings(**TINY_STUDY)
    tiny = wsd / "tiny"
    run_study(tiny, model, study, lm=lm, stages=("answers", "activations") + (("probes",) if HAVE_PROBES else ()))
    half = wsd / "half"
    run_study(half, model, study, lm=lm, stages=("answers",))
    inline = wsd / "inline-only"  # the default study: two_pass off
    run_study(inline, model, StudySettings(**{**TINY_STUDY, "two_pass": False}), lm=lm, stages=("answers", "activations"))

    rich = wsd / "tiny-rich"
    shutil.copytree(tiny, rich, ignore=shutil.ignore_patterns(".lock-*", "probes", "probes.json", "summary.json"))
    ws = Workspace(rich)
    rng = np.random.default_rng(0)
    ans = ws.read_parquet("answers.parquet")
    n = len(ans)
    ans["correct"] = rng.random(n) < 0.45
    ans.loc[ans.index[:2], "correct"] = [True, False]
    ans["verbal_inline"] = rng.choice([100.0, 100.0, 95.0, 90.0, 80.0, 50.0, np.nan], size=n)
    ans["verbal_two_pass"] = np.where(ans["correct"], rng.uniform(60, 100, n), rng.uniform(0, 100, n)).round()
    ws.write_parquet("answers.parquet", ans, lineage=ws.lineage("answers.parquet"))  # doctored, same inputs
    ro = ws.read_parquet("readout.parquet")
    ro["ev_inline"] = rng.uniform(20, 100, n)
    ro["argmax_inline"] = rng.integers(0, 101, n).astype(float)
    ws.write_parquet("readout.parquet", ro, lineage=ws.lineage("readout.parquet"))
    _add_probes(ws, ans)
    ws.write_json("summary.json", summarize(ws))
    return {"tiny": tiny, "tiny-rich": rich, "half": half, "inline-only": inline}


def _add_probes(ws, ans: pd.DataFrame) -> None:
    from metacog.core.settings import POSITIONS

    man = ws.read_json("activations/manifest.json")
    n, H = man["n_items"], man["n_layers"]
    if HAVE_PROBES:
        from metacog.stages.study import load_items, run_probes_stage

        items = load_items(ws)
        _, study = ws.settings()
        run_probes_stage(ws, items, ans, man["key"], study, threads=1)
        return
    # synthetic probes in the artifact contract's format (until metacog/stages/probes.py exists)
    rng = np.random.default_rng(1)
    y = ans.sort_values("row")["correct"].to_numpy()
    oof = np.clip(0.5 + (y[:, None, None] - 0.5) * rng.uniform(0, 0.8, (n, H, len(POSITIONS))) + rng.normal(0, 0.15, (n, H, len(POSITIONS))), 0, 1)
    ws.path("probes").mkdir(exist_ok=True)
    np.save(ws.path("probes", "oof.npy"), oof.astype(np.float32))
    items = ws.read_parquet("items.parquet")
    ev = items["split"].to_numpy() == "eval"
    from metacog.stats import metrics

    rows = []
    for j, p in enumerate(POSITIONS):
        for L in range(H):
            s = oof[ev, L, j]
            a = metrics.auroc(s, y[ev])
            lo, hi = metrics.auroc_ci(s, y[ev], n_boot=200)
            rows.append(dict(layer=L, position=p, C=1.0, cv_auroc=metrics.auroc(oof[~ev, L, j], y[~ev]), auroc=a, auroc_lo=lo,
                             auroc_hi=hi, ece=metrics.ece(s, y[ev]), brier=metrics.brier(s, y[ev]), n_train=int((~ev).sum()),
                             n_eval=int(ev.sum())))
    pm = pd.DataFrame(rows)
    ws.write_parquet("probes/metrics.parquet", pm)
    b = pm.sort_values("cv_auroc", ascending=False).iloc[0]
    ws.write_json("probes/best.json", {k: (v.item() if hasattr(v, "item") else v) for k, v in b.to_dict().items()})


@pytest.fixture(scope="session")
def app_cache(tmp_path_factory, tiny_lm):
    cache = tmp_path_factory.mktemp("metacog-cache")
    build_workspaces(cache, tiny_lm)
    return cache


@pytest.fixture
def env(app_cache, monkeypatch, tiny_lm):
    from metacog.app import ui

    monkeypatch.setenv("METACOG_CACHE", str(app_cache))
    ui.set_model_loader(lambda settings: tiny_lm)
    yield app_cache
    ui.set_model_loader(None)


def _app(ws: str | None = None, **qp):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if ws:
        at.query_params["ws"] = ws
    for k, v in qp.items():
        at.query_params[k] = v
    return at


def _open(page: str, ws: str, **qp):
    at = _app(ws, **qp)
    at.run()
    if page != "workspace":
        at.switch_page(PAGES[page])
        at.run()
    _no_exception(at)
    return at


def _no_exception(at):
    assert not at.exception, [e.value for e in at.exception]
    errs = [e.value for e in at.error]
    assert not errs, errs


def _fig(at, i=0) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) > i, f"expected a plotly chart, found {len(charts)}"
    return json.loads(charts[i].proto.spec)


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


# ----------------------------------------------------------------------------- pages
def test_workspace_page(env):
    at = _open("workspace", "tiny-rich")
    assert at.title[0].value == "Workspace"
    status = at.dataframe[0].value.set_index("stage")["status"]
    assert status["answers"] == "done" and status["activations"] == "done"
    assert any(b.label == "Run study" for b in at.button)
    assert "tiny-llama" in at.caption[0].value  # header: workspace · model · dataset
    assert {m.label for m in at.metric} >= {"items", "accuracy (all items)"}


@pytest.mark.parametrize("ws", ["tiny", "tiny-rich"])
def test_answers_page(env, ws):
    at = _open("answers", ws)
    titles = _titles(at)
    assert len(titles) >= 3, titles
    assert titles[0].startswith("Verbal confidence, eval split, n=") and "tiny-llama" in titles[0]
    spec = _fig(at, 0)
    assert spec["data"] and spec["data"][0]["type"] == "bar"
    # parse-rule and grader-guard counts (issue 11)
    labels = {m.label for m in at.metric}
    assert {"verbal inline: unparsable", "verbal two-pass: unparsable", "short answers refused by a grader guard"} <= labels
    rules = next(df.value for df in at.dataframe if "parse rule" in df.value.columns)
    n = int(titles[0].split("n=")[1].split()[0].strip(",;)"))
    assert rules[["inline", "two-pass"]].sum().tolist() == [n, n]  # every eval-split reply counted once per mode
    # switching the split redraws with that split's n
    at.radio(key="ans-split").set_value("all").run()
    _no_exception(at)
    assert _titles(at)[0].startswith("Verbal confidence, all splits, n=24")


def test_pages_of_an_inline_only_study_say_two_pass_was_not_computed(env):
    """A default study (no two-pass columns): the answers page and the item explorer draw the
    inline mode, say where two-pass is missing, and never fail on the absent columns."""
    at = _open("answers", "inline-only")
    labels = {m.label for m in at.metric}
    assert "verbal inline: parsed" in labels and not [x for x in labels if "two-pass" in x]
    assert any("Two-pass not computed in this study (metacog study --two-pass)" in c.value for c in at.caption)
    rules = next(df.value for df in at.dataframe if "parse rule" in df.value.columns)
    assert "inline" in rules.columns and "two-pass" not in rules.columns
    at = _open("items", "inline-only")
    assert any("Two-pass not computed" in m.value for m in at.markdown)
    titles = _titles(at)
    assert any(t.startswith("0–100 confidence distribution, item") for t in titles), titles


def test_probes_page(env):
    at = _open("probes", "tiny-rich")
    titles = _titles(at)
    assert any(t.startswith("Probe AUROC by layer, eval split") for t in titles), titles
    assert any(t.startswith("Reliability diagram") for t in titles), titles
    spec = _fig(at, 0)
    assert any(tr.get("meta", {}).get("role") == "curve" for tr in spec["data"])
    at.slider(key="pr-layer").set_value(1).run()
    _no_exception(at)
    assert any("layer 1" in t for t in _titles(at))
    at.multiselect(key="pr-positions").set_value(["confidence"]).run()
    _no_exception(at)
    curves = [tr for tr in _fig(at, 0)["data"] if tr.get("meta", {}).get("role") == "curve"]
    assert [tr["name"] for tr in curves] == ["confidence"]


@pytest.mark.skipif(not HAVE_PROBES, reason="metacog/stages/probes.py is not in this build yet")
def test_probes_page_single_class(env):
    at = _open("probes", "tiny")
    assert any(t.startswith("Probe AUROC by layer, eval split") for t in _titles(at))


def test_probes_page_without_probes_says_run_first(env):
    at = _open("probes", "half")
    assert any("Run the study first" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_item_explorer_query_param(env):
    from metacog.core.workspace import Workspace

    items = Workspace(env / "workspaces" / "tiny-rich").read_parquet("items.parquet")
    item = items["id"].iloc[5]
    at = _open("items", "tiny-rich", item=item)
    assert at.selectbox(key="ie-item").value == item
    titles = _titles(at)
    assert any(t.startswith(f"0–100 confidence distribution, item {item}") for t in titles), titles
    assert any(t.startswith(f"Probe p(correct) by layer, item {item}") for t in titles), titles
    assert items.loc[5, "question"] in " ".join(m.value for m in at.markdown)
    # choosing another item updates the query param (so the URL can be shared)
    other = items["id"].iloc[7]
    at.selectbox(key="ie-item").set_value(other).run()
    _no_exception(at)
    assert at.query_params["item"] == other


def test_tables_link_to_the_item_explorer(env):
    at = _open("answers", "tiny-rich")
    items = [d.value for d in at.dataframe if "open" in d.value.columns]
    assert items, "the per-item table has an 'open' link column"
    link = items[0]["open"].iloc[0]
    assert link.startswith("Item_explorer?item=") and "&ws=tiny-rich" in link


def test_workspace_page_dataset_file_and_target(env, tmp_path):
    csv = tmp_path / "my_quiz.csv"
    csv.write_text("question,answer,category\n" + "".join(f"What is {i}+{i}?,{2 * i},sum\n" for i in range(30)))
    at = _open("workspace", "tiny-rich")
    at.selectbox(key="ds-kind-tiny-rich").set_value("file path").run()
    at.text_input(key="ds-path-tiny-rich").input(str(csv)).run()
    _no_exception(at)
    assert any("30 items" in c.value for c in at.caption)
    assert any("default-my_quiz-n24-s0" in c.value and "(new workspace)" in c.value for c in at.caption)
    at.text_input(key="ds-path-tiny-rich").input(str(tmp_path / "missing.csv")).run()
    assert not at.exception
    assert any("dataset" in e.value for e in at.error)


def test_item_explorer_unknown_item_warns(env):
    at = _open("items", "tiny", item="no-such-id")
    assert any("no-such-id" in w.value for w in at.warning)
    assert at.get("plotly_chart")  # falls back to the first item


def test_half_done_workspace_messages(env):
    at = _open("answers", "half")
    assert _titles(at)[0].startswith("Verbal confidence")
    assert any("activations" in i.value for i in at.info)
    at = _open("probes", "half")
    assert any("Run the study first" in i.value for i in at.info)
    at = _open("items", "half")
    assert any("Not cached" in i.value for i in at.info)


def test_missing_workspace_offers_default_study(app_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("METACOG_CACHE", str(tmp_path / "empty-cache"))
    at = _app()
    at.run()
    _no_exception(at)
    assert any("Run the default study" in b.label for b in at.button)
    for page in ("answers", "probes", "items"):
        at.switch_page(PAGES[page]).run()
        _no_exception(at)
        assert any("Run the study first" in i.value for i in at.info)


def test_run_study_button_runs_a_stage(env):
    from metacog.app import ui
    from metacog.core.workspace import Workspace

    target = env / "workspaces" / "run-here"
    Workspace(target).init(*_tiny_settings())  # an existing, empty workspace with tiny settings
    at = _open("workspace", "run-here")
    assert at.dataframe[0].value.set_index("stage").loc["answers", "status"] == "not run"
    at.multiselect(key="stages-run-here").set_value(["answers"]).run()
    _no_exception(at)
    at.button(key="run-study").click().run()
    job = ui.wait_job(target, timeout=120)
    assert job is not None and job.status == "done", (job and (job.status, job.error, job.tb))
    assert (target / "answers.parquet").exists()
    at.run()
    _no_exception(at)
    assert any("Study finished" in s.value for s in at.success)
    status = at.dataframe[0].value
    assert status.set_index("stage").loc["answers", "status"] == "done"
    # the other pages now show the new answers
    at.switch_page(PAGES["answers"]).run()
    _no_exception(at)
    assert _titles(at)[0].startswith("Verbal confidence, eval split")


def _tiny_settings():
    from metacog.core.settings import ModelSettings, StudySettings

    return ModelSettings(threads=1), StudySettings(**TINY_STUDY)


def _picker_script():
    import streamlit as st

    from metacog.app import ui

    st.markdown("current: " + ui.workspace_picker().root.name)


def test_ws_query_param_wins_over_the_session(env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_picker_script, default_timeout=60)
    at.query_params["ws"] = "tiny"
    at.run()
    _no_exception(at)
    assert at.markdown[0].value == "current: tiny"
    at.run()  # the session keeps its choice
    assert at.markdown[0].value == "current: tiny"
    at.query_params["ws"] = "tiny-rich"  # then the user follows a link to another workspace
    at.run()
    _no_exception(at)
    assert at.markdown[0].value == "current: tiny-rich"
    assert Path(at.selectbox(key="_ws_select").value).name == "tiny-rich"


@pytest.mark.skipif(not HAVE_PROBES, reason="metacog/stages/probes.py is not in this build yet")
def test_probes_page_shows_the_selection_null_and_small_sample_warning(env):
    from metacog.core.workspace import Workspace

    at = _open("probes", "tiny-rich")
    s = json.loads((env / "workspaces" / "tiny-rich" / "summary.json").read_text())
    sn = s["probes"]["best"]["selection_null"]
    warn = " ".join(w.value for w in at.warning)
    assert s["warnings"] and "Read these numbers with care" in warn
    assert f"only {s['n_eval']} items" in warn  # 24 items: a handful on eval, said in words
    assert any(m.label == "selection null p" and m.value == f"{sn['p']:.2f}" for m in at.metric)
    at.radio(key="pr-metric").set_value("cv_auroc").run()
    _no_exception(at)
    spec = _fig(at, 0)
    band = [tr for tr in spec["data"] if tr.get("meta", {}).get("role") == "selection_null"]
    assert len(band) == 1 and band[0]["meta"]["p95"] == pytest.approx(sn["p95"])
    assert band[0]["meta"]["mean"] == pytest.approx(sn["mean"])
    line = [tr for tr in spec["data"] if tr.get("meta", {}).get("role") == "selection_null_p95"]
    assert line and line[0]["y"][0] == pytest.approx(sn["p95"])
    assert Workspace(env / "workspaces" / "tiny-rich").read_json("probes/best.json")["selection_null"]["p"] == sn["p"]


@pytest.mark.parametrize("page", ["workspace", "answers", "probes", "items"])
def test_every_page_says_when_the_sample_is_small(env, page):
    """The tiny workspace's eval split has a handful of items: every page says so in words, and
    the Workspace page's headline numbers carry their n."""
    at = _open(page, "tiny-rich")
    assert any("Read these numbers with care" in w.value for w in at.warning), [w.value for w in at.warning]
    if page == "workspace":
        labels = [m.label for m in at.metric]
        assert any("AUROC" in lab and "n=" in lab for lab in labels), labels
        assert any("question-type prior" in lab for lab in labels), labels


# ----------------------------------------------------------------------------- no science in the app layer
def test_readout_metrics_on_eval_are_the_summary_numbers(env):
    """The Answers page's table (ui.readout_metrics) and the question-type prior (ui.type_prior_auroc)
    come from the functions behind summary.json: on the eval split they are its numbers exactly."""
    from metacog.app import ui
    from metacog.core.workspace import Workspace
    from metacog.stages.study import summarize

    ws = Workspace(env / "workspaces" / "tiny-rich")
    _, study = ws.settings()
    df = ui.results(ws)
    tbl = ui.readout_metrics(ui.split_frame(df, "eval"), n_bins=study.ece_bins, seed=study.seed).set_index("readout")
    s = summarize(ws)
    for mode in ("inline", "two-pass"):
        for name, blk in ((f"verbal {mode}", s["verbal"][mode]), (f"E[v] {mode}", s["distribution"][mode]["ev"]),
                          (f"argmax {mode}", s["distribution"][mode]["argmax"])):
            r = tbl.loc[name]
            np.testing.assert_equal([r.auroc, r.auroc_lo, r.auroc_hi, r.ece, r.brier, r.aurc, r.n, r.n_missing],
                                    [blk["auroc"], *blk["auroc_ci"], blk["ece"], blk["brier"], blk["aurc"], blk["n"], blk["n_missing"]])
            assert (r.L, r.verdict) == (blk["validity"]["L"], blk["validity"]["verdict"])
    assert np.isfinite(tbl.loc["verbal inline", "auroc"])  # tiny-rich has both classes: a number, not NaN
    assert ui.type_prior_auroc(df, "eval") == s["type_prior"]["auroc"]
    assert ui.type_prior_auroc(df, "train") is None  # in-sample on train: no baseline shown
