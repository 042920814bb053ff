"""LoRA (Hu et al. 2021) with peft on torch (CPU, CUDA, MPS): the default backend.

A plain training loop (no HF Trainer) so that what is counted is exactly what runs:
one optimizer update = ``grad_accum`` micro-batches (fewer for the last update of an epoch),
loss = summed token cross-entropy over the update's loss tokens / their number, AdamW (Loshchilov & Hutter 2019),
gradient clipping, LambdaLR schedule (:func:`metacog.finetune.settings.lr_factor`).

Checkpoints (every ``checkpoint_every`` updates, at validation points, and when stopped)
hold the adapter, optimizer, scheduler, RNG states and the update count; a resumed run
continues from the newest one and produces the same adapter as an uninterrupted run with
the same seed (same thread count and device: floating-point sums are order-sensitive).

Public entry: :func:`train`; :func:`load_adapter_model` for evaluation.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metacog.model.arch import input_device
from metacog.core.safestate import load_state, save_state
from metacog.readout.values import body_and_head, left_pad
from metacog.finetune.settings import ALL_LINEAR, FinetuneSettings, Plan, SettingsError, lr_factor
from metacog.finetune.targets import Example
from metacog.finetune.backends import Hooks
from metacog.finetune.backends.common import (after_update, begin_dir, commit_dir, latest_checkpoint, log_update, prune_checkpoints,
                     stop_cancelled,
                     update_batches, write_adapter_meta)

NAME = "peft"


# ------------------------------------------------------------------------------ model
def linear_module_names(model) -> list[str]:
    """Last names of the model's linear layers (``torch.nn.Linear`` and GPT-2's ``Conv1D``)."""
    from metacog.model.arch import linear_dims

    names = set()
    for n, m in model.named_modules():
        if linear_dims(m) is not None and not hasattr(m, "base_layer") and not n.endswith("lm_head"):
            names.add(n.rsplit(".", 1)[-1])
    return sorted(names)


def resolved_targets(model, modules) -> list[str]:
    """``modules`` with ``auto`` replaced by the architecture's default (:func:`metacog.model.arch.lora_targets`)."""
    from metacog.model.arch import resolve_targets

    return list(resolve_targets(model, modules))


def check_target_modules(model, modules, rank: int) -> None:
    """Clear messages for target modules the model does not have and for absurd ranks.

    Raises:
        SettingsError: a target module the model lacks, or ``rank`` above the model width."""
    avail = linear_module_names(model)
    mods = resolved_targets(model, modules)
    if mods != [ALL_LINEAR]:
        missing = [m for m in mods if m not in avail]
        if missing:
            raise SettingsError(f"target module(s) {', '.join(missing)} not in this model; its linear layers are: "
                                f"{', '.join(avail)} (or use all-linear)")
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if rank > int(cfg.hidden_size):
        raise SettingsError(f"LoRA rank {rank} exceeds the model width {cfg.hidden_size}")


def lora_config(s: FinetuneSettings, model=None):
    """The peft ``LoraConfig`` of ``s`` (LoRA, Hu et al. 2021: rank ``s.rank``, ``lora_alpha =
    s.alpha``, dropout, causal-LM task, no bias); ``auto`` targets are resolved for ``model``."""
    from peft import LoraConfig

    mods = resolved_targets(model, s.target_modules) if model is not None else list(s.target_modules)
    mods = ALL_LINEAR if mods == [ALL_LINEAR] else mods
    return LoraConfig(r=s.rank, lora_alpha=float(s.alpha), lora_dropout=float(s.dropout), target_modules=mods,
                      bias="none", task_type="CAUSAL_LM")


def wrap_lora(model, s: FinetuneSettings):
    """``model`` wrapped by peft with LoRA adapters (A initialised from ``s.seed``).

    Raises:
        SettingsError: a target module the model lacks, or a rank above the model width."""
    from peft import get_peft_model

    check_target_modules(model, s.target_modules, s.rank)
    torch.manual_seed(s.seed)  # LoRA A init
    pm = get_peft_model(model, lora_config(s, model))
    return pm


