"""Fine-tuning runs compared across seeds: :class:`RunData` (one evaluated run's settings,
eval.json and per-item table, always the eval split), per-run metrics, seed summaries (mean ± sd),
distances between the seeds' confidence distributions and per-item agreement across seeds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.stats import metrics
from metacog.core.settings import stable_hash
from metacog.core.workspace import Workspace, WorkspaceError, model_name  # model_name: re-exported (one definition)
from metacog.compare.distances import ks_distance, pairwise_distances, wasserstein

METRICS = {  # eval.json readout block key -> label
    "auroc": "AUROC", "ece": "ECE", "brier": "Brier", "ceiling_rate": "ceiling (≥95)", "parse_rate": "parsed",
}
STABLE_SD = 10.0  # confidence points: an item whose sd across seeds is at most this is "stable"


# ------------------------------------------------------------------------------ run data
@dataclass
class RunData:
    """One evaluated run: its settings, eval.json and per-item table (eval split)."""

    workspace: str
    run: str
    settings: dict
    eval: dict
    per_item: pd.DataFrame
    model: str

    @property
    def finetune(self) -> dict:
        """The run's fine-tuning settings (``settings["finetune"]``; empty when absent)."""
        return self.settings.get("finetune", {})

    @property
    def seed(self) -> int:
        """The run's training seed (-1 when not recorded)."""
        return int(self.finetune.get("seed", -1))

    @property
    def config(self) -> str:
        """Everything but the seed (and the workspace's model): runs that differ only by seed share it."""
        ft = {k: v for k, v in self.finetune.items() if k != "seed"}
        return stable_hash("config", self.workspace, ft, n=8)

    @property
    def config_label(self) -> str:
        """The configuration in words: model · targets · format · lr · epochs (or updates) · n_train."""
        ft = self.finetune
        ep = f"{ft.get('epochs')} ep" if ft.get("epochs") else f"{ft.get('max_updates')} upd"
        n = self.settings.get("plan", {}).get("n_train")
        return f"{self.model} · {ft.get('targets')} · {ft.get('format')} · lr {ft.get('lr'):g} · {ep} · n_train {n}"

    @property
    def short_id(self) -> str:
        """The run id's time stamp (ids are ``YYYYMMDD-HHMMSS-name``), else its last characters."""
        parts = self.run.split("-")
        return parts[1] if len(parts) >= 2 and parts[1].isdigit() else self.run[-6:]

    @property
    def label(self) -> str:
        """A short label of the run: "targets s<seed> (<short id>)"."""
        return f"{self.finetune.get('targets')} s{self.seed} ({self.short_id})"

    def values(self, readout: str, side: str = "ft") -> np.ndarray:
        """Per eval item, the readout's confidence ``[n_eval]`` (points 0-100, NaN = unparsed) of the
        fine-tuned (``side="ft"``) or base model; all NaN when the run has no such column."""
        c = f"{readout}_{side}"
        return self.per_item[c].to_numpy(float) if c in self.per_item else np.full(len(self.per_item), np.nan)

    def correct(self, side: str = "ft") -> np.ndarray:
        """Per eval item, whether the ``side`` ("ft" or "base") model answered correctly (bool
        ``[n_eval]``)."""
        return self.per_item[f"correct_{side}"].to_numpy(bool)


def load_run(ws: Workspace | str | Path, run_id: str) -> RunData:
    """An evaluated run (raises with a message if it is unknown or not evaluated)."""
    from metacog.finetune.evaluate import load_eval
    from metacog.finetune.runs import get_run

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    run = get_run(ws, run_id)
    ev, per = load_eval(run)
    if not ev or per is None:
        raise WorkspaceError(f"run {run_id} has not been evaluated: `metacog evaluate --workspace {ws.root} --run {run_id}`")
    return RunData(str(ws.root), run_id, run.settings(), ev, per, model_name(ws))


def evaluated_runs(ws: Workspace) -> list[str]:
    """Ids of the workspace's fine-tuning runs that have an evaluation (in list_runs order)."""
    from metacog.finetune.runs import list_runs

    df = list_runs(ws)
    return df[df["evaluated"]]["run"].tolist() if len(df) else []


def readouts_of(runs: list[RunData]) -> list[str]:
    """The readouts (of ``metacog.finetune.evaluate.READOUTS``, in that order) that at least one of
    ``runs`` evaluated."""
    from metacog.finetune.evaluate import READOUTS

    return [r for r in READOUTS if any(r in d.eval.get("readouts", {}) for d in runs)]


