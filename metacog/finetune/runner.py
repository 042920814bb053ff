"""Create, launch, execute, resume, cancel and evaluate fine-tuning runs.

``create_run`` validates everything that can be checked without a model (settings, probes,
targets, the update plan) and writes the run directory; nothing is trained until then.
``launch`` creates a run and starts a detached background process::

    python -m metacog.finetune.runner --workspace DIR --run RUN [--evaluate] [--threads N]

which calls :func:`execute`. Within one workspace, runs are serialised by the workspace's
``finetune`` lock: a second launch waits (status ``queued``) and starts when the first ends,
so two runs never interleave. The process writes ``status.json`` (pid, heartbeat every few
seconds, updates done, last loss) and ``log.jsonl``; :func:`cancel` asks it to stop (a
``cancel.request`` file and SIGTERM): it stops between micro-batches, saves a checkpoint
and ends ``cancelled``. A killed process leaves status ``running`` with a dead pid, which
the registry shows as ``interrupted``; ``execute`` (or ``metacog finetune --resume RUN``)
continues from its newest checkpoint.

Public entry: :func:`launch` (background) / :func:`execute` (this process).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from metacog.core.runtime import Stopped
from metacog.core.settings import ModelSettings, from_dict, to_dict
from metacog.core.workspace import Workspace, WorkspaceBusy, WorkspaceError, atomic_write_json, open_append, remove_tree
from metacog.finetune.runs import ACTIVE, Run, RunError, get_run, list_runs, new_run_id, pid_alive, this_process
from metacog.finetune.settings import FinetuneSettings, SettingsError, make_plan
from metacog.finetune.targets import TargetError, read_targets, write_targets
from metacog.finetune.tasks import build_task, encode_task, read_pairs, write_pairs

#: errors that name a setting or a missing study artifact: recorded by their message alone
_USER_ERRORS = (SettingsError, TargetError, RunError, WorkspaceError, ValueError)

LOCK_NAME = "finetune"
HEARTBEAT_S = 5.0
DELAY_ENV = "METACOG_FT_UPDATE_DELAY"  # seconds to sleep after each update (tests/demos of cancel and resume)
KEEP_CKPT_ENV = "METACOG_FT_KEEP_CHECKPOINTS"  # set to keep checkpoints/ after a run finished (default: removed)


# ------------------------------------------------------------------------------ create
def create_run(ws: Workspace, s: FinetuneSettings, name: str | None = None, threads: int | None = None) -> Run:
    """Validate and write a new run directory (status ``queued``); no model is loaded.

    Raises:
        WorkspaceError: ``ws`` is not a metacog workspace.
        SettingsError: ``threads`` outside 1..256, or settings/plan that cannot be met.
        TargetError: the targets cannot be built (no probes, too few training items, a bad target file)."""
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace: run `metacog study --workspace {ws.root}` first")
    model_s, study = ws.settings()
    if threads is not None and (not isinstance(threads, int) or not 1 <= threads <= 256):
        raise SettingsError(f"threads must be an integer from 1 to 256, not {threads!r}")
    df, pairs, info = build_task(ws, s)
    n_train, n_val = example_counts(df, pairs)
    plan = make_plan(s, n_train, n_val)
    what = s.targets if s.task == "single" else f"{s.task}-{s.targets}"
    run_id = new_run_id(what, s.format, s.seed, name)
    k = 1
    while ws.path("runs", run_id).exists():
        k += 1
        run_id = f"{new_run_id(what, s.format, s.seed, name)}-{k}"
    run = Run(ws, run_id)
    run.path.mkdir(parents=True, exist_ok=False)
    write_targets(run.file("targets.jsonl"), df)
    if len(pairs):
        write_pairs(run.file("pairs.jsonl"), pairs)
    ms = to_dict(model_s)
    if s.dtype != "auto":
        ms["dtype"] = s.dtype
    if s.device != "auto":
        ms["device"] = s.device
    if threads:
        ms["threads"] = int(threads)
    from metacog import __version__

    atomic_write_json(run.file("settings.json"), {
        "run": run_id,
        "finetune": s.to_dict(),
        "settings_key": s.key(),
        "model": ms,
        "study": {"prompt_style": study.prompt_style, "dataset": study.dataset, "seed": study.seed},
        "workspace_model": ws.read_json("model.json") or {},
        "plan": plan.to_dict(),
        "targets": info,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "metacog_version": __version__,
    })
    run.set_status(status="queued", phase="created", updates_run=0, updates_planned=plan.updates_planned, epochs_run=0.0,
                   message="created")
    return run


def example_counts(df, pairs) -> tuple[int, int]:
    """(training, validation) examples of a task: single-question rows marked ``single`` plus pairs."""
    single = df[df["single"].astype(bool)] if "single" in df.columns else df
    n = [int((single["role"] == r).sum()) + (int((pairs["role"] == r).sum()) if len(pairs) else 0) for r in ("train", "val")]
    return n[0], n[1]


# ------------------------------------------------------------------------------ launch / spawn
def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def spawn(run: Run, *, evaluate: bool = False, evaluate_only: bool = False, eval_limit: int | None = None,
          threads: int | None = None, python: str | None = None) -> int:
    """Start the detached background process for ``run``; returns its pid."""
    cmd = [python or sys.executable, "-m", "metacog.finetune.runner", "--workspace", str(run.ws.root), "--run", run.id]
    if evaluate:
        cmd.append("--evaluate")
    if evaluate_only:
        cmd.append("--evaluate-only")
    if eval_limit:
        cmd += ["--eval-limit", str(int(eval_limit))]
    if threads:
        cmd += ["--threads", str(int(threads))]
    log = open_append(run.file("runner.log"), binary=True)
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=_env(), cwd=str(run.ws.root))
    finally:
        log.close()
    from metacog.finetune.runs import proc_start

    key = "eval_" if evaluate_only else ""
    upd = {f"{key}pid": p.pid, f"{key}pid_start": proc_start(p.pid), f"{key}launched": time.time()}
    if evaluate_only:
        upd["eval_status"] = "queued"
    else:
        upd.update(status="queued", pid=p.pid, pid_start=proc_start(p.pid), message="starting")
    run.set_status(**upd)
    _reap_later(p)
    return p.pid


def _reap_later(p: subprocess.Popen) -> None:
    """Collect the child's exit status when it ends (no zombie in a long-lived app)."""
    threading.Thread(target=p.wait, name=f"reap-{p.pid}", daemon=True).start()


