"""Pairwise and multitask fine-tuning examples, built on the single-question targets of
:mod:`metacog.finetune.targets`.

A *pairwise* example shows two training items with the model's own answers and asks which one it
is more likely to have gotten right (the relative-confidence prompt of
:func:`metacog.data.prompts.encode_pairwise`, the one ``metacog methods``' relative method reads);
the target reply ("1"/"2") names the item with the higher ``pair_p`` (the probe's out-of-fold p,
or the kind's equivalent). Pairs are drawn from seeded permutations
(:func:`metacog.methods.ranking.schedule`), ties skipped, winner first in a seeded half. A
*multitask* run mixes pairwise and single-question examples (``pairwise_fraction``). Every
item in a pair is a training-split item (checked when pairs are built, written and read).

Files: ``runs/<id>/pairs.jsonl`` (``PAIR_COLUMNS``).

Public entry: :func:`build_task` (then :func:`encode_task` for the token ids).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.core.workspace import Workspace
from metacog.finetune.settings import FinetuneSettings
from metacog.finetune.targets import Example, TargetError, assert_train_only, build_targets, encode_all, turn_end_ids

PAIR_COLUMNS = ["id_first", "id_second", "row_first", "row_second", "split_first", "split_second", "role",
                "question_first", "question_second", "answer_first", "answer_second", "p_first", "p_second", "winner",
                "target_label"]


def pair_items(p, n_pairs: int, seed: int, max_rounds: int = 64) -> tuple[np.ndarray, dict]:
    """Up to ``n_pairs`` pairs of items with different ``p``, the winner shown first in a
    seeded balanced half of them.

    Pairs come from :func:`metacog.methods.ranking.schedule` (seeded permutations of the items,
    each cut into consecutive pairs): an unordered pair is kept once, a tie (equal p, or a NaN)
    is skipped, and at most ``max_rounds`` permutations are used, so every item appears in at
    most one pair per permutation used (``info["max_appearances"]``). Order: exactly
    ``m // 2`` of the ``m`` pairs (a seeded choice) show the winner first, the others second,
    so the reply "1" is right in half of the examples, never more than one example apart:
    no position preference can lower the loss.

    Returns ``[m, 2]`` indices into ``p`` in display order (first, second), and a description
    (requested, made, ties skipped, permutations used, max appearances per item, winner-first count).
    """
    from metacog.methods.ranking import schedule

    p = np.asarray(p, dtype=float)
    n = p.size
    info = {"requested": int(n_pairs), "ties_skipped": 0, "rounds": 0}
    if n < 2 or n_pairs < 1:
        info.update(made=0, max_appearances=0, winner_first=0)
        return np.zeros((0, 2), dtype=int), info
    per_round = n // 2
    cand = schedule(n, per_round * max_rounds, seed)
    seen, out, ties = set(), [], 0
    for k, (a, b) in enumerate(cand):
        a, b = int(a), int(b)
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        if not (np.isfinite(p[a]) and np.isfinite(p[b])) or p[a] == p[b]:
            ties += 1
            continue
        seen.add(key)
        out.append((a, b) if p[a] > p[b] else (b, a))  # (winner, loser)
        if len(out) >= n_pairs:
            info["rounds"] = k // per_round + 1
            break
    else:
        info["rounds"] = max_rounds
    wl = np.asarray(out, dtype=int).reshape(-1, 2)
    m = len(wl)
    first = np.zeros(m, dtype=bool)
    first[np.random.default_rng([int(seed), 2]).permutation(m)[: m // 2]] = True
    pairs = np.where(first[:, None], wl, wl[:, ::-1])
    counts = np.bincount(pairs.ravel(), minlength=n) if m else np.zeros(n, int)
    info.update(made=int(m), ties_skipped=int(ties), max_appearances=int(counts.max()) if m else 0,
                winner_first=int(first.sum()))
    return pairs, info


def pair_table(items: pd.DataFrame, pairs: np.ndarray, role: str) -> pd.DataFrame:
    """Pair rows (``PAIR_COLUMNS``) for ``pairs`` (display order) of ``items`` (target rows
    with ``pair_p``): the target reply is the position of the item with the higher p.

    Raises:
        TargetError: a pair with tied p (ties are skipped upstream)."""
    a, b = items.iloc[pairs[:, 0]].reset_index(drop=True), items.iloc[pairs[:, 1]].reset_index(drop=True)
    pa, pb = a["pair_p"].to_numpy(float), b["pair_p"].to_numpy(float)
    if np.any(pa == pb):
        raise TargetError("a pairwise target with tied p (cannot happen; ties are skipped)")
    winner = np.where(pa > pb, 1, 2)
    return pd.DataFrame({
        "id_first": a["id"].astype(str), "id_second": b["id"].astype(str), "row_first": a["row"].astype(int),
        "row_second": b["row"].astype(int), "split_first": a["split"], "split_second": b["split"], "role": role,
        "question_first": a["question"], "question_second": b["question"], "answer_first": a["answer"].astype(str),
        "answer_second": b["answer"].astype(str), "p_first": pa, "p_second": pb, "winner": winner,
        "target_label": [prompts.PAIRWISE_LABELS[w - 1] for w in winner],
    })[PAIR_COLUMNS]


def build_task(ws: Workspace, s: FinetuneSettings) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The examples of ``s.task``: (item target rows, pair rows, description).

    Every task makes one training example per training item (and per validation item), so
    runs of different tasks have the same length in updates for the same epochs:

    * ``single``: each item's single-question example (:func:`build_targets`);
    * ``pairwise``: as many pairs as items (:func:`pair_items`; each item in about two pairs),
      within the item's role (train pairs from train items, val pairs from val items);
    * ``multitask``: ``round(f × n)`` pairs and the single-question examples of a seeded
      ``n − round(f × n)`` of the items, ``f = pairwise_fraction`` (default 0.5).

    The target rows keep every item (``single`` says whether it makes a single-question
    example); the pairs compare ``pair_p`` (the probe's out-of-fold p; for ``shuffled`` the
    shuffled p; correctness for ``binary``; target/100 for ``file``).

    Raises:
        TargetError: as :func:`build_targets`, or (pairwise, multitask) no pair of training items with different targets."""
    df, info = build_targets(ws, s)
    df["single"] = True
    info["task"] = s.task
    if s.task == "single":
        return df, pd.DataFrame(columns=PAIR_COLUMNS), info
    f = s.pair_share
    parts, pinfo = [], {}
    for k, role in enumerate(("train", "val")):
        idx = np.flatnonzero(df["role"].to_numpy() == role)
        n = idx.size
        n_pair = n if f >= 1.0 else int(round(f * n))
        if f < 1.0:
            off = np.random.default_rng([s.seed, 3, k]).choice(n, size=n_pair, replace=False)
            df.loc[df.index[idx[off]], "single"] = False
        else:
            df.loc[df.index[idx], "single"] = False
        pairs, pi = pair_items(df["pair_p"].to_numpy(float)[idx], n_pair, seed=s.seed * 1000 + 17 + k)
        pinfo[role] = pi
        parts.append(pair_table(df.iloc[idx].reset_index(drop=True), pairs, role))
    pairs_df = pd.concat(parts, ignore_index=True)
    n_tr_pairs = int((pairs_df["role"] == "train").sum())
    if n_tr_pairs == 0:
        raise TargetError(f"task {s.task}: no pair of training items has different targets (all tied?): nothing to compare")
    assert_pairs_train_only(pairs_df, df)
    tr = df[df["role"] == "train"]
    n_single = int(tr["single"].sum())
    info["pairwise"] = {
        "fraction_requested": f, "n_train_pairs": n_tr_pairs, "n_val_pairs": int((pairs_df["role"] == "val").sum()),
        "n_train_single": n_single, "fraction_actual": n_tr_pairs / max(1, n_tr_pairs + n_single),
        "winner_first_share": float((pairs_df.loc[pairs_df["role"] == "train", "winner"] == 1).mean()),
        "pairs": pinfo, "rule": "the item with the higher p wins; ties skipped; winner first in a seeded half",
    }
    return df, pairs_df, info


