"""Batch invariance of every stage that runs the model: is an item's (or a cell's) result the
same whatever else shares its batch or run?

    PYTHONPATH=. .venv/bin/python bench/bench_invariance_stages.py [--dtypes float32 bfloat16] [--threads 2]
        [--stages two-pass mc patching steering methods finetune] [--limits 10 40] [--batch-sizes 4 16]

``bench/bench_invariance.py`` measures the answers stage, the inline 0-100 readout and the
hidden-state cache. This bench measures, per ``--dtypes`` entry, on the embedded default model
(``ModelSettings(model="default")``; ``bfloat16`` on a CPU runs ragged attention,
:mod:`metacog.model.ragged`), each other stage twice on shared units with different batch
compositions:

- ``two-pass``: the study with ``StudySettings(two_pass=True)`` (answers + hidden-state cache
  and both 0-100 readouts), ``--limit A`` with batch a vs ``--limit B`` with batch b (the A items
  are the first A of the same seeded shuffle): two-pass reply texts (and answer texts),
  two-pass (and inline) E[v] and P(0..100), cached states at every position and layer;
- ``mc``: multiple-choice scoring of ``world-facts-mc`` through the answers stage's own code
  (:func:`metacog.stages.answers.answer_items`): each of the first ``--mc-alone`` items alone
  vs among ``--mc-items`` items in batches of ``--batch-sizes``'s second value: chosen option,
  inline verbal continuation, per-option log-likelihoods after the item prompt and the neutral
  prompt;
- ``patching``: item → item pairs (:func:`metacog.patching.patch_pair`, the fast path):
  every pair in order with ``max_batch`` 32 vs in reverse order with ``max_batch`` 3 (so the
  last pair is computed alone, before any other): each cell's patched E[v], P(0..100),
  argmax and greedy-answer flags, and the pairs' clean readouts;
- ``steering``: :func:`metacog.steering.run.run_steering` on the study's workspace (``from-answer``,
  one layer, probe + random, α = ±4): the first ``--steer-alone`` eval items one per chunk
  (each item alone) vs every eval item in one chunk: E[v], argmax and other mass, the greedy
  verbal text and the regenerated answer per (item, direction, layer, α);
- ``methods``: :func:`metacog.methods.run.run_methods` for the methods that run the model and
  batch items — ``p_true``, ``self_consistency`` (k seeded samples per item from one shared
  prefill, ``repeat=k``) and ``probe_steering`` — on 3 calibration + 3 eval items with
  ``batch_size`` 1 vs the whole pool with ``batch_size`` 16 (``verbal_*``/``ev_*`` only read
  the study's tables: no model);
- ``finetune``: :func:`metacog.finetune.evaluate.evaluate_adapter` of a random LoRA adapter
  (``tests/finetune_helpers.make_adapter``) on the study's eval split, with the workspace's
  batch size 2 vs 16: the fine-tuned model's answers, two-pass replies, E[v] and cached states.

Per stage and dtype it prints the shared units compared, how many discrete results differ
(texts, parsed verbal values, chosen options, argmax, greedy tokens, samples), the largest |Δ|
of each continuous result (with the unit where it occurred), whether everything is
bit-identical, and the seconds; then a summary table (largest |ΔE[v]| in points, and the
largest |Δ| of the other continuous results) and a verdict table (stage × dtype: ``exact`` =
bit-identical, ``tol`` = within docs/SCIENCE.md's tolerance, ``no`` = beyond it). The fine-tune
stage also prints the dtype PEFT loads the LoRA weights in and whether a LoRA layer's rows
depend on the product's row count (random inputs). The study the steering, methods and
fine-tune stages read (``--limits``'s second value, ``--batch-sizes``'s second value, two-pass
and probes) is built once per dtype and timed as ``setup``.

This is the measurement docs/SCIENCE.md "Batch invariance" asks for before ``auto`` may pick
bfloat16 on CPUs with bf16 units (docs/PERFORMANCE.md "Precision per stage").
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_study import cpu_name  # noqa: E402

STAGES = ("two-pass", "mc", "patching", "steering", "methods", "finetune")
NEEDS_STUDY = {"two-pass", "steering", "methods", "finetune"}


# ------------------------------------------------------------------------------------- comparison
class Cmp:
    """Differences between two runs on shared units: discrete results (equal or not) and the
    largest |Δ| of each continuous quantity, with the unit where it occurred."""

    def __init__(self):
        self.discrete: dict[str, list] = {}  # quantity -> units that differ
        self.n_discrete: dict[str, int] = {}  # quantity -> units compared
        self.cont: dict[str, tuple[float, object]] = {}  # quantity -> (max |Δ|, unit)
        self.exact = True
        self.n_units = 0  # shared units compared (items, cells, ...): set by the stage

    def units(self, x: pd.DataFrame, y: pd.DataFrame):
        """``(name, row of x, row of y)`` for every unit (index entry) of ``x``, looked up in ``y``;
        counts them as this comparison's units."""
        self.n_units = len(x)
        for u in x.index:
            yield "/".join(str(v) for v in u), x.loc[u], y.loc[u]

    def same(self, name: str, unit, a, b) -> None:
        self.n_discrete[name] = self.n_discrete.get(name, 0) + 1
        eq = (a == b) or (_isnan(a) and _isnan(b))
        if not eq:
            self.discrete.setdefault(name, []).append((unit, a, b))
            self.exact = False

    def close(self, name: str, unit, a, b) -> None:
        """Continuous values (scalars or arrays): max |Δ| (NaN in both places counts as equal)."""
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if x.shape != y.shape:
            self.discrete.setdefault(f"{name} (shape)", []).append((unit, x.shape, y.shape))
            self.exact = False
            return
        both_nan = np.isnan(x) & np.isnan(y)
        d = np.where(both_nan, 0.0, np.abs(x - y))
        d = np.where(np.isnan(d), np.inf, d)  # NaN on one side only
        m = float(d.max()) if d.size else 0.0
        if m > 0 or not np.array_equal(np.where(both_nan, 0, x), np.where(both_nan, 0, y)):
            self.exact = False
        if name not in self.cont or m > self.cont[name][0]:
            self.cont[name] = (m, unit)

    def within_tolerance(self) -> bool:
        """docs/SCIENCE.md "Batch invariance": texts and other discrete results identical, E[v]
        (points of 100) within 0.01, cached states within 1e-3 of their scale; probabilities,
        scores in [0, 1] and log-likelihoods within 1e-4."""
        if self.discrete:
            return False
        for name, (m, _) in self.cont.items():
            tol = 0.01 if "points" in name else 1e-3 if "state" in name else 1e-4
            if not m <= tol:
                return False
        return True

    def n_differ(self) -> int:
        """Units with at least one differing discrete result."""
        return len({u for v in self.discrete.values() for u, *_ in v})

    def lines(self) -> list[str]:
        out = []
        for name, n in self.n_discrete.items():
            bad = self.discrete.get(name, [])
            s = f"    {name}: {len(bad)} of {n} differ"
            if bad:
                u, a, b = bad[0]
                s += f" (first: {u}: {_short(a)!r} vs {_short(b)!r})"
            out.append(s)
        for name, bad in self.discrete.items():
            if name not in self.n_discrete:
                out.append(f"    {name}: {len(bad)} differ (first: {bad[0]})")
        for name, (m, u) in self.cont.items():
            out.append(f"    max |Δ {name}| {m:.4g}" + (f"  at {u}" if m > 0 else ""))
        return out


