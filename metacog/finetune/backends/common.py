"""What every backend shares: the data order, checkpoint directories, adapter metadata.

Data order is a pure function of (seed, epoch): epoch ``e`` visits the training examples in
``numpy.random.default_rng([seed, e]).permutation(n)``, cut into batches of ``batch_size``;
optimizer update ``k`` uses epoch ``k // updates_per_epoch`` and, within it, the batches
``[g·A, g·A + group_sizes[g])`` with ``g = k % updates_per_epoch``. A resumed run therefore
sees exactly the batches an uninterrupted run would, from the update it resumes at.

Public entry: :func:`update_batches` (and the checkpoint helpers both backends call).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from metacog.finetune.settings import Plan
from metacog.core.workspace import WorkspaceError, atomic_write_text, guard_write, json_safe, remove_tree

CKPT_RE = re.compile(r"^step-(\d{6})$")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order ``[n]`` (a permutation of 0..n-1) in which epoch ``epoch`` visits the ``n``
    training examples: ``numpy.random.default_rng([seed, epoch]).permutation(n)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def update_batches(plan: Plan, seed: int, update: int) -> list[list[int]]:
    """Example indices of each micro-batch of optimizer update ``update`` (0-based)."""
    epoch, g = divmod(int(update), plan.updates_per_epoch)
    order = epoch_order(plan.n_train, seed, epoch)
    B, A = plan.batch_size, plan.grad_accum
    out = []
    for b in range(g * A, g * A + plan.group_sizes[g]):
        idx = order[b * B : (b + 1) * B]
        if len(idx):
            out.append([int(i) for i in idx])
    return out


def is_eval_point(update_done: int, plan: Plan, eval_every: int | None) -> bool:
    """Validate after ``update_done`` updates? Every ``eval_every`` (default: each epoch end) and at the end."""
    every = eval_every or plan.updates_per_epoch
    return update_done % every == 0 or update_done == plan.updates_planned


def log_update(hooks, plan: Plan, update: int, t0: float, loss_sum: float, n_tok: int, lr: float,
               grad_norm: float | None) -> tuple[float, float]:
    """Report one finished optimizer update to ``hooks.on_update`` (update number, epoch, mean
    token loss ``loss_sum / n_tok`` in nats, learning rate, trained tokens, gradient norm before
    clipping, seconds since ``t0``). Returns ``(seconds, loss)``; both backends call it."""
    dt = time.time() - t0
    loss = loss_sum / n_tok
    hooks.on_update({"update": update, "epoch": plan.epoch_of(update), "loss": loss, "lr": lr,
                     "tokens": n_tok, "grad_norm": grad_norm, "seconds": round(dt, 3)})
    return dt, loss


def after_update(update: int, plan: Plan, s, validate, save, hooks) -> bool:
    """What both backends do after an optimizer update: validate at eval points, checkpoint
    (every ``checkpoint_every``, at eval points, at the end, before an early stop) and tell the
    hooks. ``validate(update) -> stop early?``, ``save(update)`` writes the checkpoint.
    Returns True to stop early."""
    at_eval = is_eval_point(update, plan, s.eval_every)
    stop_early = bool(at_eval and validate(update))
    if update % s.checkpoint_every == 0 or stop_early or update == plan.updates_planned or at_eval:
        save(update)
        hooks.on_checkpoint(update)
    return stop_early


def stop_cancelled(update: int, plan: Plan, run_path: Path, save, hooks) -> None:
    """A cancelled run: checkpoint the last finished update (if not already) and raise Stopped."""
    from metacog.core.runtime import Stopped

    ck = latest_checkpoint(run_path)
    if update > 0 and (ck is None or ck[0] != update):
        save(update)
        hooks.on_checkpoint(update)
    raise Stopped(f"cancelled after {update} of {plan.updates_planned} updates; resume continues from update {update}")


# ------------------------------------------------------------------------------ checkpoints
def ckpt_root(run_path: Path) -> Path:
    """The checkpoints directory ``<run>/checkpoints`` of a run."""
    return Path(run_path) / "checkpoints"


def list_checkpoints(run_path: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints of a run (``checkpoints/step-NNNNNN`` holding ``COMPLETE``), as
    (update, path) sorted by update; [] when there are none. Incomplete ones are ignored."""
    d = ckpt_root(run_path)
    if not d.exists():
        return []
    out = []
    for p in d.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / "COMPLETE").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_path: Path) -> tuple[int, Path] | None:
    """The (update, path) of the newest complete checkpoint, or None."""
    cks = list_checkpoints(run_path)
    return cks[-1] if cks else None


def begin_dir(final: Path) -> Path:
    """A fresh temporary directory beside ``final`` (renamed into place by :func:`commit_dir`)."""
    final = guard_write(Path(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = guard_write(final.with_name(f".{final.name}.tmp-{os.getpid()}"))
    if tmp.exists():
        remove_tree(tmp)
    tmp.mkdir()
    return tmp


def commit_dir(tmp: Path, final: Path) -> Path:
    """Atomically put a finished directory in place; an older one is replaced only once the
    new one is complete (a kill or a full disk leaves the previous one intact).

    Raises:
        WorkspaceError: the new directory contains a symbolic link, or a link lies on the way."""
    atomic_write_text(tmp / "COMPLETE", time.strftime("%Y-%m-%dT%H:%M:%S"))
    for p in tmp.rglob("*"):
        if p.is_symlink():
            raise WorkspaceError(f"{p} is a symbolic link; a checkpoint must not contain links")
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    final = guard_write(Path(final))
    if final.exists():
        old = guard_write(final.with_name(f".{final.name}.old-{os.getpid()}"))
        if old.exists():
            remove_tree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        remove_tree(old)
    else:
        os.replace(tmp, final)
    return final


def prune_checkpoints(run_path: Path, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints (``keep <= 0`` removes them all) and remove
    temporary directories left by killed processes."""
    cks = list_checkpoints(run_path)
    for _, p in cks[:-keep] if keep > 0 else cks:
        remove_tree(p)
    d = ckpt_root(run_path)
    if d.exists():  # temporary directories of a killed process
        for p in d.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name:
                with contextlib.suppress(ValueError):
                    pid = int(p.name.rsplit("-", 1)[1])
                    if pid != os.getpid():
                        remove_tree(p)


def write_adapter_meta(adapter_dir: Path, meta: dict) -> None:
    """Write ``metacog.json`` (JSON-able ``meta``: base model, weights hash, run, settings key,
    backend) into an adapter directory, atomically."""
    atomic_write_text(Path(adapter_dir) / "metacog.json", json.dumps(json_safe(meta), indent=2, default=str) + "\n")


def read_adapter_meta(adapter_dir: Path) -> dict:
    """The ``metacog.json`` of an adapter directory as a dict ({} when absent)."""
    p = Path(adapter_dir) / "metacog.json"
    return json.loads(p.read_text()) if p.exists() else {}
