"""The sweep coordinator: :func:`run_sweep` (expand, plan, lock, execute and record a sweep),
:func:`worker_budget` (``workers × threads ≤ cores``) and :func:`run_job` (a sweep as an app job)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from metacog.finetune.settings import FinetuneSettings
from metacog.core.workspace import Workspace, WorkspaceBusy
from metacog.sweeps.core import (EXECUTORS, FINETUNE_LOCK, HEADLINE_KEYS, SWEEP_LOCK, SweepError, SweepRecord,
                                 SweepSettings, available_cores, expand, plan_one)
from metacog.sweeps.executors import LocalExecutor, RayExecutor, check_ray_address


# ------------------------------------------------------------------------------ coordinator
def worker_budget(executor: str, workers: int | None, threads: int, n_tasks: int, cores: int | None = None) -> int:
    """Workers to run at once: ``workers × threads ≤ cores`` on this machine (local executor and
    a local Ray); a Ray cluster (address given) may have more cores than this machine.

    Raises: SweepError when ``threads`` exceeds the cores (local executor), ``workers`` is not a
    positive integer, or ``workers × threads`` exceeds the cores (local executor).
    """
    cores = cores or available_cores()
    if threads > cores and executor == "local":
        raise SweepError(f"{threads} threads per run is more than the {cores} cores here; use --threads {cores} or fewer")
    most = max(1, cores // threads)
    if workers is None:
        return max(1, min(most, n_tasks))
    if not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers must be a positive integer, not {workers!r}")
    if executor == "local" and workers > most:
        raise SweepError(f"{workers} workers × {threads} threads = {workers * threads} > {cores} cores: the runs would fight "
                         f"over cores. Use --workers {most} (or fewer threads per run).")
    return max(1, min(workers, n_tasks))


@contextlib.contextmanager
def _hold_locks(roots: list[str]):
    with contextlib.ExitStack() as stack:
        for r in roots:
            ws = Workspace(r)
            try:
                stack.enter_context(ws.writer(SWEEP_LOCK))
            except WorkspaceBusy:
                raise SweepError(f"another sweep is running on {ws.root} ({ws.is_locked(SWEEP_LOCK) or 'another process'}); "
                                 "wait for it to finish (or stop it) and launch again: completed runs are skipped") from None
            try:
                stack.enter_context(ws.writer(FINETUNE_LOCK))
            except WorkspaceBusy:
                raise SweepError(f"a fine-tuning run is in progress on {ws.root} ({ws.is_locked(FINETUNE_LOCK) or 'another process'}); "
                                 "wait for it (or cancel it) and launch the sweep again") from None
        yield


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_sweep(home: str | Path, sweep: SweepSettings, *, executor: str = "local", address: str | None = None,
              workers: int | None = None, name: str | None = None, dry_run: bool = False, quiet: bool = False,
              progress=None, should_stop=None) -> dict:
    """Expand, plan (skip what is complete), execute and record a sweep; returns the record.

    ``progress(done, total, msg)`` after every finished run; ``should_stop()`` is polled (the
    workers are asked to checkpoint and stop).

    Raises: SweepError for an unknown executor, a workspace that is not a metacog workspace or
    (probe targets) has no probes, another sweep or fine-tuning run holding the workspace, or an
    unreachable Ray cluster; SettingsError for invalid settings.
    """
    ws = Workspace(home)
    if executor not in EXECUTORS:
        raise SweepError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    specs = expand(ws.root, sweep)
    roots = list(dict.fromkeys(s.workspace for s in specs))
    for r in roots:
        if not Workspace(r).exists:
            raise SweepError(f"{r} is not a metacog workspace: run `metacog study --workspace {r}` first")
        if not Workspace(r).path("probes", "oof.npy").exists() and any(s.settings.targets in ("probe", "shuffled") for s in specs):
            raise SweepError(f"{r} has no probes yet: run `metacog study --workspace {r}` (probe targets need them)")
    if executor == "ray" and address and address != "auto":
        check_ray_address(address)  # before any lock or record: fails within seconds
    nw_max = worker_budget(executor, workers, sweep.threads, len(specs))  # before anything is created
    sid = name or f"sweep-{sweep.key(ws.root)}"
    with _hold_locks(roots):
        rec = SweepRecord(ws, sid)
        old = {(e["workspace"], e["key"]): e for e in rec.data.get("runs", [])}
        entries, tasks = [], []
        for i, spec in enumerate(specs):
            action, run, why = plan_one(spec, sweep)
            if action == "train" and not dry_run:
                from metacog.finetune.runner import create_run

                run = create_run(Workspace(spec.workspace), spec.settings, name=f"{sid[:24]}-{spec.settings.targets}-s{spec.settings.seed}",
                                 threads=sweep.threads)
            prev = old.get((spec.workspace, spec.key), {})
            e = {"i": i, "workspace": spec.workspace, "key": spec.key, "label": spec.label(len(roots) > 1),
                 "seed": spec.settings.seed, "targets": spec.settings.targets, "lr": spec.settings.lr,
                 "run": run.id if run else None, "action": action, "why": why,
                 "status": {"skip": "done", "busy": "busy"}.get(action, "pending"),
                 "error": None, "pid": None, "host": None, "seconds": None,
                 "headline": prev.get("headline") if action == "skip" else None}
            if action == "skip":
                ev = run.eval_result() or {}
                e["headline"] = {k: (ev.get("headline") or {}).get(k) for k in HEADLINE_KEYS} if ev else prev.get("headline")
            entries.append(e)
            if action in ("train", "resume", "evaluate"):
                tasks.append((i, {"workspace": spec.workspace, "run": e["run"], "action": action, "evaluate": sweep.evaluate,
                                  "eval_limit": sweep.eval_limit, "threads": sweep.threads}))
        nw = max(1, min(nw_max, len(tasks)))
        launch = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "executor": executor, "address": address, "workers": nw,
                  "threads": sweep.threads, "cores": available_cores(), "tasks": len(tasks),
                  "skipped": sum(e["action"] == "skip" for e in entries), "pid": os.getpid(), "host": socket.gethostname()}
        rec.data.update({"id": sid, "workspace": str(ws.root), "key": sweep.key(ws.root), "settings": sweep.to_dict(),
                         "created": rec.data.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")), "runs": entries,
                         "status": "planned" if dry_run else "running", "executor": executor, "address": address,
                         "workers": nw, "threads": sweep.threads,
                         "history": rec.data.get("history", []) + ([] if dry_run else [launch])})
        if not dry_run:  # a dry run shows the plan and writes nothing
            rec.save()
        counts = {a: sum(e["action"] == a for e in entries) for a in ("train", "resume", "evaluate", "skip", "busy")}
        _log(f"{sid}: {len(specs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
             f"executor {executor}{' @ ' + address if address else ''}, {nw} worker(s) × {sweep.threads} thread(s)", quiet)
        if dry_run:
            return json.loads(json.dumps(rec.data, default=str))
        t_all = time.time()
        total, finished = len(tasks), [0]

        def on_start(i, info):
            rec.update(i, status="running", started=time.time(), **info)
            _log(f"start {entries[i]['label']}: {entries[i]['action']} {entries[i]['run']}"
                 + (f" (pid {info['pid']})" if info.get("pid") else ""), quiet)

        def on_done(i, out):
            finished[0] += 1
            keep = {k: out.get(k) for k in ("status", "error", "seconds", "train_seconds", "eval_seconds", "updates_run",
                                           "resumed_from", "headline", "host") if k in out}
            if out.get("pid"):
                keep["pid"] = out["pid"]
            rec.update(i, ended=time.time(), **keep)
            h = out.get("headline") or {}
            extra = f" AUROC {h.get('auroc_ft'):.3f} ECE {h.get('ece_ft'):.3f}" if h.get("auroc_ft") is not None and h.get("ece_ft") is not None else ""
            _log(f"{out['status']} {entries[i]['label']} in {out.get('seconds')} s{extra}"
                 + (f": {out['error']}" if out.get("error") and out["status"] != "done" else ""), quiet)
            if progress:
                progress(finished[0], total, f"{entries[i]['label']}: {out['status']}")

        if executor == "local":
            ex = LocalExecutor(nw, sweep.threads, rec.dir / "logs")
        else:
            ex = RayExecutor(nw, sweep.threads, address, num_cpus=None if address else min(available_cores(), nw * sweep.threads))
        try:
            ex.run(tasks, on_start, on_done, should_stop=should_stop)
        except KeyboardInterrupt:
            for e in rec.data["runs"]:
                if e["status"] in ("pending", "running"):
                    e["status"] = "interrupted"
            rec.data["status"] = "incomplete"
            rec.data["seconds"] = round(time.time() - t_all, 1)
            rec.save()
            raise
        except BaseException as e:
            rec.data["status"] = "failed"
            rec.data["error"] = f"{type(e).__name__}: {e}"
            rec.save()
            raise
        ok = all(e["status"] == "done" for e in rec.data["runs"])
        rec.data["status"] = "done" if ok else "incomplete"
        rec.data["seconds"] = round(time.time() - t_all, 1)
        rec.data["history"][-1].update(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=rec.data["seconds"])
        rec.save()
        bad = [e for e in rec.data["runs"] if e["status"] != "done"]
        if bad:
            _log(f"{len(bad)} run(s) did not finish ({', '.join(e['label'] + ': ' + e['status'] for e in bad)}); "
                 "launch the same sweep again to finish only what is missing", quiet)
        return rec.data


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """A seed sweep as an app job in its own process (:mod:`metacog.core.jobs`): ``spec`` holds
    ``finetune`` (FinetuneSettings dict), ``seeds``, ``targets``, ``eval_limit``, ``threads``
    and ``workers``; local executor. Returns the sweep record."""
    base = FinetuneSettings.from_dict(spec.get("finetune") or {})
    sw = SweepSettings(base=base, seeds=tuple(int(x) for x in spec["seeds"]), targets=tuple(spec.get("targets") or ()),
                       eval_limit=spec.get("eval_limit"), threads=int(spec.get("threads") or 1))
    return run_sweep(ws.root, sw, executor="local", workers=int(spec.get("workers") or 1), quiet=True,
                     progress=progress, should_stop=should_stop)
