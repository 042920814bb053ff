"""Hostile inputs against the workspace store (issue: artifacts that cannot lie or be turned
against the user). Each test plants what a careless user, a crash or a hostile file would, and
checks: no code runs, nothing outside the workspace is written, no artifacts from different
inputs are joined, and the user gets one line naming the path and the problem (no traceback).

Everything runs on a tiny random Llama saved to disk, through the real CLI."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_helpers import load_tiny, save_tiny_model

from metacog.cli import main as cli
from metacog.core.workspace import LineageError, Workspace, WorkspaceError

CAPS = [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
        ("Italy", "Rome"), ("Spain", "Madrid"), ("Chile", "Santiago")]


def _dataset(path: Path, n: int = 24, offset: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            c, a = CAPS[(i + offset) % len(CAPS)]
            f.write(json.dumps({"id": f"q{i + offset}", "question": f"What is the capital of {c}? ({i + offset})",
                                "answers": [a], "category": f"cat{i % 2}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("hostile-model") / "tiny-llama")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-data")
    return {"a": _dataset(d / "a.jsonl", 24), "b": _dataset(d / "b.jsonl", 20, offset=100)}


def _study_args(ws, model, dataset, limit=None, *extra):
    a = ["study", "--model", str(model), "--dataset", str(dataset), "--workspace", str(ws), "--quiet",
         "--threads", "1", "--dtype", "float32", "--max-new-tokens", "4", "--batch-size", "8", "--folds", "3"]
    if limit:
        a += ["--limit", str(limit)]
    return a + list(extra)


@pytest.fixture(scope="module")
def ref_ws(tmp_path_factory, tiny_dir, data):
    root = tmp_path_factory.mktemp("hostile-ref") / "ref24"
    assert cli(_study_args(root, tiny_dir, data["a"])) == 0
    return root


def _tree_digest(root: Path) -> dict:
    """Every file (lock files excluded: flock state, not content) → (sha256, mode)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.name.startswith(".lock-"):
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
    return out


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    errs = [ln for ln in err if ln.startswith("metacog: error:")]
    assert len(errs) == 1, err
    assert "Traceback" not in "\n".join(err)
    for n in needles:
        assert n in errs[0], (n, errs[0])
    return errs[0]


# ----------------------------------------------------------------------------- pickles
class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    from metacog.core.safestate import UnsafeStateError, load_state, save_state

    ck = tmp_path / "step-000004"
    ck.mkdir()
    marker = tmp_path / "PWNED"
    with open(ck / "state.pt", "wb") as f:
        pickle.dump({"optimizer": _Boom(marker)}, f)
    with pytest.raises(UnsafeStateError, match="never unpickles"):
        load_state(ck)
    assert not marker.exists()
    # a planted skeleton cannot smuggle objects either: only tensors/numbers/strings come back
    save_state(ck, {"a": torch.arange(3), "t": (1, 2.5, float("inf")), "k": {3: "x"}, "n": np.arange(2)})
    back = load_state(ck)
    assert torch.equal(back["a"], torch.arange(3)) and back["t"] == (1, 2.5, float("inf")) and back["k"] == {3: "x"}
    (ck / "state.json").write_text(json.dumps({"format": "metacog.safestate/1", "state": {"__reduce__": ["os.system"]}}))
    with pytest.raises(UnsafeStateError, match="unknown tag"):
        load_state(ck)


