"""Patching: write a source's hidden state into a target's forward at (layer, position) and read
the target's exact 0-100 distribution at the confidence slot. Confidence slot vs random
positions, every layer, with the layer gradient of each tested across pairs (mean per-pair
Spearman ρ, sign-flip p, bootstrap CI over pairs; metacog.patching.stats via metacog.app.patching_view) — the
numbers of patching.json."""
import dataclasses
import json

import numpy as np
import streamlit as st

from metacog import patching as P
from metacog.app import patching_view as PV
from metacog.app import ui
from metacog.patching import plots as PP

ws = ui.current_workspace()
ui.header(
    "Patching", ws,
    "Does the model's confidence live in the residual stream at the **confidence slot**? Write a source's state "
    "(another item, or the same item in a fine-tuned adapter) into the target's forward at one layer and position, and "
    "read the target's exact 0–100 distribution after `Confidence:`. The control: the same patch at **random positions** "
    "of the item's own question and answer tokens (drawn with a seed; never the chat template or system prompt, never "
    "special tokens, never the slot).",
)

if not ui.require(ws, "activations", "patching reads the inline sequences and their E[v]"):
    st.stop()


with ui.guard("the patching set-up"):
    df = ui.results(ws)
    model_s, study = ws.settings()
    model = ui.model_name(ws)
    st.subheader("Set up a sweep")
    kind = st.radio("pairs", ["item → item", "model → model"], horizontal=True, key="pt-kind",
                    help="item → item: one item's state into another's, in the workspace's model. model → model: the same item in a "
                         "fine-tuned adapter and in the base model (either direction).")
    scores = [s for s in ("probe", "ev", "verbal") if P.SCORES[s] in df and df[P.SCORES[s]].notna().any()]
    n_pairs = 1
    src_ref = tgt_ref = None
    by = "auto"
    split = "all"
    src_correct = tgt_correct = "any"
    items = None
    if kind == "item → item":
        c = st.columns([1, 1, 1])
        by = c[0].selectbox("rank items by", scores or ["ev"], key="pt-by",
                            format_func={"probe": "best-probe p(correct)", "ev": "E[v] of the 0–100 readout", "verbal": "verbal confidence"}.get)
        split = c[1].selectbox("split", ["all", "eval", "calibration", "train"], key="pt-split")
        n_pairs = int(c[2].number_input("pairs", 1, 500, 5, key="pt-npairs", help="matched in rank order: highest source with lowest target, …"))
        cs, ct = st.columns(2)
        choices = {"high": "highest-ranked items", "low": "lowest-ranked items", "random": "random items", "pick": "one item I pick"}
        with cs:
            s_sel = st.selectbox("source", list(choices), key="pt-src", format_func=choices.get)
            src_correct = st.selectbox("source correctness", ["any", "yes", "no"], key="pt-src-c",
                                       format_func={"any": "any", "yes": "correct only", "no": "incorrect only"}.get)
        with ct:
            t_sel = st.selectbox("target", list(choices), index=1, key="pt-tgt", format_func=choices.get)
            tgt_correct = st.selectbox("target correctness", ["any", "yes", "no"], key="pt-tgt-c",
                                       format_func={"any": "any", "yes": "correct only", "no": "incorrect only"}.get)
        col = P.SCORES.get(by)
        if col in df:
            lo, hi = float(np.nanmin(df[col])), float(np.nanmax(df[col]))
            if hi > lo:
                rng = st.slider(f"keep items with {by} in", lo, hi, (lo, hi), key="pt-range")
                keep = df[(df[col] >= rng[0]) & (df[col] <= rng[1])]["id"].tolist()
            else:
                keep = df["id"].tolist()
        else:
            keep = df["id"].tolist()
        qmap = dict(zip(df["id"], df["question"]))
        pool = P.filter_items(df[df["id"].isin(keep)], split)
        if s_sel == "pick":
            src_ref = cs.selectbox("source item", pool["id"].tolist() or df["id"].tolist(), key="pt-src-item",
                                   format_func=lambda i: f"{i} — {qmap.get(i, '')[:60]}")
        else:
            src_ref = s_sel
        if t_sel == "pick":
            tgt_ref = ct.selectbox("target item", pool["id"].tolist() or df["id"].tolist(), key="pt-tgt-item",
                                   format_func=lambda i: f"{i} — {qmap.get(i, '')[:60]}")
        else:
            tgt_ref = t_sel
        items = keep if len(keep) < len(df) else None  # the score-range filter: the pool items are drawn from
    else:
        runs = PV.runs_with_adapters(ws)
        if not runs:
            st.info("No fine-tuning run with a finished adapter in this workspace yet (runs/<id>/adapter/). "
                    "Train one on the Fine-tuning page or with `metacog finetune`, then come back; item → item works meanwhile.")
        c = st.columns([2, 2, 1, 1])
        run = c[0].selectbox("adapter (run)", runs, key="pt-run", disabled=not runs)
        direction = c[1].radio("direction", ["adapter → base", "base → adapter"], key="pt-dir", horizontal=True)
        split = c[2].selectbox("items from split", ["eval", "calibration", "train", "all"], key="pt-msplit")
        n_pairs = int(c[3].number_input("items", 1, 500, 5, key="pt-mn"))
        tgt_correct = st.selectbox("items' correctness (base model)", ["any", "yes", "no"], key="pt-m-c")
        if run:
            src_ref, tgt_ref = (run, "base") if direction == "adapter → base" else ("base", run)

    L = int((ws.read_json("model.json") or {}).get("n_layers") or (ws.read_json("activations/manifest.json") or {}).get("n_decoder_layers", 30))
    c = st.columns([3, 1, 2])
    lrange = c[0].slider("layers (hidden-state index: 0 = embeddings, h = output of block h−1)", 0, L, (1, L), key="pt-layers")
    step = c[1].selectbox("every", [1, 2, 3, 5], key="pt-step")
    comps = c[2].multiselect("components", list(P.COMPONENTS), default=["resid"], key="pt-comps",
                             help="resid: the residual stream; attn / mlp: the sub-layer output of block h−1 added into state h")
    layers = tuple(range(lrange[0], lrange[1] + 1, step))
    c = st.columns([3, 1, 1, 1])
    named = c[0].multiselect("named positions", list(P.NAMED), default=["confidence"], key="pt-named")
    k_rand = int(c[1].number_input("random positions K", 0, 32, 3, key="pt-k"))
    seed = int(c[2].number_input("seed", 0, 10**6, 0, key="pt-seed"))
    min_den = float(c[3].number_input("min |source − target|", 0.0, 100.0, P.DEFAULT_MIN_DENOMINATOR, 0.5, key="pt-minden",
                                      help="points on the 0–100 scale; pairs below it get no normalised shift and are reported"))

    rfrom = {"item": "the item's question and answer tokens (the control)", "template": "template tokens only (chat markup, system "
             "prompt, instruction, Confidence: suffix)", "all": "all tokens (item and template)"}
    random_from = st.selectbox("random positions from", list(rfrom), key="pt-rfrom", format_func=rfrom.get, disabled=not k_rand,
                               help="the default draws only tokens that carry the item; template tokens are a separate, labelled "
                                    "option (each drawn position's class is recorded in the results)")
    positions = list(named) + ([f"random:{k_rand}"] if k_rand else [])
    plan = None
    if src_ref and tgt_ref:
        lm = P.private_model(ui.get_lm(model_s))

        plan_args: dict = {}

        def _plan(extra=()):
            spec = P.PatchSpec(layers=layers, positions=tuple(positions + list(extra)) or ("confidence",),
                               components=tuple(comps or ["resid"]), seed=seed, min_denominator=min_den, random_from=random_from)
            plan_args.clear()
            plan_args.update(source=src_ref, target=tgt_ref, spec=dataclasses.asdict(spec), n_pairs=n_pairs,
                             by=by if by in scores else "auto", split=split, source_correct=src_correct,
                             target_correct=tgt_correct, pool=list(items) if items is not None else None)
            return P.plan_grid(ws, lm, src_ref, tgt_ref, spec, n_pairs=n_pairs, by=by if by in scores else "auto", split=split,
                                source_correct=src_correct, target_correct=tgt_correct, pool=items)

        try:
            plan = _plan()
        except P.PatchError as e:
            st.error(str(e))
        except Exception as e:
            st.error(f"{type(e).__name__}: {e}")
        if plan is not None:
            first = plan.pairs[0]
            tok = first.target.lm.tokenizer
            toks = tok.convert_ids_to_tokens(first.target.ids)
            specials = P.special_ids(tok)
            slot = first.target.positions["confidence"]
            t_min = min(pr.target.T for pr in plan.pairs)
            st.markdown(f"**Click tokens of the target prompt to patch there too** (pair 0: `{first.source.label}` → "
                        f"`{first.target.label}`; a token index means the same index in every pair's target).")
            if any(i >= len(toks) for i in st.session_state.get("pt-tokens") or []):
                st.session_state["pt-tokens"] = [i for i in st.session_state["pt-tokens"] if i < len(toks)]
            picked = st.pills("tokens", list(range(len(toks))), selection_mode="multi", key="pt-tokens", label_visibility="collapsed",
                              format_func=lambda i: PV.token_label(toks[i]) + (" ★" if i == slot else "") + (" ·sp" if first.target.ids[i] in specials else ""))
            picked = sorted(i for i in (picked or []) if i < t_min)
            if picked:
                try:
                    plan = _plan([f"token:{i}" for i in picked])
                except P.PatchError as e:
                    st.error(str(e))
                    plan = None
            if plan is not None:
                rp = [pl for pl in P.resolve_positions(first, plan.spec) if pl.kind == "random"]
                st.caption(f"★ = the confidence slot (token {slot}); ·sp = special token. Random positions of pair 0 with this seed: "
                           + (", ".join(f"{pl.target} ({PV.token_label(toks[pl.target])}, {pl.target_class})" for pl in rp) or "none")
                           + f". {len(plan.pairs)} pair(s) × {len(plan.spec.components)} component(s) × {len(layers)} layers × "
                           f"{len(named) + k_rand + len(picked)} positions.")

    busy = P.running_grid_job() is not None or ui.running_job() is not None
    if ui.running_job() is not None:
        st.info("A study is running in this app; start the sweep when it has finished (they share the CPU).")
    if st.button("Run sweep", type="primary", key="pt-run-btn", disabled=busy or plan is None,
                 help="runs in the background with progress and Stop; a sweep already saved is shown, not recomputed"):
        try:
            ui.start_patching(ws, plan, plan_args)  # its own process by default: it outlives the tab
            st.session_state["pt-sweep"] = P.grid_id_for(plan)
            st.rerun()
        except Exception as e:
            st.error(f"Could not start the sweep: {e}")
    job = PV.sweep_job_panel(ws)


