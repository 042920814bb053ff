"""Fine-tuning runs as a lab manages them: a launch is idempotent (a double click starts one run),
runs can be tagged, annotated and deleted (never while alive), labels keep what tells runs
apart, and the before/after scatter does not hide tied items."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune_helpers import build_workspace, load_tiny, save_tiny_model

from metacog.finetune import FinetuneSettings, runner
from metacog.finetune.runs import RunError, delete_run, get_run, list_runs, run_label, this_process


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    torch.set_num_threads(1)
    lm = load_tiny(save_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))
    return build_workspace(tmp_path_factory.mktemp("ws") / "w", lm, n=40)


def test_double_launch_starts_one_run(ws, monkeypatch):
    spawned = []

    def fake_spawn(run, **kw):  # the run's process "is alive": this one
        spawned.append(run.id)
        run.set_status(status="queued", **this_process())

    monkeypatch.setattr(runner, "spawn", fake_spawn)
    s = FinetuneSettings(epochs=1, seed=7)
    a = runner.launch(ws, s)
    b = runner.launch(ws, s)  # the second click, while the first is queued
    assert a.id == b.id and spawned == [a.id]
    c = runner.launch(ws, s.replace(seed=8))  # other settings: a new run
    assert c.id != a.id and spawned == [a.id, c.id]
    # alive runs cannot be deleted; once ended they can
    with pytest.raises(RunError, match="cancel it"):
        delete_run(ws, a.id)
    for r in (a, c):
        r.set_status(status="cancelled", pid=None)
    delete_run(ws, a.id)
    assert a.id not in list_runs(ws)["run"].tolist()
    # and a launch after it ended makes a new run (nothing left to be idempotent with; its id may
    # reuse the deleted one's within the same second)
    d = runner.launch(ws, s)
    assert len(spawned) == 3 and spawned[-1] == d.id and get_run(ws, d.id).exists


def test_tags_and_notes(ws):
    s = FinetuneSettings(epochs=1, seed=11)
    run = runner.create_run(ws, s)
    run.annotate(["baseline", " lr-sweep ", "baseline"], "first try")
    reg = list_runs(ws).set_index("run")
    assert reg.loc[run.id, "tags"] == "baseline, lr-sweep" and reg.loc[run.id, "note"] == "first try"
    assert reg.loc[run.id, "seed"] == 11 and reg.loc[run.id, "rank"] == s.rank
    with pytest.raises(ValueError):
        run.annotate(note="x" * 10_001)
    assert get_run(ws, run.id).notes()["note"] == "first try"


def test_run_label_is_never_cut():
    assert run_label("20261129-205727-probe-inline-s42", "probe") == "probe · 20:57:27 probe-inline-s42"
    assert run_label("custom") == "custom"


def test_shift_scatter_sizes_tied_items():
    from metacog.finetune.plots import shift_scatter

    before = np.array([100.0] * 9 + [50, 60, 70])
    after = np.array([90.0] * 9 + [40, 60, 80])
    fig = shift_scatter(before, after, np.ones(12, bool), split="eval", model="m", ids=[f"q{i}" for i in range(12)])
    tr = [t for t in fig.data if (t.meta or {}).get("role") == "items" and len(t.x)][0]
    counts = [int(c[0]) for c in tr.customdata]
    assert sorted(counts) == [1, 1, 1, 9] and sum(counts) == 12
    sizes = np.asarray(tr.marker.size)
    assert sizes[counts.index(9)] > sizes[counts.index(1)]


def test_probes_ran_but_none_fitted_is_said_plainly(tmp_path, tiny_lm):
    from metacog.finetune import FinetuneSettings, TargetError, build_targets
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study
    from metacog.core.workspace import Workspace

    root = tmp_path / "w"
    run_study(root, ModelSettings(threads=1), StudySettings(dataset="world-facts", limit=20, max_new_tokens=4,
                                                            confidence_max_new_tokens=4, batch_size=8, probe_folds=3),
              lm=tiny_lm)  # the tiny model answers nothing right: one class
    with pytest.raises(TargetError, match=r"no probe could be fitted \(train split: 0 correct"):
        build_targets(Workspace(root), FinetuneSettings())


def test_evaluation_records_its_item_count(ws):
    """While a run is evaluated, its status says how many items are done (the page shows it)."""
    from metacog.finetune.runner import _eval_progress

    run = runner.create_run(ws, FinetuneSettings(epochs=1, seed=21))
    seen = []
    cb = _eval_progress(run, lambda d, t, m="": seen.append((d, t)), every_s=0.0)
    cb(3, 12, "answering")
    st = get_run(ws, run.id).status()
    assert (st["eval_done"], st["eval_total"], st["eval_message"]) == (3, 12, "answering") and seen == [(3, 12)]