def _isnan(x) -> bool:
    try:
        return isinstance(x, float) and math.isnan(x)
    except TypeError:
        return False


def _short(x, n: int = 60):
    s = str(x)
    return s if len(s) <= n else s[:n] + "…"


def _states(ws) -> dict:
    from metacog.stages.activations import load_states

    return {p: np.asarray(a, dtype=np.float32) for p, a in load_states(ws).items()}


def _study_view(ws):
    """(per-item table by id: items + answers + readout, states, two-pass distributions)."""
    from metacog.stages.activations import load_distributions
    from metacog.stages.study import load_items

    items = load_items(ws)
    df = items[["row", "id"]].merge(ws.read_parquet("answers.parquet").drop(columns=["id"]), on="row").merge(
        ws.read_parquet("readout.parquet"), on="row")
    dist = {m: np.asarray(load_distributions(ws, m)) for m in ("inline", "two-pass")
            if ws.path("activations", f"values_{'inline' if m == 'inline' else 'two_pass'}.npy").exists()}
    return df.set_index("id"), _states(ws), dist


def compare_study(c: Cmp, a, b, ids=None) -> None:
    """Answers, two-pass replies, readouts and cached states of the items both study views share."""
    (da, sa, pa), (db, sb, pb) = a, b
    shared = [i for i in (ids if ids is not None else da.index) if i in db.index and i in da.index]
    c.n_units += len(shared)
    for i in shared:
        ra, rb = da.loc[i], db.loc[i]
        for col in ("answer_text", "text_two_pass", "chosen_index"):
            if col in ra.index:
                c.same(col, i, ra[col], rb[col])
        for col in ("verbal_inline", "verbal_two_pass"):  # parsed from the texts: a discrete result
            if col in ra.index:
                c.same(col, i, float(ra[col]), float(rb[col]))
        for col in ("ev_two_pass", "ev_inline"):
            if col in ra.index:
                c.close(f"{col} (points)", i, ra[col], rb[col])
        for m, arr in pa.items():
            if m in pb:
                c.close(f"P(0..100) {m}", i, arr[int(ra["row"])], pb[m][int(rb["row"])])
        if ra["answer_text"] == rb["answer_text"]:  # states are comparable where the answer is the same
            for p in sa:
                x, y = sa[p][int(ra["row"])], sb[p][int(rb["row"])]
                scale = np.abs(x).max(axis=-1, keepdims=True) + 1e-6
                c.close("state / scale", f"{i} {p}", x / scale, y / scale)


