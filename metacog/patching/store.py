"""The on-disk layout of patching grids in a workspace: ``patching/<id>/`` holds ``spec.json``
(while running), ``parts/p<pair>-<position>.parquet`` (finished units), then
``results.parquet``, ``results.csv``, ``pairs.parquet`` and ``patching.json``.

Grids written before the rename "sweep" → "grid" (same directories) stay readable: their
``patching.json``/``spec.json`` name the id ``sweep_id`` and their tables have a ``sweep``
column; :func:`read_meta` and :func:`load_results` return them under the new names."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from metacog.core.files import read_table


LEGACY_KEYS = {"sweep_id": "grid_id"}  # patching.json / spec.json written before the rename
LEGACY_COLUMNS = {"sweep": "grid"}  # results / parts tables written before the rename


def grid_dir(ws, grid_id: str) -> Path:
    """``<workspace>/patching/<grid_id>``: the directory of one grid (it may not exist yet)."""
    return ws.path("patching", grid_id)


def read_meta(ws, grid_id: str) -> dict | None:
    """A grid's ``patching.json`` (else ``spec.json`` while running; None if neither), with
    ``grid_id`` set (a legacy ``sweep_id`` key is renamed; else the directory name)."""
    s = ws.read_json(f"patching/{grid_id}/patching.json") or ws.read_json(f"patching/{grid_id}/spec.json")
    if not s:
        return None
    s = dict(s)
    for old, new in LEGACY_KEYS.items():
        if old in s:
            s.setdefault(new, s.pop(old))
    s.setdefault("grid_id", grid_id)
    return s


def _read_table(path: Path) -> pd.DataFrame:
    df = read_table(path)
    return df.rename(columns={k: v for k, v in LEGACY_COLUMNS.items() if k in df.columns})


def list_grids(ws) -> list[dict]:
    """Grids saved in a workspace, newest first: their patching.json (or spec.json while running),
    with ``stale`` True where the study's answers changed since the grid was made
    (:meth:`~metacog.core.workspace.Workspace.answers_changed`: the study was rerun; its pairs'
    sequences are not today's)."""
    d = ws.path("patching")
    if not d.exists():
        return []
    out = []
    for sub in d.iterdir():
        if not sub.is_dir():
            continue
        s = read_meta(ws, sub.name)
        if s:
            s["_mtime"] = sub.stat().st_mtime
            s["stale"] = ws.answers_changed(s.get("study_answers"), s.get("created"))
            out.append(s)
    return sorted(out, key=lambda s: -s["_mtime"])


def load_results(ws, grid_id: str) -> pd.DataFrame:
    """The tidy table of a grid (finished units of a running/stopped grid included)."""
    d = grid_dir(ws, grid_id)
    if (d / "results.parquet").exists() and not (d / "parts").exists():
        return _read_table(d / "results.parquet")
    parts = sorted((d / "parts").glob("*.parquet")) if (d / "parts").exists() else []
    if not parts:
        if (d / "results.parquet").exists():
            return _read_table(d / "results.parquet")
        return pd.DataFrame()
    return pd.concat([_read_table(p) for p in parts], ignore_index=True).sort_values(
        ["pair", "component", "position", "layer"], kind="mergesort").reset_index(drop=True)


def load_pairs(ws, grid_id: str) -> pd.DataFrame:
    """The grid's ``pairs.parquet``: one row per pair (both sides' labels, item ids, clean
    readouts ``ev_source``/``ev_target`` in points 0–100, ``probs_*`` ``[101]``, the resolved
    positions as JSON); empty when not written yet."""
    p = grid_dir(ws, grid_id) / "pairs.parquet"
    return read_table(p) if p.exists() else pd.DataFrame()
