"""Where method results live, and the context a method computes in.

Layout (all writes atomic, through :mod:`metacog.core.workspace`)::

    <workspace>/methods/<name>/scores.parquet   row, id, split, score (+ method-specific columns)
    <workspace>/methods/<name>/meta.json        key, seconds, cost, info (forward passes, run id, ...)
    <workspace>/methods/<name>/parts-<key>/     finished chunks of a long method (resume)
    <workspace>/methods/table.csv               the last table `metacog methods` printed

A method is fresh when its ``meta.json`` key equals the key of (method, version, the
settings it depends on, the pool rows, the answers stage key, the model's weights): then
it is not recomputed. Within a method, chunks are saved as they finish, so a killed run
resumes from the finished chunks.

Public entry: :class:`Context` (built by :func:`metacog.methods.run.make_context`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from metacog.core.runtime import check_stop
from metacog.core.settings import StudySettings, stable_hash
from metacog.core.workspace import Workspace, WorkspaceError, remove_tree
from metacog.core.files import read_table
from metacog.methods.registry import Method, MethodResult
from metacog.methods.settings import MethodSettings

POOL_SPLITS = ("calibration", "eval")
DIR = "methods"


def pool_rows(items: pd.DataFrame, s: MethodSettings) -> pd.DataFrame:
    """The items every method scores: the first ``calibration_limit`` calibration items and the
    first ``eval_limit`` eval items, by row. Train items are never scored (they are what
    probes and tuned adapters were fitted on)."""
    parts = []
    for split, lim in (("calibration", s.calibration_limit), ("eval", s.eval_limit)):
        d = items[items["split"] == split].sort_values("row")
        parts.append(d if lim is None else d.head(lim))
    return pd.concat(parts).sort_values("row").reset_index(drop=True)


@dataclass
class Context:
    """What a method computes with: the workspace, all ``items``, re-parsed ``answers``, the
    ``pool`` it scores (calibration + eval rows with answer and correct, sorted by row), the
    settings, the study settings, a lazily loaded model (:meth:`lm`), progress and stop callables.
    Built by :func:`metacog.methods.run.make_context`."""
    ws: Workspace
    items: pd.DataFrame  # every item, with split and row
    answers: pd.DataFrame  # answers.parquet (re-parsed)
    pool: pd.DataFrame  # items + answer + correct for the pool rows, sorted by row
    settings: MethodSettings
    study: StudySettings
    loader: Callable[[], object] | None = None
    progress: Callable | None = None  # progress(done, total, message)
    should_stop: Callable[[], bool] | None = None
    threads: int = 1
    _lm: object = field(default=None, repr=False)

    def lm(self):
        """The model (a :class:`~metacog.model.loading.LoadedModel`), loaded on first call.

        Raises:
            WorkspaceError: the context has neither a model nor a loader."""
        if self._lm is None:
            if self.loader is None:
                raise WorkspaceError("this method needs the model, and no model loader was given")
            self._lm = self.loader()
        return self._lm

    def tick(self, done: int, total: int, msg: str) -> None:
        """Report progress ``done`` of ``total`` (units the caller chooses) with ``msg``, if a
        progress callable was given."""
        if self.progress:
            self.progress(done, total, msg)

    def chunked(self, name: str, key: str, n: int, fn: Callable[[int, int], pd.DataFrame], chunk: int,
                what: str = "") -> pd.DataFrame:
        """Run ``fn(start, end)`` over ``range(n)`` in chunks, saving each finished chunk under
        ``methods/<name>/parts-<key>/``; finished chunks are read back instead of recomputed."""
        d = self.ws.path(DIR, name, f"parts-{key}")
        d.mkdir(parents=True, exist_ok=True)
        frames = []
        chunk = max(1, int(chunk))
        self.tick(0, n, what or name)
        for s in range(0, n, chunk):
            f = d / f"part-{s:07d}.parquet"
            if f.exists():
                frames.append(read_table(f))
            else:
                check_stop(self.should_stop)
                df = fn(s, min(n, s + chunk))
                self.ws.write_parquet(str(f.relative_to(self.ws.root)), df)
                frames.append(df)
            self.tick(min(n, s + chunk), n, what or name)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def method_key(ctx: Context, m: Method) -> str:
    """The 16-hex freshness key of method ``m`` in ``ctx``: hash of (name, version, its settings,
    the pool rows, the answers stage key, the model's weights hash)."""
    model = ctx.ws.read_json("model.json", {}) or {}
    return stable_hash("method", m.name, m.version, ctx.settings.pick(m.settings), ctx.pool["row"].tolist(),
                       ctx.ws.stage_key("answers"), model.get("weights_hash"), n=16)


def meta(ws: Workspace, name: str) -> dict | None:
    """``methods/<name>/meta.json`` (key, seconds, cost, info, ...) or None."""
    return ws.read_json(f"{DIR}/{name}/meta.json")


def is_fresh(ctx: Context, m: Method) -> bool:
    """True when ``m``'s stored scores were computed with today's :func:`method_key`."""
    md = meta(ctx.ws, m.name)
    return bool(md and md.get("key") == method_key(ctx, m) and ctx.ws.path(DIR, m.name, "scores.parquet").exists())


def save(ctx: Context, m: Method, res: MethodResult, seconds: float) -> None:
    """Store ``m``'s result: ``methods/<name>/scores.parquet`` (row, id, split, score, ...) and
    ``meta.json`` (key, seconds, cost, info), then drop its resumable chunks and the
    ``error.json`` of an earlier failed attempt.

    Raises:
        ValueError: the scores lack row/score columns, cover other rows than the pool, or fall
            outside [0, 1] (NaN allowed)."""
    sc = res.scores.copy()
    if "row" not in sc.columns or "score" not in sc.columns:
        raise ValueError(f"method {m.name} returned no row/score columns")
    sc = sc.sort_values("row").reset_index(drop=True)
    want = ctx.pool["row"].to_numpy()
    if not np.array_equal(sc["row"].to_numpy(), want):
        raise ValueError(f"method {m.name} scored rows {sc['row'].tolist()[:5]}..., not the pool's")
    s = sc["score"].to_numpy(dtype=float)
    ok = np.isnan(s) | ((s >= 0) & (s <= 1))
    if not ok.all():
        raise ValueError(f"method {m.name} produced scores outside [0, 1]: {s[~ok][:5]}")
    pool = ctx.pool.set_index("row")
    sc.insert(1, "id", pool.loc[sc["row"], "id"].to_numpy())
    sc.insert(2, "split", pool.loc[sc["row"], "split"].to_numpy())
    key = method_key(ctx, m)
    ctx.ws.write_parquet(f"{DIR}/{m.name}/scores.parquet", sc)
    ctx.ws.write_json(f"{DIR}/{m.name}/meta.json", {
        "method": m.name, "label": m.label, "family": m.family, "key": key, "answers": ctx.ws.stage_key("answers"),
        "cost": m.cost, "trains": m.trains,
        "settings": ctx.settings.pick(m.settings), "seconds": round(float(seconds), 2), "n_pool": int(len(sc)),
        "n_eval": int((sc["split"] == "eval").sum()), "info": res.info, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    for p in ctx.ws.path(DIR, m.name).glob("parts-*"):
        remove_tree(p)
    ctx.ws.path(DIR, m.name, "error.json").unlink(missing_ok=True)  # an earlier failure is not this result's


def load_scores(ws: Workspace, name: str) -> pd.DataFrame | None:
    """A stored method's ``scores.parquet`` (row, id, split, score, ...) or None."""
    p = ws.path(DIR, name, "scores.parquet")
    return read_table(p) if p.exists() else None


def _stored(ws: Workspace) -> list[str]:
    d = ws.path(DIR)
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "scores.parquet").exists() and (p / "meta.json").exists())


def _is_stale(ws: Workspace, name: str) -> bool:
    """Scores computed on other answers than the workspace's answers stage (its ``meta.json``
    records the answers key; results from before that record are taken as current):
    :meth:`~metacog.core.workspace.Workspace.answers_changed`, the rule of every stored result."""
    return ws.answers_changed((meta(ws, name) or {}).get("answers"), None)


def stored_methods(ws: Workspace) -> list[str]:
    """Names of the methods whose stored scores and meta belong to the workspace's current
    answers, sorted. Scores computed on earlier answers (the study was rerun with other
    settings, e.g. without ``--two-pass``) are :func:`stale_methods`, never joined with today's
    correctness."""
    return [n for n in _stored(ws) if not _is_stale(ws, n)]


def stale_methods(ws: Workspace) -> list[str]:
    """Names of the methods with stored scores computed on other answers than the workspace's
    current ``answers.parquet`` (recompute them with ``metacog methods``), sorted."""
    return [n for n in _stored(ws) if _is_stale(ws, n)]
