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
(:func:`metacog.confidence.read_values`: E[v], argmax, other), the greedy verbal confidence
(optional), and for ``from-answer`` the answer regenerated under steering (changed? still
correct?). Shifts are per item against the same item's unsteered readout (α = 0).

Statistics (:func:`summarize`; the item is the unit, docs/SCIENCE.md "Statistics of
steering"): per cell the mean shift with a percentile bootstrap CI over items; the paired
contrast (direction − random) per item at each (layer, α), sign-flip test across items, Holm
over the layers × α grid of one direction; per layer the per-item dose–response slope
(OLS of shift on α) of the direction minus random's, same test, Holm over layers.

Artifacts: ``steering/<id>/`` — ``plan.json`` (spec, items, directions' σ and norms),
``directions.npy`` float32 ``[n_directions, n_layers, d]``, ``chunks/*.parquet`` (finished
work, resumable), ``results.parquet`` (one row per item × direction × layer × α),
``steering.json`` (tests).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from . import prompts, stats
from .runtime import check_stop
from .settings import POSITIONS, stable_hash
from .workspace import Workspace, WorkspaceError, atomic_save_npy

DIRECTIONS = ("probe", "mean-diff", "random", "probe-minus-type")
WHERE = ("slot", "from-answer")
DIR = "steering"
VERSION = 1
INLINE_POSITIONS = ("last_prompt", "last_answer", "confidence")

__all__ = ["DIRECTIONS", "WHERE", "SteerSpec", "unit", "probe_direction", "mean_diff_direction", "random_direction",
           "type_subspace", "project_out", "sigma_along", "compute_directions", "steer_hook", "steered_readout",
           "plan", "run_steering", "summarize", "load_results", "list_sweeps", "run_job"]


# ====================================================================================== directions
def unit(v) -> np.ndarray:
    """``v / ||v||`` (float64); raises ValueError for a zero or non-finite vector."""
    v = np.asarray(v, dtype=np.float64).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("cannot normalise a zero or non-finite direction")
    return v / n


def probe_direction(coef) -> np.ndarray:
    """The probe's weight vector (raw residual units, ``[d]``) as a unit vector."""
    return unit(coef)


def mean_diff_direction(X, y) -> np.ndarray:
    """unit(mean(X[y]) − mean(X[~y])); X ``[n, d]``, y bool ``[n]``; needs both classes."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("mean-diff needs correct and incorrect train items (one class only)")
    return unit(X[y].mean(0) - X[~y].mean(0))


def random_direction(d: int, seed: int, layer: int) -> np.ndarray:
    """A seeded standard-Gaussian direction in R^d, normalised (one per (seed, layer))."""
    rng = np.random.default_rng([int(seed), int(layer), 17])
    return unit(rng.standard_normal(int(d)))


def type_subspace(X, categories, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[k, d]`` of the span of the category mean differences
    mean(X[category c]) − mean(X) over the categories present (k ≤ n_categories − 1; empty
    ``[0, d]`` with fewer than two categories). Basis by SVD, singular values below
    ``tol`` × the largest dropped."""
    X = np.asarray(X, dtype=np.float64)
    cats = np.asarray(categories, dtype=object)
    u = pd.unique(cats)
    if len(u) < 2:
        return np.zeros((0, X.shape[1]))
    mu = X.mean(0)
    M = np.stack([X[cats == c].mean(0) - mu for c in u])
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    keep = s > tol * max(float(s[0]), 1e-300)
    return vt[keep]


def project_out(v, Q) -> np.ndarray:
    """v − Qᵀ(Q v) for an orthonormal basis Q ``[k, d]`` (v unchanged when k = 0)."""
    v = np.asarray(v, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    return v - Q.T @ (Q @ v) if len(Q) else v.copy()


def sigma_along(X, d) -> float:
    """Standard deviation (ddof = 1) of the rows of X projected on the unit vector d."""
    z = np.asarray(X, dtype=np.float64) @ np.asarray(d, dtype=np.float64)
    return float(np.std(z, ddof=1)) if len(z) > 1 else float("nan")


def _train(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, position: str):
    from .activations import load_states

    tr = items[items["split"] == "train"].sort_values("row")
    if len(tr) < 4:
        raise WorkspaceError(f"steering directions need at least 4 train items; this workspace has {len(tr)}")
    y = answers.set_index("row").loc[tr["row"], "correct"].to_numpy(dtype=bool)
    S = load_states(ws, position)
    return tr, np.asarray(S[tr["row"].to_numpy()], dtype=np.float64), y  # [n_train, H, d]


def load_probe(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """(coef ``[H, P, d]``, intercept ``[H, P]``) float32 from ``probes/``; raises if absent."""
    c, b = ws.path("probes", "coef.npy"), ws.path("probes", "intercept.npy")
    if not c.exists() or not b.exists():
        raise WorkspaceError(f"no probe weights in {ws.root} (probes/coef.npy): run `metacog probes --workspace {ws.root}`")
    return np.load(c, allow_pickle=False), np.load(b, allow_pickle=False)


def compute_directions(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, layers, directions,
                       position: str = "confidence", seed: int = 0) -> dict:
    """Unit directions and σ for every (direction, layer), from the train split only.

    Returns ``{"vectors": float64 [n_dir, n_layers, d], "sigma": [n_dir, n_layers] (σ used in
    the intervention), "sigma_own": σ along the direction itself, "norm": ‖raw vector‖ before
    normalising, "cos_probe": cosine with the probe direction, "type_rank": k per layer,
    "max_type_cos": max |cos(d̂, type basis)| per direction × layer}``. ``random`` uses the
    probe direction's σ (matched norm) and has the probe coefficient's norm recorded.
    """
    tr, X, y = _train(ws, items, answers, position)
    coef, _ = load_probe(ws)
    pi = list(POSITIONS).index(position)
    H, d = X.shape[1], X.shape[2]
    nd, nl = len(directions), len(layers)
    V = np.zeros((nd, nl, d))
    sig, sig_own, norm, cosp, tcos = (np.full((nd, nl), np.nan) for _ in range(5))
    trank = []
    for j, h in enumerate(layers):
        if not 0 <= h < H:
            raise ValueError(f"hidden-state index {h} is outside 0..{H - 1}")
        Xh = X[:, h, :]
        c = coef[h, pi].astype(np.float64)
        if not np.all(np.isfinite(c)) or not np.any(c):
            raise WorkspaceError(f"no probe fitted at layer {h}, position {position}")
        pdir = probe_direction(c)
        Q = type_subspace(Xh, tr["category"].to_numpy())
        trank.append(int(len(Q)))
        sp = sigma_along(Xh, pdir)
        for i, k in enumerate(directions):
            if k == "probe":
                v, raw = pdir, float(np.linalg.norm(c))
            elif k == "mean-diff":
                m = Xh[y].mean(0) - Xh[~y].mean(0) if (y.any() and not y.all()) else np.zeros(d)
                v, raw = mean_diff_direction(Xh, y), float(np.linalg.norm(m))
            elif k == "random":
                v, raw = random_direction(d, seed, h), float(np.linalg.norm(c))
            elif k == "probe-minus-type":
                r = project_out(pdir, Q)
                v, raw = unit(r), float(np.linalg.norm(r))
            else:
                raise ValueError(f"unknown direction {k!r}; choose from {', '.join(DIRECTIONS)}")
            V[i, j] = v
            so = sigma_along(Xh, v)
            sig_own[i, j] = so
            sig[i, j] = sp if k == "random" else so
            norm[i, j] = raw
            cosp[i, j] = float(v @ pdir)
            tcos[i, j] = float(np.max(np.abs(Q @ v))) if len(Q) else 0.0
    return {"vectors": V, "sigma": sig, "sigma_own": sig_own, "norm": norm, "cos_probe": cosp, "type_rank": trank,
            "max_type_cos": tcos, "n_train": int(len(tr)), "n_train_correct": int(y.sum())}


# ====================================================================================== the hook
def _layer_module(model, h: int):
    from .models import decoder_layers

    layers = decoder_layers(model)
    if not 0 <= h <= len(layers):
        raise ValueError(f"hidden-state index {h} is outside 0..{len(layers)}")
    return (layers[0], True) if h == 0 else (layers[h - 1], False)


@contextlib.contextmanager
def steer_hook(model, hidden_index: int, vector: torch.Tensor, prefix_mask: torch.Tensor, continuation: bool):
    """While active, the residual stream at ``hidden_index`` gets ``+ vector`` where a mask says.

    vector: ``[d]`` or ``[B, d]`` (one per row). The **first** forward through the hooked
    module is the prefix: ``prefix_mask`` ``[B, T]`` bool (padded layout) says which positions
    get the vector. Every later forward (the readout's trie, greedy decoding steps) processes
    tokens that come after the prefix: all of them get the vector if ``continuation``, none
    otherwise. Positions outside the mask are returned bit-identical.
    """
    from .hooks import edit_hook

    module, pre = _layer_module(model, hidden_index)
    calls = [0]

    def fn(h: torch.Tensor) -> torch.Tensor:
        first = calls[0] == 0
        calls[0] += 1
        v = vector.to(device=h.device, dtype=h.dtype)
        v = v.view(1, 1, -1) if v.dim() == 1 else v[: h.shape[0]].unsqueeze(1)
        if first:
            m = prefix_mask.to(h.device)
            return torch.where(m.unsqueeze(-1), h + v, h)
        return h + v if continuation else h

    with edit_hook(module, fn, pre):
        yield


def masks_for(encs: list[prompts.Encoded], where: str, device=None) -> torch.Tensor:
    """``[B, T]`` bool in the left-padded layout of these sequences: the confidence slot
    (``slot``) or every position from the first answer token on (``from-answer``)."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, not {where!r}")
    T = max(len(e) for e in encs)
    m = torch.zeros((len(encs), T), dtype=torch.bool)
    for b, e in enumerate(encs):
        pad = T - len(e)
        if where == "slot":
            m[b, pad + e.positions["confidence"]] = True
        else:
            m[b, pad + e.spans["answer"][0]:] = True
    return m if device is None else m.to(device)


@torch.no_grad()
def steered_readout(lm, encs: list[prompts.Encoded], hidden_index: int | None, vector, where: str,
                    verbal: bool = True) -> pd.DataFrame:
    """The exact 0–100 readout (and the greedy verbal confidence) of one batch of inline
    sequences with ``vector`` added at ``hidden_index`` (None = no hook: the unsteered model).
    Returns one row per sequence: ``ev, argmax, other, verbal, verbal_text``."""
    from .answers import FORCED_MARK, INLINE_VERBAL_TOKENS, _stop_two_pass
    from .confidence import parse_confidence, read_values
    from .generation import greedy_batch

    ids = [e.ids for e in encs]
    vec = None if vector is None else torch.as_tensor(np.asarray(vector), dtype=torch.float32)

    def ctx():
        if hidden_index is None or vec is None:
            return contextlib.nullcontext()
        return steer_hook(lm.model, hidden_index, vec, masks_for(encs, where), continuation=(where == "from-answer"))

    with ctx():  # the hooks index the left-padded batch of the first forward: no shared prefix
        r = read_values(lm, ids, share_prefix=False)
    out = pd.DataFrame({"ev": r.expected, "argmax": r.argmax, "other": r.other})
    if verbal:
        with ctx():
            texts = greedy_batch(lm, ids, INLINE_VERBAL_TOKENS, stop=_stop_two_pass, share_prefix=False)
        v = [parse_confidence(FORCED_MARK.strip() + t) for t in texts]
        out["verbal"] = [np.nan if x is None else float(x) for x in v]
        out["verbal_text"] = texts
    else:
        out["verbal"] = np.nan
        out["verbal_text"] = ""
    return out


@torch.no_grad()
def steered_answers(lm, prompt_ids: list[list[int]], hidden_index: int, vector, max_new_tokens: int) -> list[str]:
    """Greedy answers with ``vector`` added at every generated position (``from-answer``: the
    prompt itself is untouched; each generated answer token carries the vector)."""
    from .answers import _stop_first_line
    from .confidence import parse_inline
    from .generation import greedy_batch

    vec = torch.as_tensor(np.asarray(vector), dtype=torch.float32)
    T = max(len(p) for p in prompt_ids)
    m = torch.zeros((len(prompt_ids), T), dtype=torch.bool)
    with steer_hook(lm.model, hidden_index, vec, m, continuation=True):
        texts = greedy_batch(lm, prompt_ids, max_new_tokens, stop=_stop_first_line, share_prefix=False)
    return [parse_inline(t)[0] for t in texts]


@contextlib.contextmanager
def probe_conditioned(model, read_index: int, coef, intercept: float, read_at: torch.Tensor, write_index: int,
                      direction, gain: float, write_at: torch.Tensor, record: dict | None = None):
    """Probe-conditioned steering in the model's own forward (training-free rival to
    probe-targeted fine-tuning).

    On the prefix forward (the first call through each hooked module): read the residual
    stream at hidden-state index ``read_index`` at token ``read_at[b]`` (padded layout, ``[B]``
    long), compute the probe's p_b = sigmoid(x_b·coef + intercept) (float32), and at hidden-state
    index ``write_index`` (≥ ``read_index``; on the same index the read comes first) add
    ``gain · 2(p_b − 0.5) · direction`` at token ``write_at[b]``. ``direction`` ``[d]`` carries its
    scale (σ·d̂), so ``gain`` is in σ units: p = 1 adds +gain·σ, p = 0.5 nothing, p = 0 −gain·σ.
    Later forwards (the readout's trie, decoding steps) are untouched. ``record["p"]`` receives
    the p read, ``[B]`` numpy."""
    from .hooks import edit_hook

    if write_index < read_index:
        raise ValueError(f"the write layer ({write_index}) must not come before the read layer ({read_index})")
    rec = {} if record is None else record
    c = torch.as_tensor(np.asarray(coef), dtype=torch.float32)
    dvec = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    state = {"read": 0, "write": 0, "p": None}

    def read(h):
        state["read"] += 1
        if state["read"] == 1:
            rows = torch.arange(h.shape[0], device=h.device)
            x = h[rows, read_at.to(h.device)].float()
            p = torch.sigmoid(x @ c.to(h.device) + float(intercept))
            state["p"] = p
            rec["p"] = p.detach().cpu().numpy().astype(np.float64)
        return h

    def write(h):
        state["write"] += 1
        if state["write"] != 1:
            return h
        p = state["p"]
        if p is None:
            raise RuntimeError("probe-conditioned steering: the write layer ran before the read layer")
        rows = torch.arange(h.shape[0], device=h.device)
        shift = (gain * 2.0 * (p - 0.5)).unsqueeze(-1) * dvec.to(h.device)  # [B, d]
        out = h.clone()
        out[rows, write_at.to(h.device)] = (h[rows, write_at.to(h.device)].float() + shift).to(h.dtype)
        return out

    rm, rpre = _layer_module(model, read_index)
    wm, wpre = _layer_module(model, write_index)
    with edit_hook(rm, read, rpre), edit_hook(wm, write, wpre):
        yield rec


# ====================================================================================== plan & run
@dataclass(frozen=True)
class SteerSpec:
    """One steering sweep. ``layers``: hidden-state indices; ``alphas``: multiples of σ_d (0 is
    the baseline and always computed); ``directions`` ⊂ DIRECTIONS (``random`` is added: every
    test is against it); ``split``: the items steered (eval by default); ``limit``: first N of
    them by row; ``verbal``: also the greedy verbal confidence; ``answers``: regenerate the
    answer under steering (``from-answer`` only)."""
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
        if self.split not in ("train", "calibration", "eval", "all"):
            raise ValueError(f"split must be train, calibration, eval or all, not {self.split!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer, not {self.limit!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError("chunk must be a positive integer")

    def normalised(self) -> "SteerSpec":
        dirs = tuple(d for d in DIRECTIONS if d in set(self.directions) | {"random"})
        al = tuple(sorted({float(a) for a in self.alphas} | {0.0}))
        return SteerSpec(**{**asdict(self), "layers": tuple(sorted({int(h) for h in self.layers})), "alphas": al,
                            "directions": dirs, "answers": bool(self.answers and self.where == "from-answer")})


def parse_layers(spec: str, n_hidden: int) -> tuple[int, ...]:
    """``"all"`` | ``"A-B"`` | ``"every:K"`` | comma list → hidden-state indices in 0..n_hidden−1."""
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
    from .answers import reparse
    from .study import load_items

    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace: run `metacog study --workspace {ws.root}` first")
    items = load_items(ws)
    ans = reparse(items, ws.read_parquet("answers.parquet"))
    return items, ans


def plan(ws: Workspace, spec: SteerSpec) -> dict:
    """The sweep's id, items and directions (computed from the train split); writes
    ``steering/<id>/plan.json`` and ``directions.npy`` (same id for the same spec and items)."""
    spec = spec.normalised()
    items, ans = _load(ws)
    sel = items if spec.split == "all" else items[items["split"] == spec.split]
    sel = sel.sort_values("row")
    if spec.limit:
        sel = sel.head(spec.limit)
    if len(sel) < 2:
        raise WorkspaceError(f"steering needs at least 2 {spec.split} items; found {len(sel)}")
    man = ws.read_json("activations/manifest.json") or {}
    probe_key = (ws.lineage("probes/metrics.parquet") or {}).get("key")
    sid = stable_hash("steer", VERSION, asdict(spec), sel["row"].tolist(), man.get("key"), probe_key)[:10]
    dirs = compute_directions(ws, items, ans, list(spec.layers), list(spec.directions), spec.position, spec.seed)
    d = f"{DIR}/{sid}"
    with ws.writer("steer"):
        ws.path(d).mkdir(parents=True, exist_ok=True)
        atomic_save_npy(ws.path(d, "directions.npy"), dirs["vectors"].astype(np.float32))
        info = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dirs.items() if k != "vectors"}
        p = {"id": sid, "version": VERSION, "spec": asdict(spec), "rows": sel["row"].astype(int).tolist(),
             "activations": man.get("key"), "probes": probe_key, "directions": info,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        old = ws.read_json(f"{d}/plan.json")
        if old is None:
            ws.write_json(f"{d}/plan.json", p)
        else:
            p = old
    return p


def _cells(spec: SteerSpec) -> list[tuple[str, int, float]]:
    return [(k, h, a) for k in spec.directions for h in spec.layers for a in spec.alphas if a != 0.0]


def run_steering(ws: Workspace, lm, spec: SteerSpec, progress=None, should_stop=None) -> dict:
    """Plan (or resume) the sweep and run every (direction, layer, α ≠ 0) cell on every item,
    chunk by chunk (each finished chunk saved; a re-run skips it). Writes ``results.parquet``
    and ``steering.json``; returns the summary."""
    from .grading import grade_short, normalize

    spec = spec.normalised()
    p = plan(ws, spec)
    sid = p["id"]
    d = f"{DIR}/{sid}"
    items, ans = _load(ws)
    rows = p["rows"]
    it = items.set_index("row").loc[rows]
    an = ans.set_index("row").loc[rows]
    V = np.load(ws.path(d, "directions.npy"), allow_pickle=False)
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
                    model=getattr(lm, "name", None), spec=asdict(spec), directions=p["directions"],
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


# ====================================================================================== statistics
def _slope(alphas: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per-row OLS slope of Y ``[n, A]`` on alphas ``[A]`` (rows with a NaN → NaN)."""
    x = alphas - alphas.mean()
    with np.errstate(invalid="ignore"):
        return ((Y - Y.mean(1, keepdims=True)) * x).sum(1) / (x * x).sum()


def summarize(res: pd.DataFrame, spec: SteerSpec | dict, value: str = "ev", n_perm: int = 9999, n_boot: int = 2000,
              seed: int = 0) -> dict:
    """The sweep's statistics, the item as the unit (docs/SCIENCE.md, "Statistics of steering").

    res: :func:`run_steering`'s results (``row, direction, layer, alpha, correct, d_<value>``).
    Returns ``{"cells": [...], "contrasts": [...], "slopes": [...], ...}``:

    - cells: per (direction, layer, α) the mean per-item shift ``d_<value>`` with its sign-flip
      p and 95% percentile bootstrap CI over items, and the same for correct and incorrect
      items separately (``correct``/``incorrect``), plus the share of answers changed;
    - contrasts: per (direction ≠ random, layer, α ≠ 0) the per-item difference
      shift(direction) − shift(random) (paired by item), sign-flip test across items
      (:func:`metacog.stats.one_sample`), Holm over the layers × α grid of that direction
      (``p_holm``);
    - slopes: per (direction ≠ random, layer) the per-item OLS slope of the shift on α (points
      per σ) minus random's, same test, Holm over that direction's layers; and, since the random
      direction's sign is arbitrary, the magnitude contrast |slope| − |slope_random| per item
      (``abs_diff``, ``abs_p``, ``abs_ci``, ``abs_p_holm``): does the direction move E[v] *more*?
    """
    sp = asdict(spec) if isinstance(spec, SteerSpec) else dict(spec)
    col = f"d_{value}"
    cells = []
    for (k, h, a), g in res.groupby(["direction", "layer", "alpha"], sort=True):
        s = stats.one_sample(g[col].to_numpy(float), n_perm, n_boot, seed)
        c = {"direction": k, "layer": int(h), "alpha": float(a), **{x: s[x] for x in ("mean", "p", "ci", "n")}}
        for lab, m in (("correct", g["correct"].to_numpy(bool)), ("incorrect", ~g["correct"].to_numpy(bool))):
            t = stats.one_sample(g[col].to_numpy(float)[m], n_perm, n_boot, seed)
            c[lab] = {x: t[x] for x in ("mean", "ci", "n")}
        if "answer_changed" in g:
            c["answer_changed"] = float(pd.to_numeric(g["answer_changed"], errors="coerce").mean())
        cells.append(c)
    contrasts, slopes = [], []
    rnd = res[res["direction"] == "random"]
    if len(rnd):
        R = rnd.pivot_table(index="row", columns=["layer", "alpha"], values=col, aggfunc="first")
        for k in [x for x in sp["directions"] if x != "random"]:
            D = res[res["direction"] == k].pivot_table(index="row", columns=["layer", "alpha"], values=col, aggfunc="first")
            grid = []
            for h in sp["layers"]:
                for a in sp["alphas"]:
                    if float(a) == 0.0 or (h, a) not in D.columns or (h, a) not in R.columns:
                        continue
                    x = (D[(h, a)] - R[(h, a)].reindex(D.index)).to_numpy(float)
                    s = stats.one_sample(x, n_perm, n_boot, seed)
                    grid.append({"direction": k, "layer": int(h), "alpha": float(a), "diff": s["mean"], "p": s["p"],
                                 "ci": s["ci"], "n": s["n"], "share_pos": s["share_pos"], "min_p": s["min_p"]})
            ph = stats.holm([g["p"] if g["p"] is not None else np.nan for g in grid])
            for g, q in zip(grid, ph):
                g["p_holm"] = None if not np.isfinite(q) else float(q)
            contrasts += grid
            lay = []
            for h in sp["layers"]:
                al = [a for a in sp["alphas"] if (h, a) in D.columns and (h, a) in R.columns]
                if len(al) < 2:
                    continue
                A = np.asarray(al, dtype=float)
                sd = _slope(A, D[[(h, a) for a in al]].to_numpy(float))
                sr = _slope(A, R[[(h, a) for a in al]].reindex(D.index).to_numpy(float))
                s = stats.one_sample(sd - sr, n_perm, n_boot, seed)
                so = stats.one_sample(sd, n_perm, n_boot, seed)
                sro = stats.one_sample(sr, n_perm, n_boot, seed)
                sa = stats.one_sample(np.abs(sd) - np.abs(sr), n_perm, n_boot, seed)
                lay.append({"direction": k, "layer": int(h), "slope_diff": s["mean"], "p": s["p"], "ci": s["ci"], "n": s["n"],
                            "slope": so["mean"], "slope_ci": so["ci"], "slope_random": sro["mean"],
                            "slope_random_ci": sro["ci"], "min_p": s["min_p"],
                            "abs_diff": sa["mean"], "abs_p": sa["p"], "abs_ci": sa["ci"]})
            for key, out in (("p", "p_holm"), ("abs_p", "abs_p_holm")):
                ph = stats.holm([g[key] if g[key] is not None else np.nan for g in lay])
                for g, q in zip(lay, ph):
                    g[out] = None if not np.isfinite(q) else float(q)
            slopes += lay
    return {"value": value, "unit": "item", "cells": cells, "contrasts": contrasts, "slopes": slopes,
            "test": "sign-flip permutation test of the mean across items (scipy.stats.permutation_test, two-sided)",
            "ci_method": f"percentile bootstrap over items (scipy.stats.bootstrap), {int(n_boot)} resamples, 95%",
            "correction": "holm: over the layers x alpha grid of one direction (contrasts); over its layers (slopes)",
            "null": "each item's difference (direction - random) is symmetric about 0",
            "statistic": f"per item: shift of {value} vs the same item at alpha = 0; contrast = shift(direction) - shift(random) "
                         "paired by item; slope = OLS slope of the shift on alpha (points per sigma)"}


# ====================================================================================== reading
def resummarize(ws: Workspace, sid: str) -> dict:
    """Recompute ``steering.json``'s statistics from ``results.parquet`` (no model needed)."""
    res, old = load_results(ws, sid)
    if res is None or old is None:
        raise WorkspaceError(f"steering sweep {sid} has no results yet")
    new = {**old, **summarize(res, old["spec"])}
    with ws.writer("steer"):
        ws.write_json(f"{DIR}/{sid}/steering.json", new)
    return new


def list_sweeps(ws: Workspace) -> list[dict]:
    """Saved sweeps, newest first: ``{id, created, spec, complete}``."""
    d = ws.path(DIR)
    out = []
    if d.exists():
        for p in d.iterdir():
            pl = ws.read_json(f"{DIR}/{p.name}/plan.json")
            if pl:
                out.append({"id": p.name, "created": pl.get("created"), "spec": pl.get("spec"),
                            "complete": ws.path(DIR, p.name, "steering.json").exists()})
    return sorted(out, key=lambda r: r.get("created") or "", reverse=True)


def load_results(ws: Workspace, sid: str) -> tuple[pd.DataFrame | None, dict | None]:
    """(results.parquet, steering.json) of sweep ``sid`` (None where not written yet)."""
    p = ws.path(DIR, sid, "results.parquet")
    return (ws.read_parquet(f"{DIR}/{sid}/results.parquet") if p.exists() else None), ws.read_json(f"{DIR}/{sid}/steering.json")


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """A steering sweep as an app job in its own process (:mod:`metacog.jobs`): ``spec`` holds
    ``steer`` (a SteerSpec dict) and ``threads``."""
    from .models import loader_from_env
    from .settings import ModelSettings, from_dict, to_dict

    ms, _ = ws.settings()
    progress(0, 0, "loading the model")
    lm = loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(spec.get("threads") or 1)}))
    s = SteerSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["steer"].items()})
    out = run_steering(ws, lm, s, progress, should_stop)
    return {"id": out["id"], "n_items": out["n_items"], "seconds": out["seconds"]}
