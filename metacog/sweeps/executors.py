"""Sweep executors: :func:`run_task` (one run trained/resumed/evaluated in this process), the
``local`` pool of worker processes (:class:`LocalExecutor`, each ``python -m metacog.sweeps worker``,
whose entry is :func:`main`) and the ``ray`` executor (:class:`RayExecutor`). See :mod:`metacog.sweeps`."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from metacog.finetune.runs import Run
from metacog.core.workspace import Workspace, atomic_write_json, open_append, read_json
from metacog.sweeps.core import HEADLINE_KEYS, REACH_TIMEOUT_S, SweepError


# ------------------------------------------------------------------------------ the task (both executors)
def run_task(task: dict) -> dict:
    """Train/resume and/or evaluate one run in this process; the function both executors call.

    ``task``: workspace, run, action (train | resume | evaluate), evaluate, eval_limit, threads.
    Returns a JSON-able result (never raises for a failed run: the failure is the result)."""
    import torch

    from metacog.finetune.runner import evaluate as evaluate_run, execute

    t0 = time.time()
    threads = int(task.get("threads") or 1)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ws = Workspace(task["workspace"])
    run = Run(ws, task["run"])
    lock = f"finetune-run-{task['run']}"
    err = None
    resumed_from = None
    if task["action"] == "resume":
        from metacog.finetune.backends.common import latest_checkpoint

        ck = latest_checkpoint(run.path)
        resumed_from = int(ck[0]) if ck else 0
        print(f"resuming {run.id} from its checkpoint at update {resumed_from}" if ck else
              f"re-starting {run.id} (no checkpoint was saved)", file=sys.stderr, flush=True)
    try:
        if task["action"] in ("train", "resume"):
            run.clear_cancel()
            execute(ws, run.id, threads=threads, evaluate_after=bool(task.get("evaluate")), eval_limit=task.get("eval_limit"),
                    lock_name=lock)
        elif task["action"] == "evaluate":
            evaluate_run(ws, run.id, threads=threads, limit=task.get("eval_limit"), lock_name=lock)
    except Exception as e:  # the run's status.json already says failed; report it, the sweep goes on
        err = f"{type(e).__name__}: {e}"
    st = run.status()
    ev = run.eval_result() or {}
    status = st.get("status", "failed")
    if err or (task.get("evaluate") and st.get("eval_status") not in (None, "done")):
        status = "failed" if status != "cancelled" else status
    if task.get("evaluate") and status == "done" and not ev:
        status = "failed"
        err = err or f"evaluation {st.get('eval_status')}: {st.get('eval_error')}"
    return {"run": run.id, "status": status, "error": err or st.get("error") or st.get("eval_error"),
            "seconds": round(time.time() - t0, 1), "train_seconds": st.get("train_seconds"),
            "eval_seconds": st.get("eval_seconds"), "updates_run": st.get("updates_run"), "resumed_from": resumed_from,
            "headline": {k: (ev.get("headline") or {}).get(k) for k in HEADLINE_KEYS} if ev else None,
            "host": socket.gethostname(), "pid": os.getpid()}


# ------------------------------------------------------------------------------ executors
class LocalExecutor:
    """A pool of worker processes (``python -m metacog.sweeps worker``), ``workers`` at a time."""

    name = "local"

    def __init__(self, workers: int, threads: int, log_dir: Path, poll_s: float = 0.5):
        self.workers, self.threads, self.log_dir, self.poll_s = workers, threads, Path(log_dir), poll_s

    def _env(self) -> dict:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the repository root, above metacog/
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TOKENIZERS_PARALLELISM"] = "false"
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(self.threads)
        return env

    def run(self, tasks: list[tuple[int, dict]], on_start, on_done, should_stop=None) -> None:
        """Run ``tasks`` (``(index, task dict)`` pairs), at most ``workers`` worker processes at a
        time, each logging to ``log_dir/<run>.log``; ``on_start(i, {"pid", "host"})`` when one
        starts and ``on_done(i, result)`` when it ends (a worker that dies without a result is
        reported ``interrupted``). ``should_stop()`` is polled every ``poll_s`` seconds: the workers
        get SIGTERM (checkpoint and stop) and KeyboardInterrupt is raised."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending = list(tasks)
        running: dict[int, tuple[subprocess.Popen, Path, float]] = {}
        try:
            while pending or running:
                if should_stop and should_stop():
                    raise KeyboardInterrupt
                while pending and len(running) < self.workers:
                    i, task = pending.pop(0)
                    res = self.log_dir / f"{task['run']}.result.json"
                    with contextlib.suppress(FileNotFoundError):
                        res.unlink()
                    log = open_append(self.log_dir / f"{task['run']}.log", binary=True)
                    try:
                        p = subprocess.Popen([sys.executable, "-m", "metacog.sweeps", "worker", "--task", json.dumps(task),
                                              "--result", str(res)], stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
                    finally:
                        log.close()
                    running[i] = (p, res, time.time())
                    on_start(i, {"pid": p.pid, "host": socket.gethostname()})
                for i in list(running):
                    p, res, t0 = running[i]
                    rc = p.poll()
                    if rc is None:
                        continue
                    del running[i]
                    out = read_json(res) if res.exists() else None
                    if out is None:
                        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
                        out = {"status": "interrupted", "seconds": round(time.time() - t0, 1),
                               "error": f"worker process {p.pid} died ({how}) before it finished; "
                                        "re-launch the sweep to resume it from its last checkpoint"}
                    on_done(i, out)
                if running:
                    time.sleep(self.poll_s)
        except BaseException:
            for p, _, _ in running.values():  # ask them to checkpoint and stop
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p, _, _ in running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=60)
            raise