def test_resume_from_planted_pickle_refused_end_to_end(tmp_path, tiny_dir):
    """The reported attack: replace a checkpoint's state with a pickle, then resume the run."""
    from finetune_helpers import build_workspace

    from metacog.finetune import FinetuneSettings, create_run, execute
    from metacog.finetune.backends.common import latest_checkpoint

    torch.set_num_threads(1)
    lm = load_tiny(tiny_dir)
    ws = build_workspace(tmp_path / "ws", lm, n=30)
    s = FinetuneSettings(epochs=1, batch_size=4, grad_accum=1, lr=5e-3, checkpoint_every=1, val_fraction=0.1)
    run = create_run(ws, s)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    assert execute(ws, run.id, lm=lm, should_stop=stop)["status"] == "cancelled"
    _, ck = latest_checkpoint(run.path)
    for f in ("state.safetensors", "state.json"):
        (ck / f).unlink()
    marker = tmp_path / "PWNED"
    with open(ck / "state.pt", "wb") as f:
        pickle.dump({"optimizer": _Boom(marker)}, f)
    with pytest.raises(Exception, match="never unpickles"):
        execute(ws, run.id, lm=lm)
    assert not marker.exists()
    assert "pickle" in (run.status().get("error") or run.status().get("message") or "")


def test_no_pickle_loading_anywhere_in_the_package():
    """Static guard: no module calls pickle/torch.load/np.load with pickles allowed."""
    import re

    pkg = Path(__file__).resolve().parents[3] / "metacog"
    bad = []
    for p in pkg.rglob("*.py"):
        src = p.read_text()
        for pat in (r"\bpickle\.loads?\(", r"torch\.load\(", r"allow_pickle\s*=\s*True", r"weights_only\s*=\s*False",
                    r"\bjoblib\.load\("):
            if re.search(pat, src):
                bad.append(f"{p.relative_to(pkg)}: {pat}")
    assert not bad, bad


# ----------------------------------------------------------------------------- symlinks
def test_lock_symlink_does_not_truncate_victim(tmp_path, tiny_dir, data, ref_ws, capsys):
    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lk = ws / ".lock-study"
    if lk.exists():
        lk.unlink()
    lk.symlink_to(victim)
    assert cli(_study_args(ws, tiny_dir, data["a"])) == 2
    _one_line_error(capsys, "symbolic link")
    assert victim.read_text() == "precious\n"


def test_memmap_symlink_with_stale_manifest_does_not_overwrite_victim(tmp_path, tiny_dir, data, ref_ws, capsys):
    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    victim = tmp_path / "victim2.txt"
    victim.write_text("precious\n")
    man = json.loads((ws / "activations" / "manifest.json").read_text())
    man["key"] = "stale"
    (ws / "activations" / "manifest.json").write_text(json.dumps(man))
    (ws / "activations" / "last_prompt.npy").unlink()
    (ws / "activations" / "last_prompt.npy").symlink_to(victim)
    assert cli(_study_args(ws, tiny_dir, data["a"])) == 2
    _one_line_error(capsys, "last_prompt.npy", "symbolic link")
    assert victim.read_text() == "precious\n"


