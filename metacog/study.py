"""The probing study end to end: items → answers → activations → probes → summary.json.

``summary.json`` holds:
- ``model`` (describe() of the loaded model), ``dataset``, ``n_items``, ``accuracy`` (all items),
  ``accuracy_by_split``;
- ``splits``: counts per split and ``disjoint: true`` (checked by code, not assumed);
- ``verbal``: per elicitation mode (``inline``, ``two-pass``), on the **eval** split:
  ``auroc, auroc_ci, ece, brier, aurc, ceiling_rate, validity{L,trin,r,verdict}, n, n_missing``;
- ``distribution``: per mode, the same metrics for the expected value of the exact 0–100
  distribution (``ev``) and for its argmax (``argmax``), plus ``mean_other`` mass;
- ``probes``: ``entries`` (one per layer × position: auroc, auroc_ci, ece, brier, cv_auroc, C),
  ``best`` (chosen by train-split CV, reported on eval);
- ``type_prior``: the question-type baseline's eval AUROC; ``within_type``: within-type AUROC
  of the best probe and of each verbal readout;
- ``ece_rule``: the binning used (equal-width, edges, last bin closed).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .activations import activations_key, load_states, run_activations
from .answers import answers_key, items_key, run_answers
from .data import assign_splits, check_splits, load_dataset
from .runtime import ProgressFn, StopFn
from .settings import MODES, POSITIONS, ModelSettings, StudySettings, stable_hash
from .workspace import LineageError, Workspace, WorkspaceBusy, WorkspaceError, atomic_save_npy

MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def prepare_items(study: StudySettings) -> pd.DataFrame:
    """Load the dataset, assign seeded splits (stratified by category), check disjointness."""
    items = load_dataset(study.dataset, limit=study.limit, seed=study.seed).reset_index(drop=True)
    strata = items["category"] if items["category"].astype(str).str.len().gt(0).any() else None
    items["split"] = assign_splits(items["id"], seed=study.seed, fractions=study.split_fractions, strata=strata).to_numpy()
    items["row"] = np.arange(len(items))
    check_splits(items)
    return items


def stage_items(ws: Workspace, study: StudySettings, items: pd.DataFrame | None = None) -> pd.DataFrame:
    items = prepare_items(study) if items is None else items
    key = items_key(items)
    if not ws.stage_fresh("items", key) or (ws.lineage("items.parquet") or {}).get("key") != key:
        ws.write_parquet("items.parquet", items, lineage={"key": key})
        ws.mark_stage("items", key, n=len(items), splits=check_splits(items))
    return items


def load_items(ws: Workspace, verify: bool = True) -> pd.DataFrame:
    """``items.parquet`` as the study wrote it (list columns as lists). With ``verify`` (every
    reader that joins items with later artifacts), :func:`verify_lineage` first checks that
    answers, readout, activations and probes were built from these very items; raises
    :class:`~metacog.workspace.LineageError` otherwise."""
    items = ws.read_parquet("items.parquet")
    for col in ("answers", "choices"):
        if col in items:
            items[col] = items[col].map(lambda v: list(v) if v is not None and not isinstance(v, str) else v)
    if verify:
        verify_lineage(ws, items)
    return items


def _stale(ws: Workspace, what: str, why: str) -> LineageError:
    return LineageError(
        f"{ws.path(what)} {why}, so joining them would pair items with another item's results. "
        f"Rerun `metacog study --workspace {ws.root}` to rebuild the stale stages (finished stages that "
        "still match are kept).")


def verify_lineage(ws: Workspace, items: pd.DataFrame) -> dict:
    """Check that every artifact present was built from the inputs next to it: answers from
    these items, the readout and the hidden-state cache from these answers, the probes from
    this cache (and ``probes/oof.npy`` is the array the probes wrote). Returns the keys
    ``{items, answers, activations, probes}`` found. Raises :class:`LineageError` naming the
    artifact that disagrees (or that carries no lineage, i.e. was written by an older metacog)."""
    keys = {"items": items_key(items)}
    if not ws.path("answers.parquet").exists():
        return keys
    a = ws.lineage("answers.parquet") or {}
    if a.get("items") != keys["items"]:
        raise _stale(ws, "answers.parquet", "was built from other items than items.parquet" if a else
                     "records no items key (written by an older metacog or another program)")
    keys["answers"] = a.get("key")
    if ws.path("readout.parquet").exists():
        r = ws.lineage("readout.parquet") or {}
        if r.get("answers") != keys["answers"]:
            raise _stale(ws, "readout.parquet", "was built from other answers than answers.parquet")
    man = ws.read_json("activations/manifest.json")
    if isinstance(man, dict) and man.get("complete"):
        if man.get("answers") != keys["answers"]:
            raise _stale(ws, "activations", "(the hidden-state cache) was built from other answers than answers.parquet")
        keys["activations"] = man.get("key")
    if ws.path("probes", "metrics.parquet").exists():
        pl = ws.lineage("probes/metrics.parquet") or {}
        if "activations" not in keys or pl.get("activations") != keys["activations"]:
            raise _stale(ws, "probes", "were fitted on another hidden-state cache than activations/")
        if ws.path("probes", "oof.npy").exists() and pl.get("oof_sha256") != _sha256(ws.path("probes", "oof.npy")):
            raise _stale(ws, "probes/oof.npy", "is not the array the probe stage wrote with probes/metrics.parquet")
        keys["probes"] = pl.get("key")
    return keys


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probes_key(act_key: str, study: StudySettings) -> str:
    from . import probes

    return stable_hash("probes", getattr(probes, "PROBES_VERSION", 1), act_key, study.probe_folds, study.seed, study.ece_bins)


def save_probes(ws: Workspace, metrics_df: pd.DataFrame, oof: np.ndarray, best: dict, key: str, act_key: str) -> None:
    """Write the probe stage's artifacts: ``probes/oof.npy`` (float32 ``[n_items, n_layers,
    n_positions]``), ``probes/best.json`` and, last, ``probes/metrics.parquet`` whose lineage
    (probes key, activations key, SHA-256 of oof.npy) marks the set complete and consistent."""
    atomic_save_npy(ws.path("probes", "oof.npy"), np.asarray(oof, dtype=np.float32))
    ws.write_json("probes/best.json", best)
    ws.write_parquet("probes/metrics.parquet", metrics_df, lineage={
        "key": key, "activations": act_key, "oof_sha256": _sha256(ws.path("probes", "oof.npy"))})


def run_probes_stage(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, act_key: str, study: StudySettings,
                     threads: int | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
    from . import probes

    key = probes_key(act_key, study)
    if ws.stage_fresh("probes", key) and (ws.lineage("probes/metrics.parquet") or {}).get("key") == key:
        return ws.read_parquet("probes/metrics.parquet")
    t0 = time.time()
    states = load_states(ws)
    y = answers.set_index("row").loc[items["row"], "correct"].to_numpy().astype(bool)
    if progress:
        progress(0, 1, "fitting probes")
    res = probes.fit_probes(
        {p: states[p] for p in POSITIONS}, y, items["split"].to_numpy(), folds=study.probe_folds, seed=study.seed,
        n_bins=study.ece_bins, threads=threads, progress=progress,
    )
    save_probes(ws, res.metrics, res.oof, res.best, key, act_key)
    ws.mark_stage("probes", key, seconds=round(time.time() - t0, 2))
    if progress:
        progress(1, 1, "fitting probes")
    return res.metrics


def run_study(
    workspace: str | Path,
    model: ModelSettings | None = None,
    study: StudySettings | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    stages: tuple[str, ...] = ("answers", "activations", "probes"),
    lm=None,
) -> dict:
    """Run (or resume) the study in ``workspace``; returns the summary dict.

    A launch validates everything it can before it writes anything — the workspace directory
    (:meth:`Workspace.check_usable`), that no other job holds it, the dataset and its splits,
    the model, and the disk space the hidden-state cache needs — so a failed launch leaves
    the workspace byte-identical (``workspace.json`` included). Raises
    :class:`~metacog.workspace.WorkspaceError`, :class:`~metacog.data.DataError`,
    :class:`~metacog.models.ModelError` or ``ValueError`` with one line saying what is wrong."""
    from .models import load_model

    ws = Workspace(workspace)
    ws.check_usable()
    if model is None or study is None:
        if ws.exists:
            m0, s0 = ws.settings()
            model, study = model or m0, study or s0
        else:
            model, study = model or ModelSettings(), study or StudySettings()
    holder = ws.is_locked(Workspace.WORKSPACE_LOCK)
    if holder:
        raise WorkspaceBusy(f"workspace {ws.root} is busy: 'study' is already running ({holder}). Wait for it to finish or stop it.")
    items = prepare_items(study)          # dataset errors: before any write
    check_launch_items(items)
    lm = lm or load_model(model)          # model errors: before any write
    check_disk(ws, lm, len(items), stages, batch_size=study.batch_size, n_tokens=_longest_prompt(lm, items, study))
    with ws.lock(Workspace.WORKSPACE_LOCK):
        ws.init(model, study)
        t0 = time.time()
        items = stage_items(ws, study, items)
        ws.write_json("model.json", lm.describe())
        ans = run_answers(ws, lm, items, study, progress, should_stop)
        akey = answers_key(lm, items, study)
        if "activations" in stages or "probes" in stages:
            run_activations(ws, lm, items, ans, akey, study.batch_size, progress, should_stop, style=study.prompt_style)
        if "probes" in stages:
            run_probes_stage(ws, items, ans, activations_key(akey), study, threads=model.threads, progress=progress)
        summary = summarize(ws)
        summary["seconds"] = round(time.time() - t0, 1)
        ws.write_json("summary.json", summary)
        return summary


def check_launch_items(items: pd.DataFrame) -> None:
    """Refuse, before any model work, item sets whose evaluation cannot mean anything: no eval
    item or no probe-training item. Raises ``ValueError``."""
    counts = items["split"].value_counts().to_dict()
    for split in ("train", "eval"):
        if counts.get(split, 0) == 0:
            raise ValueError(
                f"the {split} split has 0 of {len(items)} items (splits: {counts}); use more items (--limit) "
                "or other --splits fractions")


def _longest_prompt(lm, items: pd.DataFrame, study: StudySettings) -> int:
    """Tokens of the longest question (by characters) with a generous template allowance
    (128 tokens) and the answer cap: the sequence length the memory estimate plans for."""
    q = max((str(x) for x in items.get("question", pd.Series([""]))), key=len, default="")
    return len(lm.tokenizer.encode(q)) + 128 + int(study.max_new_tokens)


def check_memory(lm, batch_size: int, n_tokens: int, margin: float = 1.5) -> int:
    """Estimate the peak bytes one readout batch adds on the model's device (beyond the weights,
    which are loaded already): the KV cache of ``batch_size`` prefixes of ``n_tokens`` plus
    the value trie and its look-aheads (:func:`metacog.arch.kv_bytes_per_token` per token),
    the hidden states of that forward (float32 ``[batch, tokens, d_model]`` × 4 live copies)
    and the captured residual states. Refuse, with the numbers, when the device has less free
    memory (``--batch-size`` lowers it). Returns the estimate; 0 when the free memory is unknown."""
    from . import arch
    from .confidence import get_trie

    tokens = int(n_tokens) + get_trie(lm.tokenizer).n_nodes + 101
    kv = arch.kv_bytes_per_token(lm.model) * tokens * int(batch_size)
    act = 4 * 4 * int(batch_size) * tokens * lm.d_model + 4 * int(batch_size) * lm.n_hidden * lm.d_model * len(POSITIONS)
    need = int((kv + act) * margin)
    free = arch.free_memory(lm.device)
    if free is None:
        return 0
    if need > free:
        raise WorkspaceError(
            f"not enough memory on {lm.device} for a readout batch: about {need / 2**30:.2f} GiB "
            f"({batch_size} prompts × ~{tokens} tokens: KV cache {kv / 2**30:.2f} GiB, hidden states {act / 2**30:.2f} GiB) "
            f"and {free / 2**30:.2f} GiB is free; use a smaller --batch-size")
    return need


def check_disk(ws: Workspace, lm, n_items: int, stages=("activations",), margin: float = 1.2, batch_size: int | None = None,
               n_tokens: int | None = None) -> int:
    """Estimate the bytes the hidden-state cache needs (float16 ``[n_items, n_layers + 1,
    d_model]`` per named position, plus the two 0–100 distributions) and refuse, with the
    numbers, when the workspace's file system has less free space. Returns the estimate.
    With ``batch_size`` and ``n_tokens`` (the longest prompt), the memory of one readout
    batch is checked first (:func:`check_memory`)."""
    import shutil

    if batch_size and n_tokens:
        check_memory(lm, batch_size, n_tokens)

    if "activations" not in stages and "probes" not in stages:
        return 0
    need = int(n_items * ((lm.n_layers + 1) * lm.d_model * len(POSITIONS) * 2 + 2 * 102 * 8) * margin)
    have_dir = next((p for p in [ws.root, *ws.root.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(have_dir).free
    if ws.path("activations").exists():  # a resumed cache already holds its files
        return need
    if free < need:
        raise WorkspaceError(
            f"not enough disk for the hidden-state cache in {ws.root}: it needs about {need / 2**30:.2f} GiB "
            f"({n_items} items × {lm.n_layers + 1} layers × {lm.d_model} dims × {len(POSITIONS)} positions, float16) "
            f"and {have_dir} has {free / 2**30:.2f} GiB free")
    return need


# ----------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------
def _score_block(conf01, y, bins: int, seed: int) -> dict:
    s = metrics.summarize_scores(conf01, y, n_bins=bins, seed=seed, nan_policy="omit")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}


def results_table(ws: Workspace) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p) in one per-item table."""
    items = load_items(ws)
    df = items.merge(ws.read_parquet("answers.parquet").drop(columns=["id", "split", "category"], errors="ignore"), on="row")
    if ws.path("readout.parquet").exists():
        df = df.merge(ws.read_parquet("readout.parquet"), on="row", how="left")
    best = ws.read_json("probes/best.json")
    if best and ws.path("probes", "oof.npy").exists():
        oof = np.load(ws.path("probes", "oof.npy"), mmap_mode="r")
        pi = list(POSITIONS).index(best["position"])
        df["probe_p"] = np.asarray(oof[df["row"].to_numpy(), int(best["layer"]), pi], dtype=float)
    return df


