"""Planning a patching grid from a workspace: resolve ``--source``/``--target`` (``base``, a run
id or adapter directory, an item id, or the selectors ``high``/``low``/``random``) into
pairs, and check every input before any model work (:func:`plan_grid`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metacog.patching.adapters import adapter_dir, load_adapter_model
from metacog.patching.hook_points import available_components
from metacog.patching.pairs import Pair, Side, make_side, resolve_positions
from metacog.patching.spec import PATCHING_VERSION, PatchError, PatchSpec, parse_layers


SCORES = {"probe": "probe_p", "ev": "ev_inline", "verbal": "verbal_inline"}


def item_table(ws) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p): :func:`metacog.stages.study.results_table`."""
    from metacog.stages.study import results_table

    return results_table(ws)


def _side(lm, row, style: str, label: str, model_label: str) -> Side:
    """The inline sequence of a workspace item (the activation cache's, :func:`metacog.stages.activations.encode_item`)."""
    ch = row["choices"] if row.get("kind") == "mc" else None
    return make_side(lm, row["question"], row["answer"], label, ch, style, item_id=str(row["id"]), row=int(row["row"]),
                     correct=None if pd.isna(row.get("correct")) else bool(row["correct"]), model_label=model_label)


def filter_items(df: pd.DataFrame, split: str = "all", correct: str = "any", score: str | None = None,
                 lo: float | None = None, hi: float | None = None) -> pd.DataFrame:
    """Rows of the item table ``df`` in ``split`` (``all``: every split) with ``correct`` (``any`` |
    ``yes`` | ``no``) and, when ``lo``/``hi`` are given, a score (``probe``/``ev``/``verbal`` or a
    column; probability or points 0–100) within ``[lo, hi]``."""
    d = df if split in ("all", "", None) else df[df["split"] == split]
    if correct in ("yes", "true", "correct"):
        d = d[d["correct"].astype(bool)]
    elif correct in ("no", "false", "incorrect", "wrong"):
        d = d[~d["correct"].astype(bool)]
    if score is not None and (lo is not None or hi is not None):
        col = SCORES.get(score, score)
        v = d[col].astype(float)
        if lo is not None:
            d = d[v >= lo]
            v = d[col].astype(float)
        if hi is not None:
            d = d[v <= hi]
    return d


@dataclass
class GridPlan:
    """Everything a grid needs, checked: pairs (models loaded, sequences encoded), spec."""

    spec: PatchSpec
    pairs: list[Pair]
    source: str
    target: str
    description: dict = field(default_factory=dict)

    @property
    def grid_id(self) -> str:
        """The grid's id (10 hex digits): a hash of the spec, source, target, the pairs (with the
        token ids of both sides' sequences: a rerun study whose answers changed is another grid,
        never resumed into this one) and the models' weight hashes — the directory
        ``patching/<id>/``; the same inputs give the same id (resume)."""
        from metacog.core.settings import stable_hash

        return stable_hash(
            "patching", PATCHING_VERSION, self.spec, self.source, self.target,
            [(p.kind, p.source.label, p.source.item_id, list(map(int, p.source.ids)), p.target.label, p.target.item_id,
              list(map(int, p.target.ids))) for p in self.pairs],
            sorted({p.source.lm.weights_hash for p in self.pairs} | {p.target.lm.weights_hash for p in self.pairs}),
            n=10,
        )

    def n_units(self) -> int:
        """Units of work: pairs × positions (named + picked + the K draws of ``random:K``)."""
        return len(self.pairs) * (len([p for p in self.spec.positions if not p.startswith("random:")]) + self.spec.n_random())


def _model_side_ref(ws, lm, ref: str):
    """'base' → lm; a run id / adapter dir → (adapter model, label); else None (not a model)."""
    if ref in ("base", "model", "default"):
        return lm, "base"
    try:
        adir = adapter_dir(ws, ref)
    except PatchError:
        return None
    label = f"run:{adir.parent.name if adir.name == 'adapter' else adir.name}"
    return load_adapter_model(lm, adir, label), label


