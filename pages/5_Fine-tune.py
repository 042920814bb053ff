"""Fine-tune: choose targets (the probe's out-of-fold p, or a control), LoRA settings, launch a run
in a background process, watch its loss, cancel, resume, evaluate."""
import time

import streamlit as st

from metacog.viz import plots

from metacog.app import ui
from metacog.finetune import runner
from metacog.finetune.plots import loss_curve
from metacog.finetune.backends.common import latest_checkpoint
from metacog.finetune.runs import ACTIVE, RunError, delete_run, get_run, list_runs, pid_alive
from metacog.finetune.settings import (AMP, BACKENDS, FORMATS, LOSS_ON, SCHEDULES, TASKS, FinetuneSettings, SettingsError,
                                       make_plan)
from metacog.finetune.targets import TargetError, build_targets
from metacog.core.settings import INLINE_POSITIONS
from metacog.core.workspace import WorkspaceError

KIND_HELP = {
    "probe": "probe — the chosen probe's out-of-fold p(correct) × 100",
    "shuffled": "shuffled — the probe targets permuted across items (control)",
    "binary": "binary — 100 if the answer was right, else 0, balanced (control)",
    "constant": "constant — one value for every item (control)",
}

ws = ui.current_workspace()
ui.header("Fine-tune", ws, "Teach the model to **say** what its probe knows: a small LoRA run whose target for each "
          "training item is the probe's out-of-fold p(correct) as text (`Confidence: 73%`). Controls with identical "
          "settings tell real learning from artefacts. Runs go in a background process; this page stays responsive.")

if not ui.require(ws, "probes", "fine-tuning targets come from the probes"):
    st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def _preview(root: str, settings_json: str, _stamp: tuple):
    import json

    s = FinetuneSettings.from_dict(json.loads(settings_json))
    df, info = build_targets(ui.Workspace(root), s)
    return df, info


def _num(x, f: str = ".3f") -> str:
    return "n/a" if x is None or x != x else format(x, f)


def _fmt_s(x) -> str:
    if x is None or x != x:
        return "—"
    x = int(x)
    return f"{x // 60} min {x % 60:02d} s" if x >= 60 else f"{x} s"