def trainable_parameters(pm) -> list[torch.nn.Parameter]:
    """The parameters of ``pm`` that require gradients (the LoRA A/B matrices)."""
    return [p for p in pm.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------ precision
def resolve_amp(amp: str, model) -> torch.dtype | None:
    """The autocast dtype training runs under, or None for none (``FinetuneSettings.amp``).

    ``off``: None. ``bfloat16``: bfloat16 when the weights are float32 (weights already in a
    16-bit dtype have nothing to mix: None). ``auto``: bfloat16 where the device has bf16
    arithmetic (:func:`torch.cuda.is_bf16_supported`; a CPU whose ``/proc/cpuinfo`` lists
    avx512_bf16 or amx_bf16, :func:`metacog.model.loading.cpu_supports_bf16`), else None. Under
    autocast the matmuls run in bfloat16 while LoRA weights, gradients, the loss and AdamW's
    state stay float32 (Micikevicius et al. 2018); ``bench/bench_finetune.py --compare-amp``
    times both on the same run."""
    from metacog.model.loading import cpu_supports_bf16

    p = next(model.parameters())
    if amp == "off" or p.dtype != torch.float32:
        return None
    if amp == "bfloat16":
        return torch.bfloat16
    if p.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if p.device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None


def autocast(model, dtype: torch.dtype | None):
    """``torch.autocast`` on ``model``'s device in ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype)


def run_precision(run, pm, s: FinetuneSettings, resumed: bool) -> torch.dtype | None:
    """The autocast dtype of ``run``: the one recorded when it started (``settings.json``
    ``training_precision``) when it resumes, so a run never changes precision midway; else
    :func:`resolve_amp`, recorded."""
    rec = run.settings().get("training_precision")
    if resumed and rec is not None:
        return getattr(torch, rec["autocast"]) if rec.get("autocast") else None
    dt = resolve_amp(s.amp, pm)
    name = lambda x: str(x).replace("torch.", "")  # noqa: E731
    run.update_settings(training_precision={
        "amp": s.amp, "autocast": name(dt) if dt else None, "weights": name(next(pm.parameters()).dtype),
        "adapter": name(next(p for p in pm.parameters() if p.requires_grad).dtype)})
    return dt


# ------------------------------------------------------------------------------ loss
def batch_tensors(examples: list[Example], pad_id: int, dev):
    """Left-padded ``input_ids``, ``attention_mask``, ``position_ids`` and ``labels`` (each
    ``[B, T]``, labels -100 where there is no loss) of a batch of examples, on ``dev``."""
    ids, att, pos = left_pad([e.input_ids for e in examples], pad_id, dev)
    T = ids.shape[1]
    lab = torch.full((len(examples), T), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        lab[i, T - len(e.labels):] = torch.tensor(e.labels, dtype=torch.long)
    return ids, att, pos, lab.to(dev)


def loss_sum(model, examples: list[Example], pad_id: int) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the loss tokens of a batch, and their number."""
    dev = input_device(model)
    body, to_logits = body_and_head(model)
    ids, att, pos, lab = batch_tensors(examples, pad_id, dev)
    h = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False).last_hidden_state
    tgt = lab[:, 1:]
    m = tgt != -100
    logits = to_logits(h[:, :-1][m])
    return F.cross_entropy(logits, tgt[m], reduction="sum"), int(m.sum())


