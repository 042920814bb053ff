"""A self-contained HTML report of a workspace and a comparison of its runs (and other models).

    metacog report --workspace DIR [--runs R1,R2,...] [--models DIR2,DIR3] --out report.html

One file, no server, no network: every plotly figure is embedded with plotly.js inlined **once**
in the page head (no CDN ``<script src>``). Content: settings, splits, sweeps, the study's
tables and figures (verbal confidence, probes by layer, reliability of the best probe), the run
comparison (mean ± sd across seeds, distribution shapes, KS/Wasserstein between seeds,
reliability per run, per-item agreement) and the cross-model table + AUROC by relative depth.
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metacog import compare as C
from metacog.compare import plots as CP
from metacog.core.workspace import Workspace, WorkspaceError, atomic_write_text
from metacog.core.files import read_table


@dataclass
class Report:
    """A report under construction: a ``title`` and its ordered ``blocks`` ``(kind, payload,
    caption)``, kind one of "h2", "p", "table" (a DataFrame), "figure" (a plotly figure); rendered
    to one self-contained HTML file by :func:`render`."""
    title: str
    blocks: list = field(default_factory=list)  # ("h2"|"p"|"table"|"figure", payload, caption)

    def h(self, text: str):
        """Append a section heading."""
        self.blocks.append(("h2", text, None))

    def p(self, text: str):
        """Append a paragraph of text."""
        self.blocks.append(("p", text, None))

    def table(self, df: pd.DataFrame, caption: str = ""):
        """Append a table (a DataFrame) with an optional caption."""
        self.blocks.append(("table", df, caption))

    def figure(self, fig, caption: str = ""):
        """Append a plotly figure with an optional caption."""
        self.blocks.append(("figure", fig, caption))

    @property
    def figures(self) -> list:
        """The report's figures, in order."""
        return [b[1] for b in self.blocks if b[0] == "figure"]

    @property
    def figure_titles(self) -> list[str]:
        """The title text of each figure, in order."""
        return [f.layout.title.text for f in self.figures]


def _kv(d: dict, prefix: str = "") -> pd.DataFrame:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _kv(v, f"{prefix}{k}.").to_dict("records")
        else:
            rows.append({"setting": f"{prefix}{k}", "value": json.dumps(v) if isinstance(v, (list, tuple)) else str(v)})
    return pd.DataFrame(rows)


def _study_section(rep: Report, ws: Workspace) -> None:
    from metacog.stats import metrics
    from metacog.viz import plots as P
    from metacog.stages.study import results_table

    s = ws.read_json("summary.json") or {}
    model = C.model_name(ws)
    rep.h(f"Study: {model} on {Path(str(s.get('dataset', '?'))).name}")
    wj = ws.read_json("workspace.json") or {}
    rep.table(_kv({"model": wj.get("model", {}), "study": wj.get("study", {})}), "workspace settings (workspace.json)")
    if s.get("splits"):
        sp = s["splits"]
        rep.table(pd.DataFrame([{"split": k, "items": sp[k], "accuracy": (s.get("accuracy_by_split") or {}).get(k)}
                                for k in ("train", "calibration", "eval") if k in sp]),
                  f"splits (disjoint by item id: {sp.get('disjoint')}); every metric below is on the eval split")
    rows = []
    for mode, v in (s.get("verbal") or {}).items():
        rows.append({"readout": f"verbal {mode}", "AUROC": v.get("auroc"), "CI": str([None if x is None else round(x, 3) for x in v.get("auroc_ci") or []]),
                     "ECE": v.get("ece"), "Brier": v.get("brier"), "ceiling": v.get("ceiling_rate"), "parsed": v.get("parse_rate"),
                     "validity": (v.get("validity") or {}).get("verdict")})
    for mode, d in (s.get("distribution") or {}).items():
        rows.append({"readout": f"E[v] {mode}", "AUROC": d["ev"].get("auroc"), "ECE": d["ev"].get("ece"), "Brier": d["ev"].get("brier")})
    b = (s.get("probes") or {}).get("best")
    if b:
        rows.append({"readout": f"best probe (layer {b['layer']} @ {b['position']})", "AUROC": b.get("auroc"),
                     "CI": str([round(b.get("auroc_lo", np.nan), 3), round(b.get("auroc_hi", np.nan), 3)]), "ECE": b.get("ece"),
                     "Brier": b.get("brier")})
    if s.get("type_prior"):
        rows.append({"readout": "question-type prior", "AUROC": s["type_prior"].get("auroc")})
    for mode, why in (s.get("not_computed") or {}).items():
        rows.append({"readout": f"verbal / E[v] {mode}", "validity": why})
    if rows:
        rep.table(pd.DataFrame(rows), f"eval split, n={s.get('n_eval')}, {model}")
    try:
        df = results_table(ws)
    except WorkspaceError:
        return
    ev = df[df["split"] == "eval"]
    vals = {m: ev[c].to_numpy(float) for m, c in (("inline", "verbal_inline"), ("two-pass", "verbal_two_pass")) if c in ev}
    if vals:
        rep.figure(P.confidence_histogram(vals, ev["correct"].to_numpy(bool), split="eval", model=model))
    mp = ws.path("probes", "metrics.parquet")
    if mp.exists():
        rep.figure(P.probe_metric_by_layer(read_table(mp), split="eval", n=int(s.get("n_eval") or len(ev)), model=model,
                                           best=b, bands=False))
    if "probe_p" in ev and b:
        p, y = ev["probe_p"].to_numpy(float), ev["correct"].to_numpy(bool)
        ok = np.isfinite(p)
        if ok.any():
            bins = int(s.get("ece_bins") or 10)
            rep.figure(P.reliability_diagram(metrics.reliability_bins(p[ok], y[ok], bins), split="eval", n=int(ok.sum()),
                                             model=model, label=f"best probe L{b['layer']} @ {b['position']}",
                                             ece=metrics.ece(p[ok], y[ok], bins)))


