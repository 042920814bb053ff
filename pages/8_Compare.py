"""Compare: runs across seeds (and targets, controls), and studies across models. Mean ± sd of the
headline metrics with each seed's value, the shape of each run's confidence distribution, KS /
Wasserstein distances between seeds, reliability diagrams side by side, per-item agreement across
seeds (linked to the item explorer), the cross-model table and AUROC by relative depth, and a
self-contained HTML report."""
import streamlit as st

from metacog import compare as C
from metacog.compare import plots as CP
from metacog.app import ui
from metacog.sweeps import list_sweeps, sweep_table

READOUT_NAMES = {
    "verbal_inline": "verbal inline (text)", "ev_inline": "E[v] inline", "argmax_inline": "argmax inline",
    "verbal_two_pass": "verbal two-pass (text)", "ev_two_pass": "E[v] two-pass", "argmax_two_pass": "argmax two-pass",
}

ws = ui.current_workspace()
ui.header("Compare", ws, "Is a result a property of the method or of one seed? Pick runs (any mix of seeds, targets, controls): "
          "every number is on the **eval split**. Launch replicates below or with `metacog sweep --workspace DIR --seeds "
          "42,123,456` (skips completed runs; local processes or Ray).")

if not ui.require(ws, "answers"):
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def _load(root: str, run: str, stamp: float):
    return C.load_run(root, run)


def _stamp(run: str) -> float:
    p = ws.path("runs", run, "eval.json")
    return p.stat().st_mtime if p.exists() else 0.0


