"""One pair's cells: the clean readouts of both sides, the target's trace, and every
(component, layer) patched run at each position as a tidy frame (one row per cell: the
patched 0–100 distribution, its expected value, the shift and the normalised shift, KL,
whether the greedy answer is unchanged)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metacog.patching.fast import patch_position_fast
from metacog.patching.hook_points import Variant
from metacog.patching.pairs import Pair, PosPlan, Side, answer_window, resolve_positions
from metacog.patching.reference import patch_cell_reference, reference_greedy
from metacog.patching.spec import PatchError, PatchSpec
from metacog.patching.trace import CellResult, Trace, dot_tol, trace
from metacog.readout import values as conf
from metacog.readout.values import Readout, expected_value, get_trie, read_values


_EPS = 1e-12


@dataclass
class Prepared:
    """One pair ready to patch: its resolved positions, the clean readouts of both sides
    (:class:`~metacog.readout.values.Readout`, probabilities over 0–100), the source's trace (the
    states written in) and, for the fast method, the target's trace (None: reference cells)."""
    pair: Pair
    plans: list[PosPlan]
    src_read: Readout
    tgt_read: Readout
    src_trace: Trace
    tgt_trace: Trace | None


def read_side(side: Side) -> Readout:
    """The clean (unpatched) exact 0–100 readout of one side: :func:`metacog.readout.values.read_values`
    on its sequence, one row in one forward (no shared prefix: the layout of the reference
    method's patched forwards); ``probs`` ``[1, 101]``, ``expected`` in points 0–100."""
    return read_values(side.lm, [side.ids], dot_tol=dot_tol(), share_prefix=False)


@torch.no_grad()
def prepare_pair(pair: Pair, spec: PatchSpec, method: str = "fast") -> Prepared:
    """Readouts of both sides, the source's states, and (fast) the target's trace.

    The clean readouts come from the computation the pair's cells use, so a patch that writes
    the target's own state gives a shift of exactly 0: with the fast method the traces' own
    tree passes (:func:`metacog.patching.trace.trace`), else :func:`read_side`. (In bfloat16
    the two paths round apart: on SmolLM2 one of three items' forced no-op fast cells all sat
    0.063 points below its :func:`read_side` readout, a same-sign offset that a sign test at
    random positions would have read as an effect.)"""
    plans = resolve_positions(pair, spec)
    fast = method == "fast" and conf.tree_ok(pair.target.lm.model, pair.target.T, get_trie(pair.target.lm.tokenizer))
    # (where the tree-masked pass is not exact — ALiBi, a sliding window shorter than the
    # sequence + trie — the fast method falls back to the reference, cell by cell)
    src_fast = fast and conf.tree_ok(pair.source.lm.model, pair.source.T, get_trie(pair.source.lm.tokenizer))
    src_tr = trace(pair.source, tree=src_fast)
    tgt_tr = trace(pair.target, tree=True, window=answer_window(pair.target)) if fast else None
    src_read = src_tr.readout if src_fast else read_side(pair.source)
    tgt_read = tgt_tr.readout if fast else read_side(pair.target)
    return Prepared(pair, plans, src_read, tgt_read, src_tr, tgt_tr)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, _EPS, None)
    q = np.clip(q, _EPS, None)
    return float(np.sum(p * (np.log(p) - np.log(q))))


def variants_for(prep: Prepared, plan: PosPlan, spec: PatchSpec) -> list[Variant]:
    """The patches of one position: a :class:`~metacog.patching.hook_points.Variant` per
    (component, layer) of ``spec``, each carrying the source's state ``[d_model]`` at the
    position's source index (component-major, then layer order)."""
    n_layers = prep.pair.target.lm.n_layers
    out = []
    for comp in spec.components:
        for h in spec.layer_list(n_layers, comp):
            out.append(Variant(comp, h, prep.src_trace.state(comp, h, plan.source)))
    return out


@torch.no_grad()
def patch_position(prep: Prepared, plan: PosPlan, spec: PatchSpec, method: str = "fast", max_batch: int = 32) -> pd.DataFrame:
    """Every (component, layer) cell at one position of one pair: a tidy frame.

    Raises:
        PatchError: ``method`` is neither ``fast`` nor ``reference``.
    """
    pair = prep.pair
    tgt = pair.target
    variants = variants_for(prep, plan, spec)
    cells: list[CellResult | None] = [None] * len(variants)
    todo = []
    tgt_tr = prep.tgt_trace
    for j, v in enumerate(variants):
        if tgt_tr is not None and torch.equal(v.vec, tgt_tr.state(v.component, v.h, plan.target)):
            # the source state is the target's own: the forward is the unpatched one, exactly
            cells[j] = CellResult(prep.tgt_read.probs[0], float(prep.tgt_read.other[0]), float(prep.tgt_read.unresolved[0]), True, 0)
        else:
            todo.append(j)
    if todo:
        if method == "fast" and tgt_tr is None:  # see prepare_pair: no exact tree pass for this model
            method = "reference"
        if method == "fast":
            res = patch_position_fast(tgt, tgt_tr, plan.target, [variants[j] for j in todo], spec.check_answer, max_batch)
        elif method == "reference":
            greedy = reference_greedy(tgt) if spec.check_answer else None
            res = []
            for j in todo:
                v = variants[j]
                res.append(patch_cell_reference(tgt, v.component, v.h, plan.target, v.vec, greedy, spec.check_answer))
        else:
            raise PatchError(f"method must be fast or reference, not {method!r}")
        for j, r in zip(todo, res):
            cells[j] = r
    return _rows(prep, plan, spec, variants, cells)  # type: ignore[arg-type]