def assert_pairs_train_only(pairs: pd.DataFrame, items: pd.DataFrame | None = None) -> None:
    """Raise unless both items of every pair are training-split items."""
    if pairs.empty:
        return
    for side in ("first", "second"):
        assert_train_only(pairs.rename(columns={f"id_{side}": "id", f"split_{side}": "split"})[["id", "split"]], items)


def write_pairs(path: Path, pairs: pd.DataFrame) -> None:
    """Write a run's pairwise examples as ``pairs.jsonl`` atomically.

    Raises:
        TargetError: a pair with an item outside the training split."""
    assert_pairs_train_only(pairs)
    _write_jsonl(path, pairs)


def _write_jsonl(path: Path, df: pd.DataFrame) -> None:
    from metacog.core.workspace import atomic_write_text

    recs = json.loads(df.to_json(orient="records", force_ascii=False))
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def read_pairs(path: Path) -> pd.DataFrame:
    """A run's pairs.jsonl, re-checked: both items training-split, the winner has the higher p.

    Raises:
        TargetError: a pair with an item outside the training split, or whose winner does not have the higher p."""
    p = Path(path)
    if not p.exists():
        return pd.DataFrame(columns=PAIR_COLUMNS)
    recs = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    df = pd.DataFrame.from_records(recs, columns=PAIR_COLUMNS) if recs else pd.DataFrame(columns=PAIR_COLUMNS)
    assert_pairs_train_only(df)
    if len(df):
        w = df["winner"].astype(int).to_numpy()
        pf, ps = df["p_first"].to_numpy(float), df["p_second"].to_numpy(float)
        if not np.all(np.where(w == 1, pf > ps, ps > pf)):
            raise TargetError(f"{p}: a pair's target is not the item with the higher p")
        df["winner"] = w
    return df