def plan_grid(ws, lm, source: str, target: str, spec: PatchSpec, n_pairs: int = 10, by: str = "auto",
               split: str = "all", source_correct: str = "any", target_correct: str = "any",
               items: list[str] | None = None, pair_seed_: int | None = None, style: str | None = None,
               pool: list[str] | None = None) -> GridPlan:
    """Resolve ``source``/``target`` (``base``, a run id or adapter dir, an item id, or the
    selectors ``high``/``low``/``random``) into pairs, and check every input before any work.

    - model → model (both sides models): ``n_pairs`` items of ``split`` (or ``items``),
      drawn with the seed; each pair is one item in both models.
    - item → item (both sides items/selectors, in the workspace's model): ``high``/``low``
      take the items with the highest/lowest score ``by`` (probe p, else E[v]); pairs are
      matched in rank order (the highest source with the lowest target, ...).

    ``pool`` (item ids) restricts every draw and selector to those items (e.g. a score range).

    Raises:
        PatchError: any bad input, before model work — no answers yet; ``--pairs`` < 1; a
            source/target that is neither a model nor an item/selector; the same model on both sides;
            a model on one side and an item on the other; items not in the workspace; layers outside
            the model; components the blocks lack; no score to rank by; no items to draw from; an
            adapter made for another base model; a ``token:I`` outside a target sequence.
    """
    if n_pairs < 1:
        raise PatchError("--pairs must be at least 1")
    _, study = ws.settings()
    style = style or study.prompt_style
    if not ws.path("answers.parquet").exists():
        raise PatchError(f"{ws.root} has no answers yet: run `metacog answers --workspace {ws.root}` first")
    df = item_table(ws)
    if pool is not None:
        missing = sorted(set(pool) - set(df["id"].astype(str)))
        if missing:
            raise PatchError(f"item(s) not in this workspace's answers: {', '.join(missing[:5])}")
        df = df[df["id"].isin(pool)]
    L = lm.n_layers
    if spec.layers is not None:
        parse_layers(list(spec.layers), L)  # range check with the model's message
    bad_comp = [c for c in spec.components if c != "resid" and spec.layers is not None and not [h for h in spec.layers if h >= 1]]
    if bad_comp:
        raise PatchError("attn/mlp patches need layers >= 1 (the sub-layer outputs of block h-1)")
    missing = [c for c in spec.components if c not in available_components(lm)]
    if missing:
        raise PatchError(f"{lm.name}'s blocks expose no {' / '.join(missing)} sub-layer to patch; use the residual stream (resid)")
    s_model = _model_side_ref(ws, lm, source)
    t_model = _model_side_ref(ws, lm, target)
    ids_known = set(df["id"].astype(str))
    selectors = ("high", "low", "random")
    pairs: list[Pair] = []
    seed = spec.seed if pair_seed_ is None else pair_seed_
    if s_model is not None and t_model is not None:
        (slm, slab), (tlm, tlab) = s_model, t_model
        if slab == tlab:
            raise PatchError(f"source and target are the same model ({slab}): model → model needs two models, e.g. --source RUN --target base")
        if items:
            missing = [i for i in items if i not in ids_known]
            if missing:
                raise PatchError(f"item(s) not in this workspace's answers: {', '.join(missing[:5])}")
            pool = df[df["id"].isin(items)]
        else:
            pool = filter_items(df, split, target_correct)
            if len(pool) == 0:
                raise PatchError(f"no items in split '{split}' with correct={target_correct}")
            rng = np.random.default_rng(seed)
            pool = pool.iloc[np.sort(rng.choice(len(pool), size=min(n_pairs, len(pool)), replace=False))]
        for k, (_, row) in enumerate(pool.iterrows()):
            pairs.append(Pair(k, _side(slm, row, style, slab, slab), _side(tlm, row, style, tlab, tlab), "model"))
    elif s_model is None and t_model is None:
        col = None
        if source in selectors or target in selectors:
            col = _score_col(df, by)

        def pick(ref: str, correct: str, other: str) -> pd.DataFrame:
            if ref in selectors:
                pool = filter_items(df, split, correct)
                if col is not None:
                    pool = pool[pool[col].notna()]
                if len(pool) == 0:
                    raise PatchError(f"no items to choose '{ref}' from (split {split}, correct={correct})")
                if ref == "random":
                    rng = np.random.default_rng([seed, 1 if other == "s" else 2])
                    return pool.iloc[rng.permutation(len(pool))]
                return pool.sort_values(col, ascending=(ref == "low"), kind="mergesort")
            if ref not in ids_known:
                raise PatchError(
                    f"'{ref}' is neither an item of this workspace, a model ('base', a run id, an adapter directory), "
                    f"nor one of {', '.join(selectors)}"
                )
            return df[df["id"] == ref]

        S = pick(source, source_correct, "s")
        Tg = pick(target, target_correct, "t")
        srows = [r for _, r in S.iterrows()]
        trows = [r for _, r in Tg.iterrows()]
        fixed_s = None if source in selectors else srows[0]
        fixed_t = None if target in selectors else trows[0]
        if fixed_s is not None and fixed_t is not None:
            pairs.append(Pair(0, _side(lm, fixed_s, style, str(fixed_s["id"]), "base"),
                              _side(lm, fixed_t, style, str(fixed_t["id"]), "base"), "item"))
        else:
            used: set = set()

            def take(rows, fixed, exclude):
                if fixed is not None:
                    return fixed
                while rows and (rows[0]["id"] in used or rows[0]["id"] == exclude):
                    rows.pop(0)
                return rows.pop(0) if rows else None

            while len(pairs) < n_pairs:
                rs = take(srows, fixed_s, None if fixed_t is None else fixed_t["id"])
                if rs is None:
                    break
                used.add(rs["id"])
                rt = take(trows, fixed_t, rs["id"])
                if rt is None:
                    break
                used.add(rt["id"])
                pairs.append(Pair(len(pairs), _side(lm, rs, style, str(rs["id"]), "base"),
                                  _side(lm, rt, style, str(rt["id"]), "base"), "item"))
        if not pairs:
            raise PatchError("no item pairs could be formed from these choices")
    else:
        raise PatchError(
            "source and target must both be models (base, RUN, adapter dir) or both be items (ITEM ids, high, low, random); "
            f"got source '{source}' and target '{target}'"
        )
    for pr in pairs:  # position checks before any work (token indices, random pool)
        resolve_positions(pr, spec)
    desc = {"source": source, "target": target, "by": by, "split": split, "n_pairs": len(pairs),
            "source_correct": source_correct, "target_correct": target_correct, "style": style,
            "kind": pairs[0].kind, "model": lm.name, "weights_hash": lm.weights_hash}
    return GridPlan(spec=spec, pairs=pairs, source=source, target=target, description=desc)


def _score_col(df: pd.DataFrame, by: str) -> str:
    if by == "auto":
        for b in ("probe", "ev", "verbal"):
            c = SCORES[b]
            if c in df and df[c].notna().any():
                return c
        raise PatchError("no score to rank items by: run the activations (E[v]) or probes stage first")
    c = SCORES.get(by)
    if c is None:
        raise PatchError(f"--by must be probe, ev or verbal, not {by!r}")
    if c not in df or not df[c].notna().any():
        need = {"probe": "probes", "ev": "activations", "verbal": "answers"}[by]
        raise PatchError(f"cannot rank items by {by}: this workspace has no {need} stage yet")
    return c