def check_ray_address(address: str, timeout: float = REACH_TIMEOUT_S) -> tuple[str, int]:
    """``HOST:PORT`` of a Ray head that answers a TCP connection within ``timeout`` seconds,
    else a SweepError saying what to do (ray.init itself would hang for a long time).

    Raises: SweepError when ``address`` is not HOST:PORT or nothing answers there within
    ``timeout``.
    """
    a = address.strip()
    for pre in ("ray://", "http://", "https://"):
        if a.startswith(pre):
            a = a[len(pre):]
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"--address must be HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379), not {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise SweepError(
            f"the Ray cluster at {host}:{port} does not answer ({why}, {timeout:g} s timeout). Start its head with "
            f"`ray start --head --port {port}` on {host}, check the address and the firewall, or leave out --address "
            "to run Ray on this machine.") from None
    return host, int(port)


def _ray_task(task: dict) -> dict:
    return run_task(task)


class RayExecutor:
    """The same tasks as Ray tasks (``num_cpus = threads``); a local ``ray.init()`` when no address."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None = None, num_cpus: int | None = None):
        self.workers, self.threads, self.address, self.num_cpus = workers, threads, address, num_cpus

    def run(self, tasks, on_start, on_done, should_stop=None) -> None:
        """Run ``tasks`` as Ray tasks (``num_cpus = threads``, at most ``workers`` in flight), calling
        ``on_start``/``on_done`` as :meth:`LocalExecutor.run`; a failed Ray worker is reported
        ``interrupted``. Raises: SweepError without Ray installed or when the cluster at ``address``
        does not answer."""
        try:
            import ray
        except ImportError:
            raise SweepError("the ray executor needs Ray: pip install 'metacog[ray]' (or pip install 'ray>=2.9')") from None
        started_here = False
        if not ray.is_initialized():
            if self.address and self.address != "auto":
                check_ray_address(self.address)
            kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.num_cpus or self.workers * self.threads, **kw)
            started_here = True
        try:
            remote = ray.remote(num_cpus=self.threads, max_retries=0)(_ray_task)
            pending = list(tasks)
            inflight: dict = {}
            while pending or inflight:
                if should_stop and should_stop():
                    raise KeyboardInterrupt
                while pending and len(inflight) < self.workers:
                    i, task = pending.pop(0)
                    ref = remote.remote(task)
                    inflight[ref] = (i, time.time())
                    on_start(i, {"pid": None, "host": "ray"})
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in done:
                    i, t0 = inflight.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        out = {"status": "interrupted", "seconds": round(time.time() - t0, 1),
                               "error": f"Ray worker failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                                        "re-launch the sweep to resume it from its last checkpoint"}
                    on_done(i, out)
        except BaseException:
            for ref in list(locals().get("inflight", {})):
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
        finally:
            if started_here:
                ray.shutdown()


# ------------------------------------------------------------------------------ worker entry
def main(argv=None) -> int:
    """Entry of ``python -m metacog.sweeps worker --task JSON --result PATH``: run one task
    (:func:`run_task`) in this process and write its result JSON atomically; SIGTERM asks the run to
    checkpoint and stop. Returns 0."""
    p = argparse.ArgumentParser(prog="python -m metacog.sweeps", description="a sweep's worker process (started by the local executor)")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--task", required=True, help="the task as JSON")
    w.add_argument("--result", required=True, help="where to write the result JSON")
    a = p.parse_args(argv)
    task = json.loads(a.task)

    def on_term(signum, frame):  # checkpoint and stop, like the fine-tune runner
        with contextlib.suppress(Exception):
            Run(Workspace(task["workspace"]), task["run"]).request_cancel()

    signal.signal(signal.SIGTERM, on_term)
    print(f"[{time.strftime('%H:%M:%S')}] sweep worker pid {os.getpid()}: {task['action']} {task['run']}", file=sys.stderr, flush=True)
    out = run_task(task)
    atomic_write_json(Path(a.result), out)
    print(f"[{time.strftime('%H:%M:%S')}] {out['status']} in {out['seconds']} s", file=sys.stderr, flush=True)
    return 0
