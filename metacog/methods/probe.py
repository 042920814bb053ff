"""The probe: p(correct) of the best probe (layer × position chosen by train-split CV,
``probes/best.json``) from ``probes/oof.npy``: for calibration/eval rows that is the probe
fitted on the train split applied to them (train rows hold out-of-fold predictions and are
never scored here).

Public entry: the registered method ``probe``."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.core.workspace import WorkspaceError
from metacog.core.files import load_array
from metacog.methods.registry import Method, MethodResult, register


def compute(ctx) -> MethodResult:
    """The best probe's p(correct) for every pool item, read from the study's ``probes/oof.npy``
    (no model needed): row, score in [0, 1].

    Raises:
        WorkspaceError: the probe stage has not run on the workspace."""
    from metacog.stages.study import position_index

    best = ctx.ws.read_json("probes/best.json")
    p = ctx.ws.path("probes", "oof.npy")
    if best is None or not p.exists():
        raise WorkspaceError(f"no probes in {ctx.ws.root}: run `metacog probes --workspace {ctx.ws.root}` first")
    oof = load_array(p, mmap=True)
    rows = ctx.pool["row"].to_numpy()
    s = np.asarray(oof[rows, int(best["layer"]), position_index(ctx.ws, best["position"], oof)], dtype=float)
    return MethodResult(pd.DataFrame({"row": rows, "score": np.clip(s, 0.0, 1.0)}),
                        {"forward_passes": 0, "probe": {"layer": int(best["layer"]), "position": best["position"],
                                                        "cv_auroc": best.get("cv_auroc")}})


register(Method(name="probe", label="probe (best by train CV)", family="probe",
                cost="0 extra (study: hidden states from the answer forward; probe fit on train)", compute=compute,
                needs_model=False, order=20))
