"""The activation stage: hidden-state cache + exact 0–100 readout, from one forward.

For every item two sequences are run through the model's own forward (its causal mask,
left padding with explicit positions):

- inline:   answer prompt + the model's answer + "\\nConfidence:"
  → residual stream at ``last_prompt``, ``last_answer``, ``confidence``; P(0..100) inline;
- two-pass: two-pass prompt (question + answer) + "Confidence:"
  → residual stream at ``confidence_2p`` and P(0..100) two-pass, only where the answers carry
  the two-pass mode (``StudySettings.two_pass``). Without it this forward is not run: the
  cache holds the three inline positions (``settings.study_positions``), and
  ``confidence_2p.npy``, ``values_two_pass.npy`` and the ``*_two_pass`` readout columns are
  not written.

Storage (``activations/``): one float16 memmap ``<position>.npy`` of shape
``[n_items, n_layers + 1, d_model]`` per position (2 bytes × (layers+1) × d_model per item
and position), ``values_<mode>.npy`` float64 ``[n_items, 102]`` (101 probabilities + other),
``done.npy`` (rows finished), ``manifest.json``. Rows are written batch by batch and
marked done only after the data is flushed, so a killed run resumes with the rows it lacks.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.readout.values import expected_value, read_values
from metacog.model.generation import batches_by_length
from metacog.core.runtime import ProgressFn, StopFn, check_stop
from metacog.core.settings import INLINE_POSITIONS, POSITIONS, TWO_PASS_OFF, stable_hash, study_positions
from metacog.core.workspace import Workspace, WorkspaceError, atomic_save_npy, atomic_write_json, open_memmap
from metacog.core.files import load_array

ACTIVATIONS_VERSION = 2  # 2: "." look-aheads skipped within confidence.EV_TOL (readouts move by <= that bound)
# Largest |ΔE[v]| (points of 100) that batch composition alone produced for the same item,
# by model dtype (bench/bench_invariance.py; docs/SCIENCE.md "Batch invariance"), rounded up.
# Pages show it beside effects on E[v]; None = not measured for that dtype. bfloat16 with
# ragged attention (metacog.model.ragged) is bit-identical whatever the batch: 0.
EV_NOISE_FLOOR = {"float32": 0.001, "bfloat16": 2.4, "bfloat16+metacog_ragged": 0.0, "float16": None}


def _attention(lm) -> str | None:
    from metacog.model.arch import attention_implementation

    return attention_implementation(lm.model)


def ev_noise_floor(dtype, attention: str | None = None) -> float | None:
    """The measured E[v] noise floor (points) for a torch dtype or its name and the model's
    attention implementation (``metacog_ragged`` has its own entry), or None."""
    name = str(dtype).replace("torch.", "")
    return EV_NOISE_FLOOR.get(f"{name}+{attention}", EV_NOISE_FLOOR.get(name))
MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def activations_key(answers_key: str, positions=POSITIONS) -> str:
    """Cache key of the activations stage: a hash of ACTIVATIONS_VERSION, the answers stage key it
    reads and the cached ``positions`` (``settings.study_positions``; all four by default)."""
    return stable_hash("activations", ACTIVATIONS_VERSION, answers_key, list(positions))


def encode_item(lm, question: str, answer: str, choices=None, style: str = "plain") -> tuple[prompts.Encoded, prompts.Encoded]:
    """The two prompts of one answered item whose residual states are read: ``(inline, two_pass)``
    :class:`metacog.data.prompts.Encoded` (token ids and the named positions), for ``lm``
    (``.tokenizer``, ``.is_chat``) and the prompt ``style``."""
    tok, chat = lm.tokenizer, lm.is_chat
    return (
        prompts.encode_inline(tok, chat, question, answer, choices, style),
        prompts.encode_two_pass(tok, chat, question, answer),
    )


def _open(path, shape, dtype, fresh: bool):
    if fresh or not path.exists():
        return open_memmap(path, "w+", dtype=dtype, shape=shape)
    mm = open_memmap(path, "r+")
    if mm.shape != shape or mm.dtype != np.dtype(dtype):
        return open_memmap(path, "w+", dtype=dtype, shape=shape)
    return mm


def run_activations(
    ws: Workspace,
    lm,
    items: pd.DataFrame,
    answers: pd.DataFrame,
    answers_key: str,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    style: str = "plain",
) -> dict:
    """Fill the cache for every item (resuming); return the manifest.

    The answers' modes decide what runs: with a ``text_two_pass`` column (the study's
    ``two_pass``) the two-pass sequence is read too (``confidence_2p`` state + two-pass
    readout); without it only the inline sequence is run, and the cache holds
    ``INLINE_POSITIONS``. The manifest's ``positions`` lists what is cached, in order."""
    two_pass = "text_two_pass" in answers.columns  # the answers' modes decide the readouts (their key includes it)
    positions = study_positions(two_pass)
    key = activations_key(answers_key, positions)
    d = ws.path("activations")
    man = ws.read_json("activations/manifest.json", {})
    if ws.stage_fresh("activations", key) and man.get("key") == key:
        if man.get("answers") != answers_key:  # written before manifests recorded their answers key
            man["answers"] = answers_key
            atomic_write_json(d / "manifest.json", man)
        if (ws.lineage("readout.parquet") or {}).get("answers") != answers_key:
            _write_readout(ws, items, {m: load_distributions(ws, m) for m in cached_modes(ws)}, key, answers_key)
        return man
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    n, H, D = len(items), lm.n_hidden, lm.d_model
    modes = {m: k for m, k in MODE_KEYS.items() if two_pass or m == "inline"}
    fresh = man.get("key") != key
    atomic_write_json(
        d / "manifest.json",
        {"key": key, "answers": answers_key, "positions": list(positions), "n_layers": H, "n_decoder_layers": lm.n_layers,
         "d_model": D, "n_items": n, "dtype": "float16", "complete": False, "model": lm.name, "weights_hash": lm.weights_hash,
         "model_dtype": str(lm.dtype).replace("torch.", ""), "model_attention": _attention(lm),
         "ev_noise_floor": ev_noise_floor(lm.dtype, _attention(lm)),
         "modes": list(modes)},
    )
    mms = {p: _open(d / f"{p}.npy", (n, H, D), np.float16, fresh) for p in positions}
    if not two_pass:  # a two-pass study's files in this workspace: none may be read as this study's
        for name in ("confidence_2p.npy", "values_two_pass.npy", "lookahead_two_pass.npy"):
            if (d / name).exists():
                (d / name).unlink()
    vals = {m: _open(d / f"values_{k}.npy", (n, 102), np.float64, fresh) for m, k in modes.items()}
    # per item: unresolved mass, |ΔE[v]| bound (points), look-aheads scored (confidence.score_trie)
    unres = {m: _open(d / f"lookahead_{k}.npy", (n, 3), np.float64, fresh) for m, k in modes.items()}
    done_path = d / "done.npy"
    done = np.zeros(n, dtype=bool) if fresh or not done_path.exists() else load_array(done_path)
    if done.shape != (n,):
        done = np.zeros(n, dtype=bool)

    ans = answers.set_index("row").loc[items["row"]]
    encs = [
        encode_item(lm, q, a, c if k == "mc" else None, style)
        for q, a, c, k in zip(items["question"], ans["answer"], items["choices"], items["kind"])
    ]
    tok_index = pd.DataFrame(
        {
            "row": items["row"].to_numpy(),
            **{p: [e.positions[p] for e in (x[0] for x in encs)] for p in INLINE_POSITIONS},
            "len_inline": [len(e[0]) for e in encs],
            **({"confidence_2p": [e[1].positions["confidence_2p"] for e in encs],
                "len_two_pass": [len(e[1]) for e in encs]} if two_pass else {}),
        }
    )
    todo = [i for i in range(n) if not done[i]]
    finished = n - len(todo)
    if progress:
        progress(finished, n, "caching hidden states + 0–100 readout")
    for idx in batches_by_length([encs[i][0].ids for i in todo], batch_size):
        check_stop(should_stop)
        rows = [todo[j] for j in idx]
        reads = {"inline": read_values(lm, [encs[r][0].ids for r in rows],
                                       capture=[[encs[r][0].positions[p] for p in INLINE_POSITIONS] for r in rows])}
        if two_pass:
            reads["two-pass"] = read_values(lm, [encs[r][1].ids for r in rows],
                                            capture=[[encs[r][1].positions["confidence_2p"]] for r in rows])
        st = np.concatenate([r.states.float().cpu().numpy() for r in reads.values()], axis=1)  # [B,P,H,D]
        for k, p in enumerate(positions):
            mms[p][rows] = st[:, k].astype(np.float16)
        for m, r in reads.items():
            if m in vals:
                vals[m][rows] = np.concatenate([r.probs, r.other[:, None]], axis=1)
                unres[m][rows] = np.stack([r.unresolved, r.ev_bound, r.lookaheads], axis=1)
        for m in list(mms.values()) + list(vals.values()) + list(unres.values()):
            m.flush()
        done[rows] = True
        atomic_save_npy(done_path, done)
        finished += len(rows)
        if progress:
            progress(finished, n, "caching hidden states + 0–100 readout")

    ws.write_parquet("activations/token_index.parquet", tok_index)
    man = ws.read_json("activations/manifest.json")
    man.update(complete=True, seconds=round(time.time() - t0, 1))
    atomic_write_json(d / "manifest.json", man)
    _write_readout(ws, items, vals, key, answers_key)
    ws.mark_stage("activations", key, seconds=round(time.time() - t0, 1), n=n, modes=list(modes))
    return man