def launch(ws: Workspace, s: FinetuneSettings, *, name: str | None = None, threads: int | None = None,
           evaluate: bool = False, eval_limit: int | None = None) -> Run:
    """Create a run and train it in a background process (queued behind a running one).
    Idempotent: while a run with exactly these settings is queued or running, that run is
    returned and nothing new is created (a double click launches once)."""
    from metacog.finetune.evaluate import check_two_pass

    check_two_pass(ws, s.format)  # a two-pass run needs the study's two-pass readouts to be evaluated
    reg = list_runs(ws)
    same = reg[reg["status"].isin(ACTIVE) & (reg["key"] == s.key())]
    if len(same):
        return get_run(ws, same.iloc[0]["run"])
    run = create_run(ws, s, name=name, threads=threads)
    spawn(run, evaluate=evaluate, eval_limit=eval_limit, threads=threads)
    return run


def resume(ws: Workspace, run_id: str, *, background: bool = True, threads: int | None = None, evaluate: bool = False,
           eval_limit: int | None = None, progress=None, lm=None):
    """Continue an interrupted, failed or cancelled run from its newest checkpoint.

    Raises:
        RunError: the run is still active or already done."""
    run = get_run(ws, run_id)
    st = run.live_status()
    if st in ACTIVE:
        raise RunError(f"run {run_id} is {st} (pid {run.status().get('pid')}); it does not need resuming")
    if st == "done" and run.has_adapter():
        raise RunError(f"run {run_id} is already done")
    run.clear_cancel()
    if background:
        spawn(run, evaluate=evaluate, eval_limit=eval_limit, threads=threads)
        return run
    return execute(ws, run_id, lm=lm, threads=threads, evaluate_after=evaluate, eval_limit=eval_limit, progress=progress)


