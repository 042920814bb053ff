"""Steering (representation engineering): add α·σ_d·d̂ to the residual stream and read what
the model's confidence does.

Directions (one unit vector ``d̂`` per hidden-state index h, all computed from the **train
split** only; docs/STEERING.md):

- ``probe``: the probe's weight vector ``coef[h, position]`` (``probes/coef.npy``; the probe is
  fitted on the raw residual stream, p = sigmoid(x·coef + b), so it is already in
  residual-stream units), normalised;
- ``mean-diff``: mean(correct) − mean(incorrect) of the train states at (h, position);
- ``random``: a seeded Gaussian direction (control). *Matched norm*: it is applied with the
  probe direction's σ, so its steering vector has the same length as the probe's at every α;
- ``probe-minus-type``: the probe direction with the question-type subspace projected out
  (the span of the train-split category mean differences, mean(category) − mean(all));
  orthogonal to every category difference (control: does steering move confidence or type?).

σ_d = standard deviation (ddof = 1) of the train states projected on d̂, so α is in units of
the residual stream's spread along d. Intervention (:func:`steer_hook`): a forward hook on the
model's own forward adds ``α·σ·d̂`` at hidden-state index h (0 = input of block 0, h ≥ 1 =
output of block h−1) either at the confidence slot only (``where="slot"``) or at every
position from the first answer token on, including the tokens the readout scores or the
model generates after the prompt (``where="from-answer"``).

Readouts per (direction, layer, α) on the chosen items: the exact 0–100 distribution
(:func:`metacog.readout.values.read_values`: E[v], argmax, other), the greedy verbal confidence
(optional), and for ``from-answer`` the answer regenerated under steering (changed? still
correct?). Shifts are per item against the same item's unsteered readout (α = 0).

Statistics (:func:`summarize`; the item is the unit, docs/SCIENCE.md "Statistics of
steering"): per cell the mean shift with a percentile bootstrap CI over items; the paired
contrast (direction − random) per item at each (layer, α), sign-flip test across items, Holm
over the layers × α grid of one direction; per layer the per-item dose–response slope
(OLS of shift on α) of the direction minus random's, same test, Holm over layers.

Artifacts: ``steering/<id>/`` — ``plan.json`` (spec, items, dtype and device, directions' σ and norms),
``directions.npy`` float32 ``[n_directions, n_layers, d]``, ``chunks/*.parquet`` (finished
work, resumable), ``results.parquet`` (one row per item × direction × layer × α),
``steering.json`` (tests).


Modules: :mod:`metacog.steering.directions` (the directions and σ), :mod:`metacog.steering.intervene`
(the hooks and the readouts under them), :mod:`metacog.steering.run` (spec, plan, resumable run, reading),
:mod:`metacog.steering.summary` (the statistics), plus ``cli`` and ``plots``."""
from __future__ import annotations

from metacog.steering.directions import (
    DIRECTIONS, INLINE_POSITIONS, unit, probe_direction, mean_diff_direction, random_direction, type_subspace,
    project_out, sigma_along, train_states, load_probe, compute_directions,
)
from metacog.steering.intervene import (
    WHERE, hook_module, steer_hook, masks_for, steered_readout, steered_answers, probe_conditioned,
)
from metacog.steering.summary import dose_slope, summarize
from metacog.steering.run import (
    DIR, VERSION, SteerSpec, parse_layers, model_runtime, plan, run_steering, resummarize, list_sweeps,
    load_results, run_job,
)

__all__ = [
    "DIRECTIONS", "INLINE_POSITIONS", "unit", "probe_direction", "mean_diff_direction", "random_direction",
    "type_subspace", "project_out", "sigma_along", "train_states", "load_probe", "compute_directions",
    "WHERE", "hook_module", "steer_hook", "masks_for", "steered_readout", "steered_answers",
    "probe_conditioned", "dose_slope", "summarize", "DIR", "VERSION", "SteerSpec", "parse_layers", "model_runtime", "plan",
    "run_steering", "resummarize", "list_sweeps", "load_results", "run_job",
]