def _write_readout(ws: Workspace, items: pd.DataFrame, vals: dict, key: str, answers_key: str) -> pd.DataFrame:
    """readout.parquet: per item and computed mode ``ev_<k>``, ``argmax_<k>``, ``other_<k>`` and,
    where ``activations/lookahead_<k>.npy`` exists (caches since the look-ahead budget),
    ``unresolved_<k>`` (certified bound on the summed |error| of the item's 101 probabilities
    from skipped "." look-aheads), ``ev_bound_<k>`` (certified bound on |ΔE[v]|, points) and
    ``lookaheads_<k>`` (look-aheads scored, of 101) — docs/SCIENCE.md "The exact 0–100
    distribution". Modes absent from ``vals`` get no columns."""
    out = {"row": items["row"].to_numpy()}
    for mode, k in MODE_KEYS.items():
        if mode not in vals:
            continue
        v = np.asarray(vals[mode])
        probs = v[:, :101]
        out[f"ev_{k}"] = expected_value(probs)
        out[f"argmax_{k}"] = probs.argmax(axis=1).astype(float)
        out[f"other_{k}"] = v[:, 101]
        up = ws.path("activations", f"lookahead_{k}.npy")
        if up.exists():
            la = np.asarray(load_array(up, mmap=True), dtype=float)
            out[f"unresolved_{k}"], out[f"ev_bound_{k}"], out[f"lookaheads_{k}"] = la[:, 0], la[:, 1], la[:, 2]
    df = pd.DataFrame(out)
    ws.write_parquet("readout.parquet", df, lineage={"key": key, "answers": answers_key})
    return df