def brier_sum(model, examples: list[Example], tok) -> tuple[torch.Tensor, int]:
    """ConfTuner's objective: Σ over examples of the Brier score of the exact 0–100
    distribution q at the confidence slot (renormalised over 0–100) against correctness
    y = target / 100: Σ_v q(v) (v/100 − y)², and the number of examples. Differentiable
    through :func:`metacog.readout.values.value_logprobs`; needs no target text."""
    from metacog.readout.values import value_logprobs

    lp = value_logprobs(model, tok, [e.input_ids for e in examples])  # [B, 101]
    q = torch.softmax(lp, dim=-1)  # renormalised over 0..100
    v = torch.arange(101, dtype=q.dtype, device=q.device) / 100.0
    y = torch.tensor([e.target / 100.0 for e in examples], dtype=q.dtype, device=q.device)
    return (q * (v.unsqueeze(0) - y.unsqueeze(1)) ** 2).sum(), len(examples)


def objective_sum(model, examples: list[Example], pad_id: int, objective: str = "ce", tok=None) -> tuple[torch.Tensor, int]:
    """(summed loss, units): token cross-entropy over loss tokens, or the Brier objective over examples."""
    if objective == "brier":
        return brier_sum(model, examples, tok)
    return loss_sum(model, examples, pad_id)


def loss_units(e: Example, objective: str = "ce") -> int:
    """How many units an example contributes to a mean loss: its loss tokens (``ce``), or 1 (``brier``)."""
    return 1 if objective == "brier" else sum(1 for x in e.labels[1:] if x != -100)


@torch.no_grad()
def mean_loss(model, examples: list[Example], pad_id: int, batch_size: int, objective: str = "ce", tok=None,
              amp: torch.dtype | None = None) -> float:
    """Mean loss over ``examples`` without gradients, in batches of ``batch_size``: token
    cross-entropy in nats per loss token (``ce``), or the Brier objective per example (``brier``,
    in [0, 1]), under autocast in ``amp`` when given (as training ran). The model's train/eval
    mode is restored."""
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    try:
        for s in range(0, len(examples), batch_size):
            with autocast(model, amp):
                l, k = objective_sum(model, examples[s : s + batch_size], pad_id, objective, tok)
            tot += float(l.detach())
            n += k
    finally:
        model.train(was)
    return tot / max(n, 1)


# ------------------------------------------------------------------------------ state
def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_adapter(pm, out: Path, meta: dict) -> Path:
    """Write the PEFT adapter of ``pm`` plus ``metacog.json`` (``meta``) to ``out`` atomically; returns ``out``."""
    tmp = begin_dir(out)
    pm.save_pretrained(str(tmp))
    write_adapter_meta(tmp, meta)
    return commit_dir(tmp, out)


