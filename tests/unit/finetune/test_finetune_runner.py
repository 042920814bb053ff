"""Background runs: detached process, live status and log, serialised launches, a run
killed with SIGKILL resumes to the same adapter, cancel, and the CLI."""
from __future__ import annotations

import json
import os
import signal
import time

import torch

from finetune_helpers import tiny_lm_fixture, tiny_ws_fixture

from metacog.finetune import FinetuneSettings, cancel, create_run, execute, launch, list_runs
from metacog.finetune.runs import get_run, pid_alive

FAST = dict(batch_size=4, grad_accum=1, lr=5e-3, checkpoint_every=2, val_fraction=0.1)


lm = tiny_lm_fixture("r")
ws = tiny_ws_fixture("r", 60)


def _wait(pred, timeout=180.0, every=0.1):
    t = time.time()
    while time.time() - t < timeout:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run.adapter_dir / "adapter_model.safetensors"))


def test_background_runs_serialise_survive_sigkill_and_resume(ws, lm, monkeypatch):
    from metacog.finetune.runner import DELAY_ENV

    monkeypatch.setenv(DELAY_ENV, "0.3")  # slow the tiny model's updates down so we can watch and kill
    long = FinetuneSettings(epochs=3, dropout=0.1, **FAST)  # 8 updates/epoch -> 24 updates
    short = FinetuneSettings(epochs=1, **FAST)
    a = launch(ws, long, name="long")
    # a takes the workspace's fine-tune lock; b, launched meanwhile, waits for it
    _wait(lambda: get_run(ws, a.id).status().get("updates_run", 0) >= 1 and get_run(ws, a.id).status()["status"] == "running")
    b = launch(ws, short, name="short")
    _wait(lambda: get_run(ws, b.id).status().get("message", "").startswith("queued"))
    assert get_run(ws, b.id).status()["status"] == "queued"
    reg = list_runs(ws).set_index("run")
    assert reg.loc[a.id, "status"] == "running" and reg.loc[b.id, "status"] == "queued"
    # live log while it runs
    _wait(lambda: get_run(ws, a.id).status().get("updates_run", 0) >= 5)
    st = get_run(ws, a.id).status()
    assert time.time() - st["heartbeat"] < 30
    assert len(a.read_log().query("kind == 'train'")) >= 5
    # kill -9: no chance to clean up
    os.kill(st["pid"], signal.SIGKILL)
    _wait(lambda: not pid_alive(st["pid"], st.get("pid_start")))
    _wait(lambda: list_runs(ws).set_index("run").loc[a.id, "status"] == "interrupted")
    # the queued run gets the lock once the killed process is gone, and finishes
    _wait(lambda: get_run(ws, b.id).status()["status"] == "done")
    la, lb = a.read_log(), b.read_log()
    assert la["time"].max() < lb.query("kind == 'train'")["time"].min()  # never interleaved
    # resume the killed run (in this process), compare with an uninterrupted run
    monkeypatch.delenv(DELAY_ENV)
    done_before = get_run(ws, a.id).status()["updates_run"]
    st = execute(ws, a.id, lm=lm)
    assert st["status"] == "done" and st["updates_run"] == 24 > done_before
    ref = create_run(ws, long, name="long-ref")
    execute(ws, ref.id, lm=lm)
    wa, wr = _adapter(a), _adapter(ref)
    for k in wr:
        assert torch.equal(wa[k], wr[k]), k
    assert a.read_log().query("kind == 'train'")["update"].tolist() == list(range(1, 25))
    assert "runner pid" in a.file("runner.log").read_text()


def test_cancel_a_background_run(ws, monkeypatch):
    from metacog.finetune.runner import DELAY_ENV

    monkeypatch.setenv(DELAY_ENV, "0.3")
    run = launch(ws, FinetuneSettings(epochs=40, **FAST), name="to-cancel")
    _wait(lambda: get_run(ws, run.id).status().get("updates_run", 0) >= 2)
    msg = cancel(ws, run.id)
    assert "asked process" in msg
    _wait(lambda: get_run(ws, run.id).status()["status"] == "cancelled")
    st = get_run(ws, run.id).status()
    assert "cancelled after" in st["message"] and st["updates_run"] < 320
    assert list_runs(ws).set_index("run").loc[run.id, "status"] == "cancelled"