def load_states(ws: Workspace, position: str | None = None):
    """Memory-mapped cached states: one position → ``[n, H, D]``; None → dict of all.

    Raises: WorkspaceError when the workspace has no complete activation cache or ``position`` is
    not cached.
    """
    man = ws.read_json("activations/manifest.json")
    if not man or not man.get("complete"):
        raise WorkspaceError(f"no complete activation cache in {ws.root}: run `metacog activations --workspace {ws.root}`")
    if position is not None:
        if position not in man["positions"]:
            why = f" ({TWO_PASS_OFF})" if position == "confidence_2p" else ""
            raise WorkspaceError(f"position {position!r} is not cached in {ws.root}; cached: {', '.join(man['positions'])}{why}")
        return load_array(ws.path("activations", f"{position}.npy"), mmap=True)
    return {p: load_array(ws.path("activations", f"{p}.npy"), mmap=True) for p in man["positions"]}


def cached_modes(ws: Workspace) -> list[str]:
    """The elicitation modes whose 0–100 distributions the workspace's cache holds: the
    manifest's ``modes`` (a file left by an earlier study in the workspace does not count);
    caches from before manifests recorded them: the modes whose ``values_<mode>.npy`` exists."""
    man = ws.read_json("activations/manifest.json") or {}
    if man.get("modes") is not None:
        return list(man["modes"])
    return [m for m, k in MODE_KEYS.items() if ws.path("activations", f"values_{k}.npy").exists()]


def load_distributions(ws: Workspace, mode: str = "inline") -> np.ndarray:
    """``[n, 102]``: P(0..100) and, last, the mass on anything else. Raises
    :class:`WorkspaceError` (saying so) where the study did not compute ``mode``
    (:func:`cached_modes`)."""
    if mode != "inline" and ws.path("activations", "values_inline.npy").exists() and (
            mode not in cached_modes(ws) or not ws.path("activations", f"values_{MODE_KEYS[mode]}.npy").exists()):
        from metacog.core.settings import TWO_PASS_OFF

        raise WorkspaceError(f"{mode} 0-100 distribution: {TWO_PASS_OFF}")
    return load_array(ws.path("activations", f"values_{MODE_KEYS[mode]}.npy"), mmap=True)