def cancel(ws: Workspace, run_id: str) -> str:
    """Ask a queued/running run (or its evaluation) to stop; returns what was done."""
    run = get_run(ws, run_id)
    st = run.status()
    active = st.get("status") in ACTIVE or st.get("eval_status") in ACTIVE
    if not active:
        return f"run is {run.live_status()}; nothing to cancel"
    run.request_cancel()
    for key in ("", "eval_"):
        pid, start = st.get(f"{key}pid"), st.get(f"{key}pid_start")
        if pid and pid_alive(pid, start) and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGTERM)
            return f"asked process {pid} to stop; it saves a checkpoint and ends 'cancelled'"
    if st.get("status") in ACTIVE:
        run.set_status(status="cancelled", message="cancelled before it started", ended=time.time())
    if st.get("eval_status") in ACTIVE:
        run.set_status(eval_status="cancelled")
    return "cancelled (its process was not running)"


# ------------------------------------------------------------------------------ execute
@contextlib.contextmanager
def _acquire(ws: Workspace, run: Run, should_stop, status_key: str = "status", lock_name: str = LOCK_NAME):
    """The workspace's fine-tune lock; while another run holds it, wait (status queued).

    A sweep (metacog.sweeps) holds ``finetune`` itself for its whole duration and budgets the
    cores of its parallel workers, which then take a per-run lock (``lock_name``) instead."""
    announced = False
    while True:
        cm = ws.writer(lock_name)
        try:
            cm.__enter__()
            break
        except WorkspaceBusy as e:
            if should_stop():
                raise Stopped("cancelled while queued") from None
            if not announced:
                msg = f"queued: waiting for the workspace's other fine-tuning job ({str(e).split('(')[-1].rstrip(').')})"
                run.set_status(**{status_key: "queued", "message": msg})
                print(msg, file=sys.stderr, flush=True)
                announced = True
            time.sleep(1.0)
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


class _Heartbeat:
    def __init__(self, run: Run, key: str = "heartbeat"):
        self.run, self.key = run, key
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True, name="metacog-heartbeat")

    def _loop(self):
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                self.run.set_status(**{self.key: time.time()})

    def __enter__(self):
        self.run.set_status(**{self.key: time.time()})
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()


def _load_lm(run: Run, threads: int | None):
    from metacog.model.loading import load_model

    ms = from_dict(ModelSettings, run.settings()["model"])
    if threads:
        ms = ModelSettings(**{**to_dict(ms), "threads": int(threads)})
    rec = (run.ws.read_json("model.json") or {}).get("dtype")
    if ms.dtype == "auto" and rec:  # the precision the study ran in (auto resolves per machine and version)
        ms = ModelSettings(**{**to_dict(ms), "dtype": rec})
    return load_model(ms)


