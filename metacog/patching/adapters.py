"""Fine-tuned adapters as a side of a model → model pair: find a run's adapter, refuse one
made for another base model, load base + adapter on a private copy of the weights (cached),
and a private copy of a model for a background grid."""
from __future__ import annotations

import copy
import dataclasses
import json
import threading
from pathlib import Path

from metacog.patching.hook_points import base_model
from metacog.patching.spec import PatchError


def adapter_dir(ws, ref: str) -> Path:
    """The directory holding ``adapter_config.json`` for ``ref``: ``<ws>/runs/<ref>/adapter``,
    ``<ws>/runs/<ref>``, or ``ref`` (or ``ref/adapter``) as a path.

    Raises:
        PatchError: no such adapter (the message lists the workspace's runs)."""
    p = Path(ref).expanduser()
    cands = []
    if ws is not None:
        cands += [ws.path("runs", ref, "adapter"), ws.path("runs", ref)]
    cands += [p / "adapter", p]
    for c in cands:
        if (Path(c) / "adapter_config.json").exists():
            return Path(c)
    runs = sorted(x.name for x in ws.path("runs").iterdir() if x.is_dir()) if ws is not None and ws.path("runs").exists() else []
    raise PatchError(
        f"no adapter '{ref}': expected <workspace>/runs/{ref}/adapter/adapter_config.json or an adapter directory"
        + (f"; runs in this workspace: {', '.join(runs)}" if runs else "; this workspace has no fine-tuning runs yet")
    )


def _meta_hashes(adir: Path) -> set:
    """Base-model weight hashes recorded beside an adapter (metacog.json of the adapter, the
    run's settings.json)."""
    out = set()
    for f in (adir / "metacog.json", adir.parent / "settings.json"):
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict):
            continue
        if isinstance(m.get("base_weights_hash"), str):
            out.add(m["base_weights_hash"])
        base = m.get("base")
        if isinstance(base, dict) and isinstance(base.get("weights_hash"), str):
            out.add(base["weights_hash"])
    return out


def check_adapter(lm, adir: Path) -> dict:
    """Refuse, before loading it, an adapter made for another base model: the base weights
    hash recorded with it (metacog runs) must be this model's, every adapted module must
    exist here with the shapes the adapter's matrices expect (the fine-tuning stage's own
    check, :func:`metacog.finetune.evaluate.check_adapter`), and an adapter without metacog
    metadata must name this model as its base.

    Raises:
        PatchError: unreadable ``adapter_config.json``; base weights hash or base model name not
            this model's; an adapted module missing here or of another shape (the fine-tuning check's
            WorkspaceError, re-raised as PatchError).
    """
    from metacog.core.workspace import WorkspaceError

    adir = Path(adir)
    try:
        cfg = json.loads((adir / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise PatchError(f"cannot read {adir / 'adapter_config.json'}: {e}") from None
    hashes = _meta_hashes(adir)
    if hashes and lm.weights_hash not in hashes:
        raise PatchError(
            f"adapter {adir} was trained on a base model with weights {', '.join(sorted(hashes))}, but this workspace's "
            f"model {lm.name} has weights {lm.weights_hash}: patch it in a workspace of its own base model"
        )
    base_name = str(cfg.get("base_model_name_or_path") or "")
    if base_name and not hashes:
        names = {str(x).lower() for x in (lm.source, lm.spec, lm.name, Path(str(lm.source)).name) if x}
        if base_name.lower() not in names and Path(base_name).name.lower() not in names:
            raise PatchError(f"adapter {adir} names base model '{base_name}', not this workspace's model {lm.name} ({lm.source})")
    from metacog.finetune.evaluate import check_adapter as ft_check  # the structural check (modules and shapes)

    try:
        ft_check(adir, lm.weights_hash, _unwrapped(lm))
    except WorkspaceError as e:
        raise PatchError(str(e)) from None
    return cfg


def _unwrapped(lm):
    return dataclasses.replace(lm, model=base_model(lm.model))


_ADAPTERS: dict[tuple, object] = {}


_ADAPTERS_LOCK = threading.Lock()


def load_adapter_model(lm, adir: Path, label: str):
    """A LoadedModel of base + adapter on a private copy of the base weights (the shared base
    model is never modified), cached per (base, adapter). Uses the fine-tuning stage's loader."""
    adir = Path(adir).resolve()
    wf = adir / "adapter_model.safetensors"
    key = (id(lm.model), str(adir), wf.stat().st_mtime if wf.exists() else 0.0)
    with _ADAPTERS_LOCK:
        if key in _ADAPTERS:
            return _ADAPTERS[key]
        check_adapter(lm, adir)
        from metacog.finetune.backends.peft_backend import load_adapter_model as ft_load

        out = ft_load(lm, adir, copy_model=True)
        out = dataclasses.replace(out, spec=f"{lm.spec}+{label}", name=f"{lm.name} + {label}")
        _ADAPTERS[key] = out
        return out


def clear_adapters() -> None:
    """Forget every cached adapter model and private model copy (frees their weights)."""
    with _ADAPTERS_LOCK:
        _ADAPTERS.clear()


def private_model(lm):
    """A copy of ``lm`` whose weights no other code runs (hooks of a concurrent study in the
    same process cannot see the grid's forwards, nor the grid theirs); cached per model."""
    key = ("private", id(lm.model))
    with _ADAPTERS_LOCK:
        if key not in _ADAPTERS:
            _ADAPTERS[key] = dataclasses.replace(lm, model=copy.deepcopy(lm.model).eval())
        return _ADAPTERS[key]
