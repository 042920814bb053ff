"""Comparisons across fine-tuning runs (seeds, targets, controls) and across models (workspaces).

Pure functions of the runs' evaluation artifacts (``runs/<id>/eval.json`` + ``per_item.parquet``,
always the **eval split**) and of the workspaces' ``summary.json``; the Compare page, the HTML
report and the CLI call them. Every metric comes from :mod:`metacog.stats.metrics` (through eval.json
or directly); the two distances between distributions are scipy's (:mod:`metacog.compare.distances`):

* Kolmogorov–Smirnov: ``D = sup_x |F_a(x) − F_b(x)|`` over the empirical CDFs;
* Wasserstein-1 (earth mover's): ``W = ∫ |F_a(x) − F_b(x)| dx`` (in confidence points, 0–100).

Both ignore NaN (unparsed) values and are NaN when either side has none.
"""
from metacog.compare.distances import ks_distance, pairwise_distances, wasserstein
from metacog.compare.models import model_row, models_table, probe_depth_table
from metacog.compare.runs import (METRICS, STABLE_SD, RunData, distances_by_config, evaluated_runs, item_agreement,
                                  load_run, model_name, readouts_of, reliability_of, run_metrics, seed_summary,
                                  warnings_off)

__all__ = ["METRICS", "STABLE_SD", "RunData", "distances_by_config", "evaluated_runs", "item_agreement", "load_run",
           "model_name", "readouts_of", "reliability_of", "run_metrics", "seed_summary", "warnings_off", "ks_distance",
           "pairwise_distances", "wasserstein", "model_row", "models_table", "probe_depth_table"]
