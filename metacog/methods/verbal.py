"""Baselines the study already computed: verbal confidence (inline, two-pass) and the
expected value of the exact 0–100 distribution (inline, two-pass). Score = value / 100;
an unparsed verbal confidence stays NaN (counted as missing in the table).

Public entry: the registered baseline methods (``verbal_*``, ``ev_*``)."""
from __future__ import annotations

import pandas as pd

from metacog.core.workspace import WorkspaceError
from metacog.methods.registry import Method, MethodResult, register


def _from(column: str, source: str):
    def compute(ctx) -> MethodResult:
        if source == "answers":
            df = ctx.answers
        else:
            try:
                df = ctx.ws.read_parquet("readout.parquet")
            except WorkspaceError:
                raise WorkspaceError(f"no readout.parquet in {ctx.ws.root}: run `metacog activations --workspace {ctx.ws.root}` "
                                     "(the exact 0-100 readout) first") from None
        if column not in df.columns:
            from metacog.core.settings import TWO_PASS_OFF

            if column.endswith("_two_pass"):  # a study without StudySettings.two_pass: say so, never NaN scores
                raise WorkspaceError(f"{column}: {TWO_PASS_OFF}")
            raise WorkspaceError(f"{source}.parquet in {ctx.ws.root} has no column {column}: rerun `metacog study`")
        v = df.set_index("row").reindex(ctx.pool["row"])[column].to_numpy(dtype=float)
        return MethodResult(pd.DataFrame({"row": ctx.pool["row"].to_numpy(), "score": v / 100.0}),
                            {"forward_passes": 0, "note": f"{source}.parquet column {column}"})

    return compute


for i, (name, label, col, src, cost) in enumerate([
    ("verbal_inline", "verbal (inline)", "verbal_inline", "answers", "0 extra (study: generated after the answer)"),
    ("verbal_two_pass", "verbal (two-pass)", "verbal_two_pass", "answers", "0 extra (study: one generation per item)"),
    ("ev_inline", "E[v] 0–100 (inline)", "ev_inline", "readout", "0 extra (study: 1 tree forward per item)"),
    ("ev_two_pass", "E[v] 0–100 (two-pass)", "ev_two_pass", "readout", "0 extra (study: 1 tree forward per item)"),
]):
    register(Method(name=name, label=label, family="baseline", cost=cost, compute=_from(col, src), needs_model=False,
                    two_pass=name.endswith("_two_pass"), order=10 + i))