with ui.guard("fine-tuning"):
    k = ws.root.name
    best = ws.read_json("probes/best.json") or {}
    pm = ui.probe_metrics(ws)
    model = ui.model_name(ws)
    oof = ui.oof(ws)
    n_layers = int(oof.shape[1]) if oof is not None else 1

    # ------------------------------------------------------------------ targets
    st.subheader("Targets")
    c = st.columns([3, 2, 2, 2])
    kind = c[0].selectbox("targets", list(KIND_HELP), key=f"ft-kind-{k}", format_func=KIND_HELP.get)
    fmt = c[1].radio("format", FORMATS, key=f"ft-fmt-{k}", horizontal=True,
                     help="inline: the model's own answer, then 'Confidence: NN%' in the same turn; two-pass: a second "
                          "prompt shows question and answer, the reply is only 'Confidence: NN%'")
    probed = ui.probe_positions(ws, oof) if oof is not None else list(INLINE_POSITIONS)
    pos = c[2].selectbox("probe position", probed, key=f"ft-pos-{k}",
                         index=probed.index(best["position"]) if best.get("position") in probed else 0,
                         help="the positions this study probed (confidence_2p only with two-pass)")
    layer = c[3].number_input("probe layer", 0, n_layers - 1, int(best.get("layer", n_layers - 1)), key=f"ft-layer-{k}",
                              help="hidden-state index; default = the best probe by train-split CV")
    row = pm[(pm["layer"] == int(layer)) & (pm["position"] == pos)] if pm is not None else None
    if row is not None and len(row):
        r = row.iloc[0]
        is_best = best and int(best.get("layer", -1)) == int(layer) and best.get("position") == pos
        st.caption(f"probe L{int(layer)} @ {pos}{' (best by train-split CV)' if is_best else ''}: train CV AUROC "
                   f"{r['cv_auroc']:.3f} · eval AUROC {r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}]")
        if r["cv_auroc"] == r["cv_auroc"] and r["cv_auroc"] <= 0.65 and kind in ("probe", "shuffled"):
            st.warning(f"This probe's train CV AUROC is {r['cv_auroc']:.3f}; the reference study fine-tunes only when the "
                       "probe's AUROC exceeds 0.65 — there may be little to teach.")
    controls = st.multiselect("also launch controls with identical settings", [x for x in KIND_HELP if x != kind],
                              default=[], key=f"ft-controls-{k}",
                              help="queued behind the main run in the same workspace (runs never interleave)")

    c = st.columns([2, 2, 4])
    task = c[0].selectbox("task", TASKS, key=f"ft-task-{k}",
                          help="single: one question's confidence; pairwise: 'which of these two are you more likely to have "
                               "gotten right?' (the item with the higher target p wins, position balanced); multitask: both")
    pair_f = c[1].number_input("pairwise fraction", 0.05, 0.95, 0.5, step=0.05, key=f"ft-pf-{k}", disabled=task != "multitask",
                               help="multitask: share of the training examples that are pairwise (one example per item)")

    # ------------------------------------------------------------------ settings
    st.subheader("Training")
    d = FinetuneSettings()
    c = st.columns(6)
    epochs = c[0].number_input("epochs", 1, 100, d.epochs, key=f"ft-ep-{k}")
    max_upd = c[1].number_input("max updates (0 = no cap)", 0, 100000, 0, key=f"ft-mu-{k}",
                                help="a cap on optimizer updates; the run records how many actually ran")
    lr = c[2].number_input("learning rate", min_value=0.0, max_value=1.0, value=d.lr, format="%.1e", step=1e-5, key=f"ft-lr-{k}")
    seed = c[3].number_input("seed", 0, 2**31 - 1, d.seed, key=f"ft-seed-{k}")
    bs = c[4].number_input("batch size", 1, 256, d.batch_size, key=f"ft-bs-{k}")
    ga = c[5].number_input("grad accumulation", 1, 256, d.grad_accum, key=f"ft-ga-{k}")
    with st.expander("LoRA, schedule, validation, backend"):
        c = st.columns(4)
        rank = c[0].number_input("rank", 1, 1024, d.rank, key=f"ft-r-{k}")
        alpha = c[1].number_input("alpha", min_value=0.0, value=float(d.alpha), key=f"ft-a-{k}", help="scale = alpha / rank")
        dropout = c[2].number_input("dropout", 0.0, 0.99, d.dropout, key=f"ft-do-{k}")
        mods = c[3].text_input("target modules", ",".join(d.target_modules), key=f"ft-mods-{k}", help="comma-separated, all-linear, or auto (the architecture's default)")
        c = st.columns(4)
        sched = c[0].selectbox("schedule", SCHEDULES, key=f"ft-sch-{k}")
        warm = c[1].number_input("warm-up (fraction)", 0.0, 0.9, d.warmup_fraction, key=f"ft-wu-{k}")
        loss_on = c[2].selectbox("loss on", LOSS_ON, key=f"ft-lo-{k}", help="the whole assistant turn, or only the value + '%'")
        backend = c[3].selectbox("backend", BACKENDS, key=f"ft-be-{k}", help="peft (torch) or mlx-lm (Apple Silicon; slow on Linux CPU)")
        c = st.columns(4)
        valf = c[0].number_input("validation fraction", 0.0, 0.5, d.val_fraction, key=f"ft-vf-{k}",
                                 help="of the training-split items, held out for validation loss")
        patience = c[1].number_input("early-stop patience (0 = off)", 0, 100, 0, key=f"ft-es-{k}")
        limit_items = c[2].number_input("training items (0 = all)", 0, 1_000_000, 0, key=f"ft-li-{k}")
        threads = c[3].number_input("threads", 1, 256, int(ws.settings()[0].threads), key=f"ft-thr-{k}",
                                    help="torch CPU threads of the background process; use 1-2 when cores are shared")
        c = st.columns(4)
        dtype = c[0].selectbox("dtype", ["auto", "float32", "bfloat16"], key=f"ft-dt-{k}",
                               help="the base model's dtype (auto: the dtype the study ran in)")
        amp = c[0].selectbox("mixed precision", AMP, key=f"ft-amp-{k}",
                             help="bfloat16 autocast for training's matmuls; LoRA weights and AdamW stay float32 "
                                  "(auto: where the CPU/GPU has bf16 arithmetic)")
        const = c[1].number_input("constant value (-1 = train accuracy)", -1, 100, -1, key=f"ft-cv-{k}")
        eval_after = c[2].checkbox("evaluate when done", value=True, key=f"ft-ev-{k}")
        eval_limit = c[3].number_input("eval items (0 = all)", 0, 1_000_000, 0, key=f"ft-el-{k}")

    s, df, info, plan = None, None, None, None
    try:
        s = FinetuneSettings(
            targets=kind, task=task, pairwise_fraction=float(pair_f) if task == "multitask" else None,
            format=fmt, probe_layer=int(layer), probe_position=pos, epochs=int(epochs),
            max_updates=int(max_upd) or None, lr=float(lr), seed=int(seed), batch_size=int(bs), grad_accum=int(ga),
            rank=int(rank), alpha=float(alpha), dropout=float(dropout), target_modules=mods, schedule=sched,
            warmup_fraction=float(warm), loss_on=loss_on, backend=backend, val_fraction=float(valf),
            early_stop_patience=int(patience) or None, limit_items=int(limit_items) or None, dtype=dtype, amp=amp,
            constant_value=None if const < 0 else int(const),
        )
        import json

        from metacog.core.settings import to_dict

        df, info = _preview(str(ws.root), json.dumps(to_dict(s), sort_keys=True),
                            ui.stamp(ws, "answers.parquet", "probes/oof.npy", "probes/best.json", "items.parquet"))
        plan = make_plan(s, int((df["role"] == "train").sum()), int((df["role"] == "val").sum()))
        for ctl in controls:  # the controls must be buildable too
            s.replace(targets=ctl)
    except (SettingsError, TargetError, WorkspaceError, ValueError) as e:
        st.error(f"Cannot launch with these settings: {e}")
        s = None

    if s is not None and plan is not None:
        tr = df[df["role"] == "train"]
        c = st.columns(6)
        c[0].metric("training items", len(tr), help="training split only (eval items never reach the targets)")
        c[1].metric("validation items", plan.n_val)
        c[2].metric("updates / epoch", plan.updates_per_epoch, help=f"ceil(ceil({plan.n_train}/{plan.batch_size}) / {plan.grad_accum})")
        c[3].metric("updates planned", plan.updates_planned, help=f"{plan.epochs_planned} epochs")
        c[4].metric("mean target", f"{tr['target'].mean():.1f}")
        c[5].metric("targets ≥ 95", f"{(tr['target'] >= 95).mean():.0%}")
        fig = plots.confidence_histogram({f"{kind} targets": tr["target"].to_numpy(float)}, tr["correct"].to_numpy(bool),
                                         split="train", model=model, what="Fine-tuning targets")
        ui.show_figure(fig, "ft-targets", f"{k}-targets-{kind}")
        with st.expander(f"target texts ({len(df)} rows: {len(tr)} train, {plan.n_val} validation)"):
            ui.show_table(ui.with_links(df[["id", "role", "category", "question", "answer", "correct", "probe_p", "target",
                                            "assistant_text"]], ws),
                          key="ft-target-rows", filename=f"{k}-targets-{kind}", column_config=ui.LINK_COLUMN, height=300)
        if st.button(f"Launch {kind} run" + (f" + {len(controls)} control(s)" if controls else ""), type="primary", key=f"ft-go-{k}"):
            try:
                launched = []
                for kk in [kind] + list(controls):
                    r = runner.launch(ws, s.replace(targets=kk), threads=int(threads), evaluate=bool(eval_after),
                                      eval_limit=int(eval_limit) or None)
                    launched.append(r.id)
                    time.sleep(1.05)  # distinct run ids (second resolution) and launch order
            except (SettingsError, TargetError, WorkspaceError, ValueError, OSError) as e:
                st.error(f"Could not launch: {e}")
            else:
                st.session_state[f"ft-run-{k}"] = launched[0]
                st.success(f"Launched {', '.join(launched)} in the background.")
                st.rerun()

    # ------------------------------------------------------------------ runs
    st.subheader("Runs")
    reg = list_runs(ws)
    if reg.empty:
        st.info("No runs in this workspace yet.")
        st.stop()
    cols = ["run", "status", "phase", "targets", "format", "backend", "seed", "rank", "alpha", "lr", "updates_run",
            "updates_planned", "epochs_run", "last_loss", "val_loss", "train_seconds", "auroc_base", "auroc_ft", "tags", "note",
            "message"]
    sort_by = st.multiselect("sort runs by", ["targets", "seed", "rank", "alpha", "lr", "auroc_ft", "tags", "created"],
                             key=f"ft-sort-{k}", help="hyperparameters and results; newest first otherwise")
    if sort_by:
        reg = reg.sort_values(sort_by, kind="mergesort", na_position="last").reset_index(drop=True)
    ui.show_table(reg[cols].round(4), key="ft-registry", filename=f"{k}-runs", height=min(400, 60 + 35 * len(reg)),
                  caption="runs/<run>/: settings.json, targets.jsonl, log.jsonl, checkpoints/, adapter/ (PEFT), eval.json")
    ids = reg["run"].tolist()
    want = st.session_state.get(f"ft-run-{k}")
    if want not in ids:
        act = reg[reg["status"].isin(ACTIVE)]
        want = act["run"].iloc[-1] if len(act) else ids[0]
        st.session_state[f"ft-run-{k}"] = want
    run_id = st.selectbox("run", ids, key=f"ft-run-{k}",
                          format_func=lambda r: f"{r} — {reg.set_index('run').loc[r, 'status']}")

    def _panel(run_id: str) -> str:
        run = get_run(ws, run_id)
        st_ = run.status()
        status = run.live_status()
        s_ = run.settings()
        planned = int(st_.get("updates_planned") or s_["plan"]["updates_planned"])
        done = int(st_.get("updates_run") or 0)
        hb = st_.get("heartbeat")
        age = f" · heartbeat {time.time() - hb:.0f} s ago" if hb and status in ACTIVE else ""
        st.progress(min(1.0, done / max(planned, 1)),
                    text=f"**{status}** ({st_.get('phase', '')}) — {done}/{planned} updates, "
                         f"{float(st_.get('epochs_run') or 0):.2f}/{s_['plan']['epochs_planned']} epochs{age}")
        msg = st_.get("message", "")
        if st_.get("phase") == "evaluating" and st_.get("eval_total"):
            msg += f" — {st_.get('eval_message') or 'evaluating'}: {st_.get('eval_done')}/{st_.get('eval_total')} items"
        st.caption(msg)
        log = run.read_log()
        if len(log):
            fig = loss_curve({run_id: log}, title=f"Loss, run {run_id} ({s_['finetune']['targets']}, {s_['finetune']['format']}), "
                                                  f"{s_['plan']['n_train']} training items, {model}",
                             updates_per_epoch=s_["plan"]["updates_per_epoch"])
            st.plotly_chart(fig, key=f"ft-loss-{run_id}-{done}-{len(log)}", config=ui.PLOTLY_CONFIG, theme=None)
        else:
            st.caption("no update logged yet")
        return status

    @st.fragment(run_every=2.0)
    def _live(run_id: str):
        status = _panel(run_id)
        if status not in ACTIVE:
            st.rerun()
        if st.button("Cancel", key=f"ft-cancel-{run_id}", help="stops after the current micro-batch and keeps a checkpoint"):
            st.info(runner.cancel(ws, run_id))

    run = get_run(ws, run_id)
    status = run.live_status()
    est = run.status().get("eval_status")
    if status in ACTIVE:
        _live(run_id)
    else:
        _panel(run_id)
        c = st.columns(4)
        if status in ("interrupted", "failed", "cancelled") and not run.has_adapter():
            ck = latest_checkpoint(run.path)
            label = (f"Resume from the last checkpoint (update {ck[0]})" if ck else
                     "Start it (it stopped before its first checkpoint)")
            if c[0].button(label, key=f"ft-resume-{run_id}"):
                try:
                    runner.resume(ws, run_id, background=True, threads=int(threads), evaluate=bool(eval_after),
                                  eval_limit=int(eval_limit) or None)
                except (WorkspaceError, ValueError) as e:
                    st.error(str(e))
                else:
                    st.rerun()
        if run.has_adapter():
            st_ = run.status()
            eval_busy = est in ("queued", "running") and pid_alive(st_.get("eval_pid") or st_.get("pid"),
                                                                   st_.get("eval_pid_start") or st_.get("pid_start"))
            ev = run.eval_result()  # read once: eval.json
            label = "Re-evaluate on the eval split" if ev else "Evaluate on the eval split"
            if c[0].button(label, key=f"ft-eval-{run_id}", disabled=eval_busy):
                runner.spawn(run, evaluate_only=True, eval_limit=int(eval_limit) or None, threads=int(threads))
                st.rerun()
            if eval_busy:
                st_now = run.status()
                cnt = (f": {st_now.get('eval_message') or 'working'} {st_now.get('eval_done')}/{st_now.get('eval_total')} items"
                       if st_now.get("eval_total") else "…")
                st.info(f"Evaluation {est}{cnt}")
                if c[1].button("Refresh", key=f"ft-refresh-{run_id}"):
                    st.rerun()
            elif est == "failed" and ev:  # an earlier evaluation's result is still there: say which is which
                st.warning(f"The last evaluation attempt failed: {run.status().get('eval_error')}. "
                           "The result below is from the earlier evaluation.")
            elif est == "failed":
                st.error(f"Evaluation failed: {run.status().get('eval_error')}")
            if ev:
                from metacog.finetune.evaluate import eval_stale

                if why := eval_stale(ws, ev, run.id):
                    st.warning(why)
                h = ev["headline"]
                st.success(f"Evaluated on {h['n_eval']} eval items: verbal AUROC {_num(h['auroc_base'])} → "
                           f"{_num(h['auroc_ft'])}, accuracy {_num(h['accuracy_base'], '.1%')} → {_num(h['accuracy_ft'], '.1%')}.")
                st.page_link("pages/6_Results.py", label="Open the Results page: before/after, calibration, per item")
        if st_err := run.status().get("error"):
            with st.expander("error details"):
                st.code(st_err)
        with st.expander("tags, note, delete"):
            notes = run.notes()
            tags = st.text_input("tags (comma-separated)", ", ".join(notes.get("tags", [])), key=f"ft-tags-{run_id}")
            note = st.text_area("note", notes.get("note", ""), key=f"ft-note-{run_id}", height=80)
            cc = st.columns(3)
            if cc[0].button("Save", key=f"ft-annotate-{run_id}"):
                run.annotate([t for t in tags.split(",")], note)
                st.rerun()
            sure = cc[1].checkbox("yes, delete this run", key=f"ft-del-sure-{run_id}")
            if cc[2].button("Delete run", key=f"ft-del-{run_id}", disabled=not sure,
                            help="removes runs/<run>/ (adapter, checkpoints, evaluation); cannot be undone"):
                try:
                    delete_run(ws, run_id)
                except (RunError, WorkspaceError) as e:
                    st.error(str(e))
                else:
                    st.session_state.pop(f"ft-run-{k}", None)
                    st.rerun()
    with st.expander("settings.json"):
        st.json(run.settings())
    tail = run.file("runner.log")
    if tail.exists():
        with st.expander("runner.log (last lines)"):
            st.code("\n".join(tail.read_text(errors="replace").splitlines()[-30:]))
