"""Answers & confidence: accuracy, verbal-confidence saturation, verbal vs the exact 0-100
distribution (E[v], argmax), validity screen, per-item table."""
import pandas as pd
import streamlit as st

from metacog.viz import plots

from metacog.app import ui
from metacog.data.grading import GUARDS
from metacog.readout.verbal import RULES, UNPARSABLE

ws = ui.current_workspace()
ui.header("Answers & confidence", ws, "Does the number the model *says* track whether it is right? "
          "Compare it with what its own next-token distribution over 0–100 implies.")

if not ui.require(ws, "answers"):
    st.stop()

with ui.guard("answers and confidence"):
    df = ui.results(ws)
    summ = ui.summary(ws) or {}
    _, study = ws.settings()
    model = ui.model_name(ws)
    best = ws.read_json("probes/best.json")

    split = st.radio("split", ui.SPLITS, index=0, horizontal=True, key="ans-split",
                     help="metrics in summary.json and on the CLI are on the eval split")
    d = ui.split_frame(df, split)
    n = len(d)
    modes = ui.mode_keys(d)
    c = st.columns(2 + len(modes) + int("ev_inline" in d))  # no empty slot where two-pass was not computed
    c[0].metric(f"accuracy ({split})", f"{d['correct'].mean():.1%}" if n else "—", help=f"n={n}")
    c[1].metric("accuracy (all items)", f"{df['correct'].mean():.1%}", help=f"n={len(df)}")
    for i, (mode, k) in enumerate(modes.items()):
        v = d[f"verbal_{k}"]
        c[2 + i].metric(f"verbal {mode}: parsed", f"{v.notna().mean():.0%}" if n else "—",
                        help="share of replies with a readable 0–100 confidence")
    if "ev_inline" in d:
        c[-1].metric("mass off 0–100 (inline)", f"{d['other_inline'].mean():.2f}",
                    help="mean probability of continuations that are not an integer 0–100")

    if n == 0:
        st.warning(f"No items in the {split} split.")
        st.stop()

    # ------------------------------------------------------------------ saturation histogram
    st.subheader("Verbal confidence")
    if ui.two_pass_note(d):
        st.caption(ui.two_pass_note(d))
    fig = plots.confidence_histogram({m: d[f"verbal_{k}"].to_numpy(float) for m, k in ui.mode_keys(d).items()},
                                     d["correct"].to_numpy(bool), split=split, model=model)
    ui.show_figure(fig, "verbal-hist", f"{ws.root.name}-verbal-confidence-{split}")
    st.caption("Bins of 5 points (the last, 95–100, is the ceiling counted by L). Bars stacked by correctness: a useful "
               "confidence puts correct answers right and wrong ones left; a saturated one piles everything at 100.")

    # ------------------------------------------------------------------ verbal vs E[v] vs argmax
    st.subheader("Verbal vs the 0–100 distribution")
    tbl = ui.readout_metrics(d, n_bins=study.ece_bins, seed=study.seed, best=best)
    if "ev_inline" in d:
        grid = {m: {"verbal": d[f"verbal_{k}"].to_numpy(float), "E[v]": d[f"ev_{k}"].to_numpy(float),
                    "argmax": d[f"argmax_{k}"].to_numpy(float)} for m, k in ui.mode_keys(d).items()}
        fig = plots.readout_grid(grid, d["correct"].to_numpy(bool), split=split, model=model)
        ui.show_figure(fig, "readout-grid", f"{ws.root.name}-readouts-{split}")
    else:
        st.info("The E[v] and argmax readouts need the hidden-state cache stage (activations): run the study to add them.")
        ui.job_panel(ws, where="answers-readouts")
    refs = {}
    tp = ui.type_prior_auroc(df, split)
    if tp is not None:
        refs["question-type prior"] = tp
    bars = tbl.rename(columns={"readout": "name", "auroc_lo": "lo", "auroc_hi": "hi"})
    fig = plots.auroc_bars(bars, split=split, n=n, model=model, references=refs, what="AUROC by confidence readout")
    ui.show_figure(fig, "readout-auroc", f"{ws.root.name}-readout-auroc-{split}")

    st.subheader("Validity screen and calibration")
    st.caption("L = share ≥ 95, TRIN = share in the most common decile, r = correlation with correctness; "
               "verdict per the rule under Definitions. ECE/Brier/AURC on confidence/100, unparsed replies dropped (n_missing).")
    show = tbl[["readout", "n", "n_missing", "L", "TRIN", "r", "verdict", "reasons", "auroc", "auroc_lo", "auroc_hi", "ece", "brier", "aurc"]]
    ui.show_table(show.round(4), key="validity", filename=f"{ws.root.name}-validity-{split}",
                  caption=f"{split} split, n={n}, {model}")
    ui.definitions("readouts", "validity", "ece", "auroc", "type_prior")

    # ------------------------------------------------------------------ parse rules and grader guards
    st.subheader("How the replies were read")
    if "verbal_inline_rule" in d:
        rules = pd.DataFrame({mode: d[f"verbal_{k}_rule"].value_counts().reindex(list(RULES), fill_value=0)
                              for mode, k in ui.mode_keys(d).items()})
        rules.index.name = "parse rule"
        rules.insert(0, "reads", ["value" if r not in UNPARSABLE else "unparsable (NaN)" for r in rules.index])
        unp = {mode: int(d[f"verbal_{k}"].isna().sum()) for mode, k in ui.mode_keys(d).items()}
        c = st.columns(3)
        for i, (mode, u) in enumerate(unp.items()):
            c[i].metric(f"verbal {mode}: unparsable", f"{u}", help="replies with no readable 0–100 confidence "
                        "(dates, ranges, ordinals, out of range or no number); dropped from the metrics and counted as n_missing")
        short = d[d["kind"].ne("mc")] if "kind" in d else d
        guards = short["grade_guard"].replace("", "(none)").value_counts().reindex(["(none)", *GUARDS], fill_value=0) \
            if "grade_guard" in short else pd.Series(dtype=int)
        c[2].metric("short answers refused by a grader guard", f"{int(guards.drop('(none)', errors='ignore').sum())}",
                    help="an alias matched, but a guard (number, negation, hedge, longer name, symbol) refused it")
        left, right = st.columns(2)
        with left:
            ui.show_table(rules.reset_index(), key="parse-rules", filename=f"{ws.root.name}-parse-rules-{split}",
                          caption=f"replies per parse rule ({split} split, n={n}); rules in order under Definitions")
        with right:
            ui.show_table(guards.rename("short answers").rename_axis("grader guard").reset_index(), key="grade-guards",
                          filename=f"{ws.root.name}-grader-guards-{split}",
                          caption="short answers per guard that refused their alias match; '(none)': graded by the base rule")
    else:
        st.info("This workspace's answers predate the parse-rule and grader-guard columns; they are added the next time "
                "the answers stage runs (it re-reads the stored replies, no generation).")

    # ------------------------------------------------------------------ items
    st.subheader("Items")
    cols = [c for c in ["id", "split", "category", "difficulty", "question", "answer", "correct", "grade_guard", "verbal_inline",
                        "verbal_inline_rule", "verbal_two_pass", "verbal_two_pass_rule",
                        "ev_inline", "argmax_inline", "ev_two_pass", "argmax_two_pass", "other_inline", "probe_p"] if c in d]
    ui.show_table(ui.with_links(d[cols], ws), key="items", filename=f"{ws.root.name}-answers-{split}",
                  column_config=ui.LINK_COLUMN, height=360, caption=f"{n} items; 'explore' opens one in the item explorer")