def _tok(tok, i: int) -> str:
    try:
        return tok.convert_ids_to_tokens(int(i))
    except Exception:
        return str(i)


def _rows(prep: Prepared, plan: PosPlan, spec: PatchSpec, variants: list[Variant], cells: list[CellResult]) -> pd.DataFrame:
    pair = prep.pair
    src, tgt = pair.source, pair.target
    ev_s = float(prep.src_read.expected[0])
    ev_t = float(prep.tgt_read.expected[0])
    p_t = np.append(prep.tgt_read.probs[0], prep.tgt_read.other[0])
    denom = ev_s - ev_t
    small = not (abs(denom) >= spec.min_denominator) if np.isfinite(denom) else True
    recs = []
    for v, c in zip(variants, cells):
        ev_p = float(expected_value(c.probs[None])[0])
        shift = ev_p - ev_t
        recs.append(
            {
                "pair": pair.index, "kind": pair.kind, "direction": pair.direction,
                "source": src.label, "target": tgt.label, "source_id": src.item_id, "target_id": tgt.item_id,
                "source_row": src.row, "target_row": tgt.row,
                "source_correct": src.correct, "target_correct": tgt.correct,
                "component": v.component, "layer": v.h,
                "position": plan.label, "position_kind": plan.kind,
                "target_pos": plan.target, "source_pos": plan.source,
                "position_class": plan.target_class, "source_position_class": plan.source_class,
                "target_token": _tok(tgt.lm.tokenizer, tgt.ids[plan.target]),
                "source_token": _tok(src.lm.tokenizer, src.ids[plan.source]),
                "ev_source": ev_s, "ev_target": ev_t, "ev_patched": ev_p,
                "shift": shift, "denom": denom,
                "normalised": (shift / denom) if not small else np.nan,
                "small_denominator": bool(small),
                "argmax_patched": int(np.argmax(c.probs)), "argmax_target": int(np.argmax(prep.tgt_read.probs[0])),
                "other_patched": c.other, "unresolved_patched": c.unresolved,
                "kl": _kl(p_t, np.append(c.probs, c.other)),
                "answer_unchanged": c.answer_unchanged, "answer_flips": c.answer_flips,
                "probs": c.probs.astype(np.float32),
            }
        )
    return pd.DataFrame.from_records(recs)


def patch_pair(pair: Pair, spec: PatchSpec, method: str = "fast", max_batch: int = 32) -> pd.DataFrame:
    """All cells of one pair (one row per component × layer × position)."""
    prep = prepare_pair(pair, spec, method)
    return pd.concat([patch_position(prep, plan, spec, method, max_batch) for plan in prep.plans], ignore_index=True)


def pair_record(prep: Prepared) -> dict:
    """One row of ``pairs.parquet``: both sides' labels, item ids and correctness, the clean expected
    values (points 0–100) and their difference ``denom``, the clean distributions ``probs_*``
    ``[101]`` float32, sequence lengths, and the resolved positions and their token classes (JSON)."""
    pair = prep.pair
    s, t = pair.source, pair.target
    return {
        "pair": pair.index, "kind": pair.kind, "direction": pair.direction, "source": s.label, "target": t.label,
        "source_id": s.item_id, "target_id": t.item_id, "source_row": s.row, "target_row": t.row,
        "source_correct": s.correct, "target_correct": t.correct,
        "ev_source": float(prep.src_read.expected[0]), "ev_target": float(prep.tgt_read.expected[0]),
        "denom": float(prep.src_read.expected[0] - prep.tgt_read.expected[0]),
        "probs_source": prep.src_read.probs[0].astype(np.float32), "probs_target": prep.tgt_read.probs[0].astype(np.float32),
        "other_source": float(prep.src_read.other[0]), "other_target": float(prep.tgt_read.other[0]),
        "target_len": t.T, "source_len": s.T,
        "positions": json.dumps({pl.label: [pl.target, pl.source] for pl in prep.plans}),
        "position_classes": json.dumps({pl.label: [pl.target_class, pl.source_class] for pl in prep.plans}),
    }
