"""The probing study end to end: items → answers → activations → probes → summary.json.

``summary.json`` holds:
- ``model`` (describe() of the loaded model), ``dataset``, ``n_items``, ``accuracy`` (all items),
  ``accuracy_by_split``;
- ``splits``: counts per split, ``disjoint: true`` and ``group_disjoint: true`` (no fact in two
  splits), ``n_groups`` (checked by code, not assumed);
- ``modes``: the elicitation modes computed (``inline``; ``two-pass`` with ``StudySettings.two_pass``),
  ``not_computed``: ``{mode: why}`` for the others (no block is written for them);
- ``verbal``: per computed elicitation mode (``inline``, ``two-pass``), on the **eval** split:
  ``auroc, ece, brier, aurc`` each with ``<metric>_ci`` (bootstrap, ``ci_rule``), ``ece_null``
  (mean and p95 ECE of a perfectly calibrated predictor at these confidences, ``ece_null_rule``),
  ``ceiling_rate, validity{L,trin,r,verdict}, n, n_missing``;
- ``distribution``: per mode, the same metrics for the expected value of the exact 0–100
  distribution (``ev``) and for its argmax (``argmax``), plus ``mean_other`` mass;
- ``probes``: ``entries`` (one per layer × position: the same metrics with CIs and ece_null,
  cv_auroc, C), ``best`` (chosen by nested train-split CV, reported on eval, with
  ``selection_null``: the permutation null of choosing the best of all cells);
- ``type_prior``: the question-type baseline's eval AUROC (with CI); ``within_type``: within-type
  AUROC (with CI) of the best probe and of each verbal readout;
- ``warnings``: plain sentences when the eval split is small (< 50 items or < 10 of a class), has
  one class, the split sizes are unlike the fractions asked for, or the best probe does not beat
  its selection null;
- ``ece_rule``: the binning used (equal-width, edges, last bin closed).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.stats import metrics
from metacog.stats import json_float as _f
from metacog.stages.activations import activations_key, load_states, run_activations
from metacog.stages.answers import answers_key, check_items_prompt_lengths, items_key, run_answers
from metacog.data import assign_splits, check_splits, load_dataset, split_fraction_warnings
from metacog.core.runtime import ProgressFn, StopFn
from metacog.core.settings import MODES, POSITIONS, TWO_PASS_OFF, ModelSettings, StudySettings, computed_line, stable_hash, study_positions
from metacog.core.workspace import LineageError, Workspace, WorkspaceBusy, WorkspaceError, atomic_save_npy
from metacog.core.files import load_array

MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def prepare_items(study: StudySettings) -> pd.DataFrame:
    """Load the dataset, assign seeded splits (stratified by category), check disjointness."""
    items = load_dataset(study.dataset, limit=study.limit, seed=study.seed).reset_index(drop=True)
    strata = items["category"] if items["category"].astype(str).str.len().gt(0).any() else None
    groups = items["group"] if "group" in items.columns else None  # one fact per group (readers/generator)
    items["split"] = assign_splits(items["id"], seed=study.seed, fractions=study.split_fractions, strata=strata,
                                   groups=groups).to_numpy()
    items["row"] = np.arange(len(items))
    check_splits(items)
    return items


def stage_items(ws: Workspace, study: StudySettings, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study's items with their splits (``prepare_items``), written to ``items.parquet`` when they
    changed; returns the item table."""
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
    :class:`~metacog.core.workspace.LineageError` otherwise."""
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


def probes_key(act_key: str, study: StudySettings, items: pd.DataFrame | None = None) -> str:
    """Cache key of the probe stage: probe code version, activations, folds, seed, bins and -- given
    ``items`` -- which items are in which split and group (a new split or grouping refits)."""
    from metacog.stages import probes

    parts = ["probes", getattr(probes, "PROBES_VERSION", 1), act_key, study.probe_folds, study.seed, study.ece_bins]
    if items is not None:
        parts.append(stable_hash(items["split"].astype(str).tolist(),
                                 items["group"].astype(str).tolist() if "group" in items.columns else None))
    return stable_hash(*parts)


def probe_positions(ws: Workspace, arr: np.ndarray | None = None) -> list[str]:
    """The workspace's probe positions, in the order of the position axis of ``probes/oof.npy``
    (``[n_items, n_layers, n_positions]``) and ``probes/coef.npy``: the ``positions`` the probe
    stage recorded in the lineage of ``probes/metrics.parquet`` (a study without two-pass probes
    the three inline positions, ``settings.study_positions``); probes written before that
    record have all four of ``settings.POSITIONS``. ``arr``, when given, is checked against it.

    Raises:
        WorkspaceError: ``arr``'s last axis has another length (probes of an older build).
    """
    pos = list((ws.lineage("probes/metrics.parquet") or {}).get("positions") or POSITIONS)
    if arr is not None and np.shape(arr)[-1] != len(pos):
        raise WorkspaceError(f"probes in {ws.root} have {np.shape(arr)[-1]} positions, expected {len(pos)} "
                             f"({', '.join(pos)}): re-run the probes stage")
    return pos


def position_index(ws: Workspace, position: str, arr: np.ndarray | None = None) -> int:
    """Index of ``position`` on the position axis of the workspace's probe arrays
    (:func:`probe_positions`).

    Raises:
        WorkspaceError: the study did not probe ``position`` (``confidence_2p`` is probed only
            with ``StudySettings.two_pass``), or ``arr`` does not match.
    """
    pos = probe_positions(ws, arr)
    if position not in pos:
        why = f"; {TWO_PASS_OFF}" if position == "confidence_2p" else ""
        raise WorkspaceError(f"position {position!r} was not probed in {ws.root} (probed: {', '.join(pos)}){why}")
    return pos.index(position)


def save_probes(ws: Workspace, metrics_df: pd.DataFrame, oof: np.ndarray, best: dict, key: str, act_key: str,
                coef: np.ndarray | None = None, intercept: np.ndarray | None = None,
                positions: list[str] | None = None) -> None:
    """Write the probe stage's artifacts: ``probes/oof.npy`` (float32 ``[n_items, n_layers,
    n_positions]``), the full-train probes ``probes/coef.npy`` (float32 ``[n_layers,
    n_positions, d_model]``, on the raw residual stream) and ``probes/intercept.npy``
    (``[n_layers, n_positions]``) when given, ``probes/best.json`` and, last,
    ``probes/metrics.parquet`` whose lineage (probes key, activations key, SHA-256 of oof.npy,
    ``positions``: the order of the position axis, all of ``settings.POSITIONS`` by default)
    marks the set complete and consistent.

    Raises: ValueError when ``oof``'s last axis is not ``len(positions)``."""
    positions = list(positions or POSITIONS)
    if np.shape(oof)[-1] != len(positions):
        raise ValueError(f"oof has {np.shape(oof)[-1]} positions, positions lists {len(positions)}")
    if coef is not None and intercept is not None:
        atomic_save_npy(ws.path("probes", "coef.npy"), np.asarray(coef, dtype=np.float32))
        atomic_save_npy(ws.path("probes", "intercept.npy"), np.asarray(intercept, dtype=np.float32))
    atomic_save_npy(ws.path("probes", "oof.npy"), np.asarray(oof, dtype=np.float32))
    ws.write_json("probes/best.json", best)
    ws.write_parquet("probes/metrics.parquet", metrics_df, lineage={
        "key": key, "activations": act_key, "oof_sha256": _sha256(ws.path("probes", "oof.npy")), "positions": positions})