def load_adapter_weights(pm, adapter_dir: Path) -> None:
    """Load the LoRA weights of ``adapter_dir/adapter_model.safetensors`` into ``pm``.

    Raises:
        RuntimeError: the file has LoRA keys ``pm`` does not (a different target set or model)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    sd = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    res = set_peft_model_state_dict(pm, sd)
    bad = [k for k in getattr(res, "unexpected_keys", []) or [] if "lora" in k]
    if bad:
        raise RuntimeError(f"checkpoint adapter has unexpected keys: {bad[:3]}")


def save_checkpoint(run_path: Path, pm, opt, sched, update: int, extra: dict, meta: dict, keep: int) -> Path:
    """Write checkpoint ``checkpoints/step-<update>`` (adapter, optimizer, scheduler, RNG states
    and ``update``, via :mod:`metacog.core.safestate`, no pickle) atomically, then keep the ``keep``
    newest; returns its path."""
    final = Path(run_path) / "checkpoints" / f"step-{update:06d}"
    tmp = begin_dir(final)
    pm.save_pretrained(str(tmp / "adapter"))
    write_adapter_meta(tmp / "adapter", meta)
    save_state(tmp, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(),
                     "update": update, **extra})
    commit_dir(tmp, final)
    prune_checkpoints(run_path, keep)
    return final


# ------------------------------------------------------------------------------ train
def train(run, lm, train_ex: list[Example], val_ex: list[Example], s: FinetuneSettings, plan: Plan,
          hooks: Hooks | None = None, owned: bool = False) -> dict:
    """Train (or resume) the LoRA adapter of ``run``; returns what ran (see backends/__init__).

    Raises:
        ValueError: ``train_ex`` does not have the ``plan.n_train`` examples the plan was made for.
        SettingsError: invalid target modules or rank (:func:`check_target_modules`).
        Stopped: the run was cancelled (its last update is checkpointed first)."""
    hooks = hooks or Hooks()
    run_path = Path(run.path)
    if len(train_ex) != plan.n_train:
        raise ValueError(f"plan is for {plan.n_train} training examples, got {len(train_ex)}")
    tok = lm.tokenizer
    pad_id = tok.pad_token_id
    model = lm.model if owned else copy.deepcopy(lm.model)
    pm = wrap_lora(model, s)
    try:
        return _train(run, run_path, lm, pm, train_ex, val_ex, s, plan, hooks, pad_id)
    finally:
        if owned:  # the caller's model comes back exactly as it was (LoRA layers removed, nothing merged)
            pm.unload()


def _train(run, run_path, lm, pm, train_ex, val_ex, s, plan, hooks, pad_id) -> dict:
    params = trainable_parameters(pm)
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(s.schedule, k, plan.updates_planned, plan.warmup_updates))
    meta = {"base_weights_hash": lm.weights_hash, "base_model": lm.name, "base_source": lm.source, "run": run.id,
            "settings_key": s.key(), "backend": NAME}

    start, best_val, best_update, bad, train_seconds = 0, math.inf, None, 0, 0.0
    ck = latest_checkpoint(run_path)
    if ck is not None:
        step, path = ck
        load_adapter_weights(pm, path / "adapter")
        state = load_state(path)  # safetensors + JSON; never unpickles (a legacy state.pt is refused)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["update"])
        best_val = state.get("best_val", math.inf)
        best_update = state.get("best_update")
        bad = int(state.get("bad", 0))
        train_seconds = float(state.get("train_seconds", 0.0))
        run.truncate_log(start)
    else:
        torch.manual_seed(s.seed + 1)  # dropout stream, independent of the LoRA init above
        run.truncate_log(-1)
    amp = run_precision(run, pm, s, resumed=ck is not None)

    pm.train()
    stopped = None
    last_loss = float("nan")
    val_loss = float("nan")

    def extra():
        return {"best_val": best_val, "best_update": best_update, "bad": bad, "train_seconds": train_seconds}

    def save(update_done: int) -> None:
        save_checkpoint(run_path, pm, opt, sched, update_done, extra(), meta, s.keep_checkpoints)

    def validate(update_done: int):
        nonlocal best_val, best_update, bad, val_loss
        if not val_ex:
            return False
        t0 = time.time()
        val_loss = mean_loss(pm, val_ex, pad_id, max(1, s.batch_size * 2), s.objective, lm.tokenizer, amp)
        improved = val_loss < best_val - 1e-6
        if improved:
            best_val, best_update, bad = val_loss, update_done, 0
            if s.early_stop_patience:
                save_adapter(pm, run_path / "best_adapter", {**meta, "update": update_done, "val_loss": val_loss})
        else:
            bad += 1
        hooks.on_val({"update": update_done, "epoch": plan.epoch_of(update_done), "val_loss": val_loss,
                      "seconds": round(time.time() - t0, 3)})
        return bool(s.early_stop_patience and bad >= s.early_stop_patience)

    if start == 0 and val_ex:
        validate(0)
    update = start
    while update < plan.updates_planned:
        if hooks.should_stop():
            stopped = "cancelled"
            break
        t0 = time.time()
        groups = [[train_ex[i] for i in b] for b in update_batches(plan, s.seed, update)]
        n_tok = sum(loss_units(e, s.objective) for g in groups for e in g)
        opt.zero_grad(set_to_none=True)
        tot = 0.0
        interrupted = False
        for g in groups:
            if hooks.should_stop():
                interrupted = True
                break
            with autocast(pm, amp):
                l, _ = objective_sum(pm, g, pad_id, s.objective, lm.tokenizer)
            (l.float() / n_tok).backward()
            tot += float(l.detach())
        if interrupted:  # partial accumulation is discarded: the run stays at `update`
            opt.zero_grad(set_to_none=True)
            stopped = "cancelled"
            break
        gnorm = None
        if s.max_grad_norm:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm))
        lr_now = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        update += 1
        dt, last_loss = log_update(hooks, plan, update, t0, tot, n_tok, lr_now, gnorm)
        train_seconds += dt
        if after_update(update, plan, s, validate, save, hooks):
            stopped = "early"
            break

    if stopped == "cancelled":
        stop_cancelled(update, plan, run_path, save, hooks)

    final_meta = {**meta, "updates_run": update, "epochs_run": plan.epoch_of(update), "updates_planned": plan.updates_planned}
    if s.early_stop_patience and best_update is not None and (run_path / "best_adapter" / "COMPLETE").exists():
        # early stopping: the final adapter is the best one on validation loss
        import shutil

        tmp = begin_dir(run.adapter_dir)
        for p in (run_path / "best_adapter").iterdir():
            if p.name != "COMPLETE":
                shutil.copy2(p, tmp / p.name)
        write_adapter_meta(tmp, {**final_meta, "selected": "best validation loss", "best_update": best_update})
        commit_dir(tmp, run.adapter_dir)
    else:
        save_adapter(pm, run.adapter_dir, {**final_meta, "selected": "last update"})
    return {
        "updates_run": update,
        "epochs_run": plan.epoch_of(update),
        "stopped": stopped,
        "best_update": best_update,
        "best_val_loss": None if best_val == math.inf else best_val,
        "final_train_loss": last_loss,
        "final_val_loss": val_loss if val_ex else None,
        "train_seconds": round(train_seconds, 2),
        "n_trainable": int(sum(p.numel() for p in params)),
        "autocast": str(amp).replace("torch.", "") if amp else None,
    }


# ------------------------------------------------------------------------------ loading
def load_adapter_model(lm, adapter_dir: Path, copy_model: bool = True):
    """A LoadedModel whose forward applies the adapter (unmerged LoRA layers inside the
    base architecture, so hooks, generation and the 0–100 readout work unchanged). On a base
    that runs :mod:`metacog.model.ragged` attention (bfloat16 on a CPU) the LoRA weights are
    cast to bfloat16, so an item's numbers do not depend on its batch; elsewhere peft keeps
    them in float32."""
    from dataclasses import replace

    from peft import PeftModel

    from metacog.model.loading import file_hash

    from metacog.model.ragged import is_ragged

    model = copy.deepcopy(lm.model) if copy_model else lm.model
    # Under ragged bfloat16 the LoRA weights take the base's dtype: peft's default keeps them in
    # float32, whose matmul rows depend on the batch's row count (2 vs 8 rows: 586 of 1,152
    # outputs of a down projection apart), enough to change an item's answer with its batch
    # (bench/bench_invariance_stages.py, fine-tune evaluation: 2 of 8 answers before, 0 after).
    pm = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False,
                                   autocast_adapter_dtype=not is_ragged(model))
    pm.eval()
    inner = pm.get_base_model()
    digest = file_hash(Path(adapter_dir) / "adapter_model.safetensors")
    ft = replace(lm, model=inner, name=f"{lm.name} + LoRA", source=str(adapter_dir),
                 weights_hash=f"{lm.weights_hash}+lora-{digest}")
    ft._peft = pm  # for unload_adapter
    return ft


def unload_adapter(ft) -> None:
    """Remove the adapter's LoRA layers again (the base model is restored in place)."""
    pm = getattr(ft, "_peft", None)
    if pm is not None:
        pm.unload()
        ft._peft = None
