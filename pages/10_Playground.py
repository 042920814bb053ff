"""Playground: type a question (or pick an item) and see, in seconds, the model's answer and
grade, its verbal confidence (inline and two-pass), the exact 0–100 distribution, every stored
probe's p(correct) by layer and the logit lens of the readout — for the base model and, side by
side, any fine-tuned adapter of the workspace. Backend: :mod:`metacog.stages.playground`."""
import numpy as np
import pandas as pd
import streamlit as st

from metacog.viz import plots

from metacog.app import ui
from metacog.stages.playground import ProbeWeights, adapters, play

ws = ui.current_workspace()
ui.header("Playground", ws, "Ask the model anything and read every confidence signal at once: what it **says** "
          "(inline and two-pass), the **exact probability of every value 0–100** at the confidence slot, what each "
          "**probe** reads from its hidden states, and where in depth the confidence appears (**logit lens**). "
          "Add a fine-tuned adapter to compare before and after on the same question.")

model_s, study_s = (ws.settings() if ws.exists else ui.default_settings())
items = None
if ws.exists and ws.path("items.parquet").exists():
    with ui.guard("the workspace's items"):
        items = ui.results(ws) if ws.path("answers.parquet").exists() else None

src = st.radio("question", ["type one", "an item of this workspace"], horizontal=True, key="pg-src",
               disabled=items is None, help="items come from the workspace's dataset (their gold answers grade the reply)")
choices = None
if src == "an item of this workspace" and items is not None:
    ids = items["id"].tolist()
    qmap = dict(zip(items["id"], items["question"]))
    item_id = st.selectbox("item", ids, key="pg-item", format_func=lambda i: f"{i} — {qmap.get(i, '')[:90]}")
    r = items[items["id"] == item_id].iloc[0]
    question = str(r["question"])
    gold = [str(x) for x in r["answers"]] if r.get("answers") is not None else []
    ch = r.get("choices")
    choices = [str(x) for x in ch] if ch is not None and len(ch) else None
    st.markdown(f"**{question}**  \n" + (f"options: {' · '.join(choices)}  \n" if choices else "")
                + f"gold: {', '.join(gold) or '—'} · split **{r['split']}**")
else:
    question = st.text_input("your question", "What is the capital of Australia?", key="pg-q")
    g = st.text_input("accepted answers, comma-separated (optional: grades the reply)", "Canberra", key="pg-gold")
    gold = [x.strip() for x in g.split(",") if x.strip()]

runs = adapters(ws) if ws.exists else {}
picked = st.multiselect("also with these fine-tuned adapters (side by side)", list(runs), key="pg-adapters",
                        help="finished fine-tuning runs of this workspace (Fine-tune page)")
lens_on = st.checkbox("logit lens (one more forward per model)", value=True, key="pg-lens")
probes = ProbeWeights.load(ws) if ws.exists else None
if ws.exists and probes is None:
    st.caption("No stored probe weights in this workspace (run the study's probes stage): probe p by layer is left out.")

key = ("pg", ws.root.name, question, tuple(gold), tuple(choices or ()), tuple(picked), lens_on)
if st.button("Ask", type="primary", key="pg-ask"):
    with ui.guard("the answer"):
        base = ui.get_lm(model_s)
        models = {"base": base}
        if picked:
            from metacog.patching import load_adapter_model

            for lab in picked:
                models[lab] = load_adapter_model(base, runs[lab], lab.split(" ")[0])
        out = {}
        with st.spinner("answering and reading every confidence…"):
            for lab, lm in models.items():
                out[lab] = play(lm, question, gold=gold or None, choices=choices, study=study_s, probes=probes, lens=lens_on)
        st.session_state["pg-result"] = (key, out)

res = st.session_state.get("pg-result")
if res is None or res[0] != key:
    st.info("Press **Ask**. The first question loads the model (once per app process); later ones take a few seconds.")
    st.stop()
out = res[1]
model = ui.model_name(ws) if ws.exists else model_s.model


def _v(x):
    return "unparsed" if x is None else f"{x:g}"


cols = st.columns(len(out))
for c, (lab, p) in zip(cols, out.items()):
    grade = "" if p.correct is None else (" — :green[**correct**]" if p.correct else " — :red[**incorrect**]")
    c.markdown(f"#### {lab}\n**answer:** {p.answer or '—'}{grade}  \n"
               f"verbal inline **{_v(p.verbal_inline)}** · two-pass **{_v(p.verbal_two_pass)}**  \n"
               f"E[v] inline **{p.ev_inline:.1f}** · two-pass **{p.ev_two_pass:.1f}** · "
               f"mass off 0–100 {p.other_inline:.3f} · {p.seconds:.1f} s")
    with c.expander("raw replies"):
        st.code(p.reply, language=None, wrap_lines=True)

st.subheader("Exact 0–100 distribution at the inline confidence slot")
dists = {lab: np.append(p.probs_inline, p.other_inline) for lab, p in out.items()}
markers = {lab: {"verbal": p.verbal_inline if p.verbal_inline is not None else float("nan"), "E[v]": p.ev_inline,
                 "argmax": float(np.argmax(p.probs_inline))} for lab, p in out.items()}
ui.show_figure(plots.distribution_bars(dists, item="(playground)", split="", model=model, markers=markers), "pg-dist",
               "playground-distribution")
st.caption("n = 1 question. P(v) for every integer v as the next tokens after `Confidence:`; rows are the models.")

if probes is not None:
    st.subheader("Stored probes' p(correct) by layer")
    if all(p.probes.empty for p in out.values()):
        st.info("The probes stage ran, but no probe could be fitted (it needs both correct and incorrect training "
                "items); run a larger study to see what the hidden states know.")
    for lab, p in out.items():
        if p.probes.empty:
            continue
        wide = p.probes.pivot(index="layer", columns="position", values="p")
        pos = [x for x in probes.positions if x in wide.columns]
        fig = plots.probe_p_by_layer(wide[pos].to_numpy(), pos, item=f"(playground, {lab})", split="", model=model,
                                     correct=p.correct)
        ui.show_figure(fig, f"pg-probe-{lab}", f"playground-probe-{lab.split(' ')[0]}")
    st.caption("The workspace's probes were fitted on the **base** model's hidden states (train split); on an adapter "
               "they read what the base probe would say about the adapted model's states.")

if lens_on:
    st.subheader("Logit lens at the confidence slot")
    fig = plots.lens_by_layer({lab: p.lens for lab, p in out.items()}, item="(playground)", model=model)
    ui.show_figure(fig, "pg-lens", "playground-lens")
    st.caption(
        "At each layer h the residual stream at the confidence slot and at every node of the 0–100 value trie is put "
        "through the final norm and the LM head, and the exact readout rule is applied: E[v] and argmax say which value "
        "that depth already points to. What it does **not** show: what a model cut at layer h would write (later layers "
        "still run for the trie's tokens), and early layers are far from the unembedding basis (a tuned lens corrects "
        "this bias). At the last layer the lens equals the readout above. This is the reference study's routing-vs-text "
        "question: a softmax that carries the signal while the argmax text stays at the ceiling.")
    lt = pd.concat([p.lens.drop(columns=["probs"]).assign(model=lab) for lab, p in out.items()])
    ui.show_table(lt.round({"ev": 2, "p_argmax": 4}), key="pg-lens-table", filename="playground-lens",
                  column_config={"mass": st.column_config.NumberColumn(format="%.3e"),
                                 "unresolved": st.column_config.NumberColumn(format="%.3e")})
