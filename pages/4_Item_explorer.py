"""Item explorer: one item's question, answer, grade, verbal confidence, exact 0-100 distribution
and probe p(correct) per layer. Link here with ``?item=<id>`` (see ``metacog.app.ui.item_url``)."""
import numpy as np
import pandas as pd
import streamlit as st

from metacog.viz import plots

from metacog.app import ui

ws = ui.current_workspace()
ui.header("Item explorer", ws)

if not ui.require(ws, "answers"):
    st.stop()

with ui.guard("the item"):
    df = ui.results(ws)
    model = ui.model_name(ws)
    best = ws.read_json("probes/best.json")

    # ------------------------------------------------------------------ pick an item
    wanted = st.query_params.get("item")
    c = st.columns([1, 1, 2, 2])
    fsplit = c[0].selectbox("split", ui.SPLITS, index=3, key="ie-split")
    fgrade = c[1].selectbox("grade", ["all", "correct", "incorrect"], key="ie-grade")
    cats = sorted(x for x in df["category"].astype(str).unique() if x)
    fcat = c[2].multiselect("category", cats, key="ie-cat")
    text = c[3].text_input("search question / answer / id", key="ie-q")
    d = ui.split_frame(df, fsplit)
    if fgrade != "all":
        d = d[d["correct"] == (fgrade == "correct")]
    if fcat:
        d = d[d["category"].astype(str).isin(fcat)]
    if text:
        t = text.lower()
        d = d[d["question"].str.lower().str.contains(t, regex=False) | d["id"].str.lower().str.contains(t, regex=False)
              | d["answer"].fillna("").str.lower().str.contains(t, regex=False)]
    ids = d["id"].tolist()
    filtering = bool(text or fcat or fgrade != "all")
    if wanted and wanted not in ids and wanted in set(df["id"]) and not filtering:
        ids = [wanted] + ids  # a linked item shows in its split view; a search or filter replaces it
    if wanted and wanted not in set(df["id"]):
        st.warning(f"No item with id `{wanted}` in this workspace.")
    if not ids:
        st.info("No item matches these filters.")
        st.stop()
    qmap = dict(zip(df["id"], df["question"]))
    # a new ?item= (e.g. a link followed in this tab) wins over the previous choice
    if wanted in ids and st.session_state.get("_ie_wanted") != wanted:
        st.session_state["ie-item"] = wanted
        st.session_state["_ie_wanted"] = wanted
    if st.session_state.get("ie-item") not in ids:
        st.session_state["ie-item"] = ids[0]

    def _step(k: int) -> None:
        cur = ids.index(st.session_state["ie-item"]) if st.session_state.get("ie-item") in ids else 0
        st.session_state["ie-item"] = ids[(cur + k) % len(ids)]

    nav = st.columns([7, 1.2, 1.2])
    item_id = nav[0].selectbox(f"item ({len(ids)} match{'es' if len(ids) != 1 else ''})", ids, key="ie-item",
                               format_func=lambda i: f"{i} — {qmap.get(i, '')[:90]}")
    nav[1].button("◀ prev", key="ie-prev", on_click=_step, args=(-1,), use_container_width=True, disabled=len(ids) < 2)
    nav[2].button("next ▶", key="ie-next", on_click=_step, args=(1,), use_container_width=True, disabled=len(ids) < 2)
    if st.query_params.get("item") != item_id:
        st.query_params["item"] = item_id
        st.session_state["_ie_wanted"] = item_id
    r = df[df["id"] == item_id].iloc[0]
    row = int(r["row"])

    # ------------------------------------------------------------------ the item
    st.markdown(f"### {r['question']}")
    a = r.get("answers")
    choices = r.get("choices")
    meta = [f"id `{item_id}`", f"split **{r['split']}**", f"category {r.get('category') or '—'}",
            f"difficulty {r.get('difficulty') or '—'}"]
    st.caption(" · ".join(meta))
    if choices is not None and len(choices):
        st.markdown("Options: " + " · ".join(f"**{'ABCDE'[i]}.** {o}" for i, o in enumerate(choices)))
    c = st.columns([2, 2, 1])
    c[0].markdown("**Accepted answers**  \n" + (", ".join(map(str, a)) if a is not None and len(a) else "—"))
    c[1].markdown(f"**Model's answer (parsed)**  \n{r['answer'] if isinstance(r['answer'], str) and r['answer'] else '—'}")
    c[2].markdown("**Grade**  \n" + (":green[**correct**]" if bool(r["correct"]) else ":red[**incorrect**]"))

    def _v(x):
        return "unparsed" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:g}"

    c = st.columns(2)
    with c[0]:
        st.markdown(f"**Inline reply** (answer, then confidence) → verbal confidence **{_v(r['verbal_inline'])}**")
        st.code(str(r["answer_text"]), language=None, wrap_lines=True)
    with c[1]:
        if "verbal_two_pass" in r:
            st.markdown(f"**Two-pass reply** (asked afterwards) → verbal confidence **{_v(r['verbal_two_pass'])}**")
            st.code(str(r["text_two_pass"]), language=None, wrap_lines=True)
        else:
            st.markdown(f"**Two-pass reply**: {ui.two_pass_note(df)}")

    # ------------------------------------------------------------------ 0-100 distribution
    st.subheader("Exact 0–100 distribution")
    dists = ui.item_distributions(ws, row)
    if dists is None:
        st.info("Not cached for this item yet: the activations stage reads it. Run the study to add it.")
    else:
        markers = {}
        for mode, k in ui.MODE_KEYS.items():
            if mode not in dists:
                continue
            markers[mode] = {"verbal": float(r[f"verbal_{k}"]), "E[v]": float(r.get(f"ev_{k}", np.nan)),
                             "argmax": float(r.get(f"argmax_{k}", np.nan))}
        fig = plots.distribution_bars(dists, item=item_id, split=str(r["split"]), model=model, markers=markers)
        ui.show_figure(fig, "item-dist", f"{ws.root.name}-{item_id}-distribution")
        st.caption("P(v) for every integer v = 0…100 as the next tokens after the confidence slot; 'other' = mass on anything else. "
                   "Dashed lines: what the model wrote (verbal), the expected value E[v] and the argmax.")

    # ------------------------------------------------------------------ probe p per layer
    st.subheader("Probe p(correct) by layer")
    oof = ui.oof(ws)
    if oof is None:
        st.info("No probes yet: run the study (probes stage) to see what each layer's probe predicts for this item.")
    else:
        p = np.asarray(oof[row], dtype=float)
        positions = ui.probe_positions(ws, oof)
        fig = plots.probe_p_by_layer(p, positions, item=item_id, split=str(r["split"]), model=model, best=best,
                                     correct=bool(r["correct"]))
        ui.show_figure(fig, "item-probe", f"{ws.root.name}-{item_id}-probe-p")
        how = "cross-fitted (out of fold)" if r["split"] == "train" else "from probes fitted on the train split"
        st.caption(f"This item is in the {r['split']} split, so its p is {how}.")
        ui.show_table(
            pd.DataFrame(p, columns=positions).rename_axis("layer").reset_index().round(4),
            key="item-probe-table", filename=f"{ws.root.name}-{item_id}-probe-p")

    # ------------------------------------------------------------------ logit lens (base vs adapters)
    st.subheader("Logit lens at the confidence slot")
    from metacog.stages.playground import adapters, item_prefix, lens_readout

    runs = adapters(ws)
    pick = st.multiselect("models", ["base"] + list(runs), default=["base"], key="ie-lens-models",
                          help="the base model and any finished fine-tuned adapter of this workspace, on this item's answer")
    if st.button("Read the lens", key="ie-lens-go", disabled=not pick,
                 help="one forward per model (loads the model once per app process)"):
        m_, s_ = ws.settings()
        base = ui.get_lm(m_)
        out = {}
        with st.spinner("reading every layer…"):
            for lab in pick:
                lm = base
                if lab != "base":
                    from metacog.patching import load_adapter_model

                    lm = load_adapter_model(base, runs[lab], lab.split(" ")[0])
                ch = r.get("choices")
                pre = item_prefix(lm, str(r["question"]), str(r["answer"] or ""),
                                  list(ch) if ch is not None and len(ch) else None, s_.prompt_style)
                out[lab] = lens_readout(lm, pre)
        st.session_state["ie-lens"] = (item_id, tuple(pick), out)
    got = st.session_state.get("ie-lens")
    if got and got[0] == item_id and got[1] == tuple(pick):
        fig = plots.lens_by_layer(got[2], item=item_id, model=model, split=str(r["split"]))
        ui.show_figure(fig, "item-lens", f"{ws.root.name}-{item_id}-lens")
        st.caption("At each layer h, the residual stream at the confidence slot and at every node of the 0–100 value trie "
                   "goes through the final norm and the LM head, and the exact readout rule is applied. The adapter reads "
                   "the base model's answer text for this item, so the two differ only in the weights. It does not show "
                   "what a model cut at layer h would write, and early layers are biased (no tuned lens). At the last "
                   "layer it equals the readout above (the '.' look-ahead aside). See metacog/stages/playground.py.")
    else:
        st.caption("Press **Read the lens** to see at which depth the model's confidence value appears.")
