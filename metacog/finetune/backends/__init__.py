"""Training backends behind one interface.

A backend is a module with ``train(run, lm, train_examples, val_examples, settings, plan, hooks) -> dict``
(the dict holds ``updates_run``, ``epochs_run``, ``stopped`` (None | "early" | "cancelled"),
``best_update``, ``train_seconds``, ``final_train_loss``, ``final_val_loss``). It writes
``log.jsonl`` lines through ``hooks.on_update`` / ``hooks.on_val``, checkpoints under
``runs/<id>/checkpoints/`` and the final adapter (PEFT format) under ``runs/<id>/adapter/``.

Public entry: :func:`get_backend`; :class:`Hooks` is what a backend calls.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from metacog.finetune.settings import BACKENDS, SettingsError


@dataclass
class Hooks:
    """Callbacks a backend calls while it trains (all optional, default no-ops):
    ``on_update(rec)`` after each optimizer update (``rec``: update, epoch, loss, lr, ...),
    ``on_val(rec)`` after each validation, ``should_stop()`` polled between updates (cancel),
    ``on_checkpoint(update)`` once a checkpoint is on disk; ``extra`` is passed through to checkpoints."""
    on_update: Callable[[dict], None] = lambda rec: None
    on_val: Callable[[dict], None] = lambda rec: None
    should_stop: Callable[[], bool] = lambda: False
    on_checkpoint: Callable[[int], None] = lambda update: None  # after a checkpoint is on disk
    extra: dict = field(default_factory=dict)


def get_backend(name: str):
    """The backend module ``metacog.finetune.backends.<name>_backend`` (``peft`` or ``mlx``).

    Raises:
        SettingsError: ``name`` is not one of :data:`metacog.finetune.settings.BACKENDS`."""
    if name not in BACKENDS:
        raise SettingsError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    return importlib.import_module(f"metacog.finetune.backends.{name}_backend")