# ====================================================================== results
with ui.guard("the patching results"):
    st.subheader("Results")
    ui.noise_floor_caption(ws)
    sweeps = P.list_grids(ws)
    if not sweeps:
        st.info("No sweep in this workspace yet: set one up above, or run `metacog patch --workspace ...`.")
        st.stop()
    ids = [s["grid_id"] for s in sweeps]
    want = st.session_state.get("pt-sweep")
    if want in ids and st.session_state.get("pt-show") != want and (job is None or not job.running):
        st.session_state["pt-show"] = want
    desc = {s["grid_id"]: f"{s['grid_id']} · {s.get('kind', '?')} {s.get('source')} → {s.get('target')} · "
                            f"{s.get('n_pairs', '?')} pairs · {'complete' if s.get('complete') else 'incomplete'}"
                            + (" · stale" if s.get("stale") else "") for s in sweeps}
    sid = st.selectbox("sweep", ids, key="pt-show", format_func=desc.get)
    meta = next(s for s in sweeps if s["grid_id"] == sid)
    if meta.get("stale"):
        st.warning(f"Sweep {sid} was made on earlier answers of this study (it was rerun since): its pairs and numbers "
                   "are not today's. Run it again above to refresh it.")
    res = PV.sweep_results(ws, sid)
    if res.empty:
        st.info("This sweep has no finished rows yet.")
        st.stop()
    pairs = PV.sweep_pairs(ws, sid)
    ov = PV.overview(res)
    n_pairs_done = ov["n_pairs"]
    c = st.columns([2, 2, 3])
    comp = c[0].selectbox("component", list(dict.fromkeys(res["component"])), key="pt-comp")
    value = c[1].radio("value", ["normalised", "shift"], horizontal=True, key="pt-value",
                       format_func={"normalised": "normalised shift", "shift": "raw shift (points)"}.get)
    seed = int((meta.get("spec") or {}).get("seed", 0))
    st_tab = PV.layer_stats(ws, sid, value, seed)
    grads = PV.gradients(ws, sid, value, comp, seed)
    contrasts = PV.contrasts(ws, sid, value, comp, seed)
    n_small = ov["n_small"]
    m = st.columns(5)

    def _rho(g):
        r = grads.get(g, {}).get("rho")
        return "n/a" if r is None else f"{r:.2f}"

    m[0].metric("ρ confidence slot", _rho("confidence"),
                help="mean over pairs of each pair's Spearman ρ(layer, shift); its CI and p are in the table below")
    m[1].metric("ρ random positions", _rho("random"), help="the same statistic at the random positions (each pair: mean of its draws)")
    m[2].metric("pairs", n_pairs_done)
    m[3].metric("below the denominator threshold", n_small,
                help=f"|E[source] − E[target]| < {meta.get('spec', {}).get('min_denominator', P.DEFAULT_MIN_DENOMINATOR)} points: "
                     "no normalised shift (raw shift still shown)")
    m[4].metric("greedy answer unchanged", f"{ov['answer_unchanged']:.0%}")
    if value == "normalised" and n_small == n_pairs_done:
        st.warning("Every pair's source and target readouts are closer than the threshold: there is no normalised shift. "
                   "Look at the raw shift, or choose pairs further apart (e.g. high → low).")

    if ov["n_random_draws"]:
        cls = ov["random_classes"]
        st.caption(f"Random positions drawn from: **{(meta.get('spec') or {}).get('random_from', 'all (before random_from)')}** "
                   f"tokens — {ov['n_random_draws']} draws" + (": " + ", ".join(f"{k} {v}" for k, v in cls.items()) if cls else "") + ".")
    st.markdown("**Across-pairs tests** (unit: pair)")
    ui.show_table(PV.tests_table(grads, contrasts).round(4), key="pt-tests", filename=f"{ws.root.name}-{sid}-tests-{comp}-{value}",
                  caption="ρ: Spearman ρ(layer, shift) within each pair, averaged over pairs; p: two-sided sign-flip permutation "
                          "test across pairs (exact up to 12 pairs); CI: 95% percentile bootstrap over pairs. Contrasts: the "
                          "difference within each pair, then the same test. Per-layer p values (table below) are Holm-corrected "
                          f"over layers (`p_holm`). ρ of the layer means is descriptive only. Correction: {PV.CORRECTION}.")
    g0 = next(iter(grads.values()), {})
    if g0.get("n_pairs") and (g0.get("min_p") or 0) > 0.05:
        st.warning(f"With {g0['n_pairs']} pair(s) the smallest p a sign-flip test can give is {g0['min_p']:.3g}: no "
                   "across-pairs test can reach 0.05. Run 6 or more pairs (20 for a useful power).")

    # the title names the model; for model → model also the direction (which adapter into which model)
    fig_model = model if meta.get("kind") != "model" else f"{model}, {res['direction'].iloc[0]}"
    fig_split = str(meta.get("split") or "all")
    fig = PP.gradient_lines(st_tab, grads, component=comp, model=fig_model, n_pairs=n_pairs_done, value=value, split=fig_split)
    ui.show_figure(fig, "pt-gradient", f"{ws.root.name}-{sid}-gradient-{comp}-{value}")
    st.caption("Mean over pairs per layer (random positions: each pair's mean over its K draws); bands: 95% bootstrap CI over pairs. "
               "Legend: mean per-pair ρ [95% bootstrap CI over pairs], sign-flip p across pairs, number of pairs.")
    fig = PP.shift_heatmap(st_tab, component=comp, model=fig_model, n_pairs=n_pairs_done, value=value, split=fig_split,
                           what="Shift by layer and position")
    ui.show_figure(fig, "pt-heatmap", f"{ws.root.name}-{sid}-heatmap-{comp}-{value}")
    with st.expander("per-layer statistics (mean, median, share > 0, CI, sign test, sign-flip permutation test, Holm-corrected p)"):
        ui.show_table(st_tab[st_tab["component"] == comp].round(4), key="pt-stats", filename=f"{ws.root.name}-{sid}-stats-{value}")

    # ------------------------------------------------------------------ one cell
    st.subheader("One cell: the 0–100 distribution before and after")
    c = st.columns([3, 2, 2])
    plabel = {int(r.pair): f"{int(r.pair)}: {r.source} → {r.target}" for r in res.drop_duplicates("pair").itertuples()}
    pr = c[0].selectbox("pair", sorted(plabel), key="pt-cell-pair", format_func=plabel.get)
    sub = res[(res["pair"] == pr) & (res["component"] == comp)]
    pos = c[1].selectbox("position", list(dict.fromkeys(sub["position"])), key="pt-cell-pos")
    lay_opts = sorted(sub[sub["position"] == pos]["layer"].unique())
    lay = c[2].select_slider("layer", lay_opts, value=lay_opts[len(lay_opts) // 2], key="pt-cell-layer")
    row = sub[(sub["position"] == pos) & (sub["layer"] == lay)].iloc[0]
    prow = pairs[pairs["pair"] == pr].iloc[0] if len(pairs) and (pairs["pair"] == pr).any() else None
    tgt_p = np.asarray(prow["probs_target"], dtype=float) if prow is not None else None
    src_p = np.asarray(prow["probs_source"], dtype=float) if prow is not None else None
    title = (f"Pair {pr}: {row['source']} → {row['target']}, {comp} layer {lay} at {pos} "
             f"(target token {row['target_pos']} '{PV.token_label(str(row['target_token']))}', source token {row['source_pos']})")
    if tgt_p is not None:
        other = {"target (before)": float(prow["other_target"]), "patched (after)": float(row["other_patched"]),
                 "source": float(prow["other_source"])}
        fig = PP.cell_distribution(tgt_p, np.asarray(row["probs"], dtype=float), src_p, title=title, other=other)
        ui.show_figure(fig, "pt-cell", f"{ws.root.name}-{sid}-cell-{pr}-{comp}-{lay}-{pos}")
    kept = "unchanged" if row["answer_unchanged"] else "changed at {} token(s)".format(int(row["answer_flips"]))
    st.caption(f"E[v]: target {row['ev_target']:.2f} → patched {row['ev_patched']:.2f} (source {row['ev_source']:.2f}); "
               f"shift {row['shift']:+.3f}, normalised {row['normalised']:.3f}; greedy answer {kept}.")

    # ------------------------------------------------------------------ per item
    st.subheader("Per pair")
    tbl = PV.pair_table(res, comp, value)
    link_cfg = {}
    for side in ("source", "target"):
        if tbl[f"{side}_id"].astype(str).str.len().gt(0).all():
            tbl.insert(1 if side == "source" else 2, f"open {side}", [ui.item_url(i, ws) for i in tbl[f"{side}_id"]])
            link_cfg[f"open {side}"] = st.column_config.LinkColumn(f"open {side}", display_text=f"{side} ↗",
                                                                   help="open in the item explorer", width="small")
    ui.show_table(tbl.round(4), key="pt-pairs", filename=f"{ws.root.name}-{sid}-pairs", column_config=link_cfg,
                  caption=f"mean over layers of the {value} shift per position group; links open the item explorer")
    with st.expander("per-pair lines"):
        grp = st.selectbox("position group", PV.groups_of(res[res["component"] == comp]), key="pt-pp-group")
        ui.show_figure(PP.pair_shifts(res, component=comp, group=grp, model=fig_model, value=value, split=fig_split), "pt-pairlines",
                       f"{ws.root.name}-{sid}-pairs-{comp}-{grp}")
    c = st.columns([1, 1, 3])
    d = P.grid_dir(ws, sid)
    if (d / "results.csv").exists():
        c[0].download_button("Full table (CSV)", data=lambda: (d / "results.csv").read_bytes(), file_name=f"{ws.root.name}-{sid}-results.csv",
                             mime="text/csv", key="pt-dl-csv", on_click="ignore", icon=":material/download:")
    if (d / "patching.json").exists():
        c[1].download_button("patching.json", data=lambda: (d / "patching.json").read_bytes(), file_name=f"{ws.root.name}-{sid}-patching.json",
                             mime="application/json", key="pt-dl-json", on_click="ignore", icon=":material/download:")
    c[2].caption(f"Saved in `{d}` (results.parquet holds the 101 probabilities of every cell).")
    with st.expander("sweep settings"):
        st.code(json.dumps({k: v for k, v in meta.items() if not k.startswith("_") and k not in ("layers", "gradients", "contrasts")}, indent=1,
                           default=str)[:6000], language="json")
