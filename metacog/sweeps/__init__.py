"""Sweeps: one fine-tuning settings object replicated over seeds (and optionally over models =
workspaces, target kinds and learning rates), launched, resumed and evaluated as one action.

    from metacog.sweeps import SweepSettings, run_sweep
    rec = run_sweep("cache/workspaces/W", SweepSettings(FinetuneSettings(epochs=3), seeds=(42, 123, 456)))

* **Expansion** (:func:`expand`): the cross product workspace × targets × lr × seed of
  ``FinetuneSettings.replace(...)``; each run is identified by its settings hash
  (``FinetuneSettings.key()``, the ``settings_key`` every run directory records).
* **Skip / resume** (:func:`plan`): per expanded run, the workspace's runs with the same hash
  decide what is left: ``skip`` (trained and evaluated), ``evaluate`` (trained only),
  ``resume`` (interrupted / cancelled / failed: the fine-tune runner continues from its newest
  checkpoint) or ``train`` (a new run, created by the coordinator before any work).
* **Executors**: ``local`` (default) is a pool of worker *processes* with
  ``workers × threads ≤ cores``; ``ray`` submits the same task function as Ray tasks
  (``num_cpus = threads``) to a local ``ray.init()`` or a cluster (``address=HOST:PORT``,
  checked with a short socket timeout first; the workspace must be on a shared filesystem).
  Both call :func:`run_task`, so the artifacts are the same.
* **Record**: ``<workspace>/sweeps/<sweep_id>/sweep.json`` (settings, expanded runs, action and
  status per run, timings, history of launches), written atomically after every change.
* **Locks**: the coordinator holds the workspace's ``sweep`` lock (a second sweep is refused)
  and its ``finetune`` lock (a run launched from the Fine-tune page queues behind the sweep);
  its workers take a per-run lock, since the coordinator budgets their cores.
* **Faults**: a worker that dies (killed, out of memory) marks its run ``interrupted``; the
  others go on; the sweep ends ``incomplete``, and the same command again finishes only what
  is missing.
"""
from metacog.sweeps.core import (EXECUTORS, FINETUNE_LOCK, HEADLINE_KEYS, REACH_TIMEOUT_S, SWEEP_LOCK, RunSpec,
                                 SweepError, SweepRecord, SweepSettings, available_cores, expand, list_sweeps,
                                 load_sweep, plan_one, runs_with_key, sweep_table, sweeps_dir)
from metacog.sweeps.executors import LocalExecutor, RayExecutor, check_ray_address, main, run_task
from metacog.sweeps.run import run_job, run_sweep, worker_budget

__all__ = ["EXECUTORS", "FINETUNE_LOCK", "HEADLINE_KEYS", "REACH_TIMEOUT_S", "SWEEP_LOCK", "RunSpec", "SweepError",
           "SweepRecord", "SweepSettings", "available_cores", "expand", "list_sweeps", "load_sweep", "plan_one",
           "runs_with_key", "sweep_table", "sweeps_dir", "LocalExecutor", "RayExecutor", "check_ray_address", "main",
           "run_task", "run_job", "run_sweep", "worker_budget"]
