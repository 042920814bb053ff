"""The on-disk layout of patching grids in a workspace: ``patching/<id>/`` holds ``spec.json``
(while running), ``parts/p<pair>-<position>.parquet`` (finished units), then
``results.parquet``, ``results.csv``, ``pairs.parquet`` and ``patching.json``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def sweep_dir(ws, sweep_id: str) -> Path:
    return ws.path("patching", sweep_id)


def list_sweeps(ws) -> list[dict]:
    """Sweeps saved in a workspace, newest first: their patching.json (or spec.json while running)."""
    d = ws.path("patching")
    if not d.exists():
        return []
    out = []
    for sub in d.iterdir():
        if not sub.is_dir():
            continue
        s = ws.read_json(f"patching/{sub.name}/patching.json") or ws.read_json(f"patching/{sub.name}/spec.json")
        if s:
            s = dict(s)
            s.setdefault("sweep_id", sub.name)
            s["_mtime"] = sub.stat().st_mtime
            out.append(s)
    return sorted(out, key=lambda s: -s["_mtime"])


def load_results(ws, sweep_id: str) -> pd.DataFrame:
    """The tidy table of a sweep (finished units of a running/stopped sweep included)."""
    d = sweep_dir(ws, sweep_id)
    if (d / "results.parquet").exists() and not (d / "parts").exists():
        return pd.read_parquet(d / "results.parquet")
    parts = sorted((d / "parts").glob("*.parquet")) if (d / "parts").exists() else []
    if not parts:
        if (d / "results.parquet").exists():
            return pd.read_parquet(d / "results.parquet")
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).sort_values(
        ["pair", "component", "position", "layer"], kind="mergesort").reset_index(drop=True)


def load_pairs(ws, sweep_id: str) -> pd.DataFrame:
    p = sweep_dir(ws, sweep_id) / "pairs.parquet"
    return pd.read_parquet(p) if p.exists() else pd.DataFrame()