def test_cli(ws, capsys, tmp_path):
    from metacog.cli import main

    assert main(["finetune", "--workspace", str(ws.root), "--targets", "shuffled", "--max-updates", "2", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["updates_planned"] == 2 and out["targets"]["kind"] == "shuffled"
    assert main(["finetune", "--workspace", str(ws.root), "--rank", "0"]) == 2
    assert "rank must be a positive integer" in capsys.readouterr().err
    assert main(["finetune", "--workspace", str(ws.root), "--max-updates", "100000"]) == 2
    assert "more than the data allows" in capsys.readouterr().err
    rc = main(["finetune", "--workspace", str(ws.root), "--targets", "binary", "--max-updates", "2", "--batch-size", "4",
               "--grad-accum", "1", "--threads", "1", "--quiet", "--name", "cli", "--evaluate", "--eval-limit", "10"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "done" in out and "eval split, n=10" in out
    assert main(["runs", "--workspace", str(ws.root)]) == 0
    assert "binary" in capsys.readouterr().out
    assert main(["evaluate", "--workspace", str(ws.root), "--run", "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err

    # an adapter made on another base model is refused before any work
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_llama, make_tokenizer

    other = get_peft_model(make_tiny_llama(make_tokenizer(), d=48), LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    other.save_pretrained(str(tmp_path / "other-adapter"))
    assert main(["evaluate", "--workspace", str(ws.root), "--adapter", str(tmp_path / "other-adapter")]) == 2
    assert "another base model" in capsys.readouterr().err
    # a run's adapter, evaluated as an external one
    from metacog.finetune.runs import list_runs as _lr

    rid = _lr(ws).query("targets == 'binary'")["run"].iloc[0]
    assert main(["evaluate", "--workspace", str(ws.root), "--adapter", str(ws.path("runs", rid, "adapter")), "--limit", "10",
                 "--threads", "1", "--quiet"]) == 0
    assert "eval split, n=10" in capsys.readouterr().out
    assert ws.path("adapter_evals", "adapter", "eval.json").exists()


def test_an_evaluation_that_cannot_finish_is_refused_before_training_or_loading(ws, lm, capsys, monkeypatch, tmp_path):
    """In a study without the two-pass readouts (or without the probe position a run was
    trained on) an evaluation could not finish: `finetune --evaluate` refuses it before a run is
    created, `evaluate` before the model loads; and an evaluation that fails after a finished
    training leaves the run done (eval_status failed, the message without a class name)."""
    import shutil

    import numpy as np

    from metacog.cli import main
    from metacog.core.settings import TWO_PASS_OFF
    from metacog.core.workspace import Workspace, WorkspaceError
    from metacog.finetune import runner
    from metacog.stages.study import save_probes

    shutil.copytree(ws.root, tmp_path / "w")
    w = Workspace(tmp_path / "w")
    # a run trained (as far as its record goes) on the confidence_2p probe, then the study loses two-pass
    run = create_run(w, FinetuneSettings(targets="probe", probe_position="confidence_2p", max_updates=2, **FAST), name="p2")
    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    ans = w.read_parquet("answers.parquet")
    w.write_parquet("answers.parquet", ans.drop(columns=[c for c in ans.columns if "two_pass" in c]),
                    lineage=w.lineage("answers.parquet"))
    lin = w.lineage("probes/metrics.parquet")
    oof = np.load(w.path("probes", "oof.npy"))[:, :, :3]
    save_probes(w, w.read_parquet("probes/metrics.parquet"), oof, {"layer": 1, "position": "confidence", "cv_auroc": 0.7},
                lin["key"], lin["activations"], positions=["last_prompt", "last_answer", "confidence"])
    monkeypatch.setattr(type(run), "has_adapter", lambda self: True)
    loads = []
    monkeypatch.setattr(runner, "_load_lm", lambda *a, **k: loads.append(1) or lm)

    n_runs = len(list_runs(w))
    assert main(["finetune", "--workspace", str(w.root), "--format", "two-pass", "--max-updates", "2", "--evaluate",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert TWO_PASS_OFF in err and len(err.strip().splitlines()) == 1
    assert len(list_runs(w)) == n_runs  # no run created, nothing trained
    assert main(["evaluate", "--workspace", str(w.root), "--run", run.id, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trained on the probe at confidence_2p" in err and TWO_PASS_OFF in err and not loads
    assert get_run(w, run.id).status().get("eval_status") != "failed"  # a refusal is not a failed evaluation

    # an evaluation failing after the training: the run is done, its evaluation failed
    import metacog.finetune.evaluate as ev

    def boom(*a, **k):
        raise WorkspaceError("the eval split has no items left")

    monkeypatch.setattr(ev, "evaluate_run", boom)
    ok = create_run(w, FinetuneSettings(targets="binary", max_updates=2, **FAST), name="ok")
    try:
        execute(w, ok.id, lm=lm, evaluate_after=True)
    except WorkspaceError:
        pass
    st = get_run(w, ok.id).status()
    assert (st["status"], st["phase"], st["eval_status"]) == ("done", "trained", "failed"), st
    assert st["eval_error"] == "the eval split has no items left"
