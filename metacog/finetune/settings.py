"""One settings object for every fine-tuning run, whatever the backend, and the training plan.

Training length is counted in **optimizer updates** (SCIENCE.md bug 4): with ``n`` training
examples, batch size ``B`` and gradient accumulation ``A``,

    batches per epoch  = ceil(n / B)
    updates per epoch  = ceil(batches per epoch / A)      (the last update may use fewer batches)
    updates planned    = epochs × updates per epoch, capped by ``max_updates`` when given.

``max_updates`` without ``epochs`` must fit in one pass over the data (otherwise say how many
epochs you mean). The run records ``updates_planned`` before it starts and ``updates_run`` /
``epochs_run`` for what actually ran (early stop and cancel end a run early).

Public entry: :class:`FinetuneSettings` and :func:`make_plan`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from metacog.core.settings import POSITIONS, from_dict, stable_hash, to_dict

TARGET_KINDS = ("probe", "binary", "shuffled", "constant", "file")
TASKS = ("single", "pairwise", "multitask")  # what the examples ask: one question's confidence, a pair, or a mix
FORMATS = ("inline", "two-pass", "uncertainty-query")
OBJECTIVES = ("ce", "brier")
UQ_LABELS = ("Yes", "No")  # calibration-tuning's reply to "Is the proposed answer correct?"
BACKENDS = ("peft", "mlx")
SCHEDULES = ("cosine", "linear", "constant")
LOSS_ON = ("assistant", "confidence")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Automatic mixed precision for training (peft backend): ``auto`` = bfloat16 autocast where the
#: device has bf16 arithmetic (a CUDA GPU with bf16, a CPU with avx512_bf16/amx_bf16) and the
#: weights are float32; ``off`` = the weights' dtype throughout.
AMP = ("auto", "off", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
ALL_LINEAR = "all-linear"
AUTO = "auto"  # LoRA targets: the architecture's default (metacog.model.arch.lora_targets)


class SettingsError(ValueError):
    """An absurd or inconsistent fine-tuning setting (message says what to change)."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that shapes a fine-tuning run's result: what to teach (targets, format,
    objective, task), the LoRA adapter (Hu et al. 2021: rank, alpha, dropout, target modules),
    the optimisation (AdamW lr, schedule, batch size × accumulation, length in epochs and/or
    optimizer updates) and the numerics. Frozen; :meth:`key` identifies it.

    Raises:
        SettingsError: on construction, for an invalid or inconsistent value (:func:`validate`)."""

    # what to teach
    targets: str = "probe"  # probe | binary | shuffled | constant | file
    format: str = "inline"  # inline (own answer, then "\nConfidence: NN%") | two-pass (confidence only)
    #                          | uncertainty-query ("Is the proposed answer correct?" -> Yes/No; calibration-tuning)
    objective: str = "ce"  # ce: cross-entropy on the target text | brier: Brier score of the exact 0-100
    #                        distribution at the confidence slot vs correctness (ConfTuner; no target text)
    task: str = "single"  # single: one question's confidence | pairwise: "which of these two are you more likely to
    #                        have gotten right?" -> 1/2 (the item with the higher target p wins) | multitask: a mix
    pairwise_fraction: float | None = None  # multitask: share of the training examples that are pairwise (None = 0.5);
    #                                         every task has one example per training item (matched length)
    probe_layer: int | None = None  # hidden-state index; None = the best probe (train-split CV)
    probe_position: str | None = None  # one of POSITIONS; None = the best probe's
    targets_file: str | None = None  # for targets="file": JSONL/CSV with id, target (integer 0-100)
    constant_value: int | None = None  # for targets="constant"; None = round(100 × train accuracy)
    binary_balance: bool = True  # binary: as many 0-targets as 100-targets (majority class subsampled)
    limit_items: int | None = None  # use a seeded subset of N training-split items (None = all)
    val_fraction: float = 0.1  # of the training-split items, held out for validation loss
    # LoRA
    backend: str = "peft"
    rank: int = 16
    alpha: float = 32.0  # scale = alpha / rank (the reference's scale 2.0 at rank 16)
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("auto",)  # auto: the architecture's default (metacog.model.arch.lora_targets:
    #                                              peft's per-architecture map, else all-linear); or names, or all-linear
    # optimisation
    lr: float = 2e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.0  # of the planned updates, linear warm-up
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    batch_size: int = 4
    grad_accum: int = 4
    epochs: int | None = 3
    max_updates: int | None = None
    seed: int = 42
    loss_on: str = "assistant"  # assistant turn | only the confidence tokens (value + "%")
    max_length: int = 512
    eval_every: int | None = None  # validation loss every N updates (None = once per epoch)
    early_stop_patience: int | None = None  # stop after N validations without improvement (None = off)
    checkpoint_every: int = 5  # updates between checkpoints
    keep_checkpoints: int = 2
    # numerics
    dtype: str = "auto"  # auto = the dtype the workspace's study ran in (model.json)
    device: str = "auto"
    # training forward/backward under torch.autocast(bfloat16); LoRA weights, gradients and AdamW
    # stay float32 (Micikevicius et al. 2018, "Mixed precision training"); evaluation is unaffected
    amp: str = "auto"

    def __post_init__(self):
        if isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(m.strip() for m in self.target_modules.split(",") if m.strip()))
        else:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        validate(self)

    # ------------------------------------------------------------------ derived
    @property
    def scale(self) -> float:
        """The LoRA scale ``alpha / rank`` (Hu et al. 2021: the update ``B A`` is multiplied by it)."""
        return float(self.alpha) / float(self.rank)

    def key(self) -> str:
        """A 12-hex hash of every setting (:func:`metacog.core.settings.stable_hash`): two runs with
        the same key were asked for the same thing. Single-task settings hash as before tasks existed."""
        d = to_dict(self)
        if d["task"] == "single" and d["pairwise_fraction"] is None:  # keys of single-task runs are those of before tasks existed
            del d["task"], d["pairwise_fraction"]
        if d["amp"] == "off":  # runs made before mixed precision existed trained without it and keep their keys
            del d["amp"]
        return stable_hash("finetune", d)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (tuples become lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneSettings":
        """Settings from a dict (unknown keys ignored, missing ones defaulted).

        Raises:
            SettingsError: a value out of range or inconsistent (see :func:`validate`)."""
        return from_dict(cls, d)

    @property
    def pair_share(self) -> float:
        """Share of the training examples that are pairwise: 0 (single), 1 (pairwise), or
        ``pairwise_fraction`` (multitask; default 0.5)."""
        if self.task == "single":
            return 0.0
        if self.task == "pairwise":
            return 1.0
        return 0.5 if self.pairwise_fraction is None else float(self.pairwise_fraction)

    def replace(self, **kw) -> "FinetuneSettings":
        """A copy with the fields in ``kw`` changed (validated again; raises :class:`SettingsError`)."""
        d = to_dict(self)
        d.update(kw)
        return from_dict(FinetuneSettings, d)


def _err(msg: str):
    raise SettingsError(msg)


def validate(s: FinetuneSettings) -> None:
    """Raise :class:`SettingsError` (one line naming the setting) for any invalid value,
    before any work. Every float setting must be finite (``--alpha inf`` is refused)."""
    _validate(s)
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            _err(f"{f.name} must be a finite number, not {v!r}")


def _validate(s: FinetuneSettings) -> None:
    """Refuse absurd settings with a message saying what to change (before any work)."""
    if s.targets not in TARGET_KINDS:
        _err(f"targets must be one of {', '.join(TARGET_KINDS)}, not {s.targets!r}")
    if s.format not in FORMATS:
        _err(f"format must be one of {', '.join(FORMATS)}, not {s.format!r}")
    if s.task not in TASKS:
        _err(f"task must be one of {', '.join(TASKS)}, not {s.task!r}")
    if s.pairwise_fraction is not None:
        if s.task != "multitask":
            _err("pairwise_fraction mixes single and pairwise examples: use task multitask")
        if not isinstance(s.pairwise_fraction, (int, float)) or not 0.0 < s.pairwise_fraction < 1.0:
            _err(f"pairwise_fraction must be strictly between 0 and 1, not {s.pairwise_fraction!r}")
    if s.task != "single":
        if s.targets == "constant":
            _err(f"task {s.task} compares items' targets; constant targets tie every pair: use probe, shuffled, binary or file")
        if s.objective != "ce":
            _err(f"task {s.task} trains the reply 1/2 by cross-entropy: use objective ce")
        if s.format == "uncertainty-query":
            _err(f"task {s.task}: the single-question part needs format inline or two-pass")
    if s.objective not in OBJECTIVES:
        _err(f"objective must be one of {', '.join(OBJECTIVES)}, not {s.objective!r}")
    if s.format == "uncertainty-query" and s.targets != "binary":
        _err("format uncertainty-query answers Yes/No by correctness: use targets binary")
    if s.objective == "brier":
        if s.targets != "binary":
            _err("objective brier is trained on correctness (0/1): use targets binary")
        if s.format == "uncertainty-query":
            _err("objective brier reads the 0-100 distribution: use format inline or two-pass")
        if s.backend != "peft":
            _err("objective brier is implemented for the peft backend only")
    if s.backend not in BACKENDS:
        _err(f"backend must be peft or mlx, not {s.backend!r}")
    if s.targets == "file" and not s.targets_file:
        _err("targets 'file' needs a target file (--targets-file PATH: JSONL or CSV with columns id, target)")
    if s.targets != "file" and s.targets_file:
        _err("a target file was given but targets is not 'file'; use --targets file")
    if s.probe_position is not None and s.probe_position not in POSITIONS:
        _err(f"probe position must be one of {', '.join(POSITIONS)}, not {s.probe_position!r}")
    if s.probe_layer is not None and (not isinstance(s.probe_layer, int) or s.probe_layer < 0):
        _err(f"probe layer must be a hidden-state index >= 0, not {s.probe_layer!r}")
    if s.constant_value is not None and (not isinstance(s.constant_value, int) or not 0 <= s.constant_value <= 100):
        _err(f"constant target must be an integer 0..100, not {s.constant_value!r}")
    if s.limit_items is not None and (not isinstance(s.limit_items, int) or s.limit_items < 2):
        _err(f"limit_items must be an integer >= 2 (or None for all training items), not {s.limit_items!r}")
    if not isinstance(s.val_fraction, (int, float)) or not 0.0 <= s.val_fraction <= 0.5:
        _err(f"val_fraction must be between 0 and 0.5, not {s.val_fraction!r}")
    if not isinstance(s.rank, int) or s.rank < 1:
        _err(f"LoRA rank must be a positive integer, not {s.rank!r}")
    if s.rank > 1024:
        _err(f"LoRA rank {s.rank} is absurdly large (use 4..64)")
    if not isinstance(s.alpha, (int, float)) or not s.alpha > 0:
        _err(f"LoRA alpha must be > 0, not {s.alpha!r}")
    if not isinstance(s.dropout, (int, float)) or not 0.0 <= s.dropout < 1.0:
        _err(f"LoRA dropout must be in [0, 1), not {s.dropout!r}")
    if not s.target_modules or any(not isinstance(m, str) or not m for m in s.target_modules):
        _err("target_modules must name at least one module (e.g. q_proj,v_proj or all-linear or auto)")
    if AUTO in s.target_modules and len(s.target_modules) > 1:
        _err("target_modules 'auto' (the architecture's default) stands alone")
    if not isinstance(s.lr, (int, float)) or not s.lr > 0 or math.isnan(s.lr):
        _err(f"learning rate must be > 0, not {s.lr!r}")
    if s.lr >= 1.0:
        _err(f"learning rate {s.lr} is absurd for LoRA (use ~1e-5..1e-3)")
    if s.schedule not in SCHEDULES:
        _err(f"schedule must be one of {', '.join(SCHEDULES)}, not {s.schedule!r}")
    if not 0.0 <= s.warmup_fraction < 1.0:
        _err(f"warmup_fraction must be in [0, 1), not {s.warmup_fraction!r}")
    if s.weight_decay < 0:
        _err(f"weight_decay must be >= 0, not {s.weight_decay!r}")
    if s.max_grad_norm is not None and not s.max_grad_norm > 0:
        _err(f"max_grad_norm must be > 0 or None, not {s.max_grad_norm!r}")
    if not isinstance(s.batch_size, int) or s.batch_size < 1:
        _err(f"batch size must be a positive integer, not {s.batch_size!r}")
    if not isinstance(s.grad_accum, int) or s.grad_accum < 1:
        _err(f"gradient accumulation must be a positive integer, not {s.grad_accum!r}")
    if s.epochs is None and s.max_updates is None:
        _err("say how long to train: epochs and/or max_updates")
    if s.epochs is not None and (not isinstance(s.epochs, int) or s.epochs < 1):
        _err(f"epochs must be a positive integer, not {s.epochs!r}")
    if s.epochs is not None and s.epochs > 1000:
        _err(f"{s.epochs} epochs is absurd")
    if s.max_updates is not None and (not isinstance(s.max_updates, int) or s.max_updates < 1):
        _err(f"max_updates must be a positive integer, not {s.max_updates!r}")
    if s.loss_on not in LOSS_ON:
        _err(f"loss_on must be 'assistant' or 'confidence', not {s.loss_on!r}")
    if not isinstance(s.max_length, int) or s.max_length < 16:
        _err(f"max_length must be an integer >= 16, not {s.max_length!r}")
    if s.eval_every is not None and (not isinstance(s.eval_every, int) or s.eval_every < 1):
        _err(f"eval_every must be a positive integer or None, not {s.eval_every!r}")
    if s.early_stop_patience is not None:
        if not isinstance(s.early_stop_patience, int) or s.early_stop_patience < 1:
            _err(f"early_stop_patience must be a positive integer or None, not {s.early_stop_patience!r}")
        if s.val_fraction <= 0:
            _err("early stopping needs validation items: set val_fraction > 0")
    if not isinstance(s.checkpoint_every, int) or s.checkpoint_every < 1:
        _err(f"checkpoint_every must be a positive integer, not {s.checkpoint_every!r}")
    if not isinstance(s.keep_checkpoints, int) or s.keep_checkpoints < 1:
        _err(f"keep_checkpoints must be >= 1, not {s.keep_checkpoints!r}")
    if s.dtype not in DTYPES:
        _err(f"dtype must be one of {', '.join(DTYPES)}, not {s.dtype!r}")
    if s.amp not in AMP:
        _err(f"amp must be one of {', '.join(AMP)}, not {s.amp!r}")
    if s.amp == "bfloat16" and s.backend != "peft":
        _err("amp bfloat16 is implemented for the peft backend only (mlx trains in its dtype): use amp off or auto")
    if s.device not in DEVICES:
        _err(f"device must be one of {', '.join(DEVICES)}, not {s.device!r}")


# ---------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """How many optimizer updates a run makes, derived from the data size and the settings."""

    n_train: int
    n_val: int
    batch_size: int
    grad_accum: int
    batches_per_epoch: int
    updates_per_epoch: int
    updates_planned: int
    epochs_planned: float  # updates_planned / updates_per_epoch (fractional when capped)
    warmup_updates: int
    group_sizes: tuple[int, ...] = field(default=())  # micro-batches in each update of one epoch

    def to_dict(self) -> dict:
        """The plan as a JSON-able dict (``settings.json`` ``plan``)."""
        return to_dict(self)

    def epoch_of(self, update: int) -> float:
        """Epochs completed after ``update`` updates (counted in micro-batches seen)."""
        full, rem = divmod(int(update), self.updates_per_epoch)
        seen = sum(self.group_sizes[:rem])
        return full + seen / self.batches_per_epoch


def updates_per_epoch(n_examples: int, batch_size: int, grad_accum: int) -> tuple[int, int]:
    """(batches per epoch, optimizer updates per epoch) = (ceil(n/B), ceil(ceil(n/B)/A)).

    Raises:
        SettingsError: ``n_examples < 1``."""
    if n_examples < 1:
        raise SettingsError("no training examples")
    nb = math.ceil(n_examples / batch_size)
    return nb, math.ceil(nb / grad_accum)


def make_plan(s: FinetuneSettings, n_train: int, n_val: int = 0) -> Plan:
    """The update plan for ``n_train`` examples; raises SettingsError for impossible lengths."""
    if n_train < 1:
        raise SettingsError("no training examples left (all were held out for validation or filtered)")
    nb, upe = updates_per_epoch(n_train, s.batch_size, s.grad_accum)
    if s.epochs is None:
        if s.max_updates > upe:
            raise SettingsError(
                f"max_updates {s.max_updates} is more than the data allows: one pass over {n_train} training examples at batch "
                f"{s.batch_size} × accumulation {s.grad_accum} gives {upe} updates. Set epochs (e.g. --epochs "
                f"{math.ceil(s.max_updates / upe)}) to allow several passes, or lower max_updates."
            )
        planned = s.max_updates
    else:
        planned = s.epochs * upe
        if s.max_updates is not None:
            planned = min(planned, s.max_updates)
    groups = tuple(min(s.grad_accum, nb - g * s.grad_accum) for g in range(upe))
    warm = int(round(s.warmup_fraction * planned))
    return Plan(
        n_train=n_train, n_val=n_val, batch_size=s.batch_size, grad_accum=s.grad_accum, batches_per_epoch=nb,
        updates_per_epoch=upe, updates_planned=planned, epochs_planned=round(planned / upe, 4), warmup_updates=warm,
        group_sizes=groups,
    )


def lr_factor(schedule: str, update: int, planned: int, warmup: int) -> float:
    """Multiplier of the base learning rate for optimizer update number ``update`` (0-based)."""
    if warmup > 0 and update < warmup:
        return (update + 1) / warmup
    if schedule == "constant" or planned <= warmup:
        return 1.0
    t = (update - warmup) / max(1, planned - warmup)
    t = min(max(t, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - t
    return 0.5 * (1.0 + math.cos(math.pi * t))