# ------------------------------------------------------------------------------------- stages
def build_study(d, lm, a, dtype) -> object:
    """The study the steering, methods and fine-tune stages read (and the larger two-pass run)."""
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace
    from metacog.stages.study import run_study

    run_study(d, ModelSettings(dtype=dtype, threads=a.threads),
              StudySettings(limit=a.limits[1], batch_size=a.batch_sizes[1], two_pass=True, seed=a.seed),
              stages=("answers", "activations", "probes"), lm=lm)
    return Workspace(d)


def stage_two_pass(lm, a, dtype, ws_big, tmp) -> Cmp:
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace
    from metacog.stages.study import run_study

    d = tmp / "two-pass-small"
    run_study(d, ModelSettings(dtype=dtype, threads=a.threads),
              StudySettings(limit=a.limits[0], batch_size=a.batch_sizes[0], two_pass=True, seed=a.seed),
              stages=("answers", "activations"), lm=lm)
    c = Cmp()
    compare_study(c, _study_view(Workspace(d)), _study_view(ws_big))
    return c


def stage_mc(lm, a, dtype, tmp) -> Cmp:
    from metacog.core.settings import StudySettings
    from metacog.data import load_dataset
    from metacog.stages.answers import answer_items

    items = load_dataset("world-facts-mc", limit=a.mc_items, seed=a.seed).reset_index(drop=True)
    items["row"] = np.arange(len(items))
    st = StudySettings(dataset="world-facts-mc", batch_size=a.batch_sizes[1], seed=a.seed)
    together = answer_items(lm, items, st).set_index("id")
    c = Cmp()
    c.n_units = min(a.mc_alone, len(items))
    for k in range(min(a.mc_alone, len(items))):
        one = answer_items(lm, items.iloc[[k]], replace(st, batch_size=1)).set_index("id")
        i = items["id"].iloc[k]
        x, y = one.loc[i], together.loc[i]
        c.same("chosen option", i, int(x["chosen_index"]), int(y["chosen_index"]))
        c.same("answer_text (option + inline verbal)", i, x["answer_text"], y["answer_text"])
        c.close("option log-lik (nats)", i, list(x["option_loglik"]), list(y["option_loglik"]))
        c.close("neutral option log-lik (nats)", i, list(x["option_loglik_neutral"]), list(y["option_loglik_neutral"]))
    return c


