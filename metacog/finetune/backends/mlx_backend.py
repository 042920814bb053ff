"""LoRA with mlx-lm (Apple Silicon's fast path; on Linux it runs on CPU with ``mlx[cpu]``, slowly).

The same targets, plan and data order as the peft backend (``backends/common.py``): one
optimizer update = ``grad_accum`` micro-batches, loss = summed token cross-entropy over the
update's loss tokens / their number, AdamW with bias correction (as torch's), gradient
clipping, the same learning-rate factor per update.

The base model is the workspace model's Hugging Face directory (for the built-in model: the
dequantized float32 cache), loaded by ``mlx_lm.utils.load_model``. Transformers 5 writes
``rope_theta`` only under ``rope_parameters``; mlx-lm would then silently use 10000 and
produce nonsense, so the top-level value is passed explicitly (FEASIBILITY.md).

mlx-lm models take no attention mask, so batches are **right**-padded (real tokens never
attend to the padding under the causal mask, positions stay exact) and the padding carries
no loss.

Outputs: ``adapter_mlx/`` in mlx-lm's own format (``adapters.safetensors`` +
``adapter_config.json``; ``mlx_lm.generate --adapter-path`` loads it) and ``adapter/``, a
converted PEFT copy (``lora_A = lora_a.T``, ``lora_B = lora_b.T``, ``lora_alpha = scale × r``)
that ``PeftModel.from_pretrained`` loads, so evaluation is the same for both backends.

Public entry: :func:`train` (check :func:`available` first).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from metacog.finetune.settings import ALL_LINEAR, FinetuneSettings, Plan, SettingsError, lr_factor
from metacog.finetune.targets import Example
from metacog.core.workspace import atomic_save_npy, atomic_write_text, json_safe
from metacog.finetune.backends import Hooks
from metacog.finetune.backends.common import (after_update, begin_dir, commit_dir, latest_checkpoint, log_update, prune_checkpoints,
                     stop_cancelled,
                     update_batches, write_adapter_meta)

NAME = "mlx"


def available() -> tuple[bool, str]:
    """(True, "") when ``mlx`` and ``mlx-lm`` import, else (False, a message saying what to install)."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        return False, f"mlx/mlx-lm not importable ({type(e).__name__}: {e}); pip install 'mlx[cpu]' mlx-lm (Linux) or mlx mlx-lm (macOS)"
    return True, ""


# ------------------------------------------------------------------------------ model
def hf_dir(lm) -> Path:
    """The base model's local Hugging Face directory (``lm.source``).

    Raises:
        SettingsError: ``lm.source`` holds no ``config.json`` (mlx-lm needs a local directory)."""
    src = Path(str(lm.source))
    if not (src / "config.json").exists():
        raise SettingsError(f"the mlx backend needs the base model as a local Hugging Face directory; {lm.source!r} is not one")
    return src


