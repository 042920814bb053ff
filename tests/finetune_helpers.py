"""Helpers for the fine-tuning tests: a real workspace on a tiny random Llama saved to disk.

The workspace is made by the real stages (answers, activations, probes). The tiny model's
answers are noise, so half of the items get the model's own answer as their alias (graded
correct), the other half an alias it never says: both classes exist and the probes fit.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from conftest import make_tiny_llama, make_tokenizer, tiny_items


def save_tiny_model(d: Path) -> Path:
    tok = make_tokenizer()
    model = make_tiny_llama(tok)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def load_tiny(d: Path):
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings

    torch.set_num_threads(1)
    return load_model(ModelSettings(model=str(d), dtype="float32", device="cpu", threads=1))


def build_workspace(root: Path, lm, n: int = 60, seed: int = 0):
    """A complete workspace (items, answers, activations, probes, model.json) on ``lm``."""
    from metacog.stages.answers import run_answers
    from metacog.data.grading import normalize
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    study = StudySettings(dataset="tiny", limit=None, seed=seed, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=16, two_pass=True,
                          probe_folds=3)
    items = tiny_items(n)
    scratch = Workspace(root.parent / (root.name + "-scratch"))
    scratch.init(ModelSettings(model=lm.source, dtype="float32", device="cpu", threads=1), study)
    first = run_answers(scratch, lm, items, study)
    aliases = []
    for i, a in enumerate(first.sort_values("row")["answer"]):
        h = int(hashlib.sha1(f"{seed}-{i}".encode()).hexdigest(), 16) % 2
        na = normalize(a)
        aliases.append([na] if (h == 0 and na) else ["zzqx never said"])
    items["answers"] = aliases
    return stage_workspace(root, lm, items, study)


def stage_workspace(root: Path, lm, items, study):
    """The study's stages on ``lm`` over ``items`` (graded by their ``answers``) in a new
    workspace at ``root``: items, model.json, answers, activations, probes."""
    from metacog.core.settings import ModelSettings
    from metacog.core.workspace import Workspace
    from metacog.stages.activations import run_activations
    from metacog.stages.answers import answers_key, run_answers
    from metacog.stages.study import run_probes_stage

    ws = Workspace(root)
    ws.init(ModelSettings(model=lm.source, dtype="float32", device="cpu", threads=1), study)
    ws.write_parquet("items.parquet", items)
    ws.write_json("model.json", lm.describe())
    ans = run_answers(ws, lm, items, study)
    akey = answers_key(lm, items, study)
    man = run_activations(ws, lm, items, ans, akey, study.batch_size, style=study.prompt_style)
    run_probes_stage(ws, items, ans, man["key"], study, threads=1)
    return ws


def tiny_model_and_workspace(root: Path, name: str, n: int = 60):
    """``(ws, lm)``: the tiny Llama saved under ``root/models`` and loaded (one torch thread),
    and a workspace of ``n`` items at ``root/workspaces/name`` (:func:`build_workspace`)."""
    torch.set_num_threads(1)
    lm = load_tiny(save_tiny_model(Path(root) / "models" / "tiny-llama"))
    return build_workspace(Path(root) / "workspaces" / name, lm, n=n), lm


def write_fake_probes(ws, p_fn=None, seed: int = 0):
    """Overwrite probes/oof.npy with known values (for exact target checks)."""
    from metacog.stages.study import load_items, probe_positions

    items = load_items(ws)
    n = len(items)
    man = ws.read_json("activations/manifest.json")
    L = man["n_layers"]
    rng = np.random.default_rng(seed)
    positions = probe_positions(ws)
    oof = rng.random((n, L, len(positions))).astype(np.float32)
    if p_fn is not None:
        oof = p_fn(oof)
    from metacog.stages.study import save_probes

    lin = ws.lineage("probes/metrics.parquet")
    save_probes(ws, ws.read_parquet("probes/metrics.parquet"), oof, {"layer": 1, "position": "last_answer", "cv_auroc": 0.7},
                lin["key"], lin["activations"], positions=positions)
    return oof


def tiny_lm_fixture(tag: str):
    """A module-scoped fixture ``lm``: the tiny Llama saved under a fresh temporary directory
    named after ``tag`` and loaded (one torch thread)."""
    import pytest

    @pytest.fixture(scope="module")
    def lm(tmp_path_factory):
        torch.set_num_threads(1)
        return load_tiny(save_tiny_model(tmp_path_factory.mktemp(f"tiny-model-{tag}") / "tiny-llama"))

    return lm


def tiny_ws_fixture(tag: str, n: int):
    """A module-scoped fixture ``ws``: a workspace of ``n`` items made by the real stages with
    the module's ``lm`` (:func:`build_workspace`)."""
    import pytest

    @pytest.fixture(scope="module")
    def ws(tmp_path_factory, lm):
        return build_workspace(tmp_path_factory.mktemp(f"ws-{tag}") / "tiny", lm, n=n)

    return ws


def make_adapter(lm, path, seed=0, meta=None, model=None, targets=("q_proj", "v_proj", "down_proj")):
    """A random LoRA adapter (r 4, clearly non-zero B) for ``lm`` (or ``model``) saved at ``path``,
    with ``metacog.json`` = ``meta`` when given; returns ``path``."""
    import copy
    import json

    from peft import LoraConfig, get_peft_model

    from metacog.model.arch import base_model

    torch.manual_seed(seed)
    base = copy.deepcopy(model if model is not None else base_model(lm.model))
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=list(targets), init_lora_weights=False))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)  # clearly non-zero
    pm.save_pretrained(str(path))
    if meta is not None:
        (path / "metacog.json").write_text(json.dumps(meta))
    return path
