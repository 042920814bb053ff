"""Fine-tuning targets: which items, which 0–100 value, and the exact tokens trained on.

Targets are built **only from training-split items** (SCIENCE.md bug 2) and, for probe
targets, only from the probe's **out-of-fold** predictions ``probes/oof.npy`` (bug 3: for
train rows that array holds cross-fitted p, never an in-sample fit). ``t = clip(round(100 p), 0, 100)``.

Kinds (controls use identical settings otherwise):
- ``probe``: the chosen probe's out-of-fold p (default: the best probe by train-split CV);
- ``binary``: 100 if the model's answer was correct, else 0; balanced by default (the
  majority class is subsampled, seeded, to the size of the minority class);
- ``shuffled``: the probe targets, permuted across the same items (same distribution, no
  link to the item);
- ``constant``: one value for every item (default ``round(100 × train accuracy)``);
- ``file``: a user's JSONL/CSV file with ``id`` and ``target`` (an integer 0–100).

The assistant text is ``"{own greedy answer}\\nConfidence: {t}%"`` (inline) or
``"Confidence: {t}%"`` (two-pass, after the two-pass prompt). Token ids are built from the
same segments as :mod:`metacog.data.prompts` (``encode_inline`` / ``encode_two_pass``), and the
value is tokenised exactly as the 0–100 readout scores it (the trie's ``value_ids``, i.e.
``" {t}"`` on its own), then ``"%"``, then the chat template's end-of-turn marker. So the
tokens trained on are the very tokens whose probability the readout measures.

Public entry: :func:`build_targets` (the single-question targets); the pairwise and multitask
examples built on them are in :mod:`metacog.finetune.tasks` (:func:`~metacog.finetune.tasks.build_task`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.core.settings import POSITIONS, TWO_PASS_OFF
from metacog.stages.study import position_index, probe_positions
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.core.files import load_array, read_table
from metacog.finetune.settings import FinetuneSettings, SettingsError

TRAIN_SPLIT = "train"
TARGET_COLUMNS = ["row", "id", "split", "role", "category", "kind", "question", "choices", "answer", "correct",
                  "probe_p", "pair_p", "target", "assistant_text"]


class TargetError(ValueError):
    """Targets that cannot be built or a target file that is refused (message says why)."""


# ------------------------------------------------------------------------------ probe choice
def resolve_probe(ws: Workspace, layer: int | None = None, position: str | None = None) -> dict:
    """The probe whose out-of-fold p makes the targets: the given (layer, position), or the
    best one (``probes/best.json``, chosen by train-split CV).

    Raises:
        TargetError: no probes (or none fitted), a malformed ``probes/oof.npy``, or a position/layer outside the model's."""
    best = ws.read_json("probes/best.json")
    oof_path = ws.path("probes", "oof.npy")
    if not best and oof_path.exists() and ws.path("probes", "metrics.parquet").exists():
        why = ""
        try:
            from metacog.stages.study import load_items

            items = load_items(ws)
            ans = ws.read_parquet("answers.parquet")
            tr = ans[ans["row"].isin(items.loc[items["split"] == "train", "row"])]
            why = f" (train split: {int(tr['correct'].sum())} correct, {int((~tr['correct'].astype(bool)).sum())} incorrect)"
        except Exception:  # the message stays useful without the counts
            pass
        raise TargetError(
            f"the probes stage ran in {ws.root}, but no probe could be fitted{why}: a probe needs both correct and "
            "incorrect training items. Use more items (--limit) or another dataset, then rerun the study.")
    if best is None or not oof_path.exists():
        raise TargetError(
            f"no probes in {ws.root} (probes/best.json and probes/oof.npy): run `metacog probes --workspace {ws.root}` first"
        )
    oof = load_array(oof_path, mmap=True)
    probed = probe_positions(ws)
    if oof.ndim != 3 or oof.shape[2] != len(probed):
        raise TargetError(f"probes/oof.npy has shape {oof.shape}; expected [n_items, n_layers, {len(probed)}] "
                          f"({', '.join(probed)}): re-run the probes stage")
    lay = int(best["layer"]) if layer is None else int(layer)
    pos = str(best["position"]) if position is None else str(position)
    if pos not in probed:
        why = f" ({TWO_PASS_OFF})" if pos == "confidence_2p" else ""
        raise TargetError(f"probe position {pos!r} was not probed in {ws.root} (probed: {', '.join(probed)}){why}")
    if not 0 <= lay < oof.shape[1]:
        raise TargetError(f"probe layer {lay} is outside 0..{oof.shape[1] - 1} (hidden-state indices of this model)")
    info = {"layer": lay, "position": pos, "is_best": (lay == int(best["layer"]) and pos == best["position"])}
    mp = ws.path("probes", "metrics.parquet")
    if mp.exists():
        pm = read_table(mp)
        r = pm[(pm["layer"] == lay) & (pm["position"] == pos)]
        if len(r):
            r = r.iloc[0]
            for k in ("cv_auroc", "auroc", "C"):
                if k in r and pd.notna(r[k]):
                    info[k] = float(r[k])
    return info


