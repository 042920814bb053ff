"""Run methods on a workspace: each one fresh or recomputed, stored atomically, resumable.

Public entry: :func:`run_methods`."""
from __future__ import annotations

import time
import traceback

import pandas as pd

from metacog.core.runtime import Stopped
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.methods import registry, store
from metacog.methods.settings import MethodSettings


def make_context(ws: Workspace, settings: MethodSettings, lm=None, loader=None, progress=None, should_stop=None,
                 threads: int = 1) -> store.Context:
    """The :class:`~metacog.methods.store.Context` methods compute in: the workspace's items,
    re-parsed answers and the pool (calibration + eval rows, with answer and correctness). The model
    is ``lm``, else loaded on first use by ``loader`` (default: the workspace's model settings through
    :func:`metacog.model.loading.loader_from_env`, with ``threads``).

    Raises:
        WorkspaceError: not a workspace, no answers yet, or fewer than two calibration or eval items."""
    from metacog.stages.answers import reparse
    from metacog.stages.study import load_items

    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace: run `metacog study --workspace {ws.root}` first")
    items = load_items(ws)
    try:
        ans = reparse(items, ws.read_parquet("answers.parquet"))
    except WorkspaceError:
        raise WorkspaceError(f"no answers in {ws.root}: run `metacog study --workspace {ws.root}` first") from None
    pool = store.pool_rows(items, settings)
    if (pool["split"] == "eval").sum() < 2 or (pool["split"] == "calibration").sum() < 2:
        raise WorkspaceError("the methods need at least two calibration and two eval items (see the workspace's splits)")
    keep = ans[["row", "answer", "correct"]]
    pool = pool.merge(keep, on="row", how="inner").sort_values("row").reset_index(drop=True)
    _, study = ws.settings()
    if loader is None and lm is None:
        def loader():
            from metacog.model.loading import loader_from_env
            from metacog.core.settings import ModelSettings, from_dict, to_dict

            ms, _ = ws.settings()
            return loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(threads)}))
    ctx = store.Context(ws=ws, items=items, answers=ans, pool=pool, settings=settings, study=study, loader=loader,
                        progress=progress, should_stop=should_stop, threads=threads)
    if lm is not None:
        ctx._lm = lm
    return ctx


def run_methods(ws: Workspace, methods="all", settings: MethodSettings | None = None, *, lm=None, loader=None,
                progress=None, should_stop=None, threads: int = 1, force: bool = False, on_error: str = "record") -> dict:
    """Compute every requested method that is not fresh; returns ``{name: status}`` where status
    is "fresh", "computed", "skipped: <why>" (the study lacks what the method reads, e.g. the
    two-pass outputs of a study run without ``--two-pass``: :func:`~metacog.methods.registry.unavailable`)
    or "failed: <message>" (``on_error="raise"`` raises instead).
    ``progress(done, total, message)`` reports within a method; ``should_stop()`` stops between
    chunks (finished chunks are kept)."""
    settings = settings or MethodSettings()
    names = registry.resolve(methods)
    ctx = make_context(ws, settings, lm=lm, loader=loader, progress=progress, should_stop=should_stop, threads=threads)
    out = {}
    with ws.writer("methods"):
        for i, n in enumerate(names):
            m = registry.get(n)
            why = registry.unavailable(m, ctx.study)
            if why is not None:
                out[n] = f"skipped: {why}"
                continue
            if not force and store.is_fresh(ctx, m):
                out[n] = "fresh"
                continue
            ctx.tick(0, 1, f"[{i + 1}/{len(names)}] {n}")
            t0 = time.time()
            try:
                res = m.compute(ctx)
                store.save(ctx, m, res, time.time() - t0)
                out[n] = "computed"
            except (Stopped, KeyboardInterrupt):
                raise
            except Exception as e:
                if on_error == "raise":
                    raise
                out[n] = f"failed: {type(e).__name__}: {e}"
                ws.write_json(f"{store.DIR}/{n}/error.json", {"error": str(e), "traceback": traceback.format_exc(),
                                                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return out


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """The methods table as an app job in its own process (:mod:`metacog.core.jobs`): ``spec`` holds
    ``methods`` (names), ``settings`` (a MethodSettings dict) and ``threads``."""
    from metacog.core.settings import from_dict

    s = from_dict(MethodSettings, spec.get("settings") or {})
    return run_methods(ws, list(spec.get("methods") or ["all"]), s, progress=progress, should_stop=should_stop,
                       threads=int(spec.get("threads") or 1))
