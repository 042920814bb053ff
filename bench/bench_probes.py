"""Benchmark of metacog.stages.probes.fit_probes on activation-sized synthetic data.

Default problem: 1,500 items (60/20/20 train/calibration/eval), 31 layers x 4 positions,
d = 576, 5-fold CV over C in (1e-3, 1e-2, 1e-1, 1) = 124 probes. Goal: < 5 s on 2 cores.

    .venv/bin/python bench/bench_probes.py [--threads 2] [--repeat 2] [--sklearn 2]

Prints the wall time of each repeat, the thread count, the load average (the timing is only
meaningful on an otherwise idle machine), solver statistics, and with ``--sklearn K`` the
time and agreement of sklearn's LogisticRegressionCV on K of the probes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metacog.stages.probes import fit_probes  # noqa: E402
from metacog.testing import make_synthetic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--layers", type=int, default=31)
    ap.add_argument("--positions", type=int, default=4)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sklearn", type=int, default=0, help="also time sklearn LogisticRegressionCV on this many probes")
    a = ap.parse_args()

    t = time.perf_counter()
    X, y = make_synthetic(n=a.n, n_layers=a.layers, n_positions=a.positions, d=a.d, seed=0)
    rng = np.random.default_rng(1)
    n_tr, n_ca = int(0.6 * a.n), int(0.2 * a.n)
    split = np.array(["train"] * n_tr + ["calibration"] * n_ca + ["eval"] * (a.n - n_tr - n_ca))[rng.permutation(a.n)]
    print(f"data: X {X.shape} {X.dtype}, {a.layers * a.positions} probes, train {n_tr}, "
          f"made in {time.perf_counter() - t:.1f} s")
    print(f"threads: {a.threads} (cpus visible: {len(os.sched_getaffinity(0))}); "
          f"load average before: {os.getloadavg()[0]:.2f}")
    times = []
    res = None
    for i in range(a.repeat):
        t, c = time.perf_counter(), time.process_time()
        res = fit_probes(X, y, split, threads=a.threads)
        times.append(time.perf_counter() - t)
        cpu = time.process_time() - c
        info = res.info
        print(f"run {i + 1}: {times[-1]:.2f} s wall, {cpu:.2f} s CPU  (solver {info['fit_seconds']:.2f} s; Newton iterations "
              f"{info['newton_iterations']}, CG iterations {info['cg_iterations']}, by C stage {info['cg_by_stage']}, "
              f"polish {info['cg_polish']}; not converged {info['not_converged']}; chunk {info['chunk']}; "
              f"nested {info.get('nested')}, selection null {info.get('null_seconds')} s)")
    print(f"fit_probes: best {min(times):.2f} s over {a.repeat} run(s) with {a.threads} thread(s); "
          f"load average after: {os.getloadavg()[0]:.2f}")
    m = res.metrics
    print(f"chosen C: {m['C'].value_counts().sort_index().to_dict()}")
    b = res.best
    print(f"best: layer {b['layer']} position {b['position']} C {b['C']} cv_auroc {b['cv_auroc']:.3f} "
          f"eval auroc {b['auroc']:.3f} [{b['auroc_lo']:.3f}, {b['auroc_hi']:.3f}] ece {b['ece']:.3f}")

    if a.sklearn:
        warnings.filterwarnings("ignore", category=FutureWarning)
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        tr = split == "train"
        ev = split == "eval"
        cs = list(res.info["Cs"])
        t = time.perf_counter()
        worst = 0.0
        for layer in np.linspace(1, a.layers - 1, a.sklearn).astype(int):
            x = X[:, layer, a.positions - 1].astype(np.float64)
            cv = StratifiedKFold(5, shuffle=True, random_state=0)
            pipe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=cs, cv=cv, scoring="roc_auc", max_iter=1000))
            pipe.fit(x[tr], y[tr])
            p = pipe.predict_proba(x[ev])[:, 1]
            C_sk = float(pipe[-1].C_[0])
            row = m[(m.layer == layer) & (m.position == a.positions - 1)].iloc[0]
            same = "same C" if C_sk == row["C"] else f"C sklearn {C_sk} vs {row['C']}"
            if C_sk == row["C"]:
                worst = max(worst, float(np.abs(p - res.oof[ev, layer, a.positions - 1]).max()))
            print(f"  layer {layer}: {same}")
        dt = time.perf_counter() - t
        print(f"sklearn LogisticRegressionCV (scaler inside the pipeline, not per fold): {dt:.1f} s for {a.sklearn} "
              f"probes = {dt / a.sklearn:.2f} s/probe (~{dt / a.sklearn * a.layers * a.positions:.0f} s for all); "
              f"max |p - p_sklearn| on eval where C agrees: {worst:.1e}")


if __name__ == "__main__":
    main()
