"""Probes: AUROC by layer per position (with CIs), against verbal confidence and the question-type
prior; reliability diagram of any probe; per-item predictions."""
import numpy as np
import streamlit as st

from metacog.viz import plots

from metacog.app import ui

ws = ui.current_workspace()
ui.header("Probes", ws, "What do the hidden states know about correctness? One logistic probe per layer × position, "
          "scored on the eval split; compare with what the model says.")

if not ui.require(ws, "probes"):
    st.stop()

with ui.guard("the probes"):
    pm = ui.probe_metrics(ws)
    oof = ui.oof(ws)
    df = ui.results(ws)
    summ = ui.summary(ws) or {}
    _, study = ws.settings()
    model = ui.model_name(ws)
    best = ws.read_json("probes/best.json") or {}
    positions = ui.probe_positions(ws, oof)
    n_eval = int(pm["n_eval"].iloc[0]) if "n_eval" in pm and len(pm) else int((df["split"] == "eval").sum())
    sn = best.get("selection_null") or {}

    def _num(x, nd=3):
        return "n/a" if x is None or x != x else f"{x:.{nd}f}"

    if best:
        c = st.columns([3, 2, 2, 2, 2])
        c[0].metric(f"best probe @ {best.get('position')}", f"layer {best.get('layer')}",
                    help="the layer × position with the highest nested train-split CV AUROC; its numbers here are on the eval split")
        row = pm[(pm["layer"] == int(best["layer"])) & (pm["position"] == best["position"])]
        if len(row):
            r = row.iloc[0]
            c[1].metric("AUROC (eval)", _num(r["auroc"]), help=f"95% bootstrap CI [{_num(r['auroc_lo'])}, {_num(r['auroc_hi'])}]")
            ece_help = f"95% bootstrap CI [{_num(r.get('ece_lo'))}, {_num(r.get('ece_hi'))}]"
            if "ece_null_p95" in r:
                ece_help += (f"; a perfectly calibrated predictor at this n has ECE {_num(r['ece_null_mean'])} on average "
                             f"(95th percentile {_num(r['ece_null_p95'])})")
            c[2].metric("ECE (eval)", _num(r["ece"]), help=ece_help)
        if sn:
            c[3].metric("selection null p", f"{sn['p']:.2f}",
                        help=f"best of all layer × position probes under {sn['n_perm']} label shuffles: mean {sn['mean']:.3f}, "
                             f"95th percentile {sn['p95']:.3f}; observed {sn['observed']:.3f}")
        v = summ.get("verbal", {}).get("inline", {})
        if v.get("auroc") is not None and v["auroc"] == v["auroc"]:
            c[4].metric("verbal AUROC inline (eval)", f"{v['auroc']:.3f}")

    # ------------------------------------------------------------------ by layer
    st.subheader("By layer")
    c = st.columns([3, 3, 1])
    metric = c[0].radio("metric", ["auroc", "cv_auroc", "ece", "brier"], horizontal=True, key="pr-metric",
                        format_func={"auroc": "AUROC (eval)", "cv_auroc": "CV AUROC (train)", "ece": "ECE (eval)", "brier": "Brier (eval)"}.get)
    shown = c[1].multiselect("positions", positions, default=positions, key="pr-positions") or positions
    bands = c[2].toggle("CI bands", value=True, key="pr-bands", help="95% bootstrap CIs of the eval AUROC")
    refs = {}
    if metric == "auroc":
        for mode in ("inline", "two-pass"):
            a = summ.get("verbal", {}).get(mode, {}).get("auroc")
            if a is not None and a == a:
                refs[f"verbal {mode}"] = a
        tp = (summ.get("type_prior") or {}).get("auroc")
        if tp is not None and tp == tp:
            refs["question-type prior"] = tp
    fig = plots.probe_metric_by_layer(pm, split="eval" if metric != "cv_auroc" else "train", n=n_eval if metric != "cv_auroc" else int(pm["n_train"].iloc[0]),
                                      model=model, metric=metric, references=refs, best=best, positions=shown, bands=bands)
    if metric == "cv_auroc" and sn:
        plots.add_selection_null(fig, sn, int(pm["layer"].min()), int(pm["layer"].max()))
    ui.show_figure(fig, "probe-by-layer", f"{ws.root.name}-probe-{metric}-by-layer")
    if sn:
        st.caption(
            f"**Selection null.** The best probe is the best of {sn['n_cells']} layer × position cells, so its train CV AUROC "
            f"is optimistic. With the labels shuffled {sn['n_perm']} times and the same selection redone over every cell and C, "
            f"the best reaches {sn['mean']:.3f} on average and {sn['p95']:.3f} at the 95th percentile; on the real labels it "
            f"reaches {sn['observed']:.3f} (p = {sn['p']:.2f}; the statistic is the one-step probe's CV AUROC, see "
            "docs/SCIENCE.md). Shown as a grey band in the *CV AUROC (train)* view. The eval AUROC of the chosen probe is "
            "not affected by this selection.")
    if metric == "auroc":
        st.caption("Shaded bands: 95% bootstrap CIs. Dashed lines: the model's verbal confidence and the question-type prior "
                   "(category accuracy on train) on the same eval items; dotted: chance.")

    # ------------------------------------------------------------------ reliability
    st.subheader("Reliability")
    c = st.columns([2, 3, 2])
    pos = c[0].selectbox("position", positions, index=positions.index(best["position"]) if best.get("position") in positions else 0, key="pr-pos")
    n_layers = oof.shape[1]
    layer = c[1].slider("layer", 0, n_layers - 1, int(best.get("layer", n_layers - 1)), key="pr-layer")
    rsplit = c[2].selectbox("split", ui.SPLITS, index=0, key="pr-split",
                            help="train items carry cross-fitted (out-of-fold) predictions")
    d = ui.split_frame(df, rsplit)
    j = positions.index(pos)
    p = np.asarray(oof[d["row"].to_numpy(), layer, j], dtype=float)
    bins, e, n_pred = ui.reliability(p, d["correct"].to_numpy(bool), study.ece_bins)
    if n_pred == 0:
        st.info("No probe predictions for these items.")
    else:
        fig = plots.reliability_diagram(bins, split=rsplit, n=n_pred, model=model, label=f"probe layer {layer} @ {pos}", ece=e)
        ui.show_figure(fig, "reliability", f"{ws.root.name}-reliability-L{layer}-{pos}-{rsplit}")
        with st.expander("bins"):
            ui.show_table(bins.round(4), key="rel-bins", filename=f"{ws.root.name}-reliability-bins-L{layer}-{pos}-{rsplit}")

    # ------------------------------------------------------------------ items
    st.subheader("Items")
    t = d[[c for c in ["id", "split", "category", "question", "answer", "correct", "verbal_inline", "verbal_two_pass", "ev_inline"] if c in d]].copy()
    t.insert(6, f"probe p (L{layer} @ {pos})", p)
    ui.show_table(ui.with_links(t, ws), key="probe-items", filename=f"{ws.root.name}-probe-items-L{layer}-{pos}-{rsplit}",
                  column_config=ui.LINK_COLUMN, height=360, caption=f"{len(t)} items, {rsplit} split")
    with st.expander("All probes (metrics.parquet)"):
        ui.show_table(pm.round(4), key="probe-metrics", filename=f"{ws.root.name}-probe-metrics")
    ui.definitions("probes", "auroc", "ece", "type_prior")