def test_guard_write_refuses_links_in_the_chain(tmp_path):
    from metacog.core.workspace import atomic_write_json, guard_write

    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    (ws.root / "workspace.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.root / "probes").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        atomic_write_json(ws.path("probes", "best.json"), {"x": 1})
    assert not any(outside.iterdir())
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        guard_write(tmp_path / "elsewhere.json", ws.root)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.write_json("../escape.json", {})
    assert not (tmp_path / "escape.json").exists()


# ----------------------------------------------------------------------------- failed relaunches
def test_failed_relaunch_leaves_workspace_byte_identical(tmp_path, tiny_dir, data, ref_ws, capsys):
    ws = tmp_path / "mix"
    shutil.copytree(ref_ws, ws)
    before = _tree_digest(ws)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    # a different dataset and limit, and a model directory that cannot load
    assert cli(_study_args(ws, empty, data["b"], 12)) == 2
    _one_line_error(capsys)
    assert _tree_digest(ws) == before
    # a bad dataset: same
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\nnot json\n')
    assert cli(_study_args(ws, tiny_dir, bad)) == 2
    _one_line_error(capsys, "bad.jsonl")
    assert _tree_digest(ws) == before
    # an invalid setting: same (nothing is run before settings are checked)
    assert cli(_study_args(ws, tiny_dir, data["a"], None, "--seed", "-1")) == 2
    _one_line_error(capsys, "seed")
    assert _tree_digest(ws) == before
    # and later plain launches still work
    assert cli(["summary", "--workspace", str(ws)]) == 0
    s = json.loads((ws / "summary.json").read_text())
    assert s["n_items"] == 24


def test_mismatched_artifacts_are_refused_not_joined(tmp_path, tiny_dir, data, ref_ws, capsys):
    other = tmp_path / "other"
    assert cli(_study_args(other, tiny_dir, data["b"], 20)) == 0
    mix = tmp_path / "mix"
    shutil.copytree(ref_ws, mix)
    shutil.copy(other / "items.parquet", mix / "items.parquet")  # items of one study, answers of another
    before = (mix / "summary.json").read_bytes()
    assert cli(["summary", "--workspace", str(mix)]) == 2
    _one_line_error(capsys, "answers.parquet", "other items")
    assert (mix / "summary.json").read_bytes() == before
    from metacog.finetune import FinetuneSettings, build_targets
    from metacog.stages.study import results_table

    with pytest.raises(LineageError):
        results_table(Workspace(mix))
    with pytest.raises(LineageError):
        build_targets(Workspace(mix), FinetuneSettings())
    # probes from another cache
    mix2 = tmp_path / "mix2"
    shutil.copytree(ref_ws, mix2)
    shutil.copy(other / "probes" / "oof.npy", mix2 / "probes" / "oof.npy")
    with pytest.raises(LineageError, match="oof.npy"):
        results_table(Workspace(mix2))


def test_concurrent_writers_share_one_workspace_lock(tmp_path, ref_ws):
    from metacog.core.workspace import WorkspaceBusy

    ws = Workspace(tmp_path / "w")
    shutil.copytree(ref_ws, ws.root)
    with ws.writer("finetune"):
        with pytest.raises(WorkspaceBusy, match="finetune"):
            with ws.lock("study"):
                pass
        with ws.writer("methods"):  # other derived writers may run side by side
            pass
    with ws.lock("study"):
        with pytest.raises(WorkspaceBusy, match="study"):
            with ws.writer("finetune"):
                pass


# ----------------------------------------------------------------------------- foreign and broken directories
def test_foreign_directory_is_not_adopted(tmp_path, tiny_dir, data, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes\n")
    (d / "summary.json").write_text('{"mine": true}\n')
    before = _tree_digest(d)
    assert cli(_study_args(d, tiny_dir, data["a"])) == 2
    _one_line_error(capsys, str(d), "not a metacog workspace")
    assert _tree_digest(d) == before


@pytest.mark.parametrize("case", ["file", "under-file"])
def test_workspace_path_that_is_a_file(tmp_path, tiny_dir, data, capsys, case):
    f = tmp_path / "afile"
    f.write_text("x")
    ws = f if case == "file" else f / "sub"
    for args in (_study_args(ws, tiny_dir, data["a"]), ["summary", "--workspace", str(ws)]):
        assert cli(args) == 2
        _one_line_error(capsys, str(f))
    assert f.read_text() == "x"


def test_read_only_workspace_one_line(tmp_path, ref_ws, tiny_dir, data, capsys, monkeypatch):
    """Root bypasses file modes, so the read-only file system is simulated where the store
    asks for it (os.access) and where a write fails mid-run (PermissionError from mkstemp)."""
    import tempfile

    ws = tmp_path / "ro"
    shutil.copytree(ref_ws, ws)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(ws)) else real_access(p, m, **k))
    for args in (_study_args(ws, tiny_dir, data["a"]), ["summary", "--workspace", str(ws)]):
        assert cli(args) == 2
        _one_line_error(capsys, str(ws), "read-only")
    monkeypatch.setattr(os, "access", real_access)

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    assert cli(["summary", "--workspace", str(ws)]) == 2
    _one_line_error(capsys, "summary.json", "Permission denied")