def run_probes_stage(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, act_key: str, study: StudySettings,
                     threads: int | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
    """The probe stage of a workspace: :func:`metacog.stages.probes.fit_probes` on the stored
    activations (cached by key: skipped when fresh), written to ``probes/`` (metrics, cv grid, oof
    ``[n_items, n_layers, n_positions]``, coef, intercept, best). Returns the per-(layer, position)
    metrics table."""
    from metacog.stages import probes

    key = probes_key(act_key, study, items)
    if ws.stage_fresh("probes", key) and (ws.lineage("probes/metrics.parquet") or {}).get("key") == key:
        return ws.read_parquet("probes/metrics.parquet")
    t0 = time.time()
    states = load_states(ws)
    y = answers.set_index("row").loc[items["row"], "correct"].to_numpy().astype(bool)
    if progress:
        progress(0, 1, "fitting probes")
    positions = list(states)  # the cache's positions, in its manifest's order
    res = probes.fit_probes(
        states, y, items["split"].to_numpy(), folds=study.probe_folds, seed=study.seed,
        n_bins=study.ece_bins, threads=threads, progress=progress,
        groups=items["group"].to_numpy() if "group" in items.columns else None,
    )
    save_probes(ws, res.metrics, res.oof, res.best, key, act_key, coef=res.coef, intercept=res.intercept,
                positions=positions)
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
    :class:`~metacog.core.workspace.WorkspaceError`, :class:`~metacog.data.DataError`,
    :class:`~metacog.model.loading.ModelError` or ``ValueError`` with one line saying what is wrong."""
    from metacog.model.loading import load_model

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
    check_launch_items(items, study.split_fractions)
    lm = lm or load_model(model)          # model errors: before any write
    check_items_prompt_lengths(lm, items, study)  # an over-long item: before any write
    check_disk(ws, lm, len(items), stages, batch_size=study.batch_size, n_tokens=_longest_prompt(lm, items, study),
               n_positions=len(study_positions(study.two_pass)), max_new_tokens=study.max_new_tokens)
    with ws.lock(Workspace.WORKSPACE_LOCK):
        ws.init(model, study)
        t0 = time.time()
        if progress:
            progress(0, 0, computed_line(study))
        items = stage_items(ws, study, items)
        ws.write_json("model.json", lm.describe())
        ans = run_answers(ws, lm, items, study, progress, should_stop)
        akey = answers_key(lm, items, study)
        if "activations" in stages or "probes" in stages:
            man = run_activations(ws, lm, items, ans, akey, study.batch_size, progress, should_stop, style=study.prompt_style)
        if "probes" in stages:
            run_probes_stage(ws, items, ans, man["key"], study, threads=model.threads, progress=progress)
        summary = summarize(ws)
        summary["seconds"] = round(time.time() - t0, 1)
        ws.write_json("summary.json", summary)
        return summary


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """The study as an app job in its own process (:mod:`metacog.core.jobs`): ``spec`` holds
    ``model`` and ``study`` (settings dicts) and ``stages``; returns the summary. ``then``: more
    studies (``{"workspace": dir, "study": settings dict}``) run after it with the same model —
    the app's *first look*: a small study whose plots appear within about a minute, then the
    full one, in the same process (the model is loaded once)."""
    from metacog.core.settings import from_dict

    model = from_dict(ModelSettings, spec["model"])
    study = from_dict(StudySettings, spec["study"])
    stages = tuple(spec.get("stages") or ("answers", "activations", "probes"))
    then = list(spec.get("then") or [])
    import torch

    from metacog.model.loading import loader_from_env

    torch.set_num_threads(model.threads)
    progress(0, 0, f"loading model {model.model}")
    lm = loader_from_env()(model)
    n_runs = 1 + len(then)

    def step(k: int, name: str):
        if n_runs == 1:
            return progress
        return lambda done, total, msg="": progress(done, total, f"[{k}/{n_runs}] {name}: {msg}")

    summary = run_study(ws.root, model, study, progress=step(1, ws.root.name), should_stop=should_stop, stages=stages, lm=lm)
    for k, nxt in enumerate(then, start=2):
        root = Path(nxt["workspace"])
        run_study(root, model, from_dict(StudySettings, nxt["study"]), progress=step(k, root.name),
                  should_stop=should_stop, stages=stages, lm=lm)
    return summary


def check_launch_items(items: pd.DataFrame, fractions=None) -> list[str]:
    """Refuse, before any model work, item sets whose evaluation cannot mean anything — no eval
    item (:func:`metacog.data.check_eval_split`) or no probe-training item — and return the
    split warnings (small eval split, a fraction worth less than one item). Raises ``ValueError``."""
    from metacog.data import check_eval_split

    warnings = check_eval_split(items, fractions)
    if int((items["split"] == "train").sum()) == 0:
        raise ValueError(f"the train split has 0 of {len(items)} items (splits: {items['split'].value_counts().to_dict()}); "
                         "use more items (--limit) or other --splits fractions")
    return warnings


def _longest_prompt(lm, items: pd.DataFrame, study: StudySettings) -> int:
    """Tokens of the longest question (by characters) with a generous template allowance
    (128 tokens) and the answer cap: the sequence length the memory estimate plans for."""
    q = max((str(x) for x in items.get("question", pd.Series([""]))), key=len, default="")
    return len(lm.tokenizer.encode(q)) + 128 + int(study.max_new_tokens)


def check_memory(lm, batch_size: int, n_tokens: int, margin: float = 1.5, n_positions: int = len(POSITIONS),
                 max_new_tokens: int | None = None) -> int:
    """Estimate the peak bytes one batch adds on the model's device (beyond the weights, which
    are loaded already), the larger of:

    - a readout batch: the KV cache of ``batch_size`` prefixes of ``n_tokens`` plus the value
      trie and its look-aheads (:func:`metacog.model.arch.kv_bytes_per_token` per token), the
      hidden states of that forward (float32 ``[batch, tokens, d_model]`` × 4 live copies) and
      the captured residual states;
    - with ``max_new_tokens``, an answers-stage generation batch:
      :func:`metacog.stages.answers.generation_rows` rows of ``n_tokens + max_new_tokens``
      tokens of KV cache and one float32 hidden state per token.

    Refuse, with the numbers, when the device has less free memory (``--batch-size`` lowers
    it). Returns the estimate; 0 when the free memory is unknown.

    Raises: WorkspaceError when a batch would not fit in the device's free memory (the message
    gives the estimate and a smaller batch size).
    """
    from metacog.model import arch
    from metacog.readout.values import get_trie
    from metacog.stages.answers import generation_rows

    per_tok = arch.kv_bytes_per_token(lm.model)
    tokens = int(n_tokens) + get_trie(lm.tokenizer).n_nodes + 101
    kv = per_tok * tokens * int(batch_size)
    act = 4 * 4 * int(batch_size) * tokens * lm.d_model + 4 * int(batch_size) * lm.n_hidden * lm.d_model * int(n_positions)
    what, rows, need = "a readout batch", int(batch_size), int((kv + act) * margin)
    if max_new_tokens:
        g_rows, g_tok = generation_rows(batch_size), int(n_tokens) + int(max_new_tokens)
        g_kv, g_act = per_tok * g_tok * g_rows, 4 * 4 * g_rows * g_tok * lm.d_model
        if int((g_kv + g_act) * margin) > need:
            what, rows, tokens, kv, act = "a generation batch", g_rows, g_tok, g_kv, g_act
            need = int((kv + act) * margin)
    free = arch.free_memory(lm.device)
    if free is None:
        return 0
    if need > free:
        raise WorkspaceError(
            f"not enough memory on {lm.device} for {what}: about {need / 2**30:.2f} GiB "
            f"({rows} prompts × ~{tokens} tokens: KV cache {kv / 2**30:.2f} GiB, hidden states {act / 2**30:.2f} GiB) "
            f"and {free / 2**30:.2f} GiB is free; use a smaller --batch-size")
    return need


def check_disk(ws: Workspace, lm, n_items: int, stages=("activations",), margin: float = 1.2, batch_size: int | None = None,
               n_tokens: int | None = None, n_positions: int = len(POSITIONS), max_new_tokens: int | None = None) -> int:
    """Estimate the bytes the hidden-state cache needs (float16 ``[n_items, n_layers + 1,
    d_model]`` per named position, plus the two 0–100 distributions) and refuse, with the
    numbers, when the workspace's file system has less free space. Returns the estimate.
    With ``batch_size`` and ``n_tokens`` (the longest prompt), the memory of one readout
    batch is checked first (:func:`check_memory`).

    Raises: WorkspaceError when the hidden-state cache would not fit on the workspace's disk (the
    message gives the size needed).
    """
    import shutil

    if batch_size and n_tokens:
        check_memory(lm, batch_size, n_tokens, n_positions=n_positions, max_new_tokens=max_new_tokens)

    if "activations" not in stages and "probes" not in stages:
        return 0
    need = int(n_items * ((lm.n_layers + 1) * lm.d_model * int(n_positions) * 2 + 2 * 102 * 8) * margin)
    have_dir = next((p for p in [ws.root, *ws.root.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(have_dir).free
    if ws.path("activations").exists():  # a resumed cache already holds its files
        return need
    if free < need:
        raise WorkspaceError(
            f"not enough disk for the hidden-state cache in {ws.root}: it needs about {need / 2**30:.2f} GiB "
            f"({n_items} items × {lm.n_layers + 1} layers × {lm.d_model} dims × {int(n_positions)} positions, float16) "
            f"and {have_dir} has {free / 2**30:.2f} GiB free")
    return need


# ----------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------
def _score_block(conf01, y, bins: int, seed: int) -> dict:
    """Every metric of one [0, 1] score on the eval items, each with its bootstrap CI
    (``<metric>_ci``) and ``ece_null`` beside the ECE (metrics.summarize_scores)."""
    s = metrics.summarize_scores(conf01, y, n_bins=bins, seed=seed, nan_policy="omit")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}


def score_readout(values_0_100, y, bins: int = 10, seed: int = 0) -> dict:
    """summary.json's block of one confidence readout on some items: every metric of
    ``values/100`` with its bootstrap CI (AUROC, ECE + ``ece_null``, Brier, AURC, ``n``,
    ``n_missing``; unparsed NaN values dropped, metrics.summarize_scores) and ``validity``, the
    validity screen (L, trin, r, verdict, reasons) of the 0-100 values (metrics.validity_screen).

    ``values_0_100``: [n_items] points on 0-100 (NaN = unparsed); ``y``: [n_items] correctness.
    The Answers page scores any split with it, so its numbers are summary.json's on eval."""
    v = np.asarray(values_0_100, dtype=float)
    blk = _score_block(v / 100.0, y, bins, seed)
    blk["validity"] = metrics.validity_screen(v, y)
    return blk