def probe_p(ws: Workspace, layer: int, position: str) -> np.ndarray:
    """p(correct) of probe (layer, position) for every row: cross-fitted for train rows."""
    oof = load_array(ws.path("probes", "oof.npy"), mmap=True)
    return np.asarray(oof[:, int(layer), position_index(ws, position, oof)], dtype=np.float64)


def to_target(p) -> np.ndarray:
    """t = clip(round(100 p), 0, 100) as integers (NaN stays a problem for the caller)."""
    return np.clip(np.round(100.0 * np.asarray(p, dtype=float)), 0, 100).astype(int)


# ------------------------------------------------------------------------------ building
def _base_table(ws: Workspace) -> pd.DataFrame:
    from metacog.stages.study import load_items

    items = load_items(ws)
    try:
        ans = ws.read_parquet("answers.parquet")
    except WorkspaceError:
        raise TargetError(f"no answers in {ws.root}: run `metacog study --workspace {ws.root}` first") from None
    keep = ans[["row", "answer", "correct"]]
    df = items.merge(keep, on="row", how="inner")
    return df.sort_values("row").reset_index(drop=True)


def read_target_file(path: str | Path) -> pd.DataFrame:
    """A user's target file: JSONL (one object per line) or CSV, with ``id`` and ``target``
    (integers 0–100). Everything wrong is reported at once, before any work.

    Raises:
        TargetError: missing or unreadable file, wrong extension, missing columns, targets not integers in 0..100, duplicate ids."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TargetError(f"target file not found: {p}")
    try:
        if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            recs = []
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise TargetError(f"{p}: line {i} is not JSON ({e.msg})") from None
            df = pd.DataFrame.from_records(recs)
        elif p.suffix.lower() in (".csv", ".tsv"):
            df = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",", dtype={"id": str})
        else:
            raise TargetError(f"{p}: target files must be .jsonl or .csv")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise TargetError(f"cannot read target file {p}: {e}") from None
    missing = [c for c in ("id", "target") if c not in df.columns]
    if missing:
        raise TargetError(f"{p}: missing column(s) {', '.join(missing)} (need id and target)")
    df = df[["id", "target"]].copy()
    df["id"] = df["id"].astype(str)
    t = pd.to_numeric(df["target"], errors="coerce")
    bad = df[t.isna() | (t < 0) | (t > 100) | (t != np.round(t))]
    if len(bad):
        ex = ", ".join(f"{i}={v!r}" for i, v in bad.head(5).itertuples(index=False))
        raise TargetError(f"{p}: {len(bad)} target(s) are not integers in 0..100 (e.g. {ex})")
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise TargetError(f"{p}: duplicate id(s): {', '.join(dup.head(5))}")
    df["target"] = t.astype(int)
    return df


def assert_train_only(df: pd.DataFrame, items: pd.DataFrame | None = None) -> None:
    """Raise if any target row is not a training-split item (by its own split column and,
    when given, by the workspace's items table)."""
    bad = df[df["split"] != TRAIN_SPLIT]
    if items is not None:
        sp = items.set_index("id")["split"]
        real = df["id"].map(sp)
        bad = pd.concat([bad, df[real != TRAIN_SPLIT]]).drop_duplicates("id")
    if len(bad):
        ex = ", ".join(f"{i} ({s})" for i, s in bad[["id", "split"]].head(5).itertuples(index=False))
        raise TargetError(f"{len(bad)} target item(s) are not in the training split (e.g. {ex}): "
                          "targets may only come from training items; eval items must never be trained on")


def build_targets(ws: Workspace, s: FinetuneSettings) -> tuple[pd.DataFrame, dict]:
    """Target rows (columns TARGET_COLUMNS) for the training split, and a description.

    Raises:
        TargetError: no training items with answers, too few after the validation hold-out, a target file
            naming unknown or non-training items, missing out-of-fold predictions, or binary targets
            without both classes."""
    base = _base_table(ws)
    rng = np.random.default_rng(s.seed)
    info: dict = {"kind": s.targets, "format": s.format}
    if s.targets == "file":
        tf = read_target_file(s.targets_file)
        known = set(base["id"])
        unknown = [i for i in tf["id"] if i not in known]
        if unknown:
            raise TargetError(f"target file names {len(unknown)} id(s) that are not items of this workspace "
                              f"(or have no answer): {', '.join(unknown[:5])}")
        sp = base.set_index("id")["split"]
        leak = tf[tf["id"].map(sp) != TRAIN_SPLIT]
        if len(leak):
            ex = ", ".join(f"{i} ({sp[i]})" for i in leak["id"].head(5))
            raise TargetError(f"target file has {len(leak)} item(s) outside the training split (e.g. {ex}); "
                              "only training items may be targets (eval items must never be trained on)")
        df = base.merge(tf, on="id", how="inner")
        info["file"] = str(Path(s.targets_file).expanduser().resolve())
        df["probe_p"] = np.nan
    else:
        df = base[base["split"] == TRAIN_SPLIT].copy()
    if df.empty:
        raise TargetError("no training-split items with answers: nothing to train on")
    if s.targets == "file":
        df["pair_p"] = df["target"].to_numpy(float) / 100.0
    if s.limit_items is not None and s.limit_items < len(df):
        pick = np.sort(rng.choice(len(df), size=s.limit_items, replace=False))
        df = df.iloc[pick].copy()
    info["n_train_split_items"] = int((base["split"] == TRAIN_SPLIT).sum())

    if s.targets in ("probe", "shuffled"):
        pr = resolve_probe(ws, s.probe_layer, s.probe_position)
        info["probe"] = pr
        p = probe_p(ws, pr["layer"], pr["position"])[df["row"].to_numpy()]
        if np.isnan(p).any():
            raise TargetError(f"the probe (layer {pr['layer']} @ {pr['position']}) has no out-of-fold prediction for "
                              f"{int(np.isnan(p).sum())} training item(s): re-run the probes stage")
        df["probe_p"] = p
        if s.targets == "shuffled":  # shuffled p (pairwise compares the shuffled p; t = round(100 p) as before)
            p = p[rng.permutation(len(p))]
        df["pair_p"] = p
        df["target"] = to_target(p)
    elif s.targets == "binary":
        df["probe_p"] = np.nan
        y = df["correct"].to_numpy(bool)
        if s.binary_balance:
            pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
            k = min(len(pos), len(neg))
            if k == 0:
                raise TargetError("binary targets need both correct and incorrect training items")
            keep = np.sort(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)]))
            df = df.iloc[keep].copy()
            y = df["correct"].to_numpy(bool)
            info["balanced"] = {"per_class": int(k)}
        df["target"] = np.where(y, 100, 0)
        df["pair_p"] = y.astype(float)
    elif s.targets == "constant":
        df["probe_p"] = np.nan
        c = s.constant_value if s.constant_value is not None else int(round(100 * float(df["correct"].mean())))
        info["constant"] = int(c)
        df["target"] = int(c)
        df["pair_p"] = np.nan
    # held-out validation items (still training-split items; never trained on)
    n = len(df)
    n_val = int(round(s.val_fraction * n)) if s.val_fraction > 0 else 0
    if s.val_fraction > 0 and n_val == 0 and n >= 4:
        n_val = 1
    if n - n_val < 1:
        raise TargetError(f"only {n} target item(s): nothing left to train on after holding out {n_val} for validation")
    role = np.array(["train"] * n, dtype=object)
    if n_val:
        role[rng.choice(n, n_val, replace=False)] = "val"
    df["role"] = role
    df["target"] = df["target"].astype(int)
    if (df["target"] < 0).any() or (df["target"] > 100).any():
        raise TargetError("targets outside 0..100")  # cannot happen; guards later edits
    df["assistant_text"] = [assistant_text(a, t, s.format) for a, t in zip(df["answer"], df["target"])]
    out = df[[c for c in TARGET_COLUMNS if c in df.columns]].reset_index(drop=True)
    assert_train_only(out, base)
    tr = out[out["role"] == "train"]
    info.update(
        n=int(len(out)), n_train=int(len(tr)), n_val=int(n_val), mean_target=float(tr["target"].mean()),
        share_at_ceiling=float((tr["target"] >= 95).mean()), accuracy=float(tr["correct"].mean()),
    )
    return out, info


