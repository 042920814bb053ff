"""Sweeps on a tiny random Llama saved to disk (the workers load it from its directory):
expansion and settings hash, skip-completed, a killed worker and the relaunch that finishes only
what is missing, local vs Ray executors give identical artifacts, a Ray address that does not
answer, two sweeps on one workspace, the CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from finetune_helpers import tiny_model_and_workspace

TINY = dict(epochs=1, batch_size=4, grad_accum=2, lr=1e-4, checkpoint_every=1)


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_model_and_workspace(tmp_path_factory.mktemp("sweep-cache"), "base")[0].root


@pytest.fixture
def ws(tiny_ws, tmp_path):
    from metacog.core.workspace import Workspace

    dst = tmp_path / "ws"
    shutil.copytree(tiny_ws, dst, ignore=shutil.ignore_patterns("runs", "sweeps", ".lock-*"))
    return Workspace(dst)


def _sweep(seeds=(1, 2), **kw):
    from metacog.finetune import FinetuneSettings
    from metacog.sweeps import SweepSettings

    return SweepSettings(base=FinetuneSettings(**{**TINY, **kw}), seeds=seeds, threads=1)


def _run_dirs(ws):
    return sorted(p.name for p in ws.path("runs").iterdir()) if ws.path("runs").exists() else []


def _adapter_bytes(ws, run):
    return (ws.path("runs", run, "adapter", "adapter_model.safetensors")).read_bytes()


# ------------------------------------------------------------------------------ expansion
def test_local_workers_import_this_checkout(tmp_path):
    """``python -m metacog.sweeps worker`` runs with the repository root (the directory holding
    metacog/) first on PYTHONPATH, wherever the executor module sits inside the package."""
    import metacog
    from metacog.sweeps import LocalExecutor

    first = Path(LocalExecutor(1, 2, tmp_path)._env()["PYTHONPATH"].split(os.pathsep)[0])
    assert first == Path(metacog.__file__).resolve().parents[1]
    assert (first / "metacog" / "sweeps" / "__main__.py").is_file()


def test_expand_and_settings_hash(tmp_path):
    from metacog.finetune import FinetuneSettings, SettingsError
    from metacog.sweeps import SweepError, SweepSettings, expand, worker_budget

    base = FinetuneSettings(epochs=2, lr=1e-4)
    s = SweepSettings(base=base, seeds=(42, 123, 456), targets=("probe", "shuffled"), lrs=(1e-4, 3e-4),
                      workspaces=(str(tmp_path / "other"),))
    specs = expand(tmp_path / "home", s)
    assert len(specs) == 3 * 2 * 2 * 2
    assert specs[0].workspace == str((tmp_path / "home").resolve())  # the home workspace first, seeds vary fastest
    assert [x.settings.seed for x in specs[:3]] == [42, 123, 456]
    for x in specs:  # the hash is the run's own settings hash (what create_run records as settings_key)
        assert x.key == base.replace(seed=x.settings.seed, targets=x.settings.targets, lr=x.settings.lr).key()
        assert x.settings.epochs == 2
    assert len({(x.workspace, x.key) for x in specs}) == len(specs)
    assert len({x.key for x in specs}) == len(specs) // 2  # same settings in two workspaces: same hash
    # the sweep's own key: stable, and changes with what it covers
    assert s.key(tmp_path) == SweepSettings.from_dict(json.loads(json.dumps(s.to_dict()))).key(tmp_path)
    assert s.key(tmp_path) != SweepSettings(base=base, seeds=(42, 123), targets=("probe", "shuffled"), lrs=(1e-4, 3e-4),
                                            workspaces=s.workspaces).key(tmp_path)
    # absurd sweeps are refused with a message
    for bad, msg in [(dict(seeds=()), "at least one seed"), (dict(seeds=(1, 1)), "listed twice"), (dict(seeds=(-1,)), "non-negative"),
                     (dict(targets=("nonsense",)), "targets must be"), (dict(lrs=(0.0,)), "learning rate"),
                     (dict(eval_limit=3), "at least 10"), (dict(threads=0), "threads")]:
        with pytest.raises(SettingsError, match=msg):
            SweepSettings(base=base, **{"seeds": (1,), **bad})
    # workers x threads <= cores
    assert worker_budget("local", None, 1, 3, cores=2) == 2
    assert worker_budget("local", None, 2, 3, cores=2) == 1
    assert worker_budget("local", None, 1, 1, cores=8) == 1
    with pytest.raises(SweepError, match="fight over cores"):
        worker_budget("local", 4, 1, 4, cores=2)
    with pytest.raises(SweepError, match="more than the 2 cores"):
        worker_budget("local", None, 4, 1, cores=2)
    assert worker_budget("ray", 4, 1, 4, cores=2) == 4  # a cluster may have more cores than this machine


# ------------------------------------------------------------------------------ run, skip
def test_sweep_runs_evaluates_records_and_skips_completed(ws):
    from metacog.stages.study import load_items
    from metacog.sweeps import list_sweeps, run_sweep

    s = _sweep()
    rec = run_sweep(ws.root, s, workers=1, quiet=True)
    assert rec["status"] == "done", rec
    assert [e["action"] for e in rec["runs"]] == ["train", "train"]
    assert [e["status"] for e in rec["runs"]] == ["done", "done"]
    disk = json.loads(ws.path("sweeps", rec["id"], "sweep.json").read_text())
    assert disk["runs"] == rec["runs"] and disk["settings"]["seeds"] == [1, 2]
    items = load_items(ws).set_index("id")
    for e in rec["runs"]:
        assert e["headline"]["accuracy_ft"] is not None and e["headline"]["ev_auroc_ft"] is not None
        assert e["headline"]["n_eval"] == int((items["split"] == "eval").sum())
        run = ws.path("runs", e["run"])
        st = json.loads((run / "status.json").read_text())
        assert st["status"] == "done" and st["eval_status"] == "done" and st["updates_run"] == st["updates_planned"]
        assert json.loads((run / "settings.json").read_text())["settings_key"] == e["key"]
        assert json.loads((run / "settings.json").read_text())["model"]["threads"] == 1
        # no eval item leaks into the training targets; evaluation is only on eval items
        tids = [json.loads(x)["id"] for x in (run / "targets.jsonl").read_text().splitlines() if x.strip()]
        assert set(items.loc[tids, "split"]) == {"train"}
        import pandas as pd

        per = pd.read_parquet(run / "per_item.parquet")
        assert set(items.loc[per["id"], "split"]) == {"eval"}
    before = _run_dirs(ws)
    stamps = {e["run"]: _adapter_bytes(ws, e["run"]) for e in rec["runs"]}
    t0 = time.time()
    rec2 = run_sweep(ws.root, s, workers=1, quiet=True)
    assert time.time() - t0 < 10  # nothing is run again
    assert [e["action"] for e in rec2["runs"]] == ["skip", "skip"] and rec2["status"] == "done"
    assert [e["run"] for e in rec2["runs"]] == [e["run"] for e in rec["runs"]]
    assert rec2["runs"][0]["headline"] == rec["runs"][0]["headline"]
    assert _run_dirs(ws) == before and {r: _adapter_bytes(ws, r) for r in stamps} == stamps
    assert len(rec2["history"]) == 2
    # one more seed: only the new one is trained
    rec3 = run_sweep(ws.root, _sweep(seeds=(1, 2, 3)), workers=1, quiet=True, dry_run=True)
    assert [e["action"] for e in rec3["runs"]] == ["skip", "skip", "train"]
    assert rec3["status"] == "planned" and len(list_sweeps(ws)) == 1  # a dry run writes nothing
    assert _run_dirs(ws) == before


# ------------------------------------------------------------------------------ faults
def test_killed_worker_is_reported_and_relaunch_finishes_only_what_is_missing(ws, monkeypatch):
    from metacog.sweeps import run_sweep

    s = _sweep(epochs=2)
    monkeypatch.setenv("METACOG_FT_UPDATE_DELAY", "1.5")  # the worker processes inherit it
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("rec", run_sweep(ws.root, s, workers=1, quiet=True)))
    th.start()
    rec_file = None
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and killed is None:
        time.sleep(0.3)
        sw = list(ws.path("sweeps").glob("*/sweep.json")) if ws.path("sweeps").exists() else []
        if not sw:
            continue
        rec_file = sw[0]
        try:
            e0 = json.loads(rec_file.read_text())["runs"][0]
        except (json.JSONDecodeError, KeyError, IndexError):
            continue
        if e0.get("status") != "running" or not e0.get("pid"):
            continue
        st = json.loads(ws.path("runs", e0["run"], "status.json").read_text())
        if st.get("updates_run", 0) >= 2 and list(ws.path("runs", e0["run"], "checkpoints").glob("step-*")):
            os.kill(e0["pid"], signal.SIGKILL)
            killed = (e0["run"], st["updates_run"])
    assert killed, "the first run never reached its second update"
    th.join(timeout=300)
    rec = out["rec"]
    assert rec["status"] == "incomplete"
    e0, e1 = rec["runs"]
    assert e0["status"] == "interrupted" and "SIGKILL" in e0["error"] and "re-launch" in e0["error"]
    assert e1["status"] == "done"  # the others go on
    done_bytes = _adapter_bytes(ws, e1["run"])
    monkeypatch.delenv("METACOG_FT_UPDATE_DELAY")
    runs_before = _run_dirs(ws)
    rec2 = run_sweep(ws.root, s, workers=1, quiet=True)
    assert [e["action"] for e in rec2["runs"]] == ["resume", "skip"], rec2["runs"]
    assert rec2["status"] == "done" and rec2["runs"][0]["run"] == killed[0]
    assert _run_dirs(ws) == runs_before  # no new run: the killed one was resumed
    assert _adapter_bytes(ws, e1["run"]) == done_bytes  # the finished one was not touched
    log = [json.loads(x) for x in ws.path("runs", killed[0], "log.jsonl").read_text().splitlines() if x.strip()]
    ups = [r["update"] for r in log if r.get("kind") == "train"]
    assert ups == sorted(set(ups)) and ups[-1] == json.loads(ws.path("runs", killed[0], "status.json").read_text())["updates_planned"]
    assert 1 <= rec2["runs"][0]["resumed_from"] <= killed[1]  # from its checkpoint, not from scratch
    worker_log = ws.path("sweeps", rec2["id"], "logs", f"{killed[0]}.log").read_text()
    assert f"from its checkpoint at update {rec2['runs'][0]['resumed_from']}" in worker_log


def test_two_sweeps_on_one_workspace_are_refused(ws):
    from metacog.sweeps import SweepError, run_sweep

    with ws.lock("sweep"):
        with pytest.raises(SweepError, match="another sweep is running"):
            run_sweep(ws.root, _sweep(), quiet=True)
    with ws.lock("finetune"):
        with pytest.raises(SweepError, match="fine-tuning run is in progress"):
            run_sweep(ws.root, _sweep(), quiet=True)
    assert not ws.path("runs").exists() or not _run_dirs(ws)  # refused before any run was created


def test_unreachable_ray_address_fails_within_seconds(ws):
    from metacog.sweeps import SweepError, check_ray_address, run_sweep

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.time()
    with pytest.raises(SweepError, match=f"127.0.0.1:{port} does not answer"):
        run_sweep(ws.root, _sweep(), executor="ray", address=f"127.0.0.1:{port}", quiet=True)
    assert time.time() - t0 < 5
    with pytest.raises(SweepError, match="ray start --head --port"):
        check_ray_address(f"ray://localhost:{port}", timeout=0.5)
    with pytest.raises(SweepError, match="HOST:PORT"):
        check_ray_address("nonsense")
    assert not ws.path("sweeps").exists()


def test_local_and_ray_executors_give_identical_artifacts(ws, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'metacog[ray]')")
    from metacog.sweeps import run_sweep
    from metacog.core.workspace import Workspace

    ws2 = Workspace(tmp_path / "ws-ray")
    shutil.copytree(ws.root, ws2.root)
    s = _sweep()
    a = run_sweep(ws.root, s, executor="local", workers=1, quiet=True)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        b = run_sweep(ws2.root, s, executor="ray", quiet=True)
    finally:
        ray.shutdown()
    assert a["status"] == b["status"] == "done" and b["executor"] == "ray"
    assert a["id"] != b["id"] or True  # (the id hashes the home workspace path)
    for ea, eb in zip(a["runs"], b["runs"]):
        assert ea["key"] == eb["key"] and ea["seed"] == eb["seed"]
        assert ea["headline"] == eb["headline"]
        assert _adapter_bytes(ws, ea["run"]) == _adapter_bytes(ws2, eb["run"])
        ja = json.loads(ws.path("runs", ea["run"], "eval.json").read_text())
        jb = json.loads(ws2.path("runs", eb["run"], "eval.json").read_text())
        assert ja["readouts"] == jb["readouts"] and ja["accuracy"] == jb["accuracy"]


def test_cli_sweep_dry_run_and_errors(ws, capsys):
    from metacog.cli import main

    rc = main(["sweep", "--workspace", str(ws.root), "--seeds", "5,6", "--targets", "probe,shuffled", "--epochs", "1",
               "--batch-size", "4", "--grad-accum", "2", "--dry-run", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "planned" in out.out and out.out.count("train") >= 4
    assert "None:" not in out.err and "dry run: nothing created; 4 run(s) would be trained" in out.err  # no id-less rows
    assert main(["sweep", "--workspace", str(ws.root), "--seeds", "a,b", "--dry-run"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err
    assert main(["sweep", "--workspace", str(ws.root), "--seeds", "1", "--workers", "64", "--epochs", "1"]) == 2
    assert "fight over cores" in capsys.readouterr().err
    assert main(["sweep", "--workspace", str(ws.root.parent / "nope"), "--seeds", "1"]) == 2
    assert "not a metacog workspace" in capsys.readouterr().err
    assert main(["sweeps", "--workspace", str(ws.root)]) == 0
