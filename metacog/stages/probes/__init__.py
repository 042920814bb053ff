"""Per-(layer, position) logistic probes of correctness with cross-fitted predictions.

What is fitted, exactly
-----------------------
For every probed (layer, position), on the rows whose split is ``"train"``:

* features are standardised with the mean and population standard deviation (ddof=0) of the
  rows the model is fitted on (inside each fold when cross-fitting; a feature that is constant on
  those rows gets scale 1, as sklearn's ``StandardScaler`` does);
* an L2 logistic regression with an unpenalised intercept minimises
  ``½‖w‖² + C · Σ logloss`` (sklearn's C convention, identical to
  ``LogisticRegression(C=C)`` on the standardised features);
* C of the full-train probe is chosen from ``Cs`` by stratified K-fold cross-validation on the
  train split only (``StratifiedKFold(folds, shuffle=True, random_state=seed)``; the score is the
  mean over folds of the held-out AUROC, as sklearn's ``LogisticRegressionCV(scoring="roc_auc")``
  does; ties go to the smaller C). Eval and calibration rows (and their labels) are never
  looked at before every choice is made.
* Nested cross-fitting (K >= 3 and more than one C): the model that predicts outer fold f is
  fitted at its own C_f, chosen by an inner CV on fold f's training rows only -- the inner folds
  are the other K − 1 outer folds, so the inner model for (f, g) is fitted without folds f and g
  (one model per pair of folds, shared by (f, g) and (g, f)). The train rows' out-of-fold
  predictions (``oof``, the fine-tuning targets) and ``cv_auroc`` therefore carry no
  optimism from choosing C. With K = 2 or one C there is nothing to nest (C_f = the chosen C).

Outputs (``ProbeResults``)
--------------------------
* ``oof[row, layer, position]`` (float32) = p(correct): for train rows the prediction of the
  fold model that did *not* see the row (at its nested C_f; never in-sample, SCIENCE.md bug 3);
  for calibration and eval rows the prediction of the probe refitted on all train rows at the
  chosen C; NaN for rows in no split and for layers that were not probed.
* ``metrics``: one row per (layer, position) (:data:`METRIC_COLUMNS`): ``layer, position, C``
  (of the full-train probe), ``cv_auroc`` (nested cross-fitted train AUROC: mean over outer folds
  of fold f's model at C_f on fold f) and, on the eval split, ``auroc, ece, brier, aurc`` each
  with ``_lo``/``_hi`` (one stratified bootstrap, :func:`metacog.stats.metrics.bootstrap_metrics_batch`;
  ECE bins :data:`metacog.stats.metrics.ECE_BINS_DOC`), ``ece_null_mean, ece_null_p95``
  (:func:`metacog.stats.metrics.ece_null`), ``n_train, n_eval``.
* ``best``: the (layer, position) with the highest ``cv_auroc`` (train only, never eval), its
  eval metrics, and ``selection_null`` (:func:`selection_null`: is the best of all cells better
  than the best of the same selection under shuffled labels?).

How it is fast
--------------
All problems of a chunk of probes (≤ 4 probes × (K folds + the full refit) × 2 values of C) are
solved at once in float32 torch by a batched truncated-Newton method (preconditioned conjugate
gradients on Hessian-vector products: two batched matrix products each), walking the C grid
from the strongest regularisation, two Cs per stage, each stage warm-started from the previous
one. The preconditioner is each probe's top-``rank`` eigenvectors of the train covariance
(randomised subspace iteration) plus a scalar for the rest, scaled by the current mean Hessian
weight. Fold-wise standardisation is exact and costs nothing extra: on features standardised with
the train statistics, fold f's model is the same one with the penalty ``½ Σ_j s_fj² v_j²``
(s_fj = the fold's standard deviation of feature j) and a shifted intercept.

Stopping rule: a problem stops when its Newton decrement² (≈ 2 × the gap to the optimum of the
objective divided by C·n) is below ``cv_tol`` (1e-5) while choosing C (on the benchmark problem the same C is chosen for all 124 probes as at 1e-6, CV AUROCs within 6e-5); the chosen C is then
polished to ``tol`` (1e-8). At that point predicted probabilities agree with a converged float64
sklearn fit to ~2e-4 in the worst case seen (C = 1, d = 576, 720 rows), ~1e-5 typically.
Problems still above the threshold after ``max_newton`` iterations are counted in
``info["not_converged"]``.
"""
from __future__ import annotations

from metacog.stages.probes.fit import fit_probes
from metacog.stages.probes.inputs import ActivationSource, stratified_folds
from metacog.stages.probes.null import SELECTION_NULL_DOC, selection_null
from metacog.stages.probes.results import DEFAULT_CS, METRIC_COLUMNS, PROBES_VERSION, ProbeResults

__all__ = ["PROBES_VERSION", "DEFAULT_CS", "METRIC_COLUMNS", "SELECTION_NULL_DOC", "ProbeResults", "fit_probes",
           "selection_null", "stratified_folds", "ActivationSource"]