def execute(ws: Workspace, run_id: str, *, lm=None, owned: bool = False, threads: int | None = None,
            evaluate_after: bool = False, eval_limit: int | None = None, progress=None, hooks_extra: dict | None = None,
            should_stop=None, lock_name: str = LOCK_NAME) -> dict:
    """Train (or resume) ``run_id`` in this process; returns the final status dict.

    ``lm``: an already loaded base model (tests); else it is loaded from the run's model
    settings and owned by this process (no copy). ``progress(update, planned, msg)``.

    Raises:
        RunError: the loaded model is not the workspace's (its weights hash differs).
        Stopped: the run was cancelled (before it started, or during training).
    """
    from metacog.finetune.backends import Hooks, get_backend

    run = get_run(ws, run_id)
    s = run.finetune_settings()
    settings = run.settings()
    me = this_process()
    run.set_status(**me)
    stop_flag = threading.Event()

    def stop_now() -> bool:
        return stop_flag.is_set() or run.cancel_requested() or bool(should_stop and should_stop())

    t_wall = time.time()
    try:
        with _acquire(ws, run, stop_now, lock_name=lock_name):
            if run.cancel_requested():
                raise Stopped("cancelled before it started")
            if evaluate_after:  # an evaluation that could not finish is refused before the training, not after it
                from metacog.finetune.evaluate import check_evaluable

                check_evaluable(ws, run)
            run.set_status(status="running", phase="loading model", message="loading the model", started=time.time(),
                           error=None, **me)
            with _Heartbeat(run):
                if threads:
                    import torch

                    torch.set_num_threads(int(threads))
                if lm is None:
                    lm = _load_lm(run, threads)
                    owned = True
                wh = (settings.get("workspace_model") or {}).get("weights_hash")
                if wh and lm.weights_hash != wh:
                    raise RunError(f"the base model loaded (weights {lm.weights_hash}) is not the one this workspace's "
                                   f"answers and probes were made with ({wh}); targets would not be the model's own")
                run.update_settings(base={"name": lm.name, "weights_hash": lm.weights_hash, "source": lm.source,
                                          "dtype": str(lm.dtype).replace("torch.", ""), "device": str(lm.device),
                                          "threads": lm.threads})
                df = read_targets(run.file("targets.jsonl"))
                _, study = ws.settings()
                style = settings.get("study", {}).get("prompt_style", study.prompt_style)
                pairs = read_pairs(run.file("pairs.jsonl"))
                train_ex, val_ex, dropped = encode_task(lm.tokenizer, lm.is_chat, df, pairs, s, style)
                drop_t, drop_v = dropped["train"], dropped["val"]
                plan = make_plan(s, len(train_ex), len(val_ex))
                if plan.to_dict() != settings.get("plan"):
                    run.update_settings(plan=plan.to_dict(), dropped_too_long={"train": drop_t, "val": drop_v})
                backend = get_backend(s.backend)
                run.set_status(phase="training", message=f"training ({s.backend})", updates_planned=plan.updates_planned)
                print(f"run {run.id}: {plan.n_train} train / {plan.n_val} val examples, {plan.updates_per_epoch} updates per epoch, "
                      f"{plan.updates_planned} updates planned ({plan.epochs_planned} epochs); backend {s.backend}, "
                      f"{lm.name} {str(lm.dtype).replace('torch.', '')} on {lm.device}, threads {lm.threads}", file=sys.stderr, flush=True)

                delay = float(os.environ.get(DELAY_ENV, "0") or 0)

                def on_update(rec):
                    rec = {"kind": "train", **rec, "time": time.time()}
                    run.append_log(rec)
                    run.set_status(updates_run=rec["update"], epochs_run=round(rec["epoch"], 4), last_loss=rec["loss"],
                                   heartbeat=time.time(), message=f"update {rec['update']}/{plan.updates_planned}")
                    if progress:
                        progress(rec["update"], plan.updates_planned, f"loss {rec['loss']:.4f}")
                    if delay:
                        time.sleep(delay)

                def on_val(rec):
                    run.append_log({"kind": "val", **rec, "time": time.time()})
                    run.set_status(val_loss=rec["val_loss"])

                hooks = Hooks(on_update=on_update, on_val=on_val, should_stop=stop_now, extra=hooks_extra or {})
                if hooks_extra and "on_checkpoint" in hooks_extra:
                    hooks.on_checkpoint = hooks_extra["on_checkpoint"]
                res = backend.train(run, lm, train_ex, val_ex, s, plan, hooks, owned=owned)
                run.set_status(status="done", phase="trained", message=_done_msg(res, plan), ended=time.time(),
                               updates_run=res["updates_run"], epochs_run=round(res["epochs_run"], 4),
                               train_seconds=res["train_seconds"], stopped=res.get("stopped"), result=res)
                print(f"run {run.id}: {_done_msg(res, plan)} in {res['train_seconds']:.0f} s", file=sys.stderr, flush=True)
                run.clear_cancel()  # a cancel that arrived after the last update has nothing left to stop
                if not os.environ.get(KEEP_CKPT_ENV):  # finished: optimizer states are of no further use
                    remove_tree(run.file("checkpoints"))
                if evaluate_after:
                    _evaluate_in_process(ws, run, lm, owned=owned, limit=eval_limit, threads=threads, stop_now=stop_now,
                                         progress=progress)
    except Stopped as e:
        st = run.status()
        run.set_status(status="cancelled", message=str(e), ended=time.time())
        if st.get("phase") == "evaluating":
            run.set_status(status="done", eval_status="cancelled")
    except KeyboardInterrupt:
        run.set_status(status="cancelled", message="interrupted (Ctrl-C); `metacog finetune --resume` continues it", ended=time.time())
        raise
    except BaseException as e:
        if run.status().get("eval_status") == "failed" and run.status().get("phase") == "trained":
            raise  # the training finished: the run stays done, its evaluation failed (_evaluate_in_process)
        if isinstance(e, _USER_ERRORS):
            run.set_status(status="failed", message=str(e), error=str(e), ended=time.time())
        else:
            run.set_status(status="failed", message=f"{type(e).__name__}: {e}", error=traceback.format_exc(), ended=time.time())
        raise
    finally:
        run.set_status(wall_seconds=round(time.time() - t_wall, 1))
    return run.status()


