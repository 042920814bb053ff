"""Methods: every confidence method side by side on the same eval items — verbal, E[v], probe,
P(True), self-consistency, relative (Bradley-Terry, Elo), calibration-tuning, Brier tuning — and
post-hoc calibrated variants (fitted on the calibration split): AUROC with CI, ECE, Brier, AURC,
ceiling rate and cost; reliability diagrams side by side; risk–coverage curves."""
import pandas as pd
import streamlit as st

from metacog.app import ui
from metacog.methods import POSTHOC_KINDS, MethodSettings, all_methods, eval_scores, methods_table, stale_methods, stored_methods, unavailable
from metacog.methods import get as get_method
from metacog.methods import plots as mplots

ws = ui.current_workspace()
ui.header("Methods", ws, "Is probe-based confidence better than the alternatives **on this model and data**? Every method "
          "scores the same items; metrics on the **eval split**, post-hoc calibrators fitted on the **calibration split** only.")

if not ui.require(ws, "answers"):
    st.stop()


@st.cache_data(show_spinner=False, max_entries=8)
def _table(root: str, stamp: tuple, n_boot: int) -> pd.DataFrame:
    from metacog.core.workspace import Workspace

    return methods_table(Workspace(root), n_boot=n_boot)


def _stamp() -> tuple:
    d = ws.path("methods")
    return tuple(sorted((p.name, p.stat().st_mtime) for p in d.glob("*/meta.json"))) if d.exists() else ()


def _probe_runs() -> list[str]:
    from metacog.finetune.runs import list_runs

    reg = list_runs(ws)
    if not len(reg):
        return []
    ok = reg[(reg["status"] == "done") & (reg["targets"] == "probe") & (reg["format"] == "inline")] \
        if {"status", "targets", "format"} <= set(reg.columns) else reg.iloc[:0]
    return [r for r in ok["run"] if ws.path("runs", r, "adapter", "adapter_config.json").exists()]