def encode_pair(tok, is_chat: bool, rec: dict, loss_on: str) -> Example:
    """One pairwise example: the relative-confidence prompt of :func:`metacog.data.prompts.encode_pairwise`
    (the one ``metacog methods``' relative method reads) with the two items' own answers, then
    the reply label ("1"/"2", as :func:`metacog.readout.values.read_labels` scores it) of the item
    with the higher p, then the end of turn (``loss_on="assistant"``). ``target`` = 100 when
    the first item wins, else 0."""
    from metacog.readout.values import label_ids

    w = int(rec["winner"])
    enc = prompts.encode_pairwise(tok, is_chat, rec["question_first"], str(rec["answer_first"] or ""),
                                  rec["question_second"], str(rec["answer_second"] or ""))
    lab = label_ids(tok, prompts.PAIRWISE_LABELS, is_chat)[w - 1]
    end = turn_end_ids(tok, is_chat) if loss_on == "assistant" else []
    ids = list(enc.ids) + lab + end
    return Example(id=f"{rec['id_first']}|{rec['id_second']}", input_ids=ids,
                   labels=[-100] * len(enc.ids) + ids[len(enc.ids):], target=100 if w == 1 else 0)


def encode_task(tok, is_chat: bool, df: pd.DataFrame, pairs: pd.DataFrame, s: FinetuneSettings, style: str
                ) -> tuple[list[Example], list[Example], dict]:
    """Training and validation examples of a run: the single-question examples of the target
    rows marked ``single`` (all rows when the column is absent: runs made before tasks), then
    the pairs in file order. Examples longer than ``max_length`` are dropped (counted)."""
    single = df[df["single"].astype(bool)] if "single" in df.columns else df
    out, dropped = {}, {}
    for role in ("train", "val"):
        ex, d = encode_all(tok, is_chat, single[single["role"] == role].sort_values("row"), s.format, s.loss_on, style,
                           s.max_length, s.objective)
        dp = 0
        if len(pairs):
            for rec in pairs[pairs["role"] == role].to_dict("records"):
                e = encode_pair(tok, is_chat, rec, s.loss_on)
                if len(e.input_ids) > s.max_length:
                    dp += 1
                    continue
                ex.append(e)
        out[role] = ex
        dropped[role] = d + dp
    return out["train"], out["val"], dropped
