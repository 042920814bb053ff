"""Results: fine-tuned runs against the base model on the eval split — accuracy and its change,
verbal AUROC/ECE/Brier/ceiling/validity (text, E[v], argmax), AUROC on unchanged items, recovery
vs the probe, the question-type prior, re-trained probes, reliability and histograms before/after,
per-item shifts linked to the item explorer."""
import pandas as pd
import streamlit as st

from metacog.app import ui
from metacog.finetune import plots as fplots
from metacog.finetune.evaluate import READOUTS, eval_stale, load_eval
from metacog.finetune.runs import get_run, list_runs, run_label

READOUT_NAMES = {
    "verbal_inline": "verbal inline (text)", "ev_inline": "E[v] inline", "argmax_inline": "argmax inline",
    "verbal_two_pass": "verbal two-pass (text)", "ev_two_pass": "E[v] two-pass", "argmax_two_pass": "argmax two-pass",
}

ws = ui.current_workspace()
ui.header("Results", ws, "Does the fine-tuned model now **say** what it knows? Every number is on the **eval split** "
          "(never trained on), base model vs adapter on the same items.")

if not ui.require(ws, "answers"):
    st.stop()


def _f(x, nd=3):
    return None if x is None or (isinstance(x, float) and x != x) else round(float(x), nd)


def _ci(ci, nd=3):
    """'[lo, hi]' of a 95% bootstrap CI, or '—' when absent (an evaluation written before CIs)."""
    lo, hi = (ci or [None, None])[:2]
    return "—" if _f(lo) is None or _f(hi) is None else f"[{lo:.{nd}f}, {hi:.{nd}f}]"


def _arrow(a, b, nd=3, pct=False):
    if a is None or b is None:
        return "—"
    return f"{a:.1%} → {b:.1%}" if pct else f"{a:.{nd}f} → {b:.{nd}f}"