k = ws.root.name
with ui.guard("the methods"):
    model = ui.model_name(ws)
    _jobs = ui.job_kind("methods", "a methods run")
    _job = _jobs.get(ws.root)
    # stays open while a run computes (its progress and Stop are inside) and after one ended (its outcome)
    with st.expander("Compute methods", expanded=not stored_methods(ws) or _job is not None):
        _, _study = ws.settings()
        ms = [m for m in all_methods() if unavailable(m, _study) is None]
        off = [m.name for m in all_methods() if unavailable(m, _study) is not None]
        st.caption("Fresh results are reused; long methods save finished chunks, so a stopped run resumes. "
                   f"Headless: `metacog methods --workspace {ws.root} --methods all`."
                   + (f" Not offered: {', '.join(off)}: {unavailable(get_method(off[0]), _study)}." if off else ""))
        pick = st.multiselect("methods", [m.name for m in ms], default=[m.name for m in ms if not m.needs_model],
                              key=f"mt-pick-{k}", format_func=lambda n: f"{n} — {next(m.cost for m in ms if m.name == n)}")
        c = st.columns(5)
        kk = c[0].number_input("samples k", 1, 50, 5, key=f"mt-k-{k}")
        temp = c[1].number_input("temperature", 0.1, 3.0, 1.0, 0.1, key=f"mt-t-{k}")
        comps = c[2].number_input("comparisons", 10, 100000, 2000, 10, key=f"mt-c-{k}")
        upd = c[3].number_input("tuning updates", 1, 10000, 24, key=f"mt-u-{k}")
        lim = c[4].number_input("eval limit (0 = all)", 0, 100000, 0, key=f"mt-l-{k}")
        probe_runs = _probe_runs()
        prun = st.selectbox("probe-targeted: run to score", ["(train a short one with the tuning budget)", *probe_runs],
                            key=f"mt-prun-{k}", help="a finished probe-targeted inline run of this workspace (Fine-tune page), "
                                                     "or a short run with the same budget as the other training methods")
        prun = None if prun not in probe_runs else prun
        jobs = ui.job_kind("methods", "a methods run")
        job = jobs.get(ws.root)
        running = jobs.running() is not None
        if st.button("Run", key=f"mt-run-{k}", disabled=not pick or running, type="primary",
                     help="runs in the background; Stop keeps the finished chunks and a re-run resumes"):
            s = MethodSettings(k_samples=int(kk), temperature=float(temp), n_comparisons=int(comps), tune_updates=int(upd),
                               eval_limit=int(lim) or None, calibration_limit=int(lim) or None, probe_run=prun)
            try:
                ui.start_methods(ws, list(pick), s)
            except Exception as e:
                st.error(f"Could not start the methods: {type(e).__name__}: {e}")
            else:
                st.rerun()
        if job is not None and job.running:
            ui.job_progress(jobs, job, "methods", "stop after the current chunk; finished chunks are kept and a re-run resumes")
        elif job is not None:
            status = job.result or {}
            bad = {n: v for n, v in status.items() if str(v).startswith("failed")}
            ui.job_outcome(job, f"Methods finished in {int(job.elapsed)} s: "
                           + ", ".join(f"{n} {v}" for n, v in status.items()), "The methods run",
                           "Run again resumes from the finished chunks.")
            if bad:
                st.error("; ".join(f"{n}: {v}" for n, v in bad.items()))
            if st.session_state.get(f"_mt_seen_{job.id}") is None:
                st.session_state[f"_mt_seen_{job.id}"] = True
                st.cache_data.clear()  # new results: recompute the table

    stale = stale_methods(ws)
    if stale:
        _, _study = ws.settings()
        redo = [n for n in stale if n not in off]
        gone = [n for n in stale if n in off]
        st.warning(f"{len(stale)} stored result(s) were computed on earlier answers of this workspace and are not shown "
                   f"({', '.join(stale)})."
                   + (f" Recompute {', '.join(redo)} above, or run `metacog methods --workspace {ws.root} --methods {','.join(redo)}`."
                      if redo else "")
                   + (f" {', '.join(gone)}: {unavailable(get_method(gone[0]), _study)}." if gone else ""))
    if not stored_methods(ws):
        st.info(f"No method results yet. Compute them above, or run `metacog methods --workspace {ws.root} --methods all`.")
        st.stop()
    t = _table(str(ws.root), _stamp(), 1000)
    t = t[~t["note"].astype(str).str.startswith("stale:")].reset_index(drop=True)  # said above
    n_eval = int(t["n_eval"].max())
    c = st.columns([3, 2])
    kinds = c[0].multiselect("post-hoc calibration (fitted on the calibration split)", list(POSTHOC_KINDS), default=[],
                             key=f"mt-kinds-{k}")
    view = t[t["calibration"].isin(["none", *kinds])].reset_index(drop=True)
    cols = ["method", "label", "calibration", "family", "n_eval", "n_missing", "auroc", "auroc_lo", "auroc_hi", "ece", "brier",
            "aurc", "ceiling_rate", "cost", "seconds", "forward_passes", "train_updates", "note"]
    st.subheader("Table")
    st.caption("**Design**: every method here scores the **base model's answers** (its correctness on the eval split). "
               "`probe_targeted` is the adapter's verbal confidence after the question + the *base* answer + `Confidence:`. "
               "The Results page measures a fine-tuned run differently: the fine-tuned model **answers again** and its "
               "confidence is scored against its own correctness, so the two AUROCs of one run can differ.")
    ui.show_table(view[cols].round(4), key=f"mt-table-{k}", filename=f"{k}-methods",
                  caption=f"eval split, n={n_eval}, {model}; AUROC CI = 95% stratified bootstrap; ECE = 10 equal-width bins; "
                          "ceiling rate = share of scores ≥ 0.95; seconds = compute time of the method on this workspace")
    notes = view[view["note"].astype(str).str.len() > 0]
    if len(notes):
        st.warning(f"{len(notes)} post-hoc variant(s) could not be fitted: " + notes["note"].iloc[0])
    view = view[view["note"].astype(str).str.len() == 0].reset_index(drop=True)
    ui.show_figure(mplots.method_auroc_bars(view, n=n_eval, model=model), key=f"mt-auroc-{k}", filename=f"{k}-methods-auroc")

    st.subheader("Reliability and selective prediction")
    default = [m for m in ("probe", "probe_targeted", "ev_inline", "p_true", "self_consistency", "relative_bt", "brier_tuning")
               if m in set(view["method"])]
    shown = st.multiselect("methods to plot", view["method"].tolist(), default=default or view["method"].tolist()[:6],
                           key=f"mt-shown-{k}")
    if shown:
        frames = eval_scores(ws, shown)
        ui.show_figure(mplots.reliability_grid(frames, n=n_eval, model=model), key=f"mt-rel-{k}", filename=f"{k}-methods-reliability")
        ui.show_figure(mplots.risk_coverage_curves(frames, n=n_eval, model=model), key=f"mt-rc-{k}", filename=f"{k}-methods-risk-coverage")
    ui.definitions("auroc", "ece")