def assistant_text(answer: str, target: int, fmt: str) -> str:
    """The assistant turn trained on, as text (documentation: the ids come from segments)."""
    if fmt == "uncertainty-query":
        from metacog.finetune.settings import UQ_LABELS

        return UQ_LABELS[0] if int(target) >= 50 else UQ_LABELS[1]
    val = prompts.target_text(int(target))
    if fmt == "inline":
        return (str(answer).strip() or "I don't know") + prompts.INLINE_CONF_PREFIX + val
    return prompts.TWO_PASS_CONF_PREFIX + val


# ------------------------------------------------------------------------------ files
def write_targets(path: Path, df: pd.DataFrame) -> None:
    """Write a run's target rows as ``targets.jsonl`` (one JSON object per row; NaN → null) atomically.

    Raises:
        TargetError: a row that is not a training-split item (:func:`assert_train_only`)."""
    from metacog.core.workspace import atomic_write_text

    assert_train_only(df)
    lines = []
    for r in df.to_dict("records"):
        rec = {}
        for k, v in r.items():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = None if np.isnan(v) else float(v)
            elif isinstance(v, np.bool_):
                v = bool(v)
            rec[k] = v
        lines.append(json.dumps(rec, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_targets(path: Path) -> pd.DataFrame:
    """A run's targets.jsonl, re-checked: training split only, integer targets 0..100.

    Raises:
        TargetError: the file is missing, lacks a column, or holds targets that are not integers in 0..100 or not training items."""
    p = Path(path)
    if not p.exists():
        raise TargetError(f"{p} does not exist")
    recs = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    df = pd.DataFrame.from_records(recs)
    for c in ("row", "id", "split", "role", "target", "answer", "question"):
        if c not in df.columns:
            raise TargetError(f"{p}: column {c!r} missing")
    t = pd.to_numeric(df["target"], errors="coerce")
    if t.isna().any() or (t < 0).any() or (t > 100).any() or (t != np.round(t)).any():
        raise TargetError(f"{p}: targets must be integers in 0..100")
    df["target"] = t.astype(int)
    assert_train_only(df)
    return df


# ------------------------------------------------------------------------------ tokens
@dataclass
class Example:
    """One tokenised training example: ``input_ids`` (prompt + assistant turn), ``labels`` (the
    same length; -100 where there is no loss) and its integer ``target`` (0–100)."""
    id: str
    input_ids: list[int]
    labels: list[int]  # -100 where no loss
    target: int

    @property
    def n_loss(self) -> int:
        """Number of tokens that carry loss (labels other than -100)."""
        return sum(1 for x in self.labels if x != -100)


def turn_end_ids(tok, is_chat: bool) -> list[int]:
    """Token ids that close the assistant turn (chat template's end marker, else EOS)."""
    text = ""
    if is_chat:
        try:
            probe = "Z9Q7X"
            s = tok.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": probe}], tokenize=False)
            if probe in s:
                text = s.split(probe, 1)[1].rstrip()
        except Exception:
            text = ""
    if not text:
        text = tok.eos_token or ""
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_example(tok, is_chat: bool, rec: dict, fmt: str, loss_on: str, style: str = "plain",
                   objective: str = "ce") -> Example:
    """Token ids and labels of one target row (see the module docstring).

    ``format="uncertainty-query"`` (calibration-tuning): the prompt of
    :func:`metacog.data.prompts.encode_uncertainty_query` about the model's own answer, then the reply
    label "Yes" (target 100) or "No" (target 0), then the end of turn; the label tokens are the
    ones :func:`metacog.readout.values.read_labels` scores. ``objective="brier"``: the prompt up to
    the confidence slot only (no target text, every label -100); the loss reads the 0-100
    distribution there and compares it with ``target / 100`` (correctness).

    Raises:
        TargetError: a target outside 0..100.
        SettingsError: an unknown format."""
    from metacog.readout.values import get_trie, label_ids

    target = int(rec["target"])
    if not 0 <= target <= 100:
        raise TargetError(f"target {target} for {rec.get('id')} is outside 0..100")
    if fmt == "uncertainty-query":
        from metacog.finetune.settings import UQ_LABELS

        enc = prompts.encode_uncertainty_query(tok, is_chat, rec["question"], str(rec["answer"] or ""), UQ_LABELS)
        lab = label_ids(tok, UQ_LABELS, is_chat)[0 if target >= 50 else 1]
        end = turn_end_ids(tok, is_chat) if loss_on == "assistant" else []
        ids = list(enc.ids) + lab + end
        return Example(id=str(rec["id"]), input_ids=ids, labels=[-100] * len(enc.ids) + ids[len(enc.ids):], target=target)
    choices = rec.get("choices")
    if choices is not None and not isinstance(choices, str):
        choices = list(choices)
        if not choices:
            choices = None
    if isinstance(choices, str):
        choices = None
    if rec.get("kind", "short") != "mc":
        choices = None
    if fmt == "inline":
        enc = prompts.encode_inline(tok, is_chat, rec["question"], str(rec["answer"] or ""), choices, style)
        loss_start = enc.spans["answer"][0] if loss_on == "assistant" else len(enc.ids)
    elif fmt == "two-pass":
        enc = prompts.encode_two_pass(tok, is_chat, rec["question"], str(rec["answer"] or ""))
        loss_start = enc.spans["conf"][0] if loss_on == "assistant" else len(enc.ids)
    else:
        raise SettingsError(f"unknown format {fmt!r}")
    if objective == "brier":
        return Example(id=str(rec["id"]), input_ids=list(enc.ids), labels=[-100] * len(enc.ids), target=target)
    value = list(get_trie(tok).value_ids[target])  # exactly the readout's tokens for " {t}"
    suffix = list(tok(prompts.TARGET_SUFFIX, add_special_tokens=False)["input_ids"])
    end = turn_end_ids(tok, is_chat) if loss_on == "assistant" else []
    ids = list(enc.ids) + value + suffix + end
    labels = [-100] * loss_start + ids[loss_start:]
    return Example(id=str(rec["id"]), input_ids=ids, labels=labels, target=target)


def encode_all(tok, is_chat: bool, df: pd.DataFrame, fmt: str, loss_on: str, style: str, max_length: int,
               objective: str = "ce") -> tuple[list[Example], int]:
    """Encode every row; rows longer than ``max_length`` are dropped (count returned)."""
    out, dropped = [], 0
    for rec in df.to_dict("records"):
        ex = encode_example(tok, is_chat, rec, fmt, loss_on, style, objective)
        if len(ex.input_ids) > max_length:
            dropped += 1
            continue
        out.append(ex)
    return out, dropped


# ------------------------------------------------------------------------------ moved
#: names that moved to :mod:`metacog.finetune.tasks` (pairwise and multitask examples); still
#: importable from here (``from metacog.finetune.targets import build_task`` keeps working)
MOVED_TO_TASKS = ("PAIR_COLUMNS", "pair_items", "pair_table", "build_task", "assert_pairs_train_only", "write_pairs",
                  "read_pairs", "encode_pair", "encode_task")


def __getattr__(name: str):
    """PEP 562: the names of :data:`MOVED_TO_TASKS`, from :mod:`metacog.finetune.tasks` (imported on
    first use: that module builds on this one, so it cannot be imported at the top here)."""
    if name in MOVED_TO_TASKS:
        from metacog.finetune import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
