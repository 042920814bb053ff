"""Steering: add α·σ_d·d̂ to the residual stream (at the confidence slot, or from the answer on)
and read the exact 0-100 distribution. Directions from the train split (probe, mean-diff,
probe-minus-type) beside a random direction of matched norm; per-item shifts, tested across
items (sign-flip, Holm, bootstrap CIs) — the numbers of steering/<id>/steering.json."""
import numpy as np
import pandas as pd
import streamlit as st

from metacog import steering as S
from metacog.steering import plots as SP
from metacog.app import ui

ws = ui.current_workspace()
ui.header(
    "Steering", ws,
    "Does pushing the residual stream along the **probe direction** move the model's stated confidence, more than a "
    "**random direction of the same length**? α is in units of the train states' standard deviation along the "
    "direction; each item's shift is against its own unsteered readout, and every test is across items.",
)

if not ui.require(ws, "probes", "steering needs the probe weights and the train split's hidden states"):
    st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def _load(root: str, sid: str, stamp: float):
    from metacog.core.workspace import Workspace

    return S.load_results(Workspace(root), sid)


def _stamp(sid: str) -> float:
    p = ws.path("steering", sid, "steering.json")
    return p.stat().st_mtime if p.exists() else 0.0


k = ws.root.name
with ui.guard("steering"):
    model = ui.model_name(ws)
    man = ws.read_json("activations/manifest.json") or {}
    H = int(man.get("n_layers") or 1)
    jobs = ui.job_kind("steer", "a steering sweep")
    job = jobs.get(ws.root)
    with st.expander("Run a steering sweep", expanded=not S.list_sweeps(ws) or job is not None):
        c = st.columns(3)
        layers_txt = c[0].text_input("layers (hidden-state indices: 3,9,15 | A-B | every:K | all)",
                                     value=f"every:{max(1, (H - 1) // 6)}", key=f"st-layers-{k}")
        alphas_txt = c[1].text_input("α (multiples of σ_d; 0 is always run)", value="-4,-2,2,4,8", key=f"st-alphas-{k}")
        dirs = c[2].multiselect("directions (random is always run: the control)", list(S.DIRECTIONS),
                                default=["probe"], key=f"st-dirs-{k}")
        c = st.columns(4)
        where = c[0].radio("where", list(S.WHERE), key=f"st-where-{k}", horizontal=True,
                           help="slot: the confidence slot only; from-answer: every position from the first answer token on "
                                "(the answer is regenerated under steering too)")
        split = c[1].selectbox("items", ["eval", "calibration", "all"], key=f"st-split-{k}")
        lim = c[2].number_input("limit (0 = all)", 0, 100000, 0, key=f"st-lim-{k}")
        verbal = c[3].checkbox("greedy verbal confidence too", value=True, key=f"st-verbal-{k}")
        st.caption(f"Headless: `metacog steer --workspace {ws.root} --layers {layers_txt} --alphas {alphas_txt} "
                   f"--direction {','.join(dirs) or 'probe'} --where {where}`")
        running = jobs.running() is not None
        if st.button("Run", key=f"st-run-{k}", type="primary", disabled=running or not dirs,
                     help="runs in the background; Stop keeps the finished chunks and a re-run resumes"):
            try:
                spec = {"layers": list(S.parse_layers(layers_txt, H)),
                        "alphas": [float(a) for a in alphas_txt.split(",") if a.strip()], "directions": list(dirs),
                        "where": where, "split": split, "limit": int(lim) or None, "verbal": bool(verbal)}
                ui.start_steering(ws, spec)
            except Exception as e:
                st.error(f"Could not start the sweep: {type(e).__name__}: {e}")
            else:
                st.rerun()
        if job is not None and job.running:
            ui.job_progress(jobs, job, "steer", "stop after the current chunk; finished chunks are kept and a re-run resumes")
        elif job is not None:
            r = job.result or {}
            ui.job_outcome(job, f"Steering sweep {r.get('id', '')} finished in {int(job.elapsed)} s ({r.get('n_items', '?')} items).",
                           "The steering sweep", "Run again resumes from the finished chunks.")

    sweeps = [s for s in S.list_sweeps(ws) if s["complete"]]
    if not sweeps:
        st.info(f"No steering sweep yet. Run one above, or `metacog steer --workspace {ws.root} --layers every:5 "
                "--alphas -4,-2,2,4,8 --direction probe`.")
        st.stop()
    sid = st.selectbox("sweep", [s["id"] for s in sweeps], key=f"st-sweep-{k}",
                       format_func=lambda i: next(f"{i} · {s['spec']['directions']} · {s['spec']['where']} · layers "
                                                  f"{s['spec']['layers']} · α {s['spec']['alphas']}" for s in sweeps if s["id"] == i))
    res, summ = _load(str(ws.root), sid, _stamp(sid))
    if res is None or summ is None:
        st.stop()
    if next(s for s in sweeps if s["id"] == sid).get("stale"):
        st.warning(f"Sweep {sid} was made on an earlier hidden-state cache of this study (it was rerun since): its "
                   "numbers are not today's. Run it again above to refresh it.")

    st.subheader("Dose-response")
    subset = st.radio("items", ["all", "correct", "incorrect"], horizontal=True, key=f"st-subset-{k}")
    ui.show_figure(SP.dose_response(summ, model=model, subset=subset), key=f"st-dose-{k}", filename=f"{k}-steering-{sid}")
    st.caption(f"{summ['n_items']} items (unit: {summ['unit']}); error bars = 95% percentile bootstrap over items; "
               f"random = a seeded Gaussian direction applied with the probe direction's σ (matched norm). {summ['correction']}.")

    st.subheader("Tests across items")
    sl = pd.DataFrame(summ.get("slopes") or [])
    if len(sl):
        sl["ci_lo"], sl["ci_hi"] = sl["ci"].map(lambda x: x[0]), sl["ci"].map(lambda x: x[1])
        ui.show_table(sl[["direction", "layer", "slope", "slope_random", "slope_diff", "ci_lo", "ci_hi", "p", "p_holm", "n"]].round(4),
                      key=f"st-slopes-{k}", filename=f"{k}-steering-{sid}-slopes",
                      caption="per item: OLS slope of the E[v] shift on α (points per σ); direction − random per item, "
                              "sign-flip test across items, Holm over layers")
    ct = pd.DataFrame(summ.get("contrasts") or [])
    if len(ct):
        ct["ci_lo"], ct["ci_hi"] = ct["ci"].map(lambda x: x[0]), ct["ci"].map(lambda x: x[1])
        ui.show_table(ct[["direction", "layer", "alpha", "diff", "ci_lo", "ci_hi", "p", "p_holm", "share_pos", "n"]].round(4),
                      key=f"st-contrasts-{k}", filename=f"{k}-steering-{sid}-contrasts",
                      caption="per (layer, α): mean over items of shift(direction) − shift(random), Holm over the grid")

    st.subheader("Per-item shifts")
    steered = res[res["alpha"] != 0]
    c = st.columns(3)
    dsel = c[0].selectbox("direction", [d for d in summ["spec"]["directions"] if d != "random"] or ["random"], key=f"st-d-{k}")
    lsel = c[1].selectbox("layer", sorted(steered["layer"].unique().tolist()), key=f"st-l-{k}")
    asel = c[2].selectbox("α", sorted(steered["alpha"].unique().tolist()), key=f"st-a-{k}")
    if dsel != "random":
        ui.show_figure(SP.item_shifts(res, direction=dsel, layer=int(lsel), alpha=float(asel), model=model),
                       key=f"st-items-{k}", filename=f"{k}-steering-{sid}-items")
    cell = res[(res["layer"] == lsel) & (res["alpha"] == asel)]
    wide = cell.pivot_table(index=["row", "id", "correct"], columns="direction", values="d_ev", aggfunc="first").reset_index()
    base = cell.drop_duplicates("row").set_index("row")
    wide["E[v] at α=0"] = base.loc[wide["row"], "ev0"].to_numpy()
    if "answer_changed" in cell:
        ch = cell[cell["direction"] == dsel].set_index("row")
        wide["answer changed"] = ch.reindex(wide["row"])["answer_changed"].to_numpy()
    if dsel in wide and "random" in wide:
        wide[f"{dsel} − random"] = wide[dsel] - wide["random"]
        wide = wide.sort_values(f"{dsel} − random", key=np.abs, ascending=False)
    wide.columns = [str(x) for x in wide.columns]
    ui.show_table(ui.with_links(wide.round(3), ws), key=f"st-itemtbl-{k}", filename=f"{k}-steering-{sid}-items",
                  column_config=ui.LINK_COLUMN, caption="shift of E[v] (points) per item at this layer and α; open = Item explorer")