def _done_msg(res: dict, plan) -> str:
    how = {"early": "early stop", None: "done"}.get(res.get("stopped"), res.get("stopped"))
    return (f"{how}: {res['updates_run']}/{plan.updates_planned} updates, {res['epochs_run']:.2f} epochs, "
            f"last loss {res['final_train_loss']:.4f}" + (f", {res['autocast']} autocast" if res.get("autocast") else ""))


def _eval_progress(run, progress=None, every_s: float = 1.0):
    """A progress callback that also records the evaluation's item count in the run's status
    (``eval_done``/``eval_total``/``eval_message``, at most once a second), so a page that
    watches the run shows how far the evaluation is."""
    last = {"t": 0.0, "msg": None}

    def cb(done, total, msg=""):
        now = time.monotonic()
        if now - last["t"] >= every_s or msg != last["msg"] or (total and done >= total):
            run.set_status(eval_done=int(done), eval_total=int(total), eval_message=msg)
            last["t"], last["msg"] = now, msg
        if progress:
            progress(done, total, msg)

    return cb


def _evaluate_in_process(ws, run, lm, owned, limit, threads, stop_now, progress=None):
    from metacog.finetune.evaluate import evaluate_run

    progress = _eval_progress(run, progress)

    run.set_status(status="running", phase="evaluating", eval_status="running", message="evaluating on the eval split")
    try:
        ev = evaluate_run(ws, run.id, lm=lm, owned=owned, limit=limit, threads=threads, should_stop=stop_now, progress=progress)
    except Stopped:
        raise
    except BaseException as e:
        run.set_status(status="done", phase="trained", eval_status="failed", eval_error=_eval_error(e),
                       message=f"trained; evaluation failed: {e}")
        raise
    h = ev["headline"]
    run.set_status(status="done", phase="evaluated", eval_status="done", eval_seconds=ev["seconds"]["total"],
                   message=f"evaluated: AUROC {_f(h.get('auroc_base'))} -> {_f(h.get('auroc_ft'))}")
    return ev