def type_prior_block(df: pd.DataFrame, split: str = "eval", seed: int = 0) -> dict:
    """The question-type baseline on the ``split`` rows of a :func:`results_table` (``"all"``: every
    row): each item scored by its category's accuracy on the train split (metrics.type_prior,
    Laplace-smoothed); ``{"auroc", "auroc_ci", "n_eval", "n_types"}`` (``n_eval``: rows scored).
    In-sample (optimistic) when ``split`` includes train items."""
    tr = df[df["split"] == "train"]
    ev = df if split == "all" else df[df["split"] == split]
    y = ev["correct"].to_numpy().astype(bool)
    prior = metrics.type_prior(tr["category"], tr["correct"], ev["category"])
    return {"auroc": metrics.auroc(prior, y), "auroc_ci": list(metrics.auroc_ci(prior, y, seed=seed)),
            "n_eval": int(len(ev)), "n_types": int(df["category"].nunique())}


def results_table(ws: Workspace) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p) in one per-item table."""
    items = load_items(ws)
    df = items.merge(ws.read_parquet("answers.parquet").drop(columns=["id", "split", "category"], errors="ignore"), on="row")
    if ws.path("readout.parquet").exists():
        df = df.merge(ws.read_parquet("readout.parquet"), on="row", how="left")
    best = ws.read_json("probes/best.json")
    if best and ws.path("probes", "oof.npy").exists():
        oof = load_array(ws.path("probes", "oof.npy"), mmap=True)
        pi = position_index(ws, best["position"], oof)
        df["probe_p"] = np.asarray(oof[df["row"].to_numpy(), int(best["layer"]), pi], dtype=float)
    return df


def summarize(ws: Workspace) -> dict:
    """The study summary (``summary.json`` content) of a workspace: model, accuracy, verbal and
    distribution readouts with AUROC/ECE/Brier/AURC and CIs on the eval split
    (:mod:`metacog.stats.metrics`), the type prior, the best probe and sample-size warnings."""
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
        "splits": check_splits(df[[c for c in ("id", "split", "group") if c in df.columns]]),
        "eval_split": "eval",
        "n_eval": int(len(ev)),
        "ece_rule": metrics.ECE_BINS_DOC if hasattr(metrics, "ECE_BINS_DOC") else f"{bins} equal-width bins",
        "ece_bins": bins,
        "ci_rule": metrics.BOOTSTRAP_DOC,
        "ece_null_rule": metrics.ECE_NULL_DOC,
    }
    # plain-language warnings: small or one-class eval split, split sizes unlike the fractions asked for
    warnings = split_fraction_warnings(out["splits"], study.split_fractions)
    warnings += metrics.sample_warnings(y, "the eval split")
    out["verbal"] = {}
    out["distribution"] = {}
    modes = [m for m in MODES if f"verbal_{MODE_KEYS[m]}" in ev]  # two-pass only where the study computed it
    out["modes"] = modes
    out["not_computed"] = {m: TWO_PASS_OFF for m in MODES if m not in modes}
    for mode in modes:
        k = MODE_KEYS[mode]
        v = ev[f"verbal_{k}"].to_numpy(dtype=float)
        blk = score_readout(v, y, bins, seed)
        blk.update(ceiling_rate=blk["validity"]["L"], parse_rate=float(np.mean(~np.isnan(v))) if len(v) else float("nan"))
        out["verbal"][mode] = blk
        if f"ev_{k}" in ev:
            d = {}
            for read in ("ev", "argmax"):
                c = ev[f"{read}_{k}"].to_numpy(dtype=float)
                b = score_readout(c, y, bins, seed)
                b["ceiling_rate"] = float(np.nanmean(c >= 95)) if len(c) else float("nan")
                d[read] = b
            d["auroc"], d["auroc_ci"] = d["ev"]["auroc"], d["ev"]["auroc_ci"]  # shortcut: E[v]'s
            d["mean_other"] = float(ev[f"other_{k}"].mean())
            out["distribution"][mode] = d
    # question-type prior and within-type AUROC
    cats_ok = df["category"].astype(str).str.len().gt(0).any()
    if cats_ok:
        out["type_prior"] = type_prior_block(df, "eval", seed)
        wt = {}
        for mode in modes:
            k = MODE_KEYS[mode]
            wt[f"verbal_{k}"] = _within(ev[f"verbal_{k}"], y, ev["category"], seed)
            if f"ev_{k}" in ev:
                wt[f"ev_{k}"] = _within(ev[f"ev_{k}"], y, ev["category"], seed)
        if "probe_p" in ev:
            wt["probe_best"] = _within(ev["probe_p"], y, ev["category"], seed)
        out["within_type"] = wt
    # probes
    if ws.path("probes", "metrics.parquet").exists():
        pm = ws.read_parquet("probes/metrics.parquet")
        entries = [_probe_entry(r) for r in pm.to_dict("records")]
        best = ws.read_json("probes/best.json")
        if not best:
            n_pos = int(tr["correct"].astype(bool).sum())
            warnings.append(
                f"no probe could be fitted: the train split has {n_pos} correct and {len(tr) - n_pos} incorrect answer(s), and a "
                "probe needs both; use more items (--limit) or another dataset, then rerun the study (probe-targeted "
                "fine-tuning, steering and the probe method need a probe)")
        if best:
            best = {**best, **{k: v for k, v in _probe_entry(best).items() if k not in ("layer", "position")}}
            sn = best.get("selection_null")
            if sn and sn.get("p") is not None and sn["p"] > 0.05:
                warnings.append(
                    f"the best probe (layer {best['layer']} @ {best['position']}) does not beat chance selection: with the "
                    f"labels shuffled, the best of all layer x position probes scored at least as high in "
                    f"{round(sn['p'] * (sn['n_perm'] + 1)) - 1} of {sn['n_perm']} shuffles (p = {sn['p']:.2f}); its train CV "
                    "AUROC may be the luck of picking the maximum.")
        from metacog.stages.probes import SELECTION_NULL_DOC

        out["probes"] = {"entries": entries, "best": best, "n_train": int(len(tr)), "n_eval": int(len(ev)),
                         "selection_null_rule": SELECTION_NULL_DOC}
    out["warnings"] = warnings
    return out


def _probe_entry(r: dict) -> dict:
    """One probe's summary.json entry from a metrics.parquet row (or best.json): every eval metric
    with ``<metric>_ci`` beside it, and ``ece_null`` beside the ECE (absent columns -> None)."""
    e = {"layer": int(r["layer"]), "position": r["position"], "cv_auroc": _f(r.get("cv_auroc")), "C": _f(r.get("C"))}
    for k in ("auroc", "ece", "brier", "aurc"):
        e[k] = _f(r.get(k))
        e[f"{k}_ci"] = [_f(r.get(f"{k}_lo")), _f(r.get(f"{k}_hi"))]
    e["ece_null"] = {"mean": _f(r.get("ece_null_mean")), "p95": _f(r.get("ece_null_p95"))}
    return e


def _within(scores, y, cats, seed: int = 0) -> dict:
    r = metrics.within_type_auroc(np.asarray(scores, dtype=float), y, np.asarray(cats), nan_policy="omit",
                                  n_boot=1000, seed=seed)
    return {"auroc": r["auroc"], "auroc_ci": list(r["auroc_ci"]), "n_types_used": r["n_types_used"],
            "n_items_used": r["n_items_used"]}




def open_workspace(path: str | Path) -> Workspace:
    """An existing workspace. Raises: WorkspaceError when ``path`` is not a metacog workspace."""
    ws = Workspace(path)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace")
    return ws