def stage_patching(lm, a, dtype, tmp) -> Cmp:
    from metacog import patching as P
    from metacog.data import load_dataset

    items = load_dataset("world-facts", limit=2 * a.patch_pairs, seed=a.seed).reset_index(drop=True)

    def side(k):
        it = items.iloc[k]
        return P.make_side(lm, it["question"], str(list(it["answers"])[0]), str(it["id"]), item_id=str(it["id"]), row=k)

    pairs = [P.Pair(j, side(2 * j), side(2 * j + 1), "item") for j in range(a.patch_pairs)]
    L = lm.n_layers
    layers = P.parse_layers(a.patch_layers, L) or tuple(range(1, L + 1))
    spec = P.PatchSpec(layers=layers, positions=("confidence", "last_answer", "random:1"),
                       components=tuple(a.patch_components.split(",")), seed=a.seed)
    key = ["pair", "component", "layer", "position"]
    runs = []
    for order, mb in ((list(range(len(pairs))), 32), (list(reversed(range(len(pairs)))), 3)):
        frames = [P.patch_pair(pairs[j], spec, "fast", max_batch=mb) for j in order]
        runs.append(pd.concat(frames, ignore_index=True).set_index(key).sort_index())
    c = Cmp()
    for name, rx, ry in c.units(*runs):
        c.same("argmax", name, int(rx["argmax_patched"]), int(ry["argmax_patched"]))
        c.same("greedy answer flips", name, int(rx["answer_flips"]), int(ry["answer_flips"]))
        c.close("patched E[v] (points)", name, rx["ev_patched"], ry["ev_patched"])
        c.close("patched P(0..100)", name, np.asarray(rx["probs"]), np.asarray(ry["probs"]))
        c.close("clean E[v] source/target (points)", name, [rx["ev_source"], rx["ev_target"]], [ry["ev_source"], ry["ev_target"]])
    return c


def stage_steering(lm, a, dtype, ws) -> Cmp:
    from metacog.steering.run import SteerSpec, load_results, run_steering

    h = a.steer_layer if a.steer_layer is not None else lm.n_layers // 2
    base = SteerSpec(layers=(h,), alphas=tuple(a.steer_alphas), directions=("probe",), where="from-answer", split="eval",
                     verbal=True, answers=True)
    res = []
    for spec in (replace(base, limit=a.steer_alone, chunk=1), replace(base, limit=None, chunk=16)):
        s = run_steering(ws, lm, spec)
        r, _ = load_results(ws, s["id"])
        res.append(r.set_index(["id", "direction", "layer", "alpha"]).sort_index())
    c = Cmp()
    for name, rx, ry in c.units(*res):
        c.same("argmax", name, int(rx["argmax"]), int(ry["argmax"]))
        c.same("verbal text", name, rx["verbal_text"], ry["verbal_text"])
        if "new_answer" in rx.index and isinstance(rx["new_answer"], str):
            c.same("regenerated answer", name, rx["new_answer"], ry["new_answer"])
        c.close("E[v] (points)", name, rx["ev"], ry["ev"])
        c.close("shift d_ev (points)", name, rx["d_ev"], ry["d_ev"])
        c.close("other mass", name, rx["other"], ry["other"])
    return c


def stage_methods(lm, a, dtype, ws) -> Cmp:
    from metacog.methods.run import run_methods
    from metacog.methods.settings import MethodSettings
    from metacog.methods.store import load_scores

    names = ["p_true", "self_consistency", "probe_steering"]
    runs = []
    for s in (MethodSettings(calibration_limit=3, eval_limit=3, batch_size=1, k_samples=a.k_samples, seed=a.seed),
              MethodSettings(batch_size=16, k_samples=a.k_samples, seed=a.seed)):
        st = run_methods(ws, names, s, lm=lm, force=True, on_error="raise", threads=a.threads)
        assert all(v == "computed" for v in st.values()), st
        runs.append({n: load_scores(ws, n).set_index("row") for n in names})
    x, y = runs
    c = Cmp()
    c.n_units = sum(len(x[n]) for n in names)
    for n in names:
        for r in x[n].index:
            u = f"{n}/row{r}"
            c.close(f"{n} score", u, x[n].loc[r, "score"], y[n].loc[r, "score"])
            if n == "self_consistency":
                c.same("self_consistency samples", u, list(x[n].loc[r, "samples"]), list(y[n].loc[r, "samples"]))
            if n == "probe_steering":
                c.close("probe_steering E[v] (points)", u, x[n].loc[r, "ev"], y[n].loc[r, "ev"])
                c.close("probe_steering probe p", u, x[n].loc[r, "probe_p"], y[n].loc[r, "probe_p"])
    return c