with ui.guard("the comparison"):
    k = ws.root.name
    sweeps = list_sweeps(ws)
    if sweeps:
        st.subheader("Sweeps")
        sid = st.selectbox("sweep", [s["id"] for s in sweeps], key=f"cmp-sweep-{k}",
                           format_func=lambda i: next(f"{i} · {s['status']} · {len(s['runs'])} runs" for s in sweeps if s["id"] == i))
        rec = next(s for s in sweeps if s["id"] == sid)
        ui.show_table(sweep_table(rec), key="cmp-sweep", filename=f"{k}-{sid}",
                      caption=f"executor {rec.get('executor')}, {rec.get('workers')} worker(s) × {rec.get('threads')} thread(s); "
                              "re-launching the sweep finishes only what is missing")
    else:
        rec = None
    with st.expander("Launch a seed sweep", expanded=not sweeps):
        from metacog.finetune.settings import FinetuneSettings

        cc = st.columns(5)
        seeds_txt = cc[0].text_input("seeds", "42,123,456", key=f"cmp-sw-seeds-{k}")
        tg = cc[1].multiselect("targets", ["probe", "shuffled", "binary", "constant"], default=["probe", "shuffled"],
                               key=f"cmp-sw-tg-{k}")
        ep = cc[2].number_input("epochs", 1, 100, 3, key=f"cmp-sw-ep-{k}")
        li = cc[3].number_input("training items (0 = all)", 0, 100000, 0, key=f"cmp-sw-li-{k}")
        el = cc[4].number_input("eval limit (0 = all)", 0, 100000, 0, key=f"cmp-sw-el-{k}")
        sw_kind = ui.job_kind("sweep", "a seed sweep")
        sw_job = sw_kind.get(ws.root)
        if st.button("Launch sweep", key=f"cmp-sw-go-{k}", type="primary", disabled=sw_kind.running() is not None,
                     help="each (seed × target) run trains and is evaluated; runs already complete are skipped"):
            try:
                seeds = [int(x) for x in seeds_txt.replace(" ", "").split(",") if x]
                spec = {"finetune": FinetuneSettings(epochs=int(ep), limit_items=int(li) or None).to_dict(), "seeds": seeds,
                        "targets": tg, "eval_limit": int(el) or None, "threads": 1, "workers": 1}
                ui.start_seed_sweep(ws, spec)
            except ValueError as e:
                st.error(f"Could not launch the sweep: {e}")
            else:
                st.rerun()
        if sw_job is not None and sw_job.running:
            ui.job_progress(sw_kind, sw_job, "sweep", "stop after the current run's checkpoint; a relaunch finishes what is missing")
        elif sw_job is not None:
            ui.job_outcome(sw_job, "Sweep finished.", "The sweep", "Launching it again finishes what is missing.")
    done = C.evaluated_runs(ws)
    if not done:
        st.info("No evaluated run yet. Run `metacog sweep --workspace "
                f"{ws.root} --seeds 42,123,456` or launch runs on the **Fine-tune** page.")
        st.stop()
    from metacog.finetune.runs import list_runs

    reg = list_runs(ws).set_index("run")
    label = {r: f"{r} · {reg.loc[r, 'targets']} · seed {reg.loc[r, 'seed']}" for r in done}
    default = [e["run"] for e in (rec or {}).get("runs", []) if e.get("run") in label] or done[:3]
    picked = st.multiselect("runs", done, default=default, key=f"cmp-runs-{k}", format_func=label.get)
    if not picked:
        st.info("Pick at least one run.")
        st.stop()
    runs = [_load(str(ws.root), r, _stamp(r)) for r in picked]
    ros = C.readouts_of(runs)
    prim = runs[0].eval.get("headline", {}).get("readout")
    readout = st.selectbox("readout", ros, index=ros.index(prim) if prim in ros else 0, key=f"cmp-ro-{k}",
                           format_func=lambda r: READOUT_NAMES.get(r, r))
    rname = READOUT_NAMES.get(readout, readout)
    n = int(runs[0].eval.get("headline", {}).get("n_eval") or len(runs[0].per_item))
    models = ", ".join(dict.fromkeys(d.model for d in runs))

    # ---------------------------------------------------------------- headline
    st.subheader("Across seeds: mean ± sd")
    if len(picked) == 1:
        st.caption("One run picked: there is no spread to show (sd needs two seeds). Launch a seed sweep above.")
    per = C.run_metrics(runs, readout)
    summ = C.seed_summary(per)
    cols = [c for c in summ.columns if not c.endswith(("_mean", "_sd"))]
    ui.show_table(summ[cols], key="cmp-summary", filename=f"{k}-seed-summary",
                  caption=f"per configuration (runs that differ only by seed): mean ± sample sd (ddof=1) and each seed's value; "
                          f"fine-tuned model, {rname}, eval split, n={n}")
    ui.show_figure(CP.seed_strip(per, "auroc", n=n, model=models, readout=rname), "cmp-auroc", f"{k}-seeds-auroc")
    ui.show_figure(CP.seed_strip(per, "ece", n=n, model=models, readout=rname), "cmp-ece", f"{k}-seeds-ece")
    with st.expander("each run"):
        ui.show_table(per, key="cmp-per-run", filename=f"{k}-per-run")

    # ---------------------------------------------------------------- shapes
    st.subheader("Shape of the confidence distribution")
    vals = {"base": runs[0].values(readout, "base")}
    vals.update({d.label: d.values(readout) for d in runs})
    kind = st.radio("show as", ["overlaid histograms", "violins"], horizontal=True, key=f"cmp-shape-{k}")
    if kind == "violins":
        ui.show_figure(CP.confidence_violins(vals, n=n, model=models, readout=rname), "cmp-violins", f"{k}-violins")
    else:
        ui.show_figure(CP.confidence_shapes(vals, n=n, model=models, readout=rname), "cmp-shapes", f"{k}-shapes")
    dist = C.distances_by_config(runs, readout)
    if len(dist):
        ui.show_table(dist, key="cmp-dist", filename=f"{k}-distances",
                      caption="Kolmogorov–Smirnov D = sup|F_a − F_b| (0–1) and Wasserstein-1 = ∫|F_a − F_b| dx (confidence points) "
                              "between the seeds of each configuration, and each seed vs the base model; unparsed values left out")

    # ---------------------------------------------------------------- reliability
    st.subheader("Reliability per run")
    curves = {"base": C.reliability_of(runs[0], readout, "base")}
    curves.update({d.label: C.reliability_of(d, readout) for d in runs})
    ui.show_figure(CP.reliability_grid(curves, n=n, model=models, readout=rname), "cmp-rel", f"{k}-reliability")

    # ---------------------------------------------------------------- agreement
    st.subheader("Per-item agreement across runs")
    thr = st.slider("stable if the sd across runs is at most (points)", 1.0, 40.0, float(C.STABLE_SD), 1.0, key=f"cmp-thr-{k}")
    agree = C.item_agreement(runs, readout, thr)
    if len(runs) < 2:
        st.info("Pick two or more runs (e.g. the seeds of one sweep) to see which items' confidence is seed-sensitive.")
    else:
        cnt = agree["agreement"].value_counts().to_dict()
        m = st.columns(3)
        m[0].metric("stable items", cnt.get("stable", 0))
        m[1].metric("seed-sensitive items", cnt.get("seed-sensitive", 0))
        m[2].metric("median sd (points)", f"{agree['sd'].median():.1f}" if agree["sd"].notna().any() else "—")
        ui.show_figure(CP.agreement_scatter(agree, n_runs=len(runs), model=models, readout=rname, stable_sd=thr), "cmp-agree",
                       f"{k}-agreement")
        ui.show_table(ui.with_links(agree, ws), key="cmp-agree-tbl", filename=f"{k}-agreement", column_config=ui.LINK_COLUMN,
                      height=360, caption="most seed-sensitive first; 'explore' opens the item in the item explorer")

    # ---------------------------------------------------------------- models
    st.subheader("Across models")
    others = [w for w in ui.list_workspaces() if w.root != ws.root and w.path("summary.json").exists()]
    pick_m = st.multiselect("other workspaces (one per model)", [w.root.name for w in others],
                            default=[w.root.name for w in others if C.model_name(w) != C.model_name(ws)][:3],
                            key=f"cmp-models-{k}")
    roots = [str(ws.root)] + [str(w.root) for w in others if w.root.name in pick_m]
    if ws.path("summary.json").exists():
        ui.show_table(C.models_table(roots), key="cmp-models", filename=f"{k}-models",
                      caption="every metric on that workspace's eval split; depth = layer / number of layers")
        depth = C.probe_depth_table(roots)
        if len(depth):
            positions = ["(best per layer)"] + sorted(depth["position"].unique())
            pos = st.selectbox("position", positions, key=f"cmp-pos-{k}")
            ui.show_figure(CP.auroc_by_depth(depth, position=None if pos.startswith("(") else pos), "cmp-depth", f"{k}-depth")
    else:
        st.info("This workspace has no summary.json yet (run the study).")

    # ---------------------------------------------------------------- report
    st.subheader("Report")
    if st.button("Build HTML report", key=f"cmp-report-{k}", icon=":material/description:"):
        from metacog.compare.report import build_report, render

        with st.spinner("building the report"):
            rep = build_report(ws, runs=picked, models=roots[1:] or None, readout=readout)
            st.session_state[f"cmp-html-{k}"] = render(rep)
            st.session_state[f"cmp-nfig-{k}"] = len(rep.figures)
    if st.session_state.get(f"cmp-html-{k}"):
        st.download_button("Download report (HTML, works offline)", data=st.session_state[f"cmp-html-{k}"],
                           file_name=f"{k}-report.html", mime="text/html", key=f"cmp-dl-report-{k}", on_click="ignore",
                           icon=":material/download:")
        st.caption(f"{st.session_state.get(f'cmp-nfig-{k}')} figures, plotly.js inlined once; or `metacog report --workspace {ws.root} --out report.html`")
    ui.definitions("auroc", "ece", "readouts")