def _sweeps_section(rep: Report, ws: Workspace) -> None:
    from metacog.sweeps import list_sweeps, sweep_table

    recs = list_sweeps(ws)
    if not recs:
        return
    rep.h("Sweeps")
    for r in recs:
        st = r.get("settings", {})
        rep.p(f"Sweep {r['id']}: {len(r.get('runs', []))} runs, status {r.get('status')}, executor {r.get('executor')}, "
              f"{r.get('workers')} worker(s) × {r.get('threads')} thread(s), {r.get('seconds', 'n/a')} s; seeds {st.get('seeds')}, "
              f"targets {st.get('targets') or [st.get('base', {}).get('targets')]}, lr {st.get('lrs') or [st.get('base', {}).get('lr')]}")
        rep.table(sweep_table(r), f"sweep {r['id']}: expanded runs and their status")


def comparison_section(rep: Report, runs: list, readout: str | None = None, stable_sd: float = C.STABLE_SD) -> str | None:
    """Tables and figures comparing ``runs`` (list of compare.RunData); returns the readout used."""
    if not runs:
        return None
    ros = C.readouts_of(runs)
    readout = readout if readout in ros else (runs[0].eval.get("headline", {}).get("readout") if runs[0].eval.get("headline", {}).get("readout") in ros else (ros[0] if ros else None))
    if readout is None:
        return None
    models = ", ".join(dict.fromkeys(d.model for d in runs))
    n = int(runs[0].eval.get("headline", {}).get("n_eval") or len(runs[0].per_item))
    rep.h(f"Runs compared ({len(runs)}): {readout}")
    from metacog.core.workspace import Workspace
    from metacog.finetune.evaluate import eval_stale

    for d in runs:
        if why := eval_stale(Workspace(d.workspace), d.eval, d.run):
            rep.p(f"Note — run {d.run}: {why}.")
    per = C.run_metrics(runs, readout)
    summ = C.seed_summary(per)
    show = [c for c in summ.columns if not c.endswith(("_mean", "_sd"))]
    rep.table(summ[show], f"mean ± sd (sample sd, ddof=1) across seeds per configuration, fine-tuned model, {readout}, eval split, n={n}")
    rep.table(per[["run", "configuration", "seed", "accuracy", "auroc", "ece", "brier", "ceiling_rate", "recovery", "auroc_base", "ece_base"]],
              "each run")
    rep.figure(CP.seed_strip(per, "auroc", n=n, model=models, readout=readout))
    rep.figure(CP.seed_strip(per, "ece", n=n, model=models, readout=readout))
    vals = {"base": runs[0].values(readout, "base")}
    vals.update({d.label: d.values(readout) for d in runs})
    rep.figure(CP.confidence_shapes(vals, n=n, model=models, readout=readout))
    rep.figure(CP.confidence_violins(vals, n=n, model=models, readout=readout))
    dist = C.distances_by_config(runs, readout)
    if len(dist):
        rep.table(dist, "distance between confidence distributions: Kolmogorov–Smirnov D = sup|F_a − F_b|, Wasserstein-1 = ∫|F_a − F_b| dx (points)")
    curves = {"base": C.reliability_of(runs[0], readout, "base")}
    curves.update({d.label: C.reliability_of(d, readout) for d in runs})
    rep.figure(CP.reliability_grid(curves, n=n, model=models, readout=readout))
    agree = C.item_agreement(runs, readout, stable_sd)
    if len(agree):
        rep.figure(CP.agreement_scatter(agree, n_runs=len(runs), model=models, readout=readout, stable_sd=stable_sd))
        counts = agree["agreement"].value_counts().to_dict()
        rep.table(agree.head(30), f"per-item agreement ({', '.join(f'{k}: {v}' for k, v in counts.items())}); the 30 most "
                                  "seed-sensitive items first (open an item in the app: Item explorer, ?item=<id>)")
    return readout