@torch.no_grad()
def lora_rows(ft) -> str:
    """Where a LoRA layer's rows can depend on the batch: its first down projection fed the same
    random rows in a product of 2 rows and of 8 (the decode steps of batches of 2 and of 8)."""
    mod = next(m for n, m in ft.model.named_modules() if hasattr(m, "lora_A") and n.endswith("down_proj"))
    A, B = mod.lora_A["default"], mod.lora_B["default"]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, mod.base_layer.in_features, generator=g).to(mod.base_layer.weight.dtype)
    br = {M: B(A(X[:M].to(A.weight.dtype))) for M in (2, 8)}
    base = {M: mod.base_layer(X[:M]) for M in (2, 8)}
    return (f"rows 0-1 of a 2-row vs an 8-row product (random inputs), first down_proj: base linear "
            f"{int((base[8][:2] != base[2]).sum())}/{base[2].numel()} elements differ, the {str(A.weight.dtype).replace('torch.', '')} "
            f"LoRA branch {int((br[8][:2] != br[2]).sum())}/{br[2].numel()} (max {float((br[8][:2] - br[2]).abs().max()):.1e})")


def stage_finetune(lm, a, dtype, ws, tmp) -> Cmp:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from finetune_helpers import make_adapter

    from metacog.core.workspace import Workspace
    from metacog.finetune.evaluate import evaluate_adapter

    from metacog.finetune.backends.peft_backend import load_adapter_model

    adapter = make_adapter(lm, tmp / "adapter", seed=a.seed)
    ft = load_adapter_model(lm, adapter, copy_model=True)
    lora = sorted({str(p.dtype).replace("torch.", "") for n, p in ft.model.named_parameters() if "lora_" in n})
    print(f"    adapter: random LoRA (q_proj, v_proj, down_proj; r 4); LoRA weights as loaded for evaluation: {', '.join(lora)}; "
          f"base weights {str(lm.dtype).replace('torch.', '')}")
    print("    " + lora_rows(ft))
    del ft
    model_s, study = ws.settings()
    views = []
    try:
        for bs in (2, a.batch_sizes[1]):
            ws.init(model_s, replace(study, batch_size=bs))  # evaluate_adapter batches with the workspace's batch size
            out = tmp / f"ft-bs{bs}"
            evaluate_adapter(ws, adapter, out, lm=lm, probes=False, pairwise=False)
            views.append(_study_view(Workspace(out / "eval")))
    finally:
        ws.init(model_s, study)
    c = Cmp()
    compare_study(c, *views)
    return c


# ------------------------------------------------------------------------------------- main
def load(dt: str, threads: int):
    """The default model in ``dt``; ``bfloat16-sdpa`` (a control, not a setting metacog offers):
    bfloat16 switched back to plain SDPA attention, whose batch dependence is known."""
    from metacog.core.settings import ModelSettings
    from metacog.model.arch import base_model
    from metacog.model.loading import load_model

    lm = load_model(ModelSettings(model="default", dtype=dt.split("-")[0], threads=threads))
    if dt == "bfloat16-sdpa":
        base_model(lm.model).set_attn_implementation("sdpa")
    return lm


