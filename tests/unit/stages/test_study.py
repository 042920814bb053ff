"""The study end to end on the tiny model, the CLI, and one real run on the embedded model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from metacog.cli import main as cli_main
from metacog.core.settings import ModelSettings, StudySettings
from metacog.stages.study import results_table, run_study
from metacog.core.workspace import Workspace

TINY = dict(limit=40, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=8, probe_folds=3, two_pass=True)


@pytest.fixture(scope="module")
def half_right_dataset(tmp_path_factory, tiny_lm):
    """A dataset on which the (deterministic) tiny model is right about half the time: run it
    once, then accept a word of its own answer as the alias for every other item."""
    from metacog.data import load_dataset
    from metacog.data.grading import normalize

    d = tmp_path_factory.mktemp("data")
    items = load_dataset("world-facts", limit=40, seed=0)
    probe = d / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": i, "question": q, "answers": ["zzzz"], "category": c}) + "\n"
                             for i, q, c in zip(items.id, items.question, items.category)))
    ws0 = tmp_path_factory.mktemp("ws0")
    run_study(ws0, ModelSettings(threads=1), StudySettings(dataset=str(probe), **TINY), lm=tiny_lm, stages=("answers",))
    ans = Workspace(ws0).read_parquet("answers.parquet").set_index("id")
    out = d / "half.jsonl"
    rows = []
    for k, (i, q, c) in enumerate(zip(items.id, items.question, items.category)):
        words = normalize(ans.loc[i, "answer"]).split()
        alias = words[0] if (k % 2 == 0 and words) else "zzzz"
        rows.append(json.dumps({"id": i, "question": q, "answers": [alias], "category": c}))
    out.write_text("\n".join(rows) + "\n")
    return str(out)


@pytest.fixture(scope="module")
def tiny_study(half_right_dataset):
    return StudySettings(dataset=half_right_dataset, **TINY)


@pytest.fixture(scope="module")
def tiny_summary(tmp_path_factory, tiny_lm, tiny_study):
    d = tmp_path_factory.mktemp("study")
    s = run_study(d, ModelSettings(threads=1), tiny_study, lm=tiny_lm)
    return d, s


def test_summary_has_every_promised_field(tiny_summary):
    d, s = tiny_summary
    for k in ("model", "dataset", "n_items", "accuracy", "splits", "verbal", "distribution", "probes"):
        assert k in s, k
    assert s["n_items"] == 40 and s["splits"]["disjoint"] is True
    assert 0.15 < s["accuracy"] < 0.85  # both classes present, so probes are fitted
    assert sum(s["splits"][k] for k in ("train", "calibration", "eval")) == 40
    for mode in ("inline", "two-pass"):
        v = s["verbal"][mode]
        for k in ("auroc", "ece", "brier", "ceiling_rate", "validity"):
            assert k in v
        assert "auroc" in s["distribution"][mode]
    ent = s["probes"]["entries"]
    ws = Workspace(d)
    n_hidden = ws.read_json("activations/manifest.json")["n_layers"]
    assert len(ent) == n_hidden * 4
    assert {"layer", "position", "auroc", "auroc_ci", "ece", "brier"} <= set(ent[0])
    assert s["probes"]["best"]["layer"] in range(n_hidden)
    on_disk = json.loads((d / "summary.json").read_text())
    assert on_disk["n_items"] == 40


def _walk(o, path=""):
    if isinstance(o, dict):
        for k, v in o.items():
            yield path + "/" + k, k, v, o
            yield from _walk(v, path + "/" + k)
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _walk(v, f"{path}[{i}]")


def test_every_metric_has_its_ci_and_every_ece_its_null(tiny_summary):
    d, s = tiny_summary
    n = 0
    for path, k, v, parent in _walk(s):
        if k in ("auroc", "ece", "brier", "aurc") and (v is None or isinstance(v, float)):
            assert f"{k}_ci" in parent, path
            ci = parent[f"{k}_ci"]
            assert isinstance(ci, list) and len(ci) == 2, path
            if v is not None and v == v and ci[0] is not None and ci[0] == ci[0] and k != "ece":
                assert ci[0] - 1e-9 <= v <= ci[1] + 1e-9, path
            if k == "ece":
                assert {"mean", "p95"} <= set(parent["ece_null"]), path
            n += 1
    # every probe entry (4 metrics) + verbal and E[v]/argmax blocks (2 modes x 3 x 4) + type prior + within-type
    assert n >= 4 * len(s["probes"]["entries"]) + 24 + 1 + len(s["within_type"]), n
    assert s["splits"]["group_disjoint"] is True and s["splits"]["n_groups"] == 40
    # 40 items -> 8 eval items: the summary says so in words
    assert isinstance(s["warnings"], list) and any("only 8 items" in w for w in s["warnings"]), s["warnings"]
    sn = s["probes"]["best"]["selection_null"]
    assert {"mean", "p95", "p", "n_perm"} <= set(sn) and sn["n_perm"] >= 50
    assert s["probes"]["best"]["reported_on"] == "eval"


def test_print_summary_shows_warnings_cis_and_the_selection_null(tiny_summary, capsys):
    from metacog.cli import print_summary

    d, s = tiny_summary
    print_summary(s, d)
    out = capsys.readouterr().out
    assert "WARNING" in out and "only 8 items" in out
    assert "group-disjoint=True" in out
    assert "selection null" in out and f"p={s['probes']['best']['selection_null']['p']:.2f}" in out
    assert "ECE" in out and "calibrated null" in out


def test_a_study_without_a_fitted_probe_says_so(tiny_summary, tmp_path, capsys):
    """The probes stage can run and fit none (one class in the train split): the study finished
    silently and only a later stage said why; the summary now warns, with the train counts."""
    import shutil

    from metacog.cli import print_summary
    from metacog.stages.study import summarize

    d, _ = tiny_summary
    shutil.copytree(d, tmp_path / "w")
    ws = Workspace(tmp_path / "w")
    ws.path("probes", "best.json").unlink()  # what the stage leaves when no probe could be fitted
    s = summarize(ws)
    w = [x for x in s["warnings"] if x.startswith("no probe could be fitted")]
    tr = results_table(ws).query("split == 'train'")
    assert len(w) == 1 and f"{int(tr['correct'].sum())} correct" in w[0]
    print_summary(s, ws.root)
    assert "WARNING: no probe could be fitted" in capsys.readouterr().out


def test_eval_metrics_use_eval_items_only(tiny_summary):
    d, s = tiny_summary
    df = results_table(Workspace(d))
    assert s["n_eval"] == int((df["split"] == "eval").sum())
    from metacog.stats import metrics

    ev = df[df["split"] == "eval"]
    a = metrics.auroc(ev["ev_inline"].to_numpy() / 100, ev["correct"].to_numpy())
    got = s["distribution"]["inline"]["ev"]["auroc"]
    assert (np.isnan(a) and got is None or np.isnan(got)) or got == pytest.approx(a)


def test_rerun_is_instant_and_changes_nothing(tiny_summary, tiny_lm, tiny_study):
    d, s = tiny_summary
    import time

    t = time.time()
    s2 = run_study(d, ModelSettings(threads=1), tiny_study, lm=tiny_lm)
    assert time.time() - t < 10
    assert s2["accuracy"] == s["accuracy"] and s2["probes"]["best"] == s["probes"]["best"]


def test_changed_setting_invalidates_downstream_only(tmp_path, tiny_lm, tiny_study):
    import dataclasses

    run_study(tmp_path, ModelSettings(threads=1), tiny_study, lm=tiny_lm)
    ws = Workspace(tmp_path)
    a0 = ws.stage_record("answers")["key"]
    p0 = ws.stage_record("probes")["key"]
    run_study(tmp_path, ModelSettings(threads=1), dataclasses.replace(tiny_study, probe_folds=4), lm=tiny_lm)
    assert ws.stage_record("answers")["key"] == a0  # answers kept
    assert ws.stage_record("probes")["key"] != p0  # probes refitted
    p1 = ws.stage_record("probes")["key"]
    run_study(tmp_path, ModelSettings(threads=1), dataclasses.replace(tiny_study, probe_folds=4, split_fractions=[0.5, 0.25, 0.25]),
              lm=tiny_lm)
    assert ws.stage_record("answers")["key"] == a0
    assert ws.stage_record("probes")["key"] != p1  # another train split: the probes are refitted on it


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["study", "--model", "no/such-model-here", "--limit", "20"], "hub"),
        (["study", "--dataset", "/no/such/file.jsonl", "--limit", "20"], "file.jsonl"),
        (["study", "--limit", "0"], "limit"),
        (["study", "--splits", "0.5,0.5"], "split"),
        (["study", "--splits", "0.5,0.6,-0.1"], "positive"),
        (["summary", "--workspace", "/no/such/ws"], "not a metacog workspace"),
    ],
)
def test_cli_bad_input_is_one_clear_message(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if argv[0] == "study":
        argv = argv + ["--workspace", str(tmp_path / "ws"), "--quiet"]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err and msg.lower() in err.lower()
    assert "Traceback" not in err


def test_cli_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "metacog.cli", "study", "--help"], capture_output=True, text=True).stdout
    for flag in ("--model", "--dataset", "--limit", "--seed", "--workspace", "--device", "--dtype", "--threads", "--trust-remote-code"):
        assert flag in out


@pytest.mark.e2e
def test_real_model_study(real_study):
    """The embedded model, a few dozen items, every stage, through the CLI (the session's shared
    real study, see conftest.real_study)."""
    ws = real_study
    s = json.loads((ws / "summary.json").read_text())
    assert s["model"]["name"] == "SmolLM2-135M-Instruct" and s["n_items"] == 32
    assert s["splits"]["disjoint"] is True and sum(s["splits"][k] for k in ("train", "calibration", "eval")) == 32
    assert 0.0 < s["accuracy"] < 1.0
    # the model answers questions (not "100%: 100% is the answer.")
    df = results_table(Workspace(ws))
    assert df["answer"].str.len().gt(0).mean() > 0.9
    # verbal confidence is saturated: most parsed values are at the ceiling
    assert s["verbal"]["inline"]["ceiling_rate"] > 0.5
    # the exact 0-100 distribution is a distribution
    dist = np.load(ws / "activations" / "values_inline.npy")
    np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-6)
    assert len(s["probes"]["entries"]) == 31 * 3  # two-pass off: the three inline positions


def test_default_study_computes_inline_only_and_says_so(tmp_path, tiny_lm, tiny_study, tiny_summary, capsys):
    """two_pass off (the default): no two-pass columns or distribution anywhere, one message
    wherever they would be read, and everything it does compute equals the two-pass run's.
    The two-pass sequence is not run at all: no confidence_2p state, no probe there, and a
    clear line where a later stage asks for it."""
    import dataclasses

    from metacog.stages.activations import load_distributions
    from metacog.cli import print_summary
    from metacog.methods import MethodSettings, run_methods
    from metacog.core.settings import TWO_PASS_OFF
    from metacog.core.workspace import WorkspaceError
    from metacog.app import ui

    d_on, s_on = tiny_summary
    off = dataclasses.replace(tiny_study, two_pass=False)
    s = run_study(tmp_path, ModelSettings(threads=1), off, lm=tiny_lm)
    ws, ws_on = Workspace(tmp_path), Workspace(d_on)
    assert ws.settings()[1].two_pass is False  # recorded in workspace.json
    assert s["modes"] == ["inline"] and s["not_computed"] == {"two-pass": TWO_PASS_OFF}
    assert set(s["verbal"]) == {"inline"} and set(s["distribution"]) == {"inline"}
    np.testing.assert_equal(s["verbal"]["inline"], s_on["verbal"]["inline"])
    ro = ws.read_parquet("readout.parquet")
    ro_on = ws_on.read_parquet("readout.parquet")
    np.testing.assert_allclose(ro["ev_inline"], ro_on["ev_inline"], rtol=1e-9)  # the same inline readout
    assert s["distribution"]["inline"]["ev"]["auroc"] == pytest.approx(s_on["distribution"]["inline"]["ev"]["auroc"], nan_ok=True)
    assert not [c for c in ro.columns if c.endswith("_two_pass")] and "unresolved_inline" in ro
    assert not ws.path("activations", "values_two_pass.npy").exists()
    from metacog.core.settings import INLINE_POSITIONS, POSITIONS
    from metacog.finetune import FinetuneSettings, build_targets
    from metacog.finetune.targets import TargetError
    from metacog.stages.study import position_index, probe_positions

    assert not ws.path("activations", "confidence_2p.npy").exists()
    assert ws.read_json("activations/manifest.json")["positions"] == list(INLINE_POSITIONS)
    assert ws_on.read_json("activations/manifest.json")["positions"] == list(POSITIONS)
    for p in INLINE_POSITIONS:  # the same inline states, within the batch-invariance rule (1e-3 of each vector's scale)
        st_off = np.load(ws.path("activations", f"{p}.npy")).astype(np.float32)
        st_on = np.load(ws_on.path("activations", f"{p}.npy")).astype(np.float32)
        assert np.abs(st_off).max() > 0
        assert (np.abs(st_off - st_on) <= 1e-3 * np.abs(st_on).max(-1, keepdims=True) + 1e-6).all()
    # probes at the three inline positions; the position axis says so wherever it is read
    oof, oof_on = np.load(ws.path("probes", "oof.npy")), np.load(ws_on.path("probes", "oof.npy"))
    assert probe_positions(ws, oof) == list(INLINE_POSITIONS) and probe_positions(ws_on, oof_on) == list(POSITIONS)
    assert set(ws.read_parquet("probes/metrics.parquet")["position"]) == set(INLINE_POSITIONS)
    assert np.load(ws.path("probes", "coef.npy")).shape[1] == 3
    assert len(s["probes"]["entries"]) == oof.shape[1] * 3
    with pytest.raises(WorkspaceError, match="'confidence_2p' was not probed.*two-pass not computed"):
        position_index(ws, "confidence_2p")
    with pytest.raises(TargetError, match="confidence_2p.*two-pass not computed"):
        build_targets(ws, FinetuneSettings(probe_position="confidence_2p", probe_layer=1))
    if s["probes"].get("best"):  # the best probe's p, read at its own index
        b = s["probes"]["best"]
        np.testing.assert_array_equal(results_table(ws)["probe_p"].to_numpy(),
                                      oof[results_table(ws)["row"].to_numpy(), b["layer"], position_index(ws, b["position"])])
    with pytest.raises(WorkspaceError, match="two-pass not computed"):
        load_distributions(ws, "two-pass")
    df = results_table(ws)
    assert set(ui.mode_keys(df)) == {"inline"} and ui.two_pass_note(df).startswith("Two-pass not computed")
    assert not [k for k in ui.readouts(df) if "two-pass" in k]
    assert set(ui.item_distributions(ws, 0)) == {"inline"}
    print_summary(s)
    assert f"two-pass: {TWO_PASS_OFF}" in capsys.readouterr().out
    status = run_methods(ws, ["verbal_two_pass", "ev_two_pass", "verbal_inline"], MethodSettings(eval_limit=8, calibration_limit=8))
    assert status["verbal_inline"] == "computed"
    for m in ("verbal_two_pass", "ev_two_pass"):  # not computed here is not a failure: skipped, with why
        assert status[m] == f"skipped: {TWO_PASS_OFF}"
        assert not ws.path("methods", m).exists()
    # the CLI's status lines say so and its exit code is 0; a compute that still reaches the
    # missing columns (no skip) fails with the same line
    from metacog.cli import main as cli_main
    from metacog.methods import get as get_method
    from metacog.methods.run import make_context

    assert cli_main(["methods", "--workspace", str(ws.root), "--methods", "verbal_two_pass,verbal_inline", "--eval-limit", "8",
                     "--calibration-limit", "8", "--quiet", "--no-posthoc"]) == 0
    err = capsys.readouterr().err
    assert f"verbal_two_pass      skipped: {TWO_PASS_OFF}" in err and "failed" not in err
    with pytest.raises(WorkspaceError, match=TWO_PASS_OFF.replace("(", r"\(").replace(")", r"\)")):
        get_method("ev_two_pass").compute(make_context(ws, MethodSettings(eval_limit=8, calibration_limit=8)))


def test_turning_two_pass_off_and_on_in_one_workspace_rebuilds_the_positions(tmp_path, tiny_lm, tiny_study, tiny_summary):
    """A workspace's cached and probed positions follow its study's two_pass: turned off, the
    two-pass state file goes and the probes have the three inline positions; turned on again,
    the fourth comes back. Every reader agrees with the arrays at each step (verify_lineage,
    probe_positions, results_table), and a probe read at an inline position is the same either way."""
    import dataclasses
    import shutil

    from metacog.core.settings import INLINE_POSITIONS, POSITIONS, TWO_PASS_OFF
    from metacog.stages.study import position_index, probe_positions, verify_lineage, load_items

    from metacog.app import ui
    from metacog.core.workspace import WorkspaceError
    from metacog.methods import MethodSettings, methods_table, run_methods, stale_methods, stored_methods
    from metacog.stages.activations import load_distributions

    d_on, _ = tiny_summary
    shutil.copytree(d_on, tmp_path / "w")
    ws = Workspace(tmp_path / "w")
    oof_on = np.load(ws.path("probes", "oof.npy"))
    ms = MethodSettings(eval_limit=8, calibration_limit=8)
    assert set(run_methods(ws, ["verbal_two_pass", "verbal_inline"], ms).values()) == {"computed"}
    for two_pass, want in ((False, list(INLINE_POSITIONS)), (True, list(POSITIONS))):
        run_study(ws.root, ModelSettings(threads=1), dataclasses.replace(tiny_study, two_pass=two_pass), lm=tiny_lm)
        verify_lineage(ws, load_items(ws, verify=False))
        oof = np.load(ws.path("probes", "oof.npy"))
        assert ws.read_json("activations/manifest.json")["positions"] == want
        assert probe_positions(ws, oof) == want and oof.shape[2] == len(want)
        for f in ("confidence_2p.npy", "values_two_pass.npy", "lookahead_two_pass.npy"):  # no two-pass file outlives its study
            assert ws.path("activations", f).exists() is two_pass, f
        assert set(ui.item_distributions(ws, 0)) == ({"inline", "two-pass"} if two_pass else {"inline"})
        assert len(results_table(ws)) == 40
        if not two_pass:
            with pytest.raises(WorkspaceError, match="two-pass not computed"):
                load_distributions(ws, "two-pass")
            # the methods scored on the two-pass study's answers are stale: kept, never joined with these answers
            assert stored_methods(ws) == [] and stale_methods(ws) == ["verbal_inline", "verbal_two_pass"]
            t = methods_table(ws, n_boot=20)
            assert t["note"].str.startswith("stale:").all() and t["auroc"].isna().all()
            notes = dict(zip(t["method"], t["note"]))  # the fix that works for each: rerun it, or turn two-pass on
            assert notes["verbal_two_pass"].endswith(TWO_PASS_OFF)
            assert notes["verbal_inline"].endswith(f"metacog methods --workspace {ws.root} --methods verbal_inline`")
            ws.write_json("methods/verbal_inline/error.json", {"error": "an earlier attempt"})
            run_methods(ws, ["verbal_inline"], ms)
            assert not ws.path("methods", "verbal_inline", "error.json").exists()  # that failure is not this result's
            assert stored_methods(ws) == ["verbal_inline"] and stale_methods(ws) == ["verbal_two_pass"]
        # the same probe at an inline position, whatever else was probed beside it
        i, j = position_index(ws, "confidence"), list(POSITIONS).index("confidence")
        np.testing.assert_allclose(oof[:, :, i], oof_on[:, :, j], atol=1e-4, equal_nan=True)