def evaluate(ws: Workspace, run_id: str, *, lm=None, owned: bool = False, limit: int | None = None,
             threads: int | None = None, progress=None, should_stop=None, lock_name: str = LOCK_NAME) -> dict:
    """Evaluate a finished run in this process (serialised with training by the same lock).

    Raises:
        RunError: the run has no final adapter."""
    run = get_run(ws, run_id)
    if not run.has_adapter():
        raise RunError(f"run {run_id} has no final adapter (status {run.live_status()}); finish or resume it first")
    from metacog.finetune.evaluate import check_evaluable

    check_evaluable(ws, run)  # before the model is loaded

    def stop_now():
        return run.cancel_requested() or bool(should_stop and should_stop())

    me = this_process()
    run.set_status(eval_pid=me["pid"], eval_pid_start=me["pid_start"])
    try:
        with _acquire(ws, run, stop_now, status_key="eval_status", lock_name=lock_name):
            with _Heartbeat(run, "eval_heartbeat"):
                if lm is None:
                    lm = _load_lm(run, threads)
                    owned = True
                run.set_status(eval_status="running", eval_started=time.time())
                from metacog.finetune.evaluate import evaluate_run

                ev = evaluate_run(ws, run_id, lm=lm, owned=owned, limit=limit, threads=threads, should_stop=stop_now,
                                  progress=_eval_progress(run, progress))
                run.set_status(eval_status="done", eval_seconds=ev["seconds"]["total"], eval_error=None)
                return ev
    except Stopped:
        run.set_status(eval_status="cancelled")
        run.clear_cancel()
        raise
    except BaseException as e:
        run.set_status(eval_status="failed", eval_error=_eval_error(e))
        raise


def _eval_error(e: BaseException) -> str:
    """An evaluation's failure as the run records it: the message of an error the user can act on
    (a setting, a missing study artifact), the class name too for anything else."""
    if isinstance(e, _USER_ERRORS):
        return str(e)
    return f"{type(e).__name__}: {e}"


def evaluate_external(ws: Workspace, adapter_dir, *, fmt: str = "inline", limit: int | None = None,
                      threads: int | None = None, progress=None) -> tuple[dict, Path]:
    """Evaluate a PEFT adapter that is not a run of this workspace (checked against the
    workspace's base model before anything is loaded); output in ``adapter_evals/<name>/``."""
    from metacog.finetune.evaluate import check_adapter, evaluate_adapter

    adapter_dir = Path(adapter_dir).expanduser().resolve()
    check_adapter(adapter_dir, (ws.read_json("model.json") or {}).get("weights_hash"))
    out = ws.path("adapter_evals", adapter_dir.name)
    with ws.writer(LOCK_NAME, wait=True):
        ev = evaluate_adapter(ws, adapter_dir, out, limit=limit, threads=threads, primary_format=fmt, progress=progress)
    return ev, out


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------ process entry
def main(argv=None) -> int:
    """``python -m metacog.finetune.runner --workspace W --run R [--evaluate | --evaluate-only]``: the
    background fine-tuning process (SIGTERM becomes a cancel request). Returns 0 finished,
    3 stopped (cancelled), 2 failed (traceback on stderr, i.e. ``runner.log``)."""
    p = argparse.ArgumentParser(prog="python -m metacog.finetune.runner", description="background fine-tuning process")
    p.add_argument("--workspace", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--evaluate", action="store_true", help="evaluate on the eval split after training")
    p.add_argument("--evaluate-only", action="store_true", help="only evaluate the run's final adapter")
    p.add_argument("--eval-limit", type=int, default=None)
    a = p.parse_args(argv)
    ws = Workspace(a.workspace)

    def on_term(signum, frame):
        with contextlib.suppress(Exception):
            Run(ws, a.run).request_cancel()

    signal.signal(signal.SIGTERM, on_term)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"[{time.strftime('%H:%M:%S')}] runner pid {os.getpid()} run {a.run}", file=sys.stderr, flush=True)
    try:
        if a.evaluate_only:
            evaluate(ws, a.run, limit=a.eval_limit, threads=a.threads)
        else:
            execute(ws, a.run, threads=a.threads, evaluate_after=a.evaluate, eval_limit=a.eval_limit)
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except Exception as e:
        traceback.print_exc()
        print(f"failed: {e}", file=sys.stderr)
        return 2
    print(f"[{time.strftime('%H:%M:%S')}] finished", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
