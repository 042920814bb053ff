"""Evaluate a fine-tuned adapter against its base model, always on the **eval split**.

The fine-tuned model re-answers the eval items through the very same stages as the study
(:func:`metacog.stages.answers.run_answers`, :func:`metacog.stages.activations.run_activations`) run on a
*sub-workspace* ``runs/<run>/eval/`` whose items are the eval split (renumbered; ``base_row``
keeps the main workspace's row). The base model's results for the same items come from the
main workspace (same model, same prompts, same settings), so base and fine-tuned are
compared on the same items.

``eval.json`` holds, for base and fine-tuned:
- accuracy, its change, and how many items flipped (right→wrong, wrong→right);
- per readout (verbal text, E[v] and argmax of the exact 0–100 distribution; inline and
  two-pass): AUROC (+ bootstrap CI), ECE, Brier, AURC, ceiling rate (share ≥ 95), the
  validity screen, parse rate;
- AUROC on the items whose correctness did not change (so an accuracy shift cannot fake a
  discrimination gain);
- recovery = (AUROC_ft − 0.5) / (AUROC_probe − 0.5), AUROC_probe = the target probe's AUROC
  on these eval items (held-out fit); the question-type prior's AUROC beside it;
- re-trained probes: for every (layer, position), a probe cross-fitted (5-fold, the probes
  module's exact procedure) on the eval items' hidden states of the base model (base labels)
  and of the fine-tuned model (its own labels): does fine-tuning change what is linearly readable?
- reliability bins before/after for the headline readouts; ``per_item.parquet`` beside it.

Public entry: :func:`evaluate_run` (:func:`evaluate_adapter` for an adapter directory).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.stats import metrics
from metacog.core.settings import MODES, POSITIONS, ModelSettings, stable_hash, to_dict
from metacog.core.workspace import Workspace, WorkspaceError, atomic_write_json, atomic_write_parquet
from metacog.core.files import load_array, read_table
from metacog.finetune.runs import Run, RunError, get_run

EVAL_VERSION = 1
MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}
READS = ("verbal", "ev", "argmax")
READOUTS = [f"{r}_{MODE_KEYS[m]}" for m in MODES for r in READS]


# ------------------------------------------------------------------------------ adapters
def check_adapter(adapter_dir: Path, base_hash: str | None, lm=None) -> dict:
    """Refuse, with a clear message, an adapter that is not a PEFT adapter or was trained on
    another base model (recorded weights hash, or module shapes that do not fit).

    Raises:
        RunError: not a PEFT adapter directory, or trained on another base model."""
    from metacog.finetune.backends.common import read_adapter_meta

    d = Path(adapter_dir)
    if not (d / "adapter_config.json").exists() or not (d / "adapter_model.safetensors").exists():
        raise RunError(f"{d} is not a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    meta = read_adapter_meta(d)
    got = meta.get("base_weights_hash")
    if got and base_hash and got != base_hash:
        raise RunError(
            f"the adapter in {d} was trained on another base model ({meta.get('base_model', '?')}, weights {got}); "
            f"this workspace's model has weights {base_hash}. Evaluate it in a workspace of its own base model."
        )
    if lm is not None:
        check_adapter_shapes(d, lm)
    return meta


_ADAPTER_PREFIXES = ("base_model.model.", "base_model.")
_WRAPPER_PARTS = (".base_layer", ".modules_to_save", ".original_module", ".default")


def _adapter_key_path(key: str) -> str:
    """A saved adapter tensor's name as the base model's parameter/module name."""
    for pre in _ADAPTER_PREFIXES:
        if key.startswith(pre):
            key = key[len(pre):]
            break
    for part in _WRAPPER_PARTS:
        key = key.replace(part + ".", ".")
        if key.endswith(part):
            key = key[: -len(part)]
    return key


def check_adapter_shapes(adapter_dir: Path, lm) -> None:
    """Refuse, in one line, an adapter whose saved tensors do not fit ``lm``'s model.

    Reads every tensor kind peft saves: ``lora_A``/``lora_B`` (checked against the adapted
    module's in/out features), ``lora_embedding_A``/``lora_embedding_B`` (against the
    embedding's rows/width), ``lora_magnitude_vector`` (DoRA; out features), and full weights
    (``modules_to_save``, the embedding/output layers ``save_embedding_layers`` writes) against
    the parameter of the same name. A mismatch in the vocabulary dimension says so ("made for
    a vocabulary of N tokens, this model has M"). Raises :class:`RunError`.
    """
    from safetensors import safe_open

    from metacog.model.arch import linear_dims

    d = Path(adapter_dir)
    model = lm.model
    mods = dict(model.named_modules())
    params = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = int(emb.weight.shape[0]) if emb is not None else None
    name = getattr(lm, "name", "this model")

    def refuse(path: str, what: str, want, have, dim_is_vocab: bool) -> None:
        if dim_is_vocab and vocab is not None:
            raise RunError(f"the adapter in {d} was made for a vocabulary of {have} tokens, this model ({name}) has "
                           f"{want}: '{path}' {what} (a model whose vocabulary was resized, e.g. tokens added before "
                           "fine-tuning? load it with that tokenizer and model)")
        raise RunError(f"the adapter in {d} does not fit this model ({name}): '{path}' {what} "
                       "(an adapter from another base model?)")

    with safe_open(str(d / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():
            shape = tuple(f.get_slice(k).get_shape())
            if ".lora_" in k:
                mpath = _adapter_key_path(k.split(".lora_")[0])
                kind = k.split(".lora_", 1)[1].split(".")[0]
                m = mods.get(mpath)
                if m is None:
                    raise RunError(f"the adapter in {d} does not fit this model: it adapts '{mpath}', which this model "
                                   f"({name}) does not have (an adapter from another base model?)")
                if kind in ("embedding_A", "embedding_B"):
                    w = getattr(m, "weight", None)
                    if w is None or w.dim() != 2:
                        raise RunError(f"the adapter in {d} does not fit this model: it adapts '{mpath}' as an embedding, "
                                       f"which it is not in this model ({name})")
                    rows, width = int(w.shape[0]), int(w.shape[1])
                    if kind == "embedding_A" and shape[-1] != rows:
                        refuse(mpath, f"has {rows} rows here, the adapter's lora_embedding_A expects {shape[-1]}",
                               rows, shape[-1], rows == vocab)
                    if kind == "embedding_B" and shape[0] != width:
                        refuse(mpath, f"is {width} wide here, the adapter's lora_embedding_B expects {shape[0]}",
                               width, shape[0], False)
                    continue
                feats = linear_dims(m)  # nn.Linear, GPT-2 Conv1D, or a PEFT layer around one
                if feats is None:
                    raise RunError(f"the adapter in {d} does not fit this model: it adapts '{mpath}', which is not a "
                                   f"linear layer in this model ({name})")
                fin, fout = feats
                if kind == "A" and shape[-1] != fin:
                    refuse(mpath, f"has {fin} input features here, the adapter's lora_A expects {shape[-1]}",
                           fin, shape[-1], fin == vocab)
                if kind == "B" and shape[0] != fout:
                    refuse(mpath, f"has {fout} output features here, the adapter's lora_B expects {shape[0]}",
                           fout, shape[0], fout == vocab)
                if kind == "magnitude_vector" and shape[0] != fout:
                    refuse(mpath, f"has {fout} output features here, the adapter's magnitude vector has {shape[0]}",
                           fout, shape[0], fout == vocab)
                continue
            ppath = _adapter_key_path(k)
            want = params.get(ppath)
            if want is None:
                raise RunError(f"the adapter in {d} does not fit this model: it saves '{ppath}', which this model "
                               f"({name}) does not have (an adapter from another base model?)")
            if want != shape:
                diff = [i for i, (a, b) in enumerate(zip(want, shape)) if a != b]
                on_vocab = len(want) == len(shape) and len(diff) == 1 and want[diff[0]] == vocab
                refuse(ppath, f"is {list(want)} here, the adapter saves {list(shape)}",
                       want[diff[0]] if on_vocab else want, shape[diff[0]] if on_vocab else shape, on_vocab)


# ------------------------------------------------------------------------------ blocks
def score_block(v, y, bins: int, seed: int) -> dict:
    """Metrics of one 0–100 readout: ``v`` ``[n]`` in points 0–100 (NaN = unparsed, dropped and
    counted), ``y`` ``[n]`` correctness. The scores v/100 go through
    :func:`metacog.stats.metrics.summarize_scores` (AUROC with its bootstrap CI, seeded by
    ``seed``; ECE over ``bins`` equal-width bins; Brier; AURC), plus ``ceiling_rate`` (share of
    values >= 95, from :func:`metacog.stats.metrics.validity_screen`, whose verdict is
    ``validity``), ``parse_rate`` (share not NaN) and ``mean`` (points)."""
    v = np.asarray(v, dtype=float)
    y = np.asarray(y, dtype=bool)
    ok = ~np.isnan(v)
    s = metrics.summarize_scores(v / 100.0, y, n_bins=bins, seed=seed, nan_policy="omit")
    vs = metrics.validity_screen(v, y)
    out = {k: (list(x) if isinstance(x, tuple) else x) for k, x in s.items()}
    out.update(ceiling_rate=vs["L"], validity=vs, parse_rate=float(ok.mean()) if v.size else float("nan"),
               mean=float(np.nanmean(v)) if ok.any() else float("nan"))
    return out


def _auroc(v, y) -> float:
    v = np.asarray(v, dtype=float)
    return metrics.auroc(v, np.asarray(y, dtype=bool), nan_policy="omit") if v.size else float("nan")


def _recovery(a_ft: float, a_probe: float) -> float:
    if a_probe is None or not np.isfinite(a_probe) or abs(a_probe - 0.5) < 1e-9 or not np.isfinite(a_ft):
        return float("nan")
    return float((a_ft - 0.5) / (a_probe - 0.5))


def _bins(v, y, n_bins: int) -> list[dict]:
    v = np.asarray(v, dtype=float)
    ok = ~np.isnan(v)
    if not ok.any():
        return []
    return metrics.reliability_bins(v[ok] / 100.0, np.asarray(y, bool)[ok], n_bins).to_dict("records")


# ------------------------------------------------------------------------------ re-trained probes
def retrained_probes(states_base: dict, y_base, states_ft: dict, y_ft, folds: int, seed: int,
                     threads: int | None = None, layers=None) -> pd.DataFrame:
    """Per (layer, position): AUROC of probes cross-fitted on the eval items' states, base
    (base labels) vs fine-tuned (fine-tuned labels). Same procedure as the study's probes
    (metacog.stages.probes.fit_probes, all rows as its 'train' split, pooled out-of-fold p).

    ``states_*``: position → ``[n_items, n_layers + 1, d_model]``; ``y_*``: ``[n_items]`` correctness.
    Returns one row per (layer, position): layer, position, auroc_base, auroc_ft, delta (ft − base)."""
    from metacog.stages.probes import fit_probes

    rows = []
    res = {}
    for name, states, y in (("base", states_base, y_base), ("ft", states_ft, y_ft)):
        y = np.asarray(y, dtype=bool)
        n = y.size
        pos = [p for p in POSITIONS if p in states_base and p in states_ft]  # both models' cached positions
        r = fit_probes({p: states[p] for p in pos}, y, np.array(["train"] * n), positions=pos, layers=layers,
                       folds=folds, seed=seed, n_boot=0, n_perm=0, threads=threads)
        res[name] = (r, y, pos)
    rb, yb, pos = res["base"]
    rf, yf, _ = res["ft"]
    L = rb.oof.shape[1]
    for pi, p in enumerate(pos):
        for l in (range(L) if layers is None else layers):
            pb = rb.oof[:, l, pi].astype(float)
            pf = rf.oof[:, l, pi].astype(float)
            rows.append({"layer": int(l), "position": p,
                         "auroc_base": _auroc(pb, yb) if not np.isnan(pb).all() else float("nan"),
                         "auroc_ft": _auroc(pf, yf) if not np.isnan(pf).all() else float("nan")})
    df = pd.DataFrame(rows)
    df["delta"] = df["auroc_ft"] - df["auroc_base"]
    return df


# ------------------------------------------------------------------------------ main
def check_two_pass(ws: Workspace, fmt: str) -> None:
    """Refuse, before any training or model load, a run whose evaluation reads the two-pass
    mode (format ``two-pass`` or ``uncertainty-query``) in a workspace whose study did not
    compute it (``StudySettings.two_pass``): its base readouts would be missing, not data.
    Raises :class:`RunError` saying how to add it."""
    if fmt == "inline" or not ws.path("answers.parquet").exists():
        return
    if "verbal_two_pass" not in read_table(ws.path("answers.parquet")).columns:
        from metacog.core.settings import TWO_PASS_OFF

        raise RunError(f"a {fmt}-format run is evaluated on the two-pass readouts, but {TWO_PASS_OFF}: "
                       f"rerun `metacog study --two-pass --workspace {ws.root}` first")


def check_evaluable(ws: Workspace, run) -> None:
    """Refuse, before any model is loaded (or, with ``--evaluate``, any training), an evaluation
    of ``run`` that could not finish in ``ws``: no answers, a two-pass format without the study's
    two-pass readouts (:func:`check_two_pass`), or a target probe at a position this study's
    probes do not have (a ``confidence_2p`` run in a study rerun without ``--two-pass``).

    Raises:
        WorkspaceError: no answers, or the target probe's position was not probed.
        RunError: see :func:`check_two_pass`."""
    if not ws.path("answers.parquet").exists():
        raise WorkspaceError(f"{ws.root} has no answers: run the study first")
    s = run.settings()
    check_two_pass(ws, (s.get("finetune") or {}).get("format", "inline"))
    tprobe = (s.get("targets") or {}).get("probe")
    if tprobe and tprobe.get("position") and ws.path("probes", "oof.npy").exists():
        from metacog.stages.study import position_index

        try:
            position_index(ws, tprobe["position"])
        except WorkspaceError as e:
            raise WorkspaceError(f"run {run.id} was trained on the probe at {tprobe['position']}, which its evaluation "
                                 f"reads beside the verbal readouts: {e}") from None


def check_eval_limit(limit: int | None) -> None:
    """Refuse an eval limit that cannot give a meaningful evaluation (``ValueError``); called
    before training so a bad ``--eval-limit`` never costs a run.

    Raises:
        ValueError: ``limit`` is not None and not an integer >= 10."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 10):
        raise ValueError(f"--eval-limit must be an integer of at least 10 items, not {limit!r}")


def eval_items(ws: Workspace, limit: int | None = None) -> pd.DataFrame:
    """The eval split (first ``limit`` by row), renumbered for a sub-workspace.

    Raises:
        WorkspaceError: the workspace has no eval-split items."""
    from metacog.stages.study import load_items

    items = load_items(ws)
    ev = items[items["split"] == "eval"].sort_values("row")
    if ev.empty:
        raise WorkspaceError(f"{ws.root} has no eval-split items")
    if limit is not None:
        check_eval_limit(limit)
        ev = ev.head(int(limit))
    ev = ev.copy()
    ev["base_row"] = ev["row"].to_numpy()
    ev["row"] = np.arange(len(ev))
    return ev.reset_index(drop=True)


def _ws_model_hash(ws: Workspace) -> str | None:
    return (ws.read_json("model.json") or {}).get("weights_hash")


def check_runtime(ws: Workspace, lm) -> None:
    """Refuse to compare a fine-tuned model with base results computed at another precision.

    The base side of an evaluation is the workspace's own study (its answers and readouts), so
    the model evaluated now must run in the dtype the study recorded in ``model.json``
    (``auto`` resolves per machine and per version: bfloat16 once, float32 now on CPU);
    otherwise base and fine-tuned numbers would differ by precision as well as by training.

    Raises:
        RunError: ``model.json`` records a dtype other than the loaded model's, naming both and
        the fix (``--dtype`` on the model settings, or a re-run of the study)."""
    rec = (ws.read_json("model.json") or {}).get("dtype")
    got = str(next(lm.model.parameters()).dtype).replace("torch.", "")
    if rec and got != rec:
        raise RunError(f"{ws.root}/model.json: the study's base results were computed in {rec}, but the model is "
                       f"loaded in {got}; base and fine-tuned would differ by precision as well as by training. "
                       f"Load it in {rec} (the workspace's model setting dtype={rec}) or re-run the study in {got}.")


def evaluate_adapter(ws: Workspace, adapter_dir: Path, out_dir: Path, *, lm=None, owned: bool = False,
                     limit: int | None = None, threads: int | None = None, probes: bool = True,
                     primary_format: str = "inline", target_probe: dict | None = None, progress=None,
                     should_stop=None, run_id: str | None = None, pairwise: bool = True) -> dict:
    """Evaluate ``adapter_dir`` on ``ws``'s eval split; write ``out_dir``/eval.json + per_item.parquet.

    ``pairwise``: also measure the pairwise ability of the fine-tuned and the base model on these
    items (``eval.json["pairwise"]``, :func:`metacog.finetune.transfer.pairwise_block`).

    Raises:
        WorkspaceError: the workspace has no answers.
        RunError: the adapter or the loaded model belongs to another base model (:func:`check_adapter`)."""
    from metacog.stages.activations import load_states, run_activations
    from metacog.stages.answers import answers_key, run_answers
    from metacog.model.loading import load_model
    from metacog.stages.study import results_table
    from metacog.finetune.backends.peft_backend import load_adapter_model, unload_adapter

    t0 = time.time()
    out_dir = Path(out_dir)
    model_s, study = ws.settings()
    base_hash = _ws_model_hash(ws)
    check_adapter(adapter_dir, base_hash)  # before loading anything
    if not ws.path("answers.parquet").exists():
        raise WorkspaceError(f"{ws.root} has no answers: run the study first")
    check_two_pass(ws, primary_format)
    items = eval_items(ws, limit)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        model_s = ModelSettings(**{**to_dict(model_s), "threads": int(threads)})
    if lm is None:
        lm = load_model(model_s)
        owned = True
    if base_hash and lm.weights_hash != base_hash:
        raise RunError(f"the loaded base model (weights {lm.weights_hash}) is not the model this workspace's answers "
                       f"were made with ({base_hash})")
    check_adapter(adapter_dir, base_hash, lm)
    check_runtime(ws, lm)
    ft = load_adapter_model(lm, Path(adapter_dir), copy_model=not owned)
    try:
        sub = Workspace(out_dir / "eval")
        sub.init(model_s, study)
        sub.write_json("model.json", {**ft.describe(), "adapter": str(adapter_dir)})
        key_items = stable_hash("eval-items", items["id"].tolist())
        if not sub.stage_fresh("items", key_items):
            sub.write_parquet("items.parquet", items)
            sub.mark_stage("items", key_items, n=len(items))
        t_ans = time.time()
        ans_ft = run_answers(sub, ft, items, study, progress, should_stop)
        akey = answers_key(ft, items, study)
        run_activations(sub, ft, items, ans_ft, akey, study.batch_size, progress, should_stop, style=study.prompt_style)
        gen_seconds = time.time() - t_ans
        pw_ft = None
        if pairwise:
            from metacog.finetune.transfer import pairwise_block

            a = ans_ft.sort_values("row")
            pw_ft = pairwise_block(ft, items["question"].tolist(), a["answer"].tolist(), a["correct"].to_numpy(bool),
                                   seed=study.seed, batch_size=study.batch_size)
    finally:
        if owned:
            unload_adapter(ft)  # the base model is left as it was
    pw = None
    if pairwise:
        from metacog.finetune.transfer import base_pairwise

        pw = {"ft": pw_ft, "base": base_pairwise(ws, lm, items, study.seed, study.batch_size)}

    # ---- one per-item table: base (main workspace) and fine-tuned (sub-workspace)
    base_all = results_table(ws)
    base = base_all.set_index("row").loc[items["base_row"]].reset_index()
    ftt = results_table(sub).sort_values("row").reset_index(drop=True)
    y0 = base["correct"].to_numpy(bool)
    y1 = ftt["correct"].to_numpy(bool)
    n = len(items)
    per = pd.DataFrame({"row": items["base_row"].to_numpy(), "id": items["id"].to_numpy(),
                        "category": items["category"].to_numpy(), "question": items["question"].to_numpy(),
                        "answer_base": base["answer"].to_numpy(), "answer_ft": ftt["answer"].to_numpy(),
                        "correct_base": y0, "correct_ft": y1, "correctness_changed": y0 != y1})
    for r in READOUTS:
        b = base[r].to_numpy(float) if r in base else np.full(n, np.nan)
        f = ftt[r].to_numpy(float) if r in ftt else np.full(n, np.nan)
        per[f"{r}_base"] = b
        per[f"{r}_ft"] = f
        per[f"{r}_shift"] = f - b

    # ---- the target probe on these items
    bins, seed = study.ece_bins, study.seed
    probe = dict(target_probe or {})
    if not probe and ws.read_json("probes/best.json"):
        b = ws.read_json("probes/best.json")
        probe = {"layer": int(b["layer"]), "position": b["position"]}
    a_probe = float("nan")
    if probe and ws.path("probes", "oof.npy").exists():
        from metacog.stages.study import position_index

        oof = load_array(ws.path("probes", "oof.npy"), mmap=True)
        pp = np.asarray(oof[items["base_row"].to_numpy(), int(probe["layer"]), position_index(ws, probe["position"], oof)], float)
        per["probe_p"] = pp
        a_probe = _auroc(pp, y0)
        probe.update(auroc=a_probe, auroc_ft_labels=_auroc(pp, y1),
                     ci=list(metrics.auroc_ci(pp, y0, seed=seed, nan_policy="omit")))
    # ---- question-type prior (train split's category accuracy of the base model)
    tp = {}
    if base_all["category"].astype(str).str.len().gt(0).any():
        tr = base_all[base_all["split"] == "train"]
        prior = metrics.type_prior(tr["category"], tr["correct"], items["category"])
        tp = {"auroc_base_labels": _auroc(prior, y0), "auroc_ft_labels": _auroc(prior, y1)}
        per["type_prior"] = prior

    same = y0 == y1
    readouts = {}
    for r in READOUTS:
        b, f = per[f"{r}_base"].to_numpy(float), per[f"{r}_ft"].to_numpy(float)
        if np.isnan(b).all() and np.isnan(f).all():
            continue
        eb, ef = score_block(b, y0, bins, seed), score_block(f, y1, bins, seed)
        readouts[r] = {
            "base": eb, "ft": ef, "delta_auroc": _num(ef["auroc"]) - _num(eb["auroc"]),
            "unchanged": {"n": int(same.sum()), "auroc_base": _auroc(b[same], y0[same]), "auroc_ft": _auroc(f[same], y1[same])},
            "recovery": _recovery(ef["auroc"], a_probe), "recovery_base": _recovery(eb["auroc"], a_probe),
            "within_type": {"base": _within(b, y0, items["category"]), "ft": _within(f, y1, items["category"])},
        }
    fmt_key = MODE_KEYS.get(primary_format, MODE_KEYS["two-pass"])  # uncertainty-query runs: no verbal format of their own
    prim = f"verbal_{fmt_key}"
    reliability = {r: {"base": _bins(per[f"{r}_base"], y0, bins), "ft": _bins(per[f"{r}_ft"], y1, bins)}
                   for r in (prim, f"ev_{fmt_key}") if r in readouts}

    # ---- re-trained probes on the fine-tuned model's states
    rp = None
    if probes:
        try:
            sb = load_states(ws)
            rows = items["base_row"].to_numpy()
            states_base = {p: np.asarray(sb[p][rows]) for p in POSITIONS if p in sb}
            states_ft = {p: np.asarray(a) for p, a in load_states(sub).items()}
            rp_df = retrained_probes(states_base, y0, states_ft, y1, folds=study.probe_folds, seed=seed, threads=threads)
            atomic_write_parquet(out_dir / "retrained_probes.parquet", rp_df)
            ib = int(np.nanargmax(rp_df["auroc_base"].to_numpy())) if rp_df["auroc_base"].notna().any() else None
            jf = int(np.nanargmax(rp_df["auroc_ft"].to_numpy())) if rp_df["auroc_ft"].notna().any() else None
            rp = {"procedure": f"metacog.stages.probes.fit_probes, {study.probe_folds}-fold cross-fitted on the eval items, pooled out-of-fold AUROC",
                  "n": n, "best_base": rp_df.iloc[ib].to_dict() if ib is not None else None,
                  "best_ft": rp_df.iloc[jf].to_dict() if jf is not None else None,
                  "mean_delta": float(rp_df["delta"].mean())}
            if probe:
                m = rp_df[(rp_df["layer"] == int(probe["layer"])) & (rp_df["position"] == probe["position"])]
                if len(m):
                    rp["target_probe"] = m.iloc[0].to_dict()
        except (WorkspaceError, ValueError, ImportError) as e:
            rp = {"error": str(e)}

    acc0, acc1 = float(y0.mean()), float(y1.mean())
    pr = readouts.get(prim, {})
    headline = {
        "readout": prim, "n_eval": n,
        "accuracy_base": acc0, "accuracy_ft": acc1, "accuracy_change": acc1 - acc0,
        "auroc_base": _g(pr, "base", "auroc"), "auroc_ft": _g(pr, "ft", "auroc"),
        "auroc_ci_ft": _g(pr, "ft", "auroc_ci"),
        "ece_base": _g(pr, "base", "ece"), "ece_ft": _g(pr, "ft", "ece"),
        "brier_base": _g(pr, "base", "brier"), "brier_ft": _g(pr, "ft", "brier"),
        "ceiling_base": _g(pr, "base", "ceiling_rate"), "ceiling_ft": _g(pr, "ft", "ceiling_rate"),
        "verdict_base": (_g(pr, "base", "validity") or {}).get("verdict"), "verdict_ft": (_g(pr, "ft", "validity") or {}).get("verdict"),
        "auroc_unchanged_base": (pr.get("unchanged") or {}).get("auroc_base"),
        "auroc_unchanged_ft": (pr.get("unchanged") or {}).get("auroc_ft"),
        "auroc_probe": a_probe, "recovery": pr.get("recovery"),
        "type_prior_auroc": tp.get("auroc_base_labels"),
        "ev_auroc_base": _g(readouts.get(f"ev_{fmt_key}", {}), "base", "auroc"),
        "ev_auroc_ft": _g(readouts.get(f"ev_{fmt_key}", {}), "ft", "auroc"),
    }
    out = {
        "version": EVAL_VERSION, "run": run_id, "adapter": str(adapter_dir), "workspace": str(ws.root),
        "model": ws.read_json("model.json"), "split": "eval",
        "items": {"n": n, "limit": limit, "ids_hash": key_items, "rule": "eval split, first N by row" if limit else "eval split, all items"},
        "primary_format": primary_format, "headline": headline,
        "study_answers": ws.stage_key("answers"),  # the base side's answers (eval_stale)
        "accuracy": {"base": acc0, "ft": acc1, "change": acc1 - acc0, "right_to_wrong": int((y0 & ~y1).sum()),
                     "wrong_to_right": int((~y0 & y1).sum()), "unchanged": int(same.sum())},
        "readouts": readouts, "pairwise": pw, "probe": probe, "type_prior": tp, "retrained_probes": rp, "reliability": reliability,
        "ece_rule": getattr(metrics, "ECE_BINS_DOC", f"{bins} equal-width bins"), "ece_bins": bins,
        "seconds": {"generation_and_states": round(gen_seconds, 1), "total": round(time.time() - t0, 1)},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_parquet(out_dir / "per_item.parquet", per)
    atomic_write_json(out_dir / "eval.json", _clean(out))
    return out


def evaluate_run(ws: Workspace, run_id: str, **kw) -> dict:
    """Evaluate a finished run's adapter (runs/<run>/adapter) on the eval split.

    Raises:
        RunError: the run has no final adapter yet, or was trained on another base model."""
    run = get_run(ws, run_id)
    if not run.has_adapter():
        raise RunError(f"run {run_id} has no final adapter yet (status {run.live_status()}): finish or resume it first")
    s = run.settings()
    rec = s.get("base") or {}
    wsh = _ws_model_hash(ws)
    if rec.get("weights_hash") and wsh and rec["weights_hash"] != wsh:
        raise RunError(f"run {run_id} was trained on another base model (weights {rec['weights_hash']}) than this "
                       f"workspace's ({wsh})")
    tprobe = (s.get("targets") or {}).get("probe")
    return evaluate_adapter(ws, run.adapter_dir, run.path, primary_format=s["finetune"]["format"],
                            target_probe={k: tprobe[k] for k in ("layer", "position")} if tprobe else None,
                            run_id=run_id, **kw)


# ------------------------------------------------------------------------------ helpers
def _within(v, y, cats) -> float:
    v = np.asarray(v, dtype=float)
    if np.isnan(v).all():
        return float("nan")
    return metrics.within_type_auroc(v, np.asarray(y, bool), np.asarray(cats), nan_policy="omit")["auroc"]


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _g(d: dict, side: str, k: str):
    return (d.get(side) or {}).get(k)


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return None if np.isnan(f) else f
    return o


def eval_stale(ws: Workspace, ev: dict | None, run_id: str = "RUN") -> str | None:
    """Why an ``eval.json`` no longer describes ``ws``, or None: its base side (the study's
    answers and readouts) was read from other answers than the study's current ones — the study
    was rerun since (e.g. with two-pass switched). An ``eval.json`` written before it recorded
    ``study_answers`` is stale when the study's answers were written after it finished (both
    times are this machine's local ``%Y-%m-%dT%H:%M:%S``). ``run_id`` goes into the command
    the message gives."""
    ev = ev or {}
    if ws.answers_changed(ev.get("study_answers"), ev.get("finished")):
        return ("evaluated against earlier answers of this study (it was rerun since, e.g. with --two-pass switched): "
                f"its base side is not today's; re-evaluate the run (metacog evaluate --workspace {ws.root} --run {run_id})")
    return None


def load_eval(run: Run) -> tuple[dict | None, pd.DataFrame | None]:
    """A run's evaluation: (``eval.json`` as a dict, ``per_item.parquet`` as a DataFrame with one
    row per eval item), each None when not written yet."""
    ev = run.eval_result()
    p = run.file("per_item.parquet")
    return ev, (read_table(p) if p.exists() else None)
