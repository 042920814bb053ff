"""Every confidence method side by side, on the same items with the same metrics.

Methods are registered in :mod:`metacog.methods.registry`, one small module each (imported
here). ``run_methods(ws, "all", MethodSettings())`` computes them (fresh ones are skipped,
long ones resume); ``methods_table(ws)`` gives one row per method and post-hoc calibrated
variant on the eval split. See docs/METHODS.md.
"""
from metacog.methods import (brier_tuning, calibration_tuning, p_true, probe, probe_steering, probe_targeted,  # noqa: F401 (register)
               relative, self_consistency, verbal)
from metacog.methods.calibrate import KINDS as POSTHOC_KINDS
from metacog.methods.calibrate import posthoc
from metacog.methods.registry import Method, MethodResult, all_methods, get, names, register, resolve, unavailable
from metacog.methods.run import make_context, run_methods
from metacog.methods.settings import MethodSettings, MethodSettingsError
from metacog.methods.store import load_scores, meta, stale_methods, stored_methods
from metacog.methods.table import eval_scores, methods_table

__all__ = ["Method", "MethodResult", "MethodSettings", "MethodSettingsError", "POSTHOC_KINDS", "all_methods", "eval_scores", "unavailable",
           "get", "load_scores", "make_context", "meta", "methods_table", "names", "posthoc", "register", "resolve",
           "run_methods", "stale_methods", "stored_methods"]
