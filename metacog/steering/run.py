"""A steering sweep in a workspace: its spec (:class:`SteerSpec`), its plan (id, items,
directions; ``steering/<id>/plan.json`` and ``directions.npy``), the resumable run chunk by
chunk, the assembled results table, and reading saved sweeps.

The sweep id hashes the spec, the items, the activation cache, the probes and the model's
**dtype and device** (:func:`model_runtime`): a re-run with another ``--dtype`` or
``--device`` is a new sweep, never a resume of chunks computed under the old one."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from metacog.core.runtime import check_stop
from metacog.core.settings import stable_hash
from metacog.core.workspace import Workspace, WorkspaceError, atomic_save_npy
from metacog.core.files import load_array
from metacog.data import prompts
from metacog.steering.directions import DIRECTIONS, INLINE_POSITIONS, compute_directions
from metacog.steering.intervene import WHERE, steered_answers, steered_readout
from metacog.steering.summary import summarize


DIR = "steering"
#: The largest |alpha| (multiples of sigma_d) a sweep accepts: far beyond any dose-response
#: range (the defaults reach 8); an alpha of 1e308 made every readout NaN and was stored as complete.
MAX_ALPHA = 1e3


VERSION = 2  # 2: the id includes the model's dtype and device (model_runtime)


@dataclass(frozen=True)
class SteerSpec:
    """One steering sweep. ``layers``: hidden-state indices; ``alphas``: multiples of σ_d (0 is
    the baseline and always computed); ``directions`` ⊂ DIRECTIONS (``random`` is added: every
    test is against it); ``split``: the items steered (eval by default); ``limit``: first N of
    them by row; ``verbal``: also the greedy verbal confidence; ``answers``: regenerate the
    answer under steering (``from-answer`` only).

    Raises:
        ValueError: unknown ``where``, direction, position or split; no layers; non-finite
            alphas; ``limit`` or ``chunk`` not a positive integer.
    """
    layers: tuple = ()
    alphas: tuple = (-4.0, -2.0, 2.0, 4.0, 8.0)
    directions: tuple = ("probe", "random")
    where: str = "slot"
    position: str = "confidence"
    split: str = "eval"
    limit: int | None = None
    seed: int = 0
    verbal: bool = True
    answers: bool = True
    chunk: int = 16  # items per saved chunk (and per forward batch)

    def __post_init__(self):
        if self.where not in WHERE:
            raise ValueError(f"--where must be one of {', '.join(WHERE)}, not {self.where!r}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ValueError(f"unknown direction(s) {', '.join(bad) or '(none)'}; choose from {', '.join(DIRECTIONS)}")
        if self.position not in INLINE_POSITIONS:
            raise ValueError(f"position must be one of {', '.join(INLINE_POSITIONS)} (the inline sequence), not {self.position!r}")
        if not self.layers:
            raise ValueError("give at least one layer (hidden-state index)")
        if not self.alphas or not all(math.isfinite(float(a)) for a in self.alphas):
            raise ValueError("alphas must be finite numbers")
        if any(abs(float(a)) > MAX_ALPHA for a in self.alphas):
            raise ValueError(f"alphas must be within ±{MAX_ALPHA:g} (multiples of the direction's sigma); "
                             f"{max(self.alphas, key=lambda a: abs(float(a)))} would overflow the residual stream")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be an integer >= 0, not {self.seed!r}")
        if self.split not in ("train", "calibration", "eval", "all"):
            raise ValueError(f"split must be train, calibration, eval or all, not {self.split!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer, not {self.limit!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError("chunk must be a positive integer")

    def normalised(self) -> "SteerSpec":
        """The canonical spec: ``random`` added to the directions (in ``DIRECTIONS`` order), α = 0
        added and the alphas sorted, layers sorted and deduplicated, ``answers`` only with ``from-answer``."""
        dirs = tuple(d for d in DIRECTIONS if d in set(self.directions) | {"random"})
        al = tuple(sorted({float(a) for a in self.alphas} | {0.0}))
        return SteerSpec(**{**asdict(self), "layers": tuple(sorted({int(h) for h in self.layers})), "alphas": al,
                            "directions": dirs, "answers": bool(self.answers and self.where == "from-answer")})


def parse_layers(spec: str, n_hidden: int) -> tuple[int, ...]:
    """``"all"`` | ``"A-B"`` | ``"every:K"`` | comma list → hidden-state indices in 0..n_hidden−1.

    Raises:
        ValueError: an index outside ``0..n_hidden-1``, no index, or ``every:K`` with K < 1.
    """
    s = str(spec).strip().lower()
    if s == "all":
        return tuple(range(1, n_hidden))
    if s.startswith("every:"):
        k = int(s.split(":", 1)[1])
        if k < 1:
            raise ValueError("every:K needs K >= 1")
        return tuple(range(k, n_hidden, k))
    out = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    bad = [h for h in out if not 0 <= h < n_hidden]
    if bad or not out:
        raise ValueError(f"layers {bad or spec!r} outside 0..{n_hidden - 1}")
    return tuple(sorted(set(out)))


def _load(ws: Workspace):
    from metacog.stages.answers import reparse
    from metacog.stages.study import load_items

    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace: run `metacog study --workspace {ws.root}` first")
    items = load_items(ws)
    ans = reparse(items, ws.read_parquet("answers.parquet"))
    return items, ans


def model_runtime(lm) -> dict:
    """``{"dtype": "float32", "device": "cpu"}``: the numeric setting a sweep's readouts were
    computed under. ``lm``: a :class:`~metacog.model.loading.LoadedModel` (its ``dtype`` and
    ``device``) or such a dict. Raises ``ValueError`` when either is missing."""
    if isinstance(lm, dict):
        dtype, device = lm.get("dtype"), lm.get("device")
    else:
        dtype, device = getattr(lm, "dtype", None), getattr(lm, "device", None)
    if dtype is None or device is None:
        raise ValueError("a steering sweep needs the model's dtype and device (a LoadedModel or {'dtype', 'device'})")
    return {"dtype": str(dtype).replace("torch.", ""), "device": str(device)}


def plan(ws: Workspace, spec: SteerSpec, lm) -> dict:
    """The sweep's id, items and directions (computed from the train split); writes
    ``steering/<id>/plan.json`` and ``directions.npy``. The id hashes the spec, the items, the
    activation cache, the probes and :func:`model_runtime` (``lm``: the model, or its
    ``{"dtype", "device"}``): the same id for the same inputs, another for another dtype or device.

    Raises ``WorkspaceError`` (fewer than 2 items, no workspace, no probes) and, should an
    existing plan under this id record another dtype/device, refuses to mix them."""
    spec = spec.normalised()
    runtime = model_runtime(lm)
    items, ans = _load(ws)
    sel = items if spec.split == "all" else items[items["split"] == spec.split]
    sel = sel.sort_values("row")
    if spec.limit:
        sel = sel.head(spec.limit)
    if len(sel) < 2:
        raise WorkspaceError(f"steering needs at least 2 {spec.split} items; found {len(sel)}")
    man = ws.read_json("activations/manifest.json") or {}
    probe_key = (ws.lineage("probes/metrics.parquet") or {}).get("key")
    sid = stable_hash("steer", VERSION, asdict(spec), sel["row"].tolist(), man.get("key"), probe_key, runtime)[:10]
    dirs = compute_directions(ws, items, ans, list(spec.layers), list(spec.directions), spec.position, spec.seed)
    d = f"{DIR}/{sid}"
    with ws.writer("steer"):
        ws.path(d).mkdir(parents=True, exist_ok=True)
        atomic_save_npy(ws.path(d, "directions.npy"), dirs["vectors"].astype(np.float32))
        info = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dirs.items() if k != "vectors"}
        p = {"id": sid, "version": VERSION, "spec": asdict(spec), "rows": sel["row"].astype(int).tolist(),
             "activations": man.get("key"), "probes": probe_key, "directions": info, "runtime": runtime,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        old = ws.read_json(f"{d}/plan.json")
        if old is None:
            ws.write_json(f"{d}/plan.json", p)
        elif old.get("runtime") != runtime:
            raise WorkspaceError(f"steering sweep {sid} was computed with {old.get('runtime') or 'an unrecorded dtype/device'}, "
                                 f"not {runtime}: refusing to mix them (delete {ws.path(d)} to recompute)")
        else:
            p = old
    return p


def _cells(spec: SteerSpec) -> list[tuple[str, int, float]]:
    return [(k, h, a) for k in spec.directions for h in spec.layers for a in spec.alphas if a != 0.0]


def run_steering(ws: Workspace, lm, spec: SteerSpec, progress=None, should_stop=None) -> dict:
    """Plan (or resume) the sweep and run every (direction, layer, α ≠ 0) cell on every item,
    chunk by chunk (each finished chunk saved; a re-run skips it). Writes ``results.parquet``
    and ``steering.json``; returns the summary."""
    from metacog.data.grading import grade_short, normalize

    spec = spec.normalised()
    p = plan(ws, spec, lm)
    sid = p["id"]
    d = f"{DIR}/{sid}"
    items, ans = _load(ws)
    rows = p["rows"]
    it = items.set_index("row").loc[rows]
    an = ans.set_index("row").loc[rows]
    V = load_array(ws.path(d, "directions.npy"))
    sig = np.asarray(p["directions"]["sigma"], dtype=float)
    tok, chat, style = lm.tokenizer, lm.is_chat, ws.settings()[1].prompt_style
    encs = [prompts.encode_inline(tok, chat, q, str(a or ""), list(c) if k == "mc" and c is not None else None, style)
            for q, a, c, k in zip(it["question"], an["answer"], it["choices"], it["kind"])]
    pids = [prompts.encode_answer_prompt(tok, chat, q, list(c) if k == "mc" and c is not None else None, style).ids
            for q, c, k in zip(it["question"], it["choices"], it["kind"])]
    max_new = int(ws.settings()[1].max_new_tokens)
    cells = [("none", -1, 0.0)] + _cells(spec)
    chunks = [(s, min(s + spec.chunk, len(rows))) for s in range(0, len(rows), spec.chunk)]
    total = len(cells) * len(chunks)
    t0 = time.time()
    n_done = 0
    cdir = ws.path(d, "chunks")
    with ws.writer("steer"):
        cdir.mkdir(parents=True, exist_ok=True)
        for ci, (k, h, a) in enumerate(cells):
            for s, e in chunks:
                name = f"c{ci:04d}-{s:06d}.parquet"
                if (cdir / name).exists():
                    n_done += 1
                    continue
                check_stop(should_stop)
                if progress:
                    progress(n_done, total, f"steering ({k})")
                if k == "none":
                    vec, hh, sg = None, None, 0.0
                else:
                    i, j = spec.directions.index(k), spec.layers.index(h)
                    sg = float(sig[i, j])
                    vec, hh = (a * sg * V[i, j]).astype(np.float32), h
                df = steered_readout(lm, encs[s:e], hh, vec, spec.where, verbal=spec.verbal)
                df.insert(0, "row", rows[s:e])
                df["direction"], df["layer"], df["alpha"], df["sigma"] = k, h, a, sg
                df["shift_norm"] = abs(a) * sg
                if spec.answers and k != "none":
                    new = steered_answers(lm, pids[s:e], h, vec, max_new)
                    old = an["answer"].astype(str).to_numpy()[s:e]
                    df["new_answer"] = new
                    df["answer_changed"] = [normalize(x) != normalize(o) for x, o in zip(new, old)]
                    df["new_correct"] = [float(grade_short(x, al)) if kd != "mc" else np.nan
                                         for x, al, kd in zip(new, it["answers"].to_numpy()[s:e], it["kind"].to_numpy()[s:e])]
                ws.write_parquet(f"{d}/chunks/{name}", df)
                n_done += 1
        if progress:
            progress(total, total, "steering: statistics")
        res = _assemble(ws, p, it, an)
        ws.write_parquet(f"{d}/results.parquet", res)
        summ = summarize(res, spec)
        summ.update(id=sid, seconds=round(time.time() - t0, 1), n_items=len(rows), threads=torch.get_num_threads(),
                    model=getattr(lm, "name", None), spec=asdict(spec), directions=p["directions"], runtime=p["runtime"],
                    complete=True, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        ws.write_json(f"{d}/steering.json", summ)
    return summ


def _assemble(ws: Workspace, p: dict, it: pd.DataFrame, an: pd.DataFrame) -> pd.DataFrame:
    """One row per item × direction × layer × α (α = 0 rows are the item's unsteered readout,
    repeated for every direction and layer), with the shifts against it."""
    d = f"{DIR}/{p['id']}"
    parts = [ws.read_parquet(f"{d}/chunks/{f.name}") for f in sorted(ws.path(d, "chunks").glob("*.parquet"))]
    raw = pd.concat(parts, ignore_index=True)
    base = raw[raw["direction"] == "none"].set_index("row")
    steer = raw[raw["direction"] != "none"]
    spec = p["spec"]
    zeros = []
    for k in spec["directions"]:
        for h in spec["layers"]:
            z = base.reset_index()[["row", "ev", "argmax", "other", "verbal", "verbal_text"]].copy()
            z["direction"], z["layer"], z["alpha"], z["sigma"], z["shift_norm"] = k, h, 0.0, np.nan, 0.0
            zeros.append(z)
    df = pd.concat([steer, *zeros], ignore_index=True)
    for c in ("ev", "argmax", "other", "verbal"):
        df[f"{c}0"] = base.loc[df["row"], c].to_numpy()
        df[f"d_{c}"] = df[c] - df[f"{c}0"]
    df["id"] = it.loc[df["row"], "id"].to_numpy()
    df["split"] = it.loc[df["row"], "split"].to_numpy()
    df["category"] = it.loc[df["row"], "category"].to_numpy()
    df["correct"] = an.loc[df["row"], "correct"].to_numpy(dtype=bool)
    if "answer_changed" in df:
        df.loc[df["alpha"] == 0.0, "answer_changed"] = False
    df["where"] = spec["where"]
    cols = ["row", "id", "split", "category", "correct", "direction", "layer", "alpha", "where", "sigma", "shift_norm"]
    df = df[cols + [c for c in df.columns if c not in cols]]
    return df.sort_values(["direction", "layer", "alpha", "row"]).reset_index(drop=True)


def resummarize(ws: Workspace, sid: str) -> dict:
    """Recompute ``steering.json``'s statistics from ``results.parquet`` (no model needed).

    Raises:
        WorkspaceError: the sweep has no results yet.
    """
    res, old = load_results(ws, sid)
    if res is None or old is None:
        raise WorkspaceError(f"steering sweep {sid} has no results yet")
    new = {**old, **summarize(res, old["spec"])}
    with ws.writer("steer"):
        ws.write_json(f"{DIR}/{sid}/steering.json", new)
    return new


def list_sweeps(ws: Workspace) -> list[dict]:
    """Saved sweeps, newest first: ``{id, created, spec, runtime, complete, stale}`` (``runtime``: the
    dtype and device, None for sweeps planned before they were recorded; ``stale``: made on another
    hidden-state cache than today's, i.e. the study was rerun since)."""
    d = ws.path(DIR)
    out = []
    now = (ws.read_json("activations/manifest.json") or {}).get("key")
    if d.exists():
        for p in d.iterdir():
            pl = ws.read_json(f"{DIR}/{p.name}/plan.json")
            if pl:
                out.append({"id": p.name, "created": pl.get("created"), "spec": pl.get("spec"),
                            "runtime": pl.get("runtime"), "complete": ws.path(DIR, p.name, "steering.json").exists(),
                            "stale": bool(pl.get("activations") and now and pl["activations"] != now)})
    return sorted(out, key=lambda r: r.get("created") or "", reverse=True)


def load_results(ws: Workspace, sid: str) -> tuple[pd.DataFrame | None, dict | None]:
    """(results.parquet, steering.json) of sweep ``sid`` (None where not written yet)."""
    p = ws.path(DIR, sid, "results.parquet")
    return (ws.read_parquet(f"{DIR}/{sid}/results.parquet") if p.exists() else None), ws.read_json(f"{DIR}/{sid}/steering.json")


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """A steering sweep as an app job in its own process (:mod:`metacog.core.jobs`): ``spec`` holds
    ``steer`` (a SteerSpec dict) and ``threads``."""
    from metacog.model.loading import loader_from_env
    from metacog.core.settings import ModelSettings, from_dict, to_dict

    ms, _ = ws.settings()
    progress(0, 0, "loading the model")
    lm = loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(spec.get("threads") or 1)}))
    s = SteerSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["steer"].items()})
    out = run_steering(ws, lm, s, progress, should_stop)
    return {"id": out["id"], "n_items": out["n_items"], "seconds": out["seconds"]}
