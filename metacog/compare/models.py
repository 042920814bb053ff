"""Models compared across workspaces (one workspace = one model's study): a row per model from
its ``summary.json`` and a long table of every probe's eval AUROC by relative depth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metacog.core.workspace import Workspace, WorkspaceError
from metacog.core.files import read_table


# ------------------------------------------------------------------------------ models
def model_row(ws: Workspace) -> dict:
    """One workspace (= one model's study) as a row: model, depth, accuracy, verbal and probe metrics
    (eval split).

    Raises: WorkspaceError when the workspace has no summary.json.
    """
    s = ws.read_json("summary.json")
    if not s:
        raise WorkspaceError(f"{ws.root} has no summary.json: run `metacog study --workspace {ws.root}` first")
    m = s.get("model", {})
    L = int(m.get("n_layers") or 0)
    b = (s.get("probes") or {}).get("best") or {}
    vi = (s.get("verbal") or {}).get("inline", {})
    ev = ((s.get("distribution") or {}).get("inline") or {}).get("ev", {})
    return {"workspace": ws.root.name, "model": m.get("name") or m.get("spec"), "layers": L, "d_model": m.get("d_model"),
            "params (M)": round(m["n_params"] / 1e6, 1) if m.get("n_params") else None, "chat": m.get("is_chat"),
            "dataset": Path(str(s.get("dataset"))).name, "n items": s.get("n_items"), "n eval": s.get("n_eval"),
            "accuracy": s.get("accuracy"), "verbal AUROC": vi.get("auroc"), "verbal ECE": vi.get("ece"),
            "verbal validity": (vi.get("validity") or {}).get("verdict"), "E[v] AUROC": ev.get("auroc"),
            "best probe AUROC": b.get("auroc"), "best probe layer": b.get("layer"), "best probe position": b.get("position"),
            "best probe depth": (b["layer"] / L) if L and b.get("layer") is not None else None,
            "type prior AUROC": (s.get("type_prior") or {}).get("auroc")}


def models_table(roots) -> pd.DataFrame:
    """One row per workspace (:func:`model_row`) of ``roots`` (workspace paths): model, size, accuracy,
    verbal and probe metrics on the eval split. Raises: WorkspaceError for a workspace without
    summary.json."""
    return pd.DataFrame([model_row(Workspace(r)) for r in roots])


def probe_depth_table(roots) -> pd.DataFrame:
    """Long table of every probe (eval split) of every workspace: ``model, workspace, layer,
    n_layers, depth = layer / n_layers`` (hidden-state index over decoder layers: 0 = embeddings,
    1 = last layer) ``, position, auroc, auroc_lo, auroc_hi``."""
    rows = []
    for r in roots:
        ws = Workspace(r)
        s = ws.read_json("summary.json") or {}
        m = s.get("model", {})
        L = int(m.get("n_layers") or 0)
        met = ws.path("probes", "metrics.parquet")
        if met.exists():
            t = read_table(met)
            lo, hi = t.get("auroc_lo", np.nan), t.get("auroc_hi", np.nan)
        else:
            t = pd.DataFrame((s.get("probes") or {}).get("entries") or [])
            if t.empty:
                continue
            ci = t.get("auroc_ci")
            lo = ci.map(lambda c: c[0] if c else np.nan) if ci is not None else np.nan
            hi = ci.map(lambda c: c[1] if c else np.nan) if ci is not None else np.nan
        if not L:
            L = int(t["layer"].max())
        rows.append(pd.DataFrame({"model": m.get("name") or ws.root.name, "workspace": ws.root.name, "layer": t["layer"].astype(int),
                                  "n_layers": L, "depth": t["layer"].astype(float) / L, "position": t["position"],
                                  "auroc": t["auroc"].astype(float), "auroc_lo": lo, "auroc_hi": hi}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["model", "workspace", "layer", "n_layers", "depth", "position", "auroc", "auroc_lo", "auroc_hi"])
