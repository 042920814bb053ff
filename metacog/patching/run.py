"""Running a patching grid in a workspace: resumable (one part file per finished (pair,
position) unit), stoppable (finished rows kept and summarised), one writer at a time."""
from __future__ import annotations

import time

import pandas as pd
import torch

from metacog.patching.cells import pair_record, patch_position, prepare_pair
from metacog.patching.pairs import resolve_positions
from metacog.patching.plan import GridPlan
from metacog.patching.spec import PATCHING_VERSION, spec_dict
from metacog.patching.store import grid_dir, load_pairs, load_results, read_meta
from metacog.patching.trace import dot_tol


def run_grid(ws, plan: GridPlan, progress=None, should_stop=None, method: str = "fast", max_batch: int = 32) -> dict:
    """Run (or resume) ``plan`` in ``ws``: one part file per (pair, position) as it finishes;
    then ``results.parquet``, ``results.csv`` and ``patching.json``. On stop, the finished
    rows are kept and summarised (``complete: false``) and :class:`~metacog.core.runtime.Stopped`
    is raised. A second run of the same grid while one runs is refused (workspace lock)."""
    with ws.writer(f"patch-{grid_id_for(plan, method)}"):
        return _run_grid(ws, plan, progress, should_stop, method, max_batch)


def _run_grid(ws, plan: GridPlan, progress=None, should_stop=None, method: str = "fast", max_batch: int = 32) -> dict:
    """Run (or resume) ``plan`` in ``ws``: one part file per (pair, position) as it finishes;
    then ``results.parquet``, ``results.csv`` and ``patching.json``. On stop, the finished
    rows are kept and summarised (``complete: false``) and :class:`~metacog.core.runtime.Stopped` is raised."""
    from metacog.patching.stats import summarize
    from metacog.core.runtime import Stopped, check_stop
    from metacog.core.workspace import atomic_write_text

    if not isinstance(max_batch, int) or max_batch < 1:
        from metacog.patching.spec import PatchError

        raise PatchError(f"max_batch (--batch) must be an integer >= 1, not {max_batch!r}")
    sid = grid_id_for(plan, method)
    rel = f"patching/{sid}"
    d = grid_dir(ws, sid)
    prev = ws.read_json(f"{rel}/patching.json") and read_meta(ws, sid)
    if prev and prev.get("complete") and (d / "results.parquet").exists() and not (d / "parts").exists():
        if progress:
            progress(plan.n_units(), plan.n_units(), "patching")
        return prev  # the same grid finished before: nothing to recompute
    (d / "parts").mkdir(parents=True, exist_ok=True)
    spec_json = {
        "grid_id": sid, "version": PATCHING_VERSION, "spec": spec_dict(plan.spec), **plan.description,
        "n_units": plan.n_units(), "method": method, "dot_tol": dot_tol(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "complete": False, "study_answers": ws.stage_key("answers"),  # store.list_grids: stale
    }
    old = ws.read_json(f"{rel}/spec.json")
    if old:
        spec_json["created"] = old.get("created", spec_json["created"])
    ws.write_json(f"{rel}/spec.json", spec_json)
    t0 = time.time()
    total = plan.n_units()
    done = 0
    pair_recs = []
    old_pairs = load_pairs(ws, sid)
    old_pairs = {int(r["pair"]): r for r in old_pairs.to_dict("records")} if len(old_pairs) else {}
    stopped = None
    try:
        for pair in plan.pairs:
            plans = resolve_positions(pair, plan.spec)
            files = {pl.label: d / "parts" / f"p{pair.index:05d}-{pl.label}.parquet" for pl in plans}
            if all(f.exists() for f in files.values()) and pair.index in old_pairs:
                pair_recs.append(old_pairs[pair.index])
                done += len(plans)
                if progress:
                    progress(done, total, "patching")
                continue
            check_stop(should_stop)
            prep = prepare_pair(pair, plan.spec, method)
            rec = pair_record(prep)
            pair_recs.append(rec)
            ws.write_parquet(f"{rel}/pairs.parquet", pd.DataFrame(pair_recs))
            for pl in prep.plans:
                f = files[pl.label]
                if not f.exists():
                    check_stop(should_stop)
                    df = patch_position(prep, pl, plan.spec, method, max_batch)
                    df.insert(0, "grid", sid)
                    ws.write_parquet(str(f.relative_to(ws.root)), df)
                done += 1
                if progress:
                    progress(done, total, "patching")
    except (Stopped, KeyboardInterrupt) as e:
        stopped = e
    res = load_results(ws, sid)
    if pair_recs:
        ws.write_parquet(f"{rel}/pairs.parquet", pd.DataFrame(pair_recs))
    complete = stopped is None
    if len(res):
        ws.write_parquet(f"{rel}/results.parquet", res)
        atomic_write_text(d / "results.csv", res.drop(columns=["probs"], errors="ignore").to_csv(index=False))
    summary = summarize(res, plan.spec, n_layers=plan.pairs[0].target.lm.n_layers)
    summary = {**spec_json, **summary, "complete": complete, "n_units_done": done, "seconds": round(time.time() - t0, 1),
               "threads": torch.get_num_threads(),
               "files": {"results": f"{rel}/results.parquet", "csv": f"{rel}/results.csv", "pairs": f"{rel}/pairs.parquet"}}
    ws.write_json(f"{rel}/patching.json", summary)
    if complete:
        from metacog.core.workspace import remove_tree

        remove_tree(d / "parts")
    if stopped is not None:
        raise stopped
    return summary


def grid_id_for(plan: GridPlan, method: str = "fast") -> str:
    """The grid's directory name: the plan's hash (+ ``-ref`` for the reference method)."""
    return plan.grid_id if method == "fast" else f"{plan.grid_id}-ref"
