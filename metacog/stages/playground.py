"""One question, every confidence readout, in seconds: the backend of the Playground page and
of the Item explorer's logit lens.

:func:`play` answers a question the way the study does (same prompts, grader and parser),
then reads, from the model's own forward: the verbal confidence (inline and two-pass), the
exact 0–100 distribution at the confidence slot, every stored probe's p(correct) by layer
(``probes/coef.npy``), and :func:`lens_readout` — the exact 0–100 distribution read through
the final norm and LM head from every layer's residual stream (a logit lens of the readout).

The lens (nostalgebraist 2020, "interpreting GPT: the logit lens"; Belrose et al. 2023 for its
biases): at layer h, every position of the readout — the confidence slot and each node of the
value trie — is replaced by ``final_norm(resid_h)`` before the LM head, and the readout rule is
applied as at the last layer. Only the *read-out* changes: the trie's tokens still attend
through the full model, so a layer's lens says which value the residual stream at that depth
already points to, not what a truncated model would say. Early layers are far from the
unembedding basis (the lens is biased there; a tuned lens would correct it). The "."
look-ahead is not re-scored per layer: its mass is reported as ``unresolved``. At the last
layer the lens equals :func:`metacog.readout.values.read_values` with ``dot_tol=inf`` (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metacog.data import prompts
from metacog.readout.values import value_tree, body_and_head, expected_value, get_trie, left_pad, read_values, score_trie
from metacog.model.hooks import capture_residual
from metacog.core.settings import INLINE_POSITIONS, POSITIONS, StudySettings
from metacog.core.files import load_array


def final_norm(body):
    """The decoder's final normalisation (``norm`` / ``final_layernorm`` / ``ln_f``), or identity."""
    for name in ("norm", "final_layernorm", "ln_f", "final_layer_norm"):
        m = getattr(body, name, None)
        if m is not None:
            return m
    return torch.nn.Identity()


@torch.no_grad()
def lens_readout(lm, prefix: list[int]) -> pd.DataFrame:
    """The exact 0–100 readout after ``prefix`` (token ids ending at the confidence slot), read
    from every layer through the final norm and LM head.

    Returns one row per hidden-state index h (0 = embeddings … n_layers = last block output):
    ``layer``, ``ev`` (E[v] of the distribution renormalised over 0–100, points), ``argmax``
    (points), ``p_argmax`` (probability), ``mass`` (Σ P(v), probability: the rest is text or
    other numbers), ``unresolved`` (mass of the unscored "." look-ahead, probability), and
    ``probs`` (list of 101 probabilities)."""
    model, tok = lm.model, lm.tokenizer
    trie = get_trie(tok)
    dev = next(model.parameters()).device
    body, to_logits = body_and_head(model)
    norm = final_norm(body)
    ids, att, pos = left_pad([list(prefix)], tok.pad_token_id, dev)
    T = ids.shape[1]
    lens = att.sum(-1)
    got_p: list[torch.Tensor] = []
    with capture_residual(model, torch.tensor([[T - 1]]), got_p):
        out = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
    N = trie.n_value_nodes
    got_t: list[torch.Tensor] = []
    with capture_residual(model, torch.arange(N).unsqueeze(0), got_t):
        value_tree(body, trie, out, att, lens, use_cache=False)
    resid = torch.cat([got_p[0], got_t[0]], dim=1)  # [1, 1 + N, H, d]: slot, then the trie's value nodes
    rows = []
    for h in range(resid.shape[2]):
        r = score_trie(norm(resid[:, :, h]), to_logits, trie, dot_tol=math.inf)
        p = r.probs[0]
        mass = float(p.sum())
        ev = float(expected_value(p[None])[0]) if mass > 0 else float("nan")
        rows.append({"layer": h, "ev": ev, "argmax": int(p.argmax()), "p_argmax": float(p.max()), "mass": mass,
                     "unresolved": float(r.unresolved[0]), "probs": p.tolist()})
    return pd.DataFrame(rows)


@dataclass
class ProbeWeights:
    """Stored probes of a workspace: ``coef`` float32 ``[n_layers, n_positions, d_model]`` on the
    raw residual stream, ``intercept`` ``[n_layers, n_positions]``; p = sigmoid(x·coef + b)."""

    coef: np.ndarray
    intercept: np.ndarray
    positions: tuple[str, ...] = tuple(POSITIONS)

    @classmethod
    def load(cls, ws) -> "ProbeWeights | None":
        """The workspace's full-train probe weights (``probes/coef.npy`` ``[n_layers, n_positions,
        d_model]``, ``probes/intercept.npy`` ``[n_layers, n_positions]``), or None before the probe
        stage has run. ``positions``: the workspace's probe positions (``study.probe_positions``).

        Raises: WorkspaceError when the arrays do not match those positions."""
        from metacog.stages.study import probe_positions

        c, b = ws.path("probes", "coef.npy"), ws.path("probes", "intercept.npy")
        if not (c.exists() and b.exists()):
            return None
        icpt = load_array(b)
        return cls(load_array(c), icpt, tuple(probe_positions(ws, icpt)))

    def predict(self, states: dict[str, np.ndarray]) -> pd.DataFrame:
        """``states[position]``: ``[n_layers, d]`` → one row per (layer, position) with ``p``."""
        rows = []
        for pi, pos in enumerate(self.positions):
            if pos not in states:
                continue
            x = np.asarray(states[pos], dtype=np.float64)
            for h in range(min(len(x), self.coef.shape[0])):
                w = self.coef[h, pi]
                if not np.isfinite(w).all():
                    continue
                z = float(x[h] @ w.astype(np.float64) + float(self.intercept[h, pi]))
                rows.append({"layer": h, "position": pos, "p": 1.0 / (1.0 + math.exp(-z))})
        return pd.DataFrame(rows, columns=["layer", "position", "p"])