# ------------------------------------------------------------------------------ seeds
def run_metrics(runs: list[RunData], readout: str) -> pd.DataFrame:
    """One row per run: config, seed, and the fine-tuned model's metrics for ``readout``
    (from eval.json, i.e. metacog.stats.metrics on the eval split) plus accuracy and recovery."""
    rows = []
    for d in runs:
        blk = d.eval.get("readouts", {}).get(readout, {})
        ft = blk.get("ft", {})
        row = {"config": d.config, "configuration": d.config_label, "run": d.run, "seed": d.seed, "model": d.model,
               "targets": d.finetune.get("targets"), "n_eval": d.eval.get("headline", {}).get("n_eval"),
               "accuracy": d.eval.get("accuracy", {}).get("ft"), "recovery": blk.get("recovery"),
               "auroc_base": blk.get("base", {}).get("auroc"), "ece_base": blk.get("base", {}).get("ece")}
        for k in METRICS:
            row[k] = ft.get(k)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_sd(x: pd.Series) -> tuple[float, float]:
    x = pd.to_numeric(x, errors="coerce").dropna().to_numpy(float)
    if not len(x):
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def seed_summary(per_run: pd.DataFrame, cols=("auroc", "ece", "brier", "accuracy", "ceiling_rate", "recovery")) -> pd.DataFrame:
    """Per configuration (runs that differ only by seed): n seeds, and for each metric the mean,
    the sample sd (ddof=1; NaN for one seed), a ``mean ± sd`` text and each seed's value."""
    rows = []
    if per_run.empty:
        return pd.DataFrame()
    for cfg, g in per_run.groupby("config", sort=False):
        g = g.sort_values("seed")
        row = {"configuration": g["configuration"].iloc[0], "model": g["model"].iloc[0], "targets": g["targets"].iloc[0],
               "n seeds": len(g), "seeds": ", ".join(str(s) for s in g["seed"])}
        for c in cols:
            if c not in g:
                continue
            m, s = _mean_sd(g[c])
            row[f"{c}_mean"], row[f"{c}_sd"] = m, s
            row[c] = "n/a" if m != m else (f"{m:.3f} (1 seed: no sd)" if s != s else f"{m:.3f} ± {s:.3f}")
            row[f"{c} per seed"] = ", ".join(f"{sd}: {'n/a' if v is None or v != v else f'{v:.3f}'}" for sd, v in zip(g["seed"], g[c]))
        m, _ = _mean_sd(g["auroc_base"])
        row["auroc base"] = m
        rows.append(row)
    return pd.DataFrame(rows)


def distances_by_config(runs: list[RunData], readout: str, include_base: bool = True) -> pd.DataFrame:
    """KS / Wasserstein between the confidence distributions of the seeds of each configuration
    (and each seed vs the base model's on the same items)."""
    out = []
    by: dict[str, list[RunData]] = {}
    for d in runs:
        by.setdefault(d.config, []).append(d)
    for cfg, ds in by.items():
        vals = {f"seed {d.seed}": d.values(readout) for d in sorted(ds, key=lambda d: d.seed)}
        t = pairwise_distances(vals)
        t["kind"] = "seed vs seed"
        if include_base:
            base = ds[0].values(readout, "base")
            rows = [{"a": "base", "b": k, "n_a": int(np.isfinite(base).sum()), "n_b": int(np.isfinite(v).sum()),
                     "ks": ks_distance(base, v), "wasserstein": wasserstein(base, v), "kind": "base vs seed"}
                    for k, v in vals.items()]
            t = pd.concat([t, pd.DataFrame(rows)], ignore_index=True)
        t.insert(0, "configuration", ds[0].config_label)
        out.append(t)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def item_agreement(runs: list[RunData], readout: str, stable_sd: float = STABLE_SD) -> pd.DataFrame:
    """Per eval item, the fine-tuned confidence across the given runs (normally one configuration's
    seeds): one column per run, mean, sd (ddof=1), range, share correct; ``agreement`` is
    ``stable`` when sd ≤ ``stable_sd`` points, ``seed-sensitive`` otherwise (NaN-only: ``unparsed``).
    Sorted by sd, most seed-sensitive first."""
    if not runs:
        return pd.DataFrame()
    base = runs[0].per_item[["id", "question", "category"]].copy() if "question" in runs[0].per_item else runs[0].per_item[["id"]].copy()
    base = base.drop_duplicates("id").set_index("id")
    cols, corr = [], []
    for d in runs:
        name = f"s{d.seed}" if sum(x.seed == d.seed for x in runs) == 1 else f"s{d.seed} {d.short_id}"
        v = d.per_item.set_index("id")[f"{readout}_ft"] if f"{readout}_ft" in d.per_item else pd.Series(np.nan, index=d.per_item["id"])
        base[name] = v.astype(float)
        corr.append(d.per_item.set_index("id")["correct_ft"].astype(float).rename(name))
        cols.append(name)
    V = base[cols].to_numpy(float)
    with np.errstate(all="ignore"), warnings_off():
        cnt = np.isfinite(V).sum(1)
        base["mean"] = np.nanmean(V, 1)
        base["sd"] = np.where(cnt > 1, np.nanstd(V, 1, ddof=1), np.nan)
        base["range"] = np.nanmax(V, 1) - np.nanmin(V, 1)
    base["n parsed"] = cnt
    base["share correct"] = pd.concat(corr, axis=1).reindex(base.index).mean(1)
    base["agreement"] = np.where(cnt == 0, "unparsed", np.where(cnt < 2, "n/a", np.where(base["sd"] <= stable_sd, "stable", "seed-sensitive")))
    base = base.reset_index().sort_values("sd", ascending=False, na_position="last").reset_index(drop=True)
    return base


class warnings_off:
    """Context manager that silences RuntimeWarning (all-NaN means of unparsed items) inside it."""
    def __enter__(self):
        import warnings

        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a):
        self._c.__exit__(*a)


def reliability_of(d: RunData, readout: str, side: str = "ft", n_bins: int | None = None) -> tuple[pd.DataFrame, float, int]:
    """(bins, ECE, n parsed) of one run's readout on its eval items (metacog.stats.metrics definitions)."""
    bins = int(n_bins or d.eval.get("ece_bins") or 10)
    v, y = d.values(readout, side), d.correct(side)
    ok = np.isfinite(v)
    if not ok.any():
        return metrics.reliability_bins(np.array([]), np.array([], bool), bins), float("nan"), 0
    return metrics.reliability_bins(v[ok] / 100, y[ok], bins), metrics.ece(v[ok] / 100, y[ok], bins), int(ok.sum())