def run_stage(st: str, lm, a, dt: str, ws, tmp: Path) -> Cmp:
    setting = dt.split("-")[0]
    if st == "two-pass":
        return stage_two_pass(lm, a, setting, ws, tmp)
    if st == "mc":
        return stage_mc(lm, a, setting, tmp)
    if st == "patching":
        return stage_patching(lm, a, setting, tmp)
    if st == "steering":
        return stage_steering(lm, a, setting, ws)
    if st == "methods":
        return stage_methods(lm, a, setting, ws)
    return stage_finetune(lm, a, setting, ws, tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                    help="float32, bfloat16 (ragged attention on a CPU), float16; bfloat16-sdpa: a control with plain SDPA")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--limits", type=int, nargs=2, default=[10, 40], help="two-pass: the small and the large study")
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[4, 16], help="two-pass: their batch sizes")
    ap.add_argument("--mc-items", type=int, default=16, help="mc: items scored together")
    ap.add_argument("--mc-alone", type=int, default=6, help="mc: of them, how many also alone")
    ap.add_argument("--patch-pairs", type=int, default=2)
    ap.add_argument("--patch-layers", default="every:15", help="patching: hidden-state indices (patching.parse_layers)")
    ap.add_argument("--patch-components", default="resid,attn,mlp")
    ap.add_argument("--steer-alone", type=int, default=3, help="steering: eval items run one per chunk")
    ap.add_argument("--steer-layer", type=int, default=None, help="steering: hidden-state index (default L/2)")
    ap.add_argument("--steer-alphas", type=float, nargs="+", default=[4.0], help="steering: α (multiples of σ; 0 is added)")
    ap.add_argument("--k-samples", type=int, default=3, help="methods: self-consistency samples per item")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="keep the workspaces under this directory")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from metacog.model.arch import attention_implementation
    from metacog.model.loading import clear_loaded

    print(f"CPU: {cpu_name()}  threads {a.threads}  torch {torch.__version__}")
    stages = [s for s in STAGES if s in a.stages]
    rows = {}
    t_all = time.time()
    for dt in a.dtypes:
        tmp = Path(tempfile.mkdtemp(prefix=f"metacog-inv-stages-{dt}-", dir=a.keep))
        clear_loaded()
        lm = load(dt, a.threads)
        print(f"\n=== {dt}: model {lm.name}, {str(lm.dtype).replace('torch.', '')}, attention {attention_implementation(lm.model)}")
        ws = None
        if NEEDS_STUDY & set(stages):
            t = time.time()
            ws = build_study(tmp / "study", lm, a, dt.split("-")[0])
            print(f"setup: study of {a.limits[1]} items (batch {a.batch_sizes[1]}, two-pass, probes) {time.time() - t:.1f} s")
        for st in stages:
            t = time.time()
            c = run_stage(st, lm, a, dt, ws, tmp)
            sec = time.time() - t
            evs = [m for name, (m, _) in c.cont.items() if "E[v]" in name or name.startswith("ev_")]
            others = [(name, m) for name, (m, _) in c.cont.items() if not ("E[v]" in name or name.startswith("ev_"))]
            rows[(st, dt)] = dict(n=c.n_units, differ=c.n_differ(), ev=max(evs) if evs else None,
                                  other=max(others, key=lambda kv: kv[1]) if others else None, exact=c.exact,
                                  tol=c.within_tolerance(), sec=sec)
            print(f"[{st} / {dt}] {c.n_units} shared units; discrete results differ in {c.n_differ()}; "
                  f"bit-identical: {'yes' if c.exact else 'NO'}; {sec:.1f} s")
            for ln in c.lines():
                print(ln)
        del lm
        clear_loaded()
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nCPU: {cpu_name()}  threads {a.threads}  total {time.time() - t_all:.0f} s")
    print(f"{'stage':9s} {'dtype':13s} {'units':>5s} {'differ':>6s} {'max |ΔE[v]|':>11s}  {'other max |Δ| (quantity)':44s} "
          f"{'bit-identical':>13s} {'seconds':>7s}")
    for (st, dt), r in rows.items():
        ev = "-" if r["ev"] is None else f"{r['ev']:.3g}"
        q = "-" if r["other"] is None else f"{r['other'][1]:.3g} ({r['other'][0]})"
        print(f"{st:9s} {dt:13s} {r['n']:5d} {r['differ']:6d} {ev:>11s}  {q:44s} {'yes' if r['exact'] else 'NO':>13s} {r['sec']:7.1f}")
    dts = list(dict.fromkeys(dt for _, dt in rows))
    print("\nverdict: batch-invariant? exact = bit-identical; tol = within docs/SCIENCE.md's tolerance only; no = beyond it")
    print(f"{'stage':9s} " + " ".join(f"{d:>13s}" for d in dts))
    for st in stages:
        cells = []
        for d in dts:
            r = rows.get((st, d))
            cells.append("-" if r is None else "exact" if r["exact"] else "tol" if r["tol"] else "no")
        print(f"{st:9s} " + " ".join(f"{v:>13s}" for v in cells))
    return rows


if __name__ == "__main__":
    main()