@pytest.mark.parametrize("content, needle", [
    ('{"model": "default", "study": {}}', "'model' and 'study'"),
    ('{"model": {"threads": "many"}, "study": {}}', "threads"),
    ('{"model": {}, "study": {"seed": "x"}}', "seed"),
    ('[1, 2', "not valid JSON"),
])
def test_invalid_workspace_json_names_the_file(tmp_path, ref_ws, capsys, content, needle):
    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    (ws / "workspace.json").write_text(content)
    assert cli(["summary", "--workspace", str(ws)]) == 2
    _one_line_error(capsys, "workspace.json", needle)
    # every command after the study says the same, before its own work (it used to list nothing)
    for args in (["patch", "--list"], ["steer", "--list"], ["sweeps"], ["runs"], ["report", "--out", str(tmp_path / "r.html")],
                 ["methods", "--list"]):
        assert cli([args[0], "--workspace", str(ws), *args[1:]]) == 2, args
        _one_line_error(capsys, "workspace.json", needle)


def test_every_command_refuses_a_workspace_with_a_link_or_none_at_all(tmp_path, ref_ws, capsys):
    """`report` read a workspace holding a symbolic link that `summary` refuses; a path with no
    workspace gave "no runs" or an empty list. Every command now gives summary's line."""
    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    (ws / "evil").symlink_to("/etc")
    for args in (["report", "--out", str(tmp_path / "r.html")], ["patch", "--list"], ["runs"]):
        assert cli([args[0], "--workspace", str(ws), *args[1:]]) == 2, args
        _one_line_error(capsys, "symbolic link")
    assert not (tmp_path / "r.html").exists()
    for args in (["runs"], ["sweeps"], ["steer", "--list"]):
        assert cli([args[0], "--workspace", str(tmp_path / "none"), *args[1:]]) == 2, args
        _one_line_error(capsys, "is not a metacog workspace")


def test_json_is_standard_and_files_share_one_mode(tmp_path):
    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    p = ws.write_json("x.json", {"a": float("inf"), "b": float("nan"), "c": np.float32("nan"), "d": [np.inf]})
    txt = p.read_text()
    assert "Infinity" not in txt and "NaN" not in txt
    assert json.loads(txt) == {"a": None, "b": None, "c": None, "d": [None]}
    import pandas as pd

    q = ws.write_parquet("t.parquet", pd.DataFrame({"a": [1]}))
    other = tmp_path / "plain.txt"
    other.write_text("x")
    assert p.stat().st_mode & 0o777 == q.stat().st_mode & 0o777 == other.stat().st_mode & 0o777


def test_settings_validated_before_any_work(tmp_path, tiny_dir, data, capsys):
    ws = tmp_path / "new"
    assert cli(_study_args(ws, tiny_dir, data["a"], None, "--seed", "-1")) == 2
    _one_line_error(capsys, "seed")
    assert not ws.exists()


# ----------------------------------------------------------------------------- the app
@pytest.mark.parametrize("qp", ["../../", "/etc", "OUTSIDE", "../outside-ws"])
def test_app_ws_link_is_confined_to_the_cache(tmp_path, ref_ws, monkeypatch, qp):
    """A ?ws= link outside the cache's workspaces (traversal, absolute path, an existing
    workspace elsewhere) is refused with a message; the page stays on a workspace inside."""
    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parents[3] / "app.py"
    cache = tmp_path / "cache"
    (cache / "workspaces").mkdir(parents=True)
    outside = tmp_path / "outside-ws"
    shutil.copytree(ref_ws, outside)
    qp = str(outside) if qp == "OUTSIDE" else qp
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    monkeypatch.delenv("METACOG_WORKSPACE_DIRS", raising=False)
    at = AppTest.from_file(str(app), default_timeout=60)
    at.query_params["ws"] = qp
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("outside the workspace folders" in e.value for e in at.error), [e.value for e in at.error]
    root = Path(at.session_state["ws_root"]).resolve()
    assert cache.resolve() in root.parents, root
    # the same workspace is allowed once its folder is listed
    if qp == str(outside):
        monkeypatch.setenv("METACOG_WORKSPACE_DIRS", str(tmp_path))
        at = AppTest.from_file(str(app), default_timeout=60)
        at.query_params["ws"] = qp
        at.run()
        assert Path(at.session_state["ws_root"]).resolve() == outside.resolve()