def transfer_section(rep: Report, ws: Workspace) -> None:
    """The transfer table (single-question vs pairwise training, in- and out-of-domain), when
    ``metacog transfer`` has written one; rebuilt from the same runs' evaluations (no model)."""
    from metacog.finetune import transfer as T

    saved = T.load_table(ws)
    if saved is None or saved.empty:
        return
    try:
        df = T.transfer_table(ws, [r for r in dict.fromkeys(saved["run"].dropna())])
    except (OSError, ValueError, KeyError, WorkspaceError):
        df = saved
    rep.h("Transfer: single-question and pairwise training")
    w = T.wide(df).reset_index()
    rep.table(w, "rows = training task (none = the base model); cells = value [95% CI] on items never trained on. "
                 "single AUROC / ECE: the run's verbal readout, item bootstrap (AUROC stratified by class); pairwise accuracy: "
                 "correct/incorrect pairs, each item in at most 2 pairs, bootstrap over pairs; BT AUROC: Bradley–Terry scores "
                 "from about 4 comparisons per item, stratified item bootstrap. See docs/FINETUNE.md (Tasks and transfer).")


def models_section(rep: Report, roots: list) -> None:
    """Append the "Models compared" section (:func:`metacog.compare.models_table` and the probe AUROC
    by relative depth) for the workspaces ``roots``; nothing for an empty list."""
    if len(roots) < 1:
        return
    rep.h(f"Models compared ({len(roots)})")
    rep.table(C.models_table(roots), "one workspace per model; every metric on that workspace's eval split")
    depth = C.probe_depth_table(roots)
    if len(depth):
        ns = {C.model_row(Workspace(r))["model"]: C.model_row(Workspace(r))["n eval"] for r in roots}
        rep.figure(CP.auroc_by_depth(depth, n_by_model=ns))


def build_report(ws: Workspace | str, runs: list[str] | None = None, models: list[str] | None = None,
                 readout: str | None = None) -> Report:
    """The report of ``ws``: study, sweeps, ``runs`` (default: every evaluated run) and, with
    ``models`` (other workspaces), the cross-model view.

    Raises: WorkspaceError when ``ws`` is not a metacog workspace (or a run is unknown or not
    evaluated).
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace")
    rep = Report(f"metacog report: {ws.root.name}")
    rep.p(f"Workspace {ws.root}; written {time.strftime('%Y-%m-%d %H:%M:%S')}. All metrics on the eval split (disjoint by item id "
          "from the training and calibration splits).")
    _study_section(rep, ws)
    _sweeps_section(rep, ws)
    ids = runs if runs is not None else C.evaluated_runs(ws)
    comparison_section(rep, [C.load_run(ws, r) for r in ids], readout)
    transfer_section(rep, ws)
    if models:
        models_section(rep, [str(ws.root)] + [str(Workspace(m).root) for m in models if Workspace(m).root != ws.root])
    return rep


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1250px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:12px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.cap{color:#555;font-size:12px;margin:2px 0 14px}.fig{margin:10px 0 18px}"""


def render(rep: Report) -> str:
    """The report as one HTML document (plotly.js inlined once; works offline)."""
    from plotly.offline import get_plotlyjs

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(rep.title)}</title><style>{CSS}</style>",
             f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><h1>{html.escape(rep.title)}</h1>"]
    k = 0
    for kind, x, cap in rep.blocks:
        if kind == "h2":
            parts.append(f"<h2>{html.escape(x)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(x)}</p>")
        elif kind == "table":
            parts.append(x.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0, escape=True))
            if cap:
                parts.append(f"<div class='cap'>{html.escape(cap)}</div>")
        elif kind == "figure":
            k += 1
            parts.append("<div class='fig'>" + x.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{k}",
                                                          config={"displaylogo": False, "responsive": True}) + "</div>")
            if cap:
                parts.append(f"<div class='cap'>{html.escape(cap)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, ws: Workspace | str, runs: list[str] | None = None, models: list[str] | None = None,
                 readout: str | None = None) -> tuple[Path, Report]:
    """Build the HTML report of ``ws`` (runs, seeds, models; :func:`build_report`) and write it
    atomically to ``out``. Returns ``(path, Report)``. Raises: ValueError when ``out`` is not a
    .html/.htm name; WorkspaceError for an unknown or unevaluated run."""
    rep = build_report(ws, runs, models, readout)
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is an HTML file: give --out a .html name, not {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(rep))
    return out, rep