def load_base(lm, dtype: str = "auto"):
    """mlx model of the workspace's base model (rope_theta fixed for transformers-5 configs).

    Raises:
        SettingsError: the model's ``config.json`` has no ``rope_theta`` (top level or under ``rope_parameters``)."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    src = hf_dir(lm)
    cfg = json.loads((src / "config.json").read_text())
    extra = {}
    if "rope_theta" not in cfg:
        theta = (cfg.get("rope_parameters") or {}).get("rope_theta") or (cfg.get("rope_scaling") or {}).get("rope_theta")
        if theta is None:
            raise SettingsError(f"{src}/config.json has no rope_theta (top level or under rope_parameters)")
        extra["rope_theta"] = float(theta)
    model, _ = load_model(src, model_config=extra or None)
    if dtype in ("bfloat16", "float16"):
        model.set_dtype(getattr(mx, dtype))
    return model, extra


def lora_keys(model, modules) -> list[str]:
    """Module paths inside a decoder block whose last name is in ``modules`` (or all linear).

    Raises:
        SettingsError: a target module the model does not have (the message lists its linear layers)."""
    import mlx.nn as nn

    keys = set()
    layer = model.layers[0]
    if list(modules) == ["auto"]:  # the architecture's default, as for the PEFT backend
        from metacog.model.arch import default_lora_targets

        names = {n.rsplit(".", 1)[-1] for n, m in layer.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))}
        modules = default_lora_targets(str(getattr(model, "model_type", "")), names)
    for name, m in layer.named_modules():
        if isinstance(m, (nn.Linear, nn.QuantizedLinear)):
            if list(modules) == [ALL_LINEAR] or name.rsplit(".", 1)[-1] in modules:
                keys.add(name)
    if not keys:
        avail = sorted({n.rsplit(".", 1)[-1] for n, m in layer.named_modules() if isinstance(m, nn.Linear)})
        raise SettingsError(f"target module(s) {', '.join(modules)} not in this model; its linear layers are: {', '.join(avail)}")
    return sorted(keys)


def add_lora(model, s: FinetuneSettings) -> dict:
    """Freeze ``model`` and put LoRA (Hu et al. 2021) on its target linear layers in every block
    (seeded with ``s.seed``); returns the mlx-lm LoRA config (rank, scale = alpha / rank, dropout, keys).

    Raises:
        SettingsError: a target module the model does not have (:func:`lora_keys`)."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers

    keys = lora_keys(model, s.target_modules)
    cfg = {"rank": s.rank, "scale": s.scale, "dropout": float(s.dropout), "keys": keys}
    model.freeze()
    mx.random.seed(s.seed)
    linear_to_lora_layers(model, len(model.layers), cfg)
    return cfg


# ------------------------------------------------------------------------------ loss
def _batch(examples: list[Example], pad_id: int):
    import mlx.core as mx

    T = max(len(e.input_ids) for e in examples)
    ids = np.full((len(examples), T), pad_id, dtype=np.int32)
    lab = np.full((len(examples), T), -100, dtype=np.int32)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = e.input_ids
        lab[i, : len(e.labels)] = e.labels
    tgt = lab[:, 1:]
    mask = (tgt != -100).astype(np.float32)
    return mx.array(ids[:, :-1]), mx.array(np.where(tgt == -100, 0, tgt)), mx.array(mask), int(mask.sum())


def _loss_sum(model, x, y, m):
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(x).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits, y, reduction="none")
    return (ce * m).sum()


def mean_loss(model, examples, pad_id, batch_size) -> float:
    """Mean token cross-entropy (nats per loss token) of ``model`` over ``examples``, in batches
    of ``batch_size`` (right-padded; padding carries no loss)."""
    model.eval()
    tot, n = 0.0, 0
    for s in range(0, len(examples), batch_size):
        x, y, m, k = _batch(examples[s : s + batch_size], pad_id)
        tot += float(_loss_sum(model, x, y, m))
        n += k
    model.train()
    return tot / max(n, 1)


# ------------------------------------------------------------------------------ files
def _adapter_params(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.trainable_parameters()))


def save_mlx_adapter(model, out: Path, lora_cfg: dict, meta: dict) -> Path:
    """Write the trained adapter in mlx-lm's format (``adapters.safetensors`` +
    ``adapter_config.json`` + ``metacog.json``) to ``out`` atomically; returns ``out``."""
    import mlx.core as mx

    tmp = begin_dir(out)
    mx.save_safetensors(str(tmp / "adapters.safetensors"), _adapter_params(model))
    atomic_write_text(tmp / "adapter_config.json", json.dumps(
        {"fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": lora_cfg}, indent=2))
    write_adapter_meta(tmp, meta)
    return commit_dir(tmp, out)


