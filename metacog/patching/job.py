"""A patching grid as an app job (:mod:`metacog.core.jobs`): in a background thread or as its
own process, one at a time per workspace, with progress and a cooperative stop."""
from __future__ import annotations

from metacog.core.jobs import Job, JobKind
from metacog.patching.plan import GridPlan, plan_grid
from metacog.patching.spec import PatchSpec
from metacog.patching.run import run_grid, grid_id_for


class GridJob(Job):
    """A grid running in a background thread (see :mod:`metacog.core.jobs`); ``summary`` is run_grid's."""

    def __init__(self, ws, plan: GridPlan, method: str = "fast", max_batch: int = 32):
        self.ws, self.plan, self.method, self.max_batch = ws, plan, method, max_batch
        self.grid_id = grid_id_for(plan, method)
        super().__init__("patching", str(ws.root), lambda progress, should_stop: run_grid(
            ws, plan, progress, should_stop, method, max_batch), label=f"patching grid {self.grid_id}")
        self.total = plan.n_units()

    @property
    def summary(self):
        """:func:`~metacog.patching.run.run_grid`'s summary (``patching.json``) once the job has
        finished, else None."""
        return self.result


GRID_JOBS = JobKind("patching", "a patching grid")


def start_grid_job(ws, plan: GridPlan, method: str = "fast", max_batch: int = 32) -> GridJob:
    """Start ``plan`` in the background; refuses while another grid runs in this process."""
    return GRID_JOBS.start(ws.root, GridJob(ws, plan, method, max_batch))


def start_grid_process(ws, plan_args: dict, method: str = "fast", max_batch: int = 32, grid_id: str = "") -> Job:
    """Start a grid as its own process (:mod:`metacog.core.jobs`): ``plan_args`` are
    :func:`plan_grid`'s arguments (``source``, ``target``, ``spec`` as a dict, ``n_pairs``,
    ``by``, ``split``, ``source_correct``, ``target_correct``, ``pool``); the process loads the
    model, plans the same grid (same id) and runs it. Refuses while another grid runs."""
    from metacog.core.jobs import ProcessJob

    spec = {**plan_args, "method": method, "max_batch": int(max_batch), "grid_id": grid_id}
    job = ProcessJob("patching", ws.root, spec, label=f"patching grid {grid_id}".strip())
    job.grid_id = grid_id
    return GRID_JOBS.start(ws.root, job)


def run_job(ws, spec: dict, progress, should_stop) -> dict:
    """A patching grid as an app job in its own process: plan (see :func:`start_grid_process`), then run."""
    from metacog.model.loading import loader_from_env
    from metacog.core.settings import ModelSettings, from_dict, to_dict

    ms, _ = ws.settings()
    progress(0, 0, "loading the model")
    lm = loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(spec.get("threads") or ms.threads)}))
    pspec = PatchSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["spec"].items()})
    plan = plan_grid(ws, lm, spec["source"], spec["target"], pspec, n_pairs=int(spec.get("n_pairs") or 10),
                      by=spec.get("by") or "auto", split=spec.get("split") or "all",
                      source_correct=spec.get("source_correct") or "any", target_correct=spec.get("target_correct") or "any",
                      pool=spec.get("pool"))
    return run_grid(ws, plan, progress, should_stop, spec.get("method") or "fast", int(spec.get("max_batch") or 32))


def get_grid_job(ws) -> GridJob | None:
    """The patching job of this workspace in this process (running or finished), or None."""
    return GRID_JOBS.get(ws.root)


def running_grid_job() -> GridJob | None:
    """The patching job running in this process (any workspace), or None."""
    return GRID_JOBS.running()
