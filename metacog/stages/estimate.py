"""How long will a study take on this machine? An estimate before any launch.

Per-item seconds of each stage are *measured* here: every finished stage records its seconds
and item count (``stages/<stage>.json``), so :func:`measured_rates` reads them from the
workspaces under the cache that ran the same model with the same dtype and thread count, and
takes the median. With none yet, a stated prior is used (SmolLM2-135M, float32, 2 threads on
a 2-core AMD EPYC: 0.54 s/item answers, 1.13 s/item hidden-state cache + exact readout, from
``bench/bench_study.py``; docs/PERFORMANCE.md), scaled by the thread count. The estimate says
which basis it used.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from metacog.core.settings import ModelSettings

#: seconds per item on the reference machine (see module docstring), 2 threads, float32, scaled
#: to the default study's token-forwards since issue 15 (answers 253 -> 91, activations 577 -> 319
#: per item: inline only, shared prompt prefix; bench/bench_study.py)
PRIOR_S_PER_ITEM = {"answers": round(0.54 * 91 / 253, 2), "activations": round(1.13 * 319 / 577, 2)}
PRIOR_PROBES_S = 5.0
PRIOR_LOAD_S = 6.0


@dataclass
class Estimate:
    """A run-time estimate: ``seconds`` in total (model load included), ``per_stage`` seconds by stage,
    and its ``basis`` (measured on this machine, or the built-in prior)."""
    seconds: float  # total, model load included
    per_stage: dict  # stage -> seconds
    basis: str  # "measured on this machine (k runs)" or "prior (…)"

    def text(self) -> str:
        """The estimate in words: "about 3.5 min (basis)" (seconds below 90 s)."""
        s = self.seconds
        t = f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"
        return f"about {t} ({self.basis})"


def _key(m: ModelSettings) -> tuple:
    return (m.model, m.dtype, m.device)


def measured_rates(model: ModelSettings, base: Path | None = None) -> dict[str, list[float]]:
    """Per-item seconds of ``answers`` and ``activations`` and the seconds of ``probes``, from
    finished stages of workspaces under ``base`` (default: the cache's) that ran the same model,
    dtype and device, scaled to ``model.threads``."""
    from metacog.core.workspace import WorkspaceError, list_workspaces

    out: dict[str, list[float]] = {"answers": [], "activations": [], "probes": []}
    for ws in list_workspaces(base):
        try:
            m, _ = ws.settings()
        except WorkspaceError:
            continue
        if _key(m) != _key(model):
            continue
        scale = m.threads / max(1, model.threads)  # fewer threads here: slower (compute-bound)
        for st in out:
            rec = ws.stage_record(st) or {}
            sec, n = rec.get("seconds"), rec.get("n")
            if not isinstance(sec, (int, float)) or sec <= 0:
                continue
            if st == "probes":
                out[st].append(float(sec) * scale)
            elif isinstance(n, int) and n > 0:
                out[st].append(float(sec) / n * scale)
    return out


def estimate_study(model: ModelSettings, n_items: int, stages=("answers", "activations", "probes"),
                   base: Path | None = None) -> Estimate:
    """Seconds a study of ``n_items`` with ``stages`` will take here (see module docstring)."""
    rates = measured_rates(model, base)
    per: dict[str, float] = {}
    k = min((len(rates[s]) for s in ("answers", "activations") if s in stages or s == "answers"), default=0)
    for st in ("answers", "activations"):
        if st == "answers" or st in stages or "probes" in stages:
            r = statistics.median(rates[st]) if rates[st] else PRIOR_S_PER_ITEM[st] * 2 / max(1, model.threads)
            per[st] = r * n_items
    if "probes" in stages:
        per["probes"] = statistics.median(rates["probes"]) if rates["probes"] else PRIOR_PROBES_S
    basis = (f"measured on this machine: median of {k} finished run{'s' if k != 1 else ''} with this model and dtype"
             if k else "not measured here yet: a prior from a 2-core CPU in float32")
    return Estimate(seconds=sum(per.values()) + PRIOR_LOAD_S, per_stage=per, basis=basis)