with ui.guard("the results"):
    k = ws.root.name
    model = ui.model_name(ws)
    reg = list_runs(ws)
    done = reg[reg["evaluated"]] if len(reg) else reg
    if done.empty:
        st.info("No evaluated run yet. Launch one on the **Fine-tune** page (with 'evaluate when done'), or run "
                f"`metacog finetune --workspace {ws.root} --evaluate` / `metacog evaluate --workspace {ws.root} --run RUN`.")
        st.stop()
    label = {r.run: f"{r.run} · {r.targets} · {r.format} · seed {r.seed}" for r in done.itertuples()}
    qp = st.query_params.get("run")
    default = [qp] if qp in label else done["run"].tolist()[:4]
    picked = st.multiselect("runs", list(label), default=default, key=f"res-runs-{k}", format_func=label.get)
    if not picked:
        st.info("Pick at least one run.")
        st.stop()
    evs = {}
    for r in picked:
        ev, per = load_eval(get_run(ws, r))
        evs[r] = (ev, per, get_run(ws, r).settings())
        if why := eval_stale(ws, ev, r):
            st.warning(f"{r}: {why}. Its numbers below are shown as they were computed.")


    # ------------------------------------------------------------------ headline
    st.subheader("Headline")
    ui.noise_floor_caption(ws)
    st.caption("**Design**: each fine-tuned run **answers every eval item again**; its confidence is scored against its "
               "own correctness (the base row: the base model's answers). The Methods page scores a run's confidence on "
               "the base model's answers instead, so the same run can show another AUROC there.")
    rows = []
    for r, (ev, per, s) in evs.items():
        h, st_ = ev["headline"], get_run(ws, r).status()
        rows.append({
            "run": r, "targets": s["finetune"]["targets"], "format": s["finetune"]["format"], "seed": s["finetune"]["seed"],
            "train items": s["plan"]["n_train"], "updates": st_.get("updates_run"), "epochs": st_.get("epochs_run"),
            "n eval": h["n_eval"], "readout": READOUT_NAMES.get(h["readout"], h["readout"]),
            "accuracy": _arrow(h["accuracy_base"], h["accuracy_ft"], pct=True),
            "AUROC": _arrow(h["auroc_base"], h["auroc_ft"]),
            "AUROC (unchanged items)": _arrow(h["auroc_unchanged_base"], h["auroc_unchanged_ft"]),
            "ECE": _arrow(h["ece_base"], h["ece_ft"]), "Brier": _arrow(h["brier_base"], h["brier_ft"]),
            "ceiling (≥95)": _arrow(h["ceiling_base"], h["ceiling_ft"], pct=True),
            "validity": f"{h['verdict_base']} → {h['verdict_ft']}",
            "E[v] AUROC": _arrow(h.get("ev_auroc_base"), h.get("ev_auroc_ft")),
            "probe AUROC": _f(h["auroc_probe"]), "recovery": _f(h["recovery"], 2), "type prior": _f(h["type_prior_auroc"]),
            "train s": _f(st_.get("train_seconds"), 0), "eval s": _f(ev["seconds"]["total"], 0),
        })
    head = pd.DataFrame(rows)
    ui.show_table(head, key="res-headline", filename=f"{k}-finetune-headline",
                  caption="base → fine-tuned; recovery = (AUROC_ft − 0.5)/(AUROC_probe − 0.5); the type prior is the "
                          "question-type baseline's AUROC on the same items")

    first = picked[0]
    ev0 = evs[first][0]
    prim = ev0["headline"]["readout"]
    n0 = ev0["headline"]["n_eval"]
    ro_all = [r for r in READOUTS if any(r in e["readouts"] for e, _, _ in evs.values())]
    if prim not in ro_all:
        st.info(f"No {READOUT_NAMES.get(prim, prim)} value parsed for any item (base or fine-tuned): the model never wrote a "
                "readable number there. The readouts of the exact 0–100 distribution remain.")
    readout = st.selectbox("readout", ro_all, index=ro_all.index(prim) if prim in ro_all else 0, key=f"res-ro-{k}",
                           format_func=lambda r: READOUT_NAMES.get(r, r))

    # ------------------------------------------------------------------ AUROC bars
    bars = []
    b0 = ev0["readouts"].get(readout, {}).get("base", {})
    if b0:
        bars.append({"name": f"base ({READOUT_NAMES[readout]})", "auroc": b0.get("auroc"), "lo": (b0.get("auroc_ci") or [None, None])[0],
                     "hi": (b0.get("auroc_ci") or [None, None])[1]})
    for r, (ev, _, s) in evs.items():
        f = ev["readouts"].get(readout, {}).get("ft", {})
        if f:
            ci = f.get("auroc_ci") or [None, None]
            bars.append({"name": run_label(r, s['finetune']['targets']), "auroc": f.get("auroc"), "lo": ci[0], "hi": ci[1]})
    refs = {"probe (target)": ev0["headline"].get("auroc_probe"), "question-type prior": ev0["headline"].get("type_prior_auroc")}
    bars_df = pd.DataFrame(bars).astype({"auroc": float, "lo": float, "hi": float}, errors="ignore")
    fig = fplots.run_auroc_bars(bars_df.to_dict("records"), n=n0, model=model, references=refs,
                                what=f"AUROC of {READOUT_NAMES[readout]}, base vs fine-tuned")
    ui.show_figure(fig, "res-auroc", f"{k}-finetune-auroc-{readout}")
    if len({e["headline"]["n_eval"] for e, _, _ in evs.values()}) > 1:
        st.caption("The picked runs were evaluated on different numbers of eval items; the base bar uses the first run's items.")

    # ------------------------------------------------------------------ reliability + histograms
    st.subheader("Calibration before/after")
    _, per0, _ = evs[first]
    bins = int(ev0.get("ece_bins") or 10)
    curves, eces, vals, corr = {}, {}, {}, {}
    if per0 is not None and f"{readout}_base" in per0:
        v = per0[f"{readout}_base"].to_numpy(float)
        y = per0["correct_base"].to_numpy(bool)
        rel, e, n_ok = ui.reliability(v / 100, y, bins)
        if n_ok:
            curves["base"], eces["base"] = rel, e
        vals["base"], corr["base"] = v, y
    for r, (ev, per, s) in evs.items():
        if per is None or f"{readout}_ft" not in per:
            continue
        v = per[f"{readout}_ft"].to_numpy(float)
        y = per["correct_ft"].to_numpy(bool)
        nm = run_label(r, s['finetune']['targets'])
        rel, e, n_ok = ui.reliability(v / 100, y, bins)
        if n_ok:
            curves[nm], eces[nm] = rel, e
        vals[nm], corr[nm] = v, y
    if curves:
        fig = fplots.reliability_overlay(curves, split="eval", n=n0, model=model, label=READOUT_NAMES[readout], eces=eces)
        ui.show_figure(fig, "res-reliability", f"{k}-finetune-reliability-{readout}")
    else:
        st.info("No parsed confidences for this readout.")
    if vals:
        fig = fplots.histograms_before_after(vals, corr, split="eval", model=model, label=READOUT_NAMES[readout])
        ui.show_figure(fig, "res-hist", f"{k}-finetune-hist-{readout}")

    # ------------------------------------------------------------------ one run in detail
    st.subheader("One run in detail")
    one = st.selectbox("run", picked, key=f"res-one-{k}", format_func=label.get)
    ev, per, s = evs[one]
    acc = ev["accuracy"]
    c = st.columns(5)
    c[0].metric("accuracy", f"{acc['ft']:.1%}", f"{acc['change']:+.1%} vs base", help=f"base {acc['base']:.1%}")
    c[1].metric("right → wrong", acc["right_to_wrong"])
    c[2].metric("wrong → right", acc["wrong_to_right"])
    h = ev["headline"]
    c[3].metric("verbal AUROC", "—" if h["auroc_ft"] is None else f"{h['auroc_ft']:.3f}",
                None if h["auroc_ft"] is None or h["auroc_base"] is None else f"{h['auroc_ft'] - h['auroc_base']:+.3f}")
    c[4].metric("recovery", "—" if h["recovery"] is None else f"{h['recovery']:.2f}", help="(AUROC_ft − 0.5)/(AUROC_probe − 0.5)")
    trows = []
    for r, blk in ev["readouts"].items():
        for side in ("base", "ft"):
            b = blk[side]
            trows.append({"readout": READOUT_NAMES.get(r, r), "model": "base" if side == "base" else "fine-tuned",
                          "n": b.get("n"), "parsed": _f(b.get("parse_rate"), 3), "AUROC": _f(b.get("auroc")),
                          "CI lo": _f((b.get("auroc_ci") or [None, None])[0]), "CI hi": _f((b.get("auroc_ci") or [None, None])[1]),
                          "AUROC unchanged": _f(blk["unchanged"][f"auroc_{side}"]), "ECE": _f(b.get("ece")),
                          "ECE CI": _ci(b.get("ece_ci")), "ECE if calibrated (p95)": _f((b.get("ece_null") or {}).get("p95")),
                          "Brier": _f(b.get("brier")), "Brier CI": _ci(b.get("brier_ci")),
                          "ceiling": _f(b.get("ceiling_rate")), "validity": (b.get("validity") or {}).get("verdict"),
                          "within-type AUROC": _f(blk.get("within_type", {}).get(side)),
                          "recovery": _f(blk["recovery"] if side == "ft" else blk["recovery_base"], 2)})
    ui.show_table(pd.DataFrame(trows), key="res-readouts", filename=f"{k}-{one}-readouts",
                  caption=f"eval split, n={h['n_eval']}, unchanged-correctness items: {ev['readouts'].get(prim, {}).get('unchanged', {}).get('n')}; "
                          "CIs: 95% bootstrap over items; 'ECE if calibrated (p95)': the 95th percentile ECE of a perfectly "
                          "calibrated predictor at these confidences and n -- an ECE below it is indistinguishable from perfect")
    if per is not None and f"{readout}_base" in per:
        fig = fplots.shift_scatter(per[f"{readout}_base"], per[f"{readout}_ft"], per["correct_ft"], split="eval", model=model,
                                   label=READOUT_NAMES[readout], ids=per["id"])
        ui.show_figure(fig, "res-shift", f"{k}-{one}-shift-{readout}")

    rp = ev.get("retrained_probes") or {}
    rpf = get_run(ws, one).file("retrained_probes.parquet")
    if rpf.exists():
        rpd = pd.read_parquet(rpf)
        c = st.columns([2, 5])
        ppos = ev.get("probe", {}).get("position")
        positions = list(dict.fromkeys(rpd["position"]))
        pos = c[0].selectbox("position", positions, index=positions.index(ppos) if ppos in positions else 0, key=f"res-rp-pos-{k}")
        fig = fplots.retrained_probes_by_layer(rpd, position=pos, n=h["n_eval"], model=model,
                                               references={"fine-tuned verbal AUROC": h.get("auroc_ft")})
        ui.show_figure(fig, "res-retrained", f"{k}-{one}-retrained-{pos}")
        st.caption(rp.get("procedure", "") + ". Does fine-tuning change what is linearly readable from the hidden states?")
    elif rp.get("error"):
        st.info(f"Re-trained probes unavailable: {rp['error']}")

    st.subheader("Loss curves")
    overlay = st.multiselect("runs to overlay", picked, default=picked, key=f"res-loss-runs-{k}", format_func=label.get)
    logs = {run_label(r, evs[r][2]["finetune"]["targets"]): get_run(ws, r).read_log() for r in overlay}
    logs = {n: lg for n, lg in logs.items() if len(lg)}
    if logs:
        upe = {evs[r][2]["plan"]["updates_per_epoch"] for r in overlay}
        fig = fplots.loss_curve(logs, title=f"Loss, {len(logs)} run(s), {model}",
                                updates_per_epoch=upe.pop() if len(upe) == 1 else None)
        ui.show_figure(fig, "res-loss", f"{k}-loss")
        st.caption("x: optimizer updates actually run (each run's own plan); dashed: validation loss.")

    if per is not None:
        st.subheader("Per item")
        cols = ["id", "category", "question", "answer_base", "answer_ft", "correct_base", "correct_ft", f"{readout}_base",
                f"{readout}_ft", f"{readout}_shift", "probe_p"]
        t = per[[c for c in cols if c in per]].copy()
        order = st.radio("sort by", ["largest shift", "item"], horizontal=True, key=f"res-sort-{k}")
        if order == "largest shift" and f"{readout}_shift" in t:
            t = t.reindex(t[f"{readout}_shift"].abs().sort_values(ascending=False, na_position="last").index)
        ui.show_table(ui.with_links(t, ws), key="res-items", filename=f"{k}-{one}-per-item", column_config=ui.LINK_COLUMN,
                      height=380, caption="'explore' opens the item (base model's answer and distributions) in the item explorer")
    if any((evs[r][0] or {}).get("pairwise") for r in picked):  # the transfer table (metacog/finetune/transfer.py)
        from metacog.finetune import transfer

        st.subheader("Transfer: single-question vs pairwise")
        tt = transfer.wide(transfer.transfer_table(ws, picked)).reset_index()
        ui.show_table(tt, key="res-transfer", filename=f"{k}-transfer",
                      caption="rows = training task (none = base); value [95% CI] on items never trained on: single AUROC/ECE "
                              "(item bootstrap), pairwise accuracy on correct/incorrect pairs (pair bootstrap, each item in ≤ 2 "
                              f"pairs), Bradley–Terry AUROC. Out-of-domain columns: `metacog transfer --workspace {ws.root} --ood W2`.")
    ui.definitions("auroc", "ece", "validity", "readouts", "type_prior")
