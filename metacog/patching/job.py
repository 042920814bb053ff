"""A patching grid as an app job (:mod:`metacog.core.jobs`): in a background thread or as its
own process, one at a time per workspace, with progress and a cooperative stop."""
from __future__ import annotations

from metacog.core.jobs import Job, JobKind
from metacog.patching.plan import PatchSpec, SweepPlan, plan_sweep
from metacog.patching.run import run_sweep, sweep_id_for


class SweepJob(Job):
    """A sweep running in a background thread (see :mod:`metacog.core.jobs`); ``summary`` is run_sweep's."""

    def __init__(self, ws, plan: SweepPlan, method: str = "fast", max_batch: int = 32):
        self.ws, self.plan, self.method, self.max_batch = ws, plan, method, max_batch
        self.sweep_id = sweep_id_for(plan, method)
        super().__init__("patching", str(ws.root), lambda progress, should_stop: run_sweep(
            ws, plan, progress, should_stop, method, max_batch), label=f"patching sweep {self.sweep_id}")
        self.total = plan.n_units()

    @property
    def summary(self):
        return self.result


SWEEP_JOBS = JobKind("patching", "a patching sweep")


def start_sweep_job(ws, plan: SweepPlan, method: str = "fast", max_batch: int = 32) -> SweepJob:
    """Start ``plan`` in the background; refuses while another sweep runs in this process."""
    return SWEEP_JOBS.start(ws.root, SweepJob(ws, plan, method, max_batch))


def start_sweep_process(ws, plan_args: dict, method: str = "fast", max_batch: int = 32, sweep_id: str = "") -> Job:
    """Start a sweep as its own process (:mod:`metacog.core.jobs`): ``plan_args`` are
    :func:`plan_sweep`'s arguments (``source``, ``target``, ``spec`` as a dict, ``n_pairs``,
    ``by``, ``split``, ``source_correct``, ``target_correct``, ``pool``); the process loads the
    model, plans the same sweep (same id) and runs it. Refuses while another sweep runs."""
    from metacog.core.jobs import ProcessJob

    spec = {**plan_args, "method": method, "max_batch": int(max_batch), "sweep_id": sweep_id}
    job = ProcessJob("patching", ws.root, spec, label=f"patching sweep {sweep_id}".strip())
    job.sweep_id = sweep_id
    return SWEEP_JOBS.start(ws.root, job)


def run_job(ws, spec: dict, progress, should_stop) -> dict:
    """A patching sweep as an app job in its own process: plan (see :func:`start_sweep_process`), then run."""
    from metacog.model.loading import loader_from_env
    from metacog.core.settings import ModelSettings, from_dict, to_dict

    ms, _ = ws.settings()
    progress(0, 0, "loading the model")
    lm = loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(spec.get("threads") or ms.threads)}))
    pspec = PatchSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["spec"].items()})
    plan = plan_sweep(ws, lm, spec["source"], spec["target"], pspec, n_pairs=int(spec.get("n_pairs") or 10),
                      by=spec.get("by") or "auto", split=spec.get("split") or "all",
                      source_correct=spec.get("source_correct") or "any", target_correct=spec.get("target_correct") or "any",
                      pool=spec.get("pool"))
    return run_sweep(ws, plan, progress, should_stop, spec.get("method") or "fast", int(spec.get("max_batch") or 32))


def get_sweep_job(ws) -> SweepJob | None:
    return SWEEP_JOBS.get(ws.root)


def running_sweep_job() -> SweepJob | None:
    return SWEEP_JOBS.running()