@dataclass
class Play:
    """What :func:`play` read for one question and one model."""

    model: str
    question: str
    answer: str
    reply: str
    correct: bool | None  # None when no gold answer was given
    verbal_inline: float | None  # points 0–100 (None: unparsable)
    verbal_two_pass: float | None
    probs_inline: np.ndarray  # [101] P(v) at the inline confidence slot
    other_inline: float  # mass on anything that is not an integer 0–100
    ev_inline: float  # points
    probs_two_pass: np.ndarray
    ev_two_pass: float
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)  # layer, position, p (empty: no stored probes)
    lens: pd.DataFrame = field(default_factory=pd.DataFrame)  # see lens_readout
    seconds: float = 0.0


def play(lm, question: str, gold: list[str] | None = None, choices: list[str] | None = None,
         study: StudySettings | None = None, probes: ProbeWeights | None = None, lens: bool = True) -> Play:
    """Answer ``question`` with ``lm`` exactly as the study does and read every confidence.

    ``gold``: accepted answers (graded with the study's grader; None → ``correct`` is None);
    ``choices``: a multiple-choice item (answered by option log-likelihood). Raises
    ``ValueError`` for an empty question."""
    import time

    from metacog.stages.activations import encode_item
    from metacog.stages.answers import answer_items

    if not str(question or "").strip():
        raise ValueError("type a question")
    t0 = time.time()
    study = study or StudySettings()
    mc = bool(choices)
    item = pd.DataFrame([{"id": "play", "row": 0, "question": str(question), "answers": list(gold or ["\u0000"]),
                          "category": "", "difficulty": "", "choices": list(choices) if mc else None,
                          "answer_index": 0 if mc else -1, "kind": "mc" if mc else "short", "split": "eval"}])
    if mc and gold:
        item.at[0, "answer_index"] = next((i for i, c in enumerate(choices) if c in gold), 0)
    import dataclasses

    # one item: the Playground always shows both modes (the study's two_pass setting saves work over many items)
    ans = answer_items(lm, item, dataclasses.replace(study, two_pass=True)).iloc[0]
    enc_in, enc_2p = encode_item(lm, question, ans["answer"], list(choices) if mc else None, study.prompt_style)
    r_in = read_values(lm, [enc_in.ids], capture=[[enc_in.positions[p] for p in INLINE_POSITIONS]])
    r_2p = read_values(lm, [enc_2p.ids], capture=[[enc_2p.positions["confidence_2p"]]])
    st_in = r_in.states[0].float().cpu().numpy()  # [3, H, d]
    st_2p = r_2p.states[0].float().cpu().numpy()  # [1, H, d]
    states = {p: st_in[k] for k, p in enumerate(INLINE_POSITIONS)}
    states["confidence_2p"] = st_2p[0]
    nan = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)  # noqa: E731
    return Play(
        model=lm.name, question=str(question), answer=str(ans["answer"]), reply=str(ans["answer_text"]),
        correct=(bool(ans["correct"]) if gold else None),
        verbal_inline=nan(ans["verbal_inline"]), verbal_two_pass=nan(ans["verbal_two_pass"]),
        probs_inline=r_in.probs[0], other_inline=float(r_in.other[0]), ev_inline=float(expected_value(r_in.probs)[0]),
        probs_two_pass=r_2p.probs[0], ev_two_pass=float(expected_value(r_2p.probs)[0]),
        probes=probes.predict(states) if probes is not None else pd.DataFrame(columns=["layer", "position", "p"]),
        lens=lens_readout(lm, enc_in.ids) if lens else pd.DataFrame(),
        seconds=round(time.time() - t0, 2),
    )


def adapters(ws) -> dict[str, Path]:
    """The workspace's fine-tuned PEFT adapters: ``{run label: adapter dir}`` (finished runs)."""
    from metacog.finetune.runs import list_runs

    out = {}
    for run in list_runs(ws):
        try:
            if run.has_adapter():
                out[f"{run.id} ({run.settings().get('settings', {}).get('targets', '?')})"] = run.adapter_dir
        except Exception:  # a broken run directory is listed by the Fine-tune page, not here
            continue
    return out


def item_prefix(lm, question: str, answer: str, choices=None, style: str = "plain") -> list[int]:
    """Token ids of the inline readout prefix (ending at the confidence slot) for an answered item."""
    return prompts.encode_inline(lm.tokenizer, lm.is_chat, question, answer, choices, style).ids