def summarize(ws: Workspace) -> dict:
    model_s, study = ws.settings()
    df = results_table(ws)
    bins, seed = study.ece_bins, study.seed
    ev = df[df["split"] == "eval"]
    tr = df[df["split"] == "train"]
    y = ev["correct"].to_numpy().astype(bool)
    out: dict = {
        "model": ws.read_json("model.json", {"spec": model_s.model}),
        "dataset": study.dataset,
        "n_items": int(len(df)),
        "accuracy": float(df["correct"].mean()),
        "accuracy_by_split": {k: float(g["correct"].mean()) for k, g in df.groupby("split")},
        "splits": check_splits(df[["id", "split"]]),
        "eval_split": "eval",
        "n_eval": int(len(ev)),
        "ece_rule": metrics.ECE_BINS_DOC if hasattr(metrics, "ECE_BINS_DOC") else f"{bins} equal-width bins",
        "ece_bins": bins,
    }
    out["verbal"] = {}
    out["distribution"] = {}
    for mode in MODES:
        k = MODE_KEYS[mode]
        v = ev[f"verbal_{k}"].to_numpy(dtype=float)
        blk = _score_block(v / 100.0, y, bins, seed)
        vs = metrics.validity_screen(v, y)
        blk.update(ceiling_rate=vs["L"], validity=vs, parse_rate=float(np.mean(~np.isnan(v))) if len(v) else float("nan"))
        out["verbal"][mode] = blk
        if f"ev_{k}" in ev:
            d = {}
            for read in ("ev", "argmax"):
                c = ev[f"{read}_{k}"].to_numpy(dtype=float)
                b = _score_block(c / 100.0, y, bins, seed)
                b["ceiling_rate"] = float(np.nanmean(c >= 95)) if len(c) else float("nan")
                b["validity"] = metrics.validity_screen(c, y)
                d[read] = b
            d["auroc"] = d["ev"]["auroc"]
            d["mean_other"] = float(ev[f"other_{k}"].mean())
            out["distribution"][mode] = d
    # question-type prior and within-type AUROC
    cats_ok = df["category"].astype(str).str.len().gt(0).any()
    if cats_ok:
        prior = metrics.type_prior(tr["category"], tr["correct"], ev["category"])
        out["type_prior"] = {"auroc": metrics.auroc(prior, y), "n_eval": int(len(ev)), "n_types": int(df["category"].nunique())}
        wt = {}
        for mode in MODES:
            k = MODE_KEYS[mode]
            wt[f"verbal_{k}"] = _within(ev[f"verbal_{k}"], y, ev["category"])
            if f"ev_{k}" in ev:
                wt[f"ev_{k}"] = _within(ev[f"ev_{k}"], y, ev["category"])
        if "probe_p" in ev:
            wt["probe_best"] = _within(ev["probe_p"], y, ev["category"])
        out["within_type"] = wt
    # probes
    if ws.path("probes", "metrics.parquet").exists():
        pm = ws.read_parquet("probes/metrics.parquet")
        entries = []
        for r in pm.itertuples(index=False):
            entries.append(
                {
                    "layer": int(r.layer), "position": r.position, "auroc": _f(r.auroc),
                    "auroc_ci": [_f(r.auroc_lo), _f(r.auroc_hi)], "ece": _f(r.ece), "brier": _f(r.brier),
                    "cv_auroc": _f(r.cv_auroc), "C": _f(r.C),
                }
            )
        out["probes"] = {"entries": entries, "best": ws.read_json("probes/best.json"), "n_train": int(len(tr)), "n_eval": int(len(ev))}
    return out


def _within(scores, y, cats) -> dict:
    r = metrics.within_type_auroc(np.asarray(scores, dtype=float), y, np.asarray(cats), nan_policy="omit")
    return {"auroc": r["auroc"], "n_types_used": r["n_types_used"], "n_items_used": r["n_items_used"]}


def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(x) else x


def open_workspace(path: str | Path) -> Workspace:
    ws = Workspace(path)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace")
    return ws