def test_streamlit_serves_localhost_by_default():
    import re

    txt = (Path(__file__).resolve().parents[3] / ".streamlit" / "config.toml").read_text()
    server = txt.split("[server]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^address\s*=\s*"localhost"', server, re.M), server


def test_upload_with_a_very_long_name(tmp_path, monkeypatch):
    from metacog.app import ui

    monkeypatch.setenv("METACOG_CACHE", str(tmp_path))
    p = ui.save_upload("x" * 400 + ".jsonl", b'{"question": "q", "answer": "a"}\n')
    assert p.exists() and len(p.name) < 120 and p.suffix == ".jsonl"


def test_finetune_settings_checked_before_any_work(tmp_path, ref_ws, capsys):
    from metacog.finetune.cli import register  # noqa: F401  (the subcommand exists)

    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    before = _tree_digest(ws)
    for extra, needle in ((["--alpha", "inf"], "alpha"), (["--evaluate", "--eval-limit", "2"], "eval-limit")):
        assert cli(["finetune", "--workspace", str(ws), "--epochs", "1", *extra]) == 2
        _one_line_error(capsys, needle)
        assert _tree_digest(ws) == before  # no run directory was created


def test_over_long_item_refused_before_any_write(tmp_path, tiny_dir, capsys):
    """One 10,000-character question: refused in one line naming it, before the workspace exists."""
    data = _dataset(tmp_path / "d.jsonl", 20)
    with open(data, "a") as f:
        f.write(json.dumps({"id": "the-long-one", "question": "Why? " * 2000, "answers": ["x"], "category": "c"}) + "\n")
    ws = tmp_path / "w"
    assert cli(_study_args(ws, tiny_dir, data, None, "--max-prompt-tokens", "256")) == 2
    _one_line_error(capsys, "the-long-one", "--max-prompt-tokens")
    assert not ws.exists()


def test_a_relaunch_with_other_settings_says_what_changes(tmp_path, tiny_dir, data, ref_ws, capsys):
    """Relaunching `metacog study` on a finished workspace with other settings re-ran silently;
    now one line names each changed setting and what happens to the earlier results. The same
    settings (threads aside) print no such line."""
    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    assert cli(_study_args(ws, tiny_dir, data["a"], None, "--threads", "2")) == 0
    assert "settings change" not in capsys.readouterr().err
    assert cli(_study_args(ws, tiny_dir, data["a"], 12, "--seed", "1")) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "settings change" in x)
    assert "limit None → 12" in line and "seed 0 → 1" in line and "named stale" in line


def test_a_corrupt_table_or_array_is_named(tmp_path, ref_ws, capsys):
    """A workspace table that is not Parquet, or an array that is not a plain .npy (a planted
    pickle), gave pyarrow's / numpy's bare message; every reader now names the file (and still
    never unpickles)."""
    import pickle

    from metacog.core.workspace import WorkspaceError
    from metacog.core.files import load_array, read_table

    ws = tmp_path / "w"
    shutil.copytree(ref_ws, ws)
    (ws / "answers.parquet").write_text("not parquet")
    assert cli(["summary", "--workspace", str(ws)]) == 2
    _one_line_error(capsys, str(ws / "answers.parquet"), "corrupt")
    bad = tmp_path / "obj.npy"
    np.save(bad, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(WorkspaceError, match=f"{bad}.*corrupt or not an array"):
        load_array(bad)
    with pytest.raises(WorkspaceError, match=f"{bad}.*corrupt"):
        load_array(bad, mmap=True)
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(WorkspaceError, match="p.pkl.*corrupt"):
        read_table(tmp_path / "p.pkl")
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "missing.npy")