def mlx_to_peft(mlx_dir: Path, out: Path, s: FinetuneSettings, base_source: str, meta: dict) -> Path:
    """Convert an mlx-lm LoRA adapter into a PEFT adapter directory (see module docstring)."""
    import mlx.core as mx
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    w = mx.load(str(Path(mlx_dir) / "adapters.safetensors"))
    cfg = json.loads((Path(mlx_dir) / "adapter_config.json").read_text())["lora_parameters"]
    sd, mods = {}, set()
    for k, v in w.items():
        arr = np.array(v.astype(mx.float32))
        path, leaf = k.rsplit(".", 1)
        mods.add(path.rsplit(".", 1)[-1])
        if leaf == "lora_a":
            sd[f"base_model.model.{path}.lora_A.weight"] = torch.from_numpy(np.ascontiguousarray(arr.T))
        elif leaf == "lora_b":
            sd[f"base_model.model.{path}.lora_B.weight"] = torch.from_numpy(np.ascontiguousarray(arr.T))
    tmp = begin_dir(out)
    lc = LoraConfig(r=int(cfg["rank"]), lora_alpha=float(cfg["scale"]) * int(cfg["rank"]), lora_dropout=float(cfg["dropout"]),
                    target_modules=sorted(mods), bias="none", task_type="CAUSAL_LM", base_model_name_or_path=str(base_source))
    lc.save_pretrained(str(tmp))
    save_file(sd, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    write_adapter_meta(tmp, {**meta, "converted_from": "mlx-lm", "mlx_adapter": str(mlx_dir)})
    return commit_dir(tmp, out)


def save_checkpoint(run_path: Path, model, opt, update: int, extra: dict, lora_cfg: dict, meta: dict, keep: int) -> None:
    """Write checkpoint ``checkpoints/step-<update>`` (adapter, AdamW state, mlx RNG state,
    ``state.json`` with ``update`` and ``extra``) atomically, then keep only the ``keep`` newest."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    final = Path(run_path) / "checkpoints" / f"step-{update:06d}"
    tmp = begin_dir(final)
    mx.save_safetensors(str(tmp / "adapters.safetensors"), _adapter_params(model))
    atomic_write_text(tmp / "adapter_config.json", json.dumps({"fine_tune_type": "lora", "num_layers": len(model.layers),
                                                               "lora_parameters": lora_cfg}))
    state = dict(tree_flatten(opt.state))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), {k: v for k, v in state.items() if isinstance(v, mx.array)})
    rng = np.array(mx.random.state[0])
    atomic_save_npy(tmp / "rng.npy", rng)
    atomic_write_text(tmp / "state.json", json.dumps(json_safe({"update": update, **extra})))
    write_adapter_meta(tmp, meta)
    commit_dir(tmp, final)
    prune_checkpoints(run_path, keep)


def _load_checkpoint(path: Path, model, opt) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    model.load_weights(list(mx.load(str(path / "adapters.safetensors")).items()), strict=False)
    st = mx.load(str(path / "optimizer.safetensors"))
    opt.state = tree_unflatten(list(st.items()))
    mx.random.state[0] = mx.array(np.load(path / "rng.npy", allow_pickle=False))  # never unpickle
    return json.loads((path / "state.json").read_text())


# ------------------------------------------------------------------------------ train
def train(run, lm, train_ex: list[Example], val_ex: list[Example], s: FinetuneSettings, plan: Plan,
          hooks: Hooks | None = None, owned: bool = False) -> dict:
    """Train (or resume from the newest checkpoint) the LoRA adapter of ``run`` with mlx-lm;
    returns what ran (see :mod:`metacog.finetune.backends`). ``plan`` counts optimizer updates.

    Raises:
        SettingsError: mlx/mlx-lm are not importable, or the model is not a local HF directory.
        Stopped: the run was cancelled (a checkpoint of the last update is written first)."""
    ok, why = available()
    if not ok:
        raise SettingsError(why)
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    hooks = hooks or Hooks()
    run_path = Path(run.path)
    pad_id = lm.tokenizer.pad_token_id
    dtype = s.dtype if s.dtype != "auto" else "float32"
    model, rope_fix = load_base(lm, dtype)
    lora_cfg = add_lora(model, s)
    model.train()
    opt = optim.AdamW(learning_rate=s.lr, weight_decay=s.weight_decay, bias_correction=True)
    meta = {"base_weights_hash": lm.weights_hash, "base_model": lm.name, "base_source": lm.source, "run": run.id,
            "settings_key": s.key(), "backend": NAME, "rope_fix": rope_fix, "mlx_dtype": dtype}
    loss_grad = nn.value_and_grad(model, _loss_sum)

    start, best_val, best_update, bad, train_seconds = 0, math.inf, None, 0, 0.0
    ck = latest_checkpoint(run_path)
    if ck is not None:
        opt.init(model.trainable_parameters())
        st = _load_checkpoint(ck[1], model, opt)
        start = int(st["update"])
        best_val = st.get("best_val") if st.get("best_val") is not None else math.inf
        best_update, bad = st.get("best_update"), int(st.get("bad", 0))
        train_seconds = float(st.get("train_seconds", 0.0))
        run.truncate_log(start)
    else:
        mx.random.seed(s.seed + 1)
        run.truncate_log(-1)

    def extra():
        return {"best_val": None if best_val == math.inf else best_val, "best_update": best_update, "bad": bad,
                "train_seconds": train_seconds}

    def save(update_done: int) -> None:
        save_checkpoint(run_path, model, opt, update_done, extra(), lora_cfg, meta, s.keep_checkpoints)

    val_loss = float("nan")

    def validate(update_done):
        nonlocal best_val, best_update, bad, val_loss
        if not val_ex:
            return False
        val_loss = mean_loss(model, val_ex, pad_id, max(1, s.batch_size * 2))
        if val_loss < best_val - 1e-6:
            best_val, best_update, bad = val_loss, update_done, 0
            if s.early_stop_patience:
                save_mlx_adapter(model, run_path / "best_adapter_mlx", lora_cfg, {**meta, "update": update_done})
        else:
            bad += 1
        hooks.on_val({"update": update_done, "epoch": plan.epoch_of(update_done), "val_loss": val_loss})
        return bool(s.early_stop_patience and bad >= s.early_stop_patience)

    if start == 0 and val_ex:
        validate(0)
    update, stopped, last_loss = start, None, float("nan")
    while update < plan.updates_planned:
        if hooks.should_stop():
            stopped = "cancelled"
            break
        t0 = time.time()
        groups = [[train_ex[i] for i in b] for b in update_batches(plan, s.seed, update)]
        batches = [_batch(g, pad_id) for g in groups]
        n_tok = sum(b[3] for b in batches)
        grads, tot = None, 0.0
        for x, y, m, _ in batches:
            if hooks.should_stop():
                stopped = "cancelled"
                break
            l, g = loss_grad(model, x, y, m / n_tok)
            grads = g if grads is None else tree_map(lambda a, b: a + b, grads, g)
            tot += float(l) * n_tok
        if stopped:
            break
        gnorm = None
        if s.max_grad_norm:
            grads, gn = optim.clip_grad_norm(grads, s.max_grad_norm)
            gnorm = float(gn)
        lr_now = s.lr * lr_factor(s.schedule, update, plan.updates_planned, plan.warmup_updates)
        opt.learning_rate = lr_now
        opt.update(model, grads)
        mx.eval(model.trainable_parameters(), opt.state)
        update += 1
        dt, last_loss = log_update(hooks, plan, update, t0, tot, n_tok, lr_now, gnorm)
        train_seconds += dt
        if after_update(update, plan, s, validate, save, hooks):
            stopped = "early"
            break
    if stopped == "cancelled":
        stop_cancelled(update, plan, run_path, save, hooks)

    final_meta = {**meta, "updates_run": update, "epochs_run": plan.epoch_of(update), "updates_planned": plan.updates_planned}
    if s.early_stop_patience and best_update is not None and (run_path / "best_adapter_mlx" / "COMPLETE").exists():
        mlx_dir = run_path / "best_adapter_mlx"
        final_meta["selected"] = "best validation loss"
    else:
        mlx_dir = save_mlx_adapter(model, run_path / "adapter_mlx", lora_cfg, {**final_meta, "selected": "last update"})
    mlx_to_peft(mlx_dir, run.adapter_dir, s, lm.source, final_meta)
    return {
        "updates_run": update, "epochs_run": plan.epoch_of(update), "stopped": stopped, "best_update": best_update,
        "best_val_loss": None if best_val == math.inf else best_val, "final_train_loss": last_loss,
        "final_val_loss": val_loss if val_ex else None, "train_seconds": round(train_seconds, 2),
        "n_trainable": int(sum(v.size for v in _adapter_params(model).values())), "mlx_adapter": str(mlx_dir),
    }
