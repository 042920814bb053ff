"""Activation patching at the confidence slot vs other positions, with the exact 0–100 readout.

A *pair* is a source and a target, each a (model, token sequence) side:

- **model → model**: the same item's inline sequence in two models (a fine-tuned PEFT
  adapter and its base model, either direction);
- **item → item**: two items' inline sequences in one model (e.g. a high-probe item's state
  written into a low-probe item).

The sequence of a side is the inline format of :func:`metacog.data.prompts.encode_inline`
(answer prompt + the workspace's answer + ``"\\nConfidence:"``), so every named position is
an exact token index, and the readout position — the confidence slot — is the last token.

For each (component, layer, position) *cell* the source's state at the source position
replaces the target's state at the target position, and the target's exact distribution over
0–100 is read after the confidence slot (the multi-token rule of :mod:`metacog.readout.values`).

Layers are hidden-state indices as everywhere in metacog (:mod:`metacog.model.hooks`): ``h = 0`` is
the input of block 0, ``h >= 1`` the output of block ``h-1``. Components:

- ``resid``: the residual stream at index ``h`` (0..L);
- ``attn`` / ``mlp``: the self-attention / MLP output of block ``h-1`` (h = 1..L), i.e. the
  sub-layer outputs that are added into hidden state ``h``.

Positions (target token indices; the source index is named the same way, or aligned):

- ``confidence``, ``last_prompt``, ``last_answer``: the named positions of both sides;
- ``random:K``: K target positions drawn per pair with a seed, by default from the **item's own
  tokens** — its question (with any options) and its answer — never from the chat template,
  a system prompt, the instruction or the ``Confidence:`` suffix, which carry nothing
  item-specific (``random_from="template"`` or ``"all"`` draws from those instead, labelled);
  never a special token, never the confidence slot; for item → item never inside the token
  prefix the two sequences share, where source and target states are identical and a patch
  is a no-op. Mapped to the source by a token alignment of the two sequences (identity for
  model → model). Every row records the class of its target and source token
  (``position_class``, ``source_position_class``: question | answer | template);
- ``token:I``: the target's token I (same alignment).

Readout per cell: P(0..100) (and ``other``, and the ``unresolved`` mass of the "." look-ahead
rule when :mod:`metacog.readout.values` has one), its expected value (``expected_value``), argmax,
KL from the target's distribution, and whether the greedy answer is unchanged: at every answer
position at or after the patch, the patched model's greedy next token equals the unpatched
target's (teacher forcing; equivalent to greedy decoding retracing the same tokens).

Normalised shift = (patched − target) / (source − target) on expected values; where
|source − target| < ``min_denominator`` it is NaN and the row is flagged, never dropped.

Speed (the *fast* method; ``method="reference"`` is one patched forward per cell through
:func:`metacog.readout.values.read_values`): a patch at position p leaves every earlier position
unchanged, so the target's keys/values before p are computed once and shared; and a patch
at layer h leaves every state below h unchanged, so (for Llama-family blocks) the variants
start at their own block from the target's cached inputs, sorted by layer and batched as
they join. What remains per cell — the positions from p on plus the ~200 nodes of the 0–100
trie through the blocks above the patch, and the LM head over the vocabulary for every trie
node — cannot be shared between cells without changing the readout (see docs/PATCHING.md).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from metacog.model import arch
from metacog.readout import values as conf
from metacog.readout.values import Readout, body_and_head, expected_value, get_trie, left_pad, read_values, score_trie
from metacog.model.hooks import block_output, edit_hook
from metacog.core.jobs import Job, JobKind
from metacog.model.loading import decoder_layers

COMPONENTS = ("resid", "attn", "mlp")
NAMED = ("confidence", "last_prompt", "last_answer")
KINDS = ("confidence", "last_prompt", "last_answer", "random", "token")
DEFAULT_MIN_DENOMINATOR = 1.0  # points on the 0–100 scale (the study: 0.01 on 0–1)
PATCHING_VERSION = 2  # 2: random positions drawn from the item's own tokens by default (random_from)
POSITION_CLASSES = ("question", "answer", "template")
RANDOM_FROM = {"item": ("question", "answer"), "template": ("template",), "all": POSITION_CLASSES}
_EPS = 1e-12


class PatchError(ValueError):
    """Bad patching input; the message says what to change. Raised before any model work."""


# =======================================================================================
# settings
# =======================================================================================
@dataclass(frozen=True)
class PatchSpec:
    """What to patch. ``layers=None`` means every block output (1..L)."""

    layers: tuple[int, ...] | None = None
    positions: tuple[str, ...] = ("confidence", "random:3")
    components: tuple[str, ...] = ("resid",)
    seed: int = 0
    min_denominator: float = DEFAULT_MIN_DENOMINATOR
    check_answer: bool = True
    random_from: str = "item"  # item (question + answer tokens) | template | all: where random:K draws

    def __post_init__(self):
        if self.random_from not in RANDOM_FROM:
            raise PatchError(f"random_from must be one of {', '.join(RANDOM_FROM)} (item: the question and answer tokens; "
                             f"template: chat template, system prompt, instruction and Confidence: suffix), not {self.random_from!r}")
        object.__setattr__(self, "positions", parse_positions(self.positions))
        comps = tuple(dict.fromkeys(c.strip().lower() for c in (self.components.split(",") if isinstance(self.components, str) else self.components)))
        bad = [c for c in comps if c not in COMPONENTS]
        if bad or not comps:
            raise PatchError(f"unknown component(s) {', '.join(bad) or '(none)'}: use {', '.join(COMPONENTS)}")
        object.__setattr__(self, "components", comps)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted(set(int(x) for x in self.layers))))
        if not (isinstance(self.min_denominator, (int, float)) and self.min_denominator >= 0):
            raise PatchError(f"min_denominator must be a number >= 0, not {self.min_denominator!r}")

    def layer_list(self, n_layers: int, component: str) -> list[int]:
        lo = 0 if component == "resid" else 1
        if self.layers is None:
            return list(range(1, n_layers + 1))
        return [h for h in self.layers if h >= lo]

    def n_random(self) -> int:
        return sum(int(p.split(":")[1]) for p in self.positions if p.startswith("random:"))


def parse_positions(spec) -> tuple[str, ...]:
    """``"confidence,last-prompt,random:3,token:17"`` (or a list) → normalised names."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in items:
        p = str(raw).strip().lower().replace(" ", "")
        if not (p.startswith("token:") or p.startswith("tok:")):
            p = p.replace("-", "_")
        if not p:
            continue
        if p in ("conf", "confidence_slot", "slot"):
            p = "confidence"
        if p in NAMED:
            out.append(p)
        elif p.startswith("random"):
            k = p.split(":", 1)[1] if ":" in p else "1"
            if not k.isdigit() or not 1 <= int(k) <= 64:
                raise PatchError(f"'{raw}': random positions are written random:K with K from 1 to 64")
            out.append(f"random:{int(k)}")
        elif p.startswith("token:") or p.startswith("tok:"):
            k = p.split(":", 1)[1]
            if k.startswith("-") and k[1:].isdigit():
                raise PatchError(f"'{raw}' is outside the target sequence: token indices count from 0 (the first token of the prompt)")
            if not k.isdigit():
                raise PatchError(f"'{raw}': a picked token is written token:I with I a token index of the target")
            out.append(f"token:{int(k)}")
        else:
            raise PatchError(f"unknown position '{raw}': use confidence, last-prompt, last-answer, random:K or token:I")
    out = list(dict.fromkeys(out))
    if sum(p.startswith("random:") for p in out) > 1:
        raise PatchError("give random:K once")
    if not out:
        raise PatchError("no positions given")
    return tuple(out)


def parse_layers(spec, n_layers: int) -> tuple[int, ...] | None:
    """``all`` (block outputs 1..L) | ``0-30`` | ``1,5,10`` | ``every:3``; checked against the model."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        vals = [int(x) for x in spec]
    else:
        s = str(spec).strip().lower()
        if s in ("all", ""):
            return None
        vals = []
        for part in s.split(","):
            part = part.strip()
            if part.startswith("every:"):
                k = int(part.split(":")[1])
                if k < 1:
                    raise PatchError("every:K needs K >= 1")
                vals += list(range(k, n_layers + 1, k))
            elif "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                vals += list(range(int(a), int(b) + 1))
            else:
                try:
                    vals.append(int(part))
                except ValueError:
                    raise PatchError(f"cannot read layers '{spec}': use all, A-B, a comma list, or every:K") from None
    bad = [h for h in vals if not 0 <= h <= n_layers]
    if bad:
        raise PatchError(
            f"layer(s) {', '.join(map(str, sorted(set(bad))))} outside this model: hidden-state indices run 0..{n_layers} "
            f"(0 = embeddings, h = output of block h-1; the model has {n_layers} blocks)"
        )
    if not vals:
        raise PatchError(f"no layers selected by '{spec}'")
    return tuple(sorted(set(vals)))


# =======================================================================================
# pairs and positions
# =======================================================================================
@dataclass
class Side:
    """One side of a pair: a model and an inline token sequence with its named positions."""

    lm: object  # metacog.model.loading.LoadedModel
    ids: list[int]
    positions: dict[str, int]
    label: str  # "base", "run:<id>", or the item id
    item_id: str = ""
    row: int = -1
    correct: bool | None = None
    model_label: str = "base"
    classes: tuple[str, ...] | None = None  # per token: question | answer | template (see token_classes)

    @property
    def T(self) -> int:
        return len(self.ids)


@dataclass
class Pair:
    index: int
    source: Side
    target: Side
    kind: str  # "model" | "item"

    @property
    def direction(self) -> str:
        if self.kind == "model":
            return f"{self.source.model_label}→{self.target.model_label}"
        return "item→item"


@dataclass(frozen=True)
class PosPlan:
    label: str  # confidence | last_prompt | last_answer | random1.. | token17
    kind: str  # one of KINDS
    target: int
    source: int
    target_class: str = ""  # question | answer | template (POSITION_CLASSES); "" when the side has no classes
    source_class: str = ""


def special_ids(tok) -> set[int]:
    ids = set(int(i) for i in (getattr(tok, "all_special_ids", None) or []))
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<bos>", "<eos>", "<end_of_turn>", "<start_of_turn>"):
        try:
            i = tok.convert_tokens_to_ids(t)
        except Exception:
            continue
        if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None):
            ids.add(i)
    return ids


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _char_offsets(tok, text: str, ids: list[int], add_special: bool) -> list[tuple[int, int]]:
    """(start, end) character span in ``text`` of each token of ``ids`` (the tokenisation of
    ``text``): the fast tokenizer's offset mapping, else cumulative decoding."""
    try:
        enc = tok(text, add_special_tokens=add_special, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        pass
    out, prev = [], 0
    for i in range(len(ids)):
        n = len(tok.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        out.append((prev, n))
        prev = n
    if prev != len(text):
        raise PatchError("cannot map this tokenizer's tokens back to the prompt text, so the question's tokens cannot be told "
                         "from the template's; use a fast tokenizer")
    return out


def item_char_spans(prompt: str, question: str, choices=None) -> list[tuple[int, int]]:
    """Character spans of the item's own text in an answer prompt: the question, then each
    option text (multiple choice), located inside the user turn (the last occurrence of the
    formatted question, so a system prompt that happened to contain the words does not count)."""
    spans = []
    q0 = prompt.rfind(question) if question else -1
    if q0 < 0:
        raise PatchError(f"the question {question[:60]!r} is not in its prompt text (the prompt template changed?)")
    spans.append((q0, q0 + len(question)))
    at = q0 + len(question)
    for c in list(choices) if choices is not None else []:
        c = str(c)
        j = prompt.find(c, at)
        if c and j >= 0:
            spans.append((j, j + len(c)))
            at = j + len(c)
    return spans


def token_classes(tok, is_chat: bool, enc, question: str, choices=None, style: str = "plain") -> tuple[str, ...]:
    """The class of every token of an inline sequence (:func:`metacog.data.prompts.encode_inline`):

    - ``question``: a prompt token overlapping the question text or an option text;
    - ``answer``: a token of the answer segment (the model's answer);
    - ``template``: everything else — chat-template markup, a system prompt, the instruction,
      ``Question:``/``Options:`` labels, and the ``"\nConfidence:"`` suffix.

    Computed from the character offsets of the prompt's tokens (the same tokenisation as
    ``enc``). Returns one class per token of ``enc.ids``."""
    from metacog.data import prompts

    text = prompts.answer_prompt_text(tok, is_chat, question, choices, style)
    p0, p1 = enc.spans["prompt"]
    offs = _char_offsets(tok, text, enc.ids[p0:p1], add_special=not is_chat)
    spans = item_char_spans(text, question, choices)
    out = ["template"] * len(enc.ids)
    for i, (a, b) in enumerate(offs):
        if b > a and any(a < e and b > s for s, e in spans):
            out[p0 + i] = "question"
    a0, a1 = enc.spans["answer"]
    for i in range(a0, a1):
        out[i] = "answer"
    return tuple(out)


def make_side(lm, question: str, answer: str, label: str, choices=None, style: str = "plain", **kw) -> Side:
    """A :class:`Side` for one item in ``lm``: its inline sequence, named positions and token
    classes (``kw``: item_id, row, correct, model_label)."""
    from metacog.data import prompts

    enc = prompts.encode_inline(lm.tokenizer, lm.is_chat, question, answer, choices, style)
    kw.setdefault("item_id", label)
    return Side(lm=lm, ids=list(enc.ids), positions=dict(enc.positions), label=label,
                classes=token_classes(lm.tokenizer, lm.is_chat, enc, question, choices, style), **kw)


def random_pool(pair: Pair, random_from: str = "item") -> list[int]:
    """Target positions a random draw may pick: tokens of the classes ``RANDOM_FROM[random_from]``
    (default ``item``: the question and answer tokens), not a special token, not the
    confidence slot, and (item → item) not in the shared token prefix, whose states are identical."""
    tgt = pair.target
    if random_from not in RANDOM_FROM:
        raise PatchError(f"random_from must be one of {', '.join(RANDOM_FROM)}, not {random_from!r}")
    if tgt.classes is None or len(tgt.classes) != tgt.T:
        raise PatchError(f"the target side {tgt.label!r} has no token classes, so random positions cannot be restricted to the "
                         "item's tokens: build sides with patching.make_side")
    allowed = RANDOM_FROM[random_from]
    specials = special_ids(tgt.lm.tokenizer)
    slot = tgt.positions["confidence"]
    start = shared_prefix(pair.source.ids, tgt.ids) if pair.kind == "item" else 0
    return [i for i in range(start, tgt.T) if i != slot and tgt.ids[i] not in specials and tgt.classes[i] in allowed]


def pair_seed(seed: int, pair: Pair) -> np.random.SeedSequence:
    from metacog.core.settings import stable_hash

    key = int(stable_hash("patch-random", pair.kind, pair.source.label, pair.target.label,
                          pair.source.item_id, pair.target.item_id, n=12), 16)
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, key & 0xFFFFFFFF, key >> 32])


def draw_random_positions(pair: Pair, k: int, seed: int, random_from: str = "item") -> list[int]:
    """K target positions from :func:`random_pool`, reproducible from (seed, pair), sorted."""
    pool = random_pool(pair, random_from)
    if not pool:
        return []
    rng = np.random.default_rng(pair_seed(seed, pair))
    pick = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return sorted(int(pool[i]) for i in pick)


def align(src: list[int], tgt: list[int]) -> np.ndarray:
    """For every target index, a source index: identical token runs map one to one
    (difflib opcodes), differing runs proportionally, inserted runs to the source token just
    before them."""
    out = np.zeros(len(tgt), dtype=np.int64)
    sm = difflib.SequenceMatcher(None, src, tgt, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        for j in range(j1, j2):
            if tag == "equal":
                out[j] = i1 + (j - j1)
            elif i2 > i1:
                out[j] = i1 + int((j - j1) * (i2 - i1) / (j2 - j1))
            else:
                out[j] = max(i1 - 1, 0)
    return np.clip(out, 0, max(len(src) - 1, 0))


def resolve_positions(pair: Pair, spec: PatchSpec) -> list[PosPlan]:
    """The (target, source) token indices of every requested position for this pair."""
    tgt, src = pair.target, pair.source
    same = pair.kind == "model" and src.ids == tgt.ids
    amap = None

    def to_src(i: int) -> int:
        nonlocal amap
        if same:
            return i
        if amap is None:
            amap = align(src.ids, tgt.ids)
        return int(amap[i])

    def plan(label: str, kind: str, t: int, s: int) -> PosPlan:
        return PosPlan(label, kind, t, s, tgt.classes[t] if tgt.classes else "", src.classes[s] if src.classes else "")

    out: list[PosPlan] = []
    for p in spec.positions:
        if p in NAMED:
            out.append(plan(p, p, tgt.positions[p], src.positions[p]))
        elif p.startswith("random:"):
            for j, i in enumerate(draw_random_positions(pair, int(p.split(":")[1]), spec.seed, spec.random_from), start=1):
                out.append(plan(f"random{j}", "random", i, to_src(i)))
        elif p.startswith("token:"):
            i = int(p.split(":")[1])
            if not 0 <= i < tgt.T:
                raise PatchError(
                    f"token {i} is outside the target sequence of pair {pair.index} ({tgt.label}: tokens 0..{tgt.T - 1}; "
                    f"the confidence slot is {tgt.positions['confidence']})"
                )
            out.append(plan(f"token{i}", "token", i, to_src(i)))
    return out


# =======================================================================================
# model plumbing
# =======================================================================================
def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _layers(model) -> torch.nn.ModuleList:
    return decoder_layers(_base(model))


def _kv_of(cache, i: int):
    if hasattr(cache, "layers"):
        lay = cache.layers[i]
        return lay.keys, lay.values
    return cache.key_cache[i], cache.value_cache[i]  # older transformers


def dot_tol() -> float:
    """The "." look-ahead tolerance of :func:`metacog.readout.values.read_values`."""
    return float(conf.DOT_TOL)


def _answer_window(side: Side) -> tuple[int, int]:
    """Positions whose greedy next token makes the answer: last prompt token .. last answer token."""
    return side.positions["last_prompt"], side.positions["last_answer"]


class _Owner:
    """Hooks on a shared model act only on forwards of the thread that installed them."""

    def __init__(self):
        self.ident = threading.get_ident()

    def __bool__(self) -> bool:
        return threading.get_ident() == self.ident


def _sublayer(block, component: str, model):
    """The module of ``block`` whose output is the ``component`` contribution (the family's
    declaration in :mod:`metacog.model.arch`: OPT's mlp is ``fc2``, Bloom's the dense projections)."""
    return arch.sublayer(block, component, arch.family(model))


def available_components(lm) -> tuple[str, ...]:
    """``resid`` always; ``attn`` / ``mlp`` where the decoder blocks expose those sub-layers."""
    blk = _layers(lm.model)[0]
    return ("resid",) + tuple(c for c in ("attn", "mlp") if _sublayer(blk, c, lm.model) is not None)


_SKIP_OK: dict[int, tuple] = {}  # id(model) -> (model weakref, verdict)


def supports_skip(lm) -> bool:
    """Whether the fast path may start a variant at its own block, decided once per model by a
    self-test (:func:`skip_selftest`): run the blocks by hand from a traced pass's inputs and
    keep block skipping only where that reproduces the model's own forward. Elsewhere the
    fast path runs the model's own forward over every block (same results, less saving)."""
    import weakref

    model = lm.model
    hit = _SKIP_OK.get(id(model))
    if hit is not None and hit[0]() is model:
        return hit[1]
    ok = skip_selftest(lm)
    _SKIP_OK[id(model)] = (weakref.ref(model), ok)
    return ok


@torch.no_grad()
def skip_selftest(lm, text: str = "Question: what is 6 times 7? Answer: 42. Confidence:") -> bool:
    """True when :func:`_run_skip` (blocks run by hand from the traced inputs, rotary
    embeddings from the body, the final norm) gives the same final states as
    :func:`_run_full` (the model's own forward) for a no-op patch at every block of a short
    sequence: relative max difference ≤ 1e-4 (float32) or 3e-2 (half precision). Any error
    (a block that takes other arguments, per-layer rotary tables, ...) means False."""
    ids = [int(i) for i in lm.tokenizer.encode(text)][:24]
    if len(ids) < 4 or not conf.tree_ok(lm.model, len(ids), get_trie(lm.tokenizer)):
        return False
    body = body_and_head(lm.model)[0]
    if arch.final_norm(lm.model, body) is None:
        return False
    try:
        side = Side(lm=lm, ids=ids, positions={}, label="selftest")
        tr = trace(side, tree=True)
        p = len(ids) // 2
        vs = [Variant("resid", h, tr.resid[h, p]) for h in range(lm.n_layers)]
        owner = _Owner()
        a = _run_skip(lm, tr, p, vs, owner).float()
        b = _run_full(lm, tr, ids, p, vs, owner).float()
    except Exception:
        return False
    tol = 1e-4 if next(lm.model.parameters()).dtype == torch.float32 else 3e-2
    scale = float(b.abs().max()) or 1.0
    return bool(a.shape == b.shape and torch.isfinite(a).all() and float((a - b).abs().max()) <= tol * scale)


# =======================================================================================
# readout: confidence.score_trie (the rule of read_values) over the batched final states
# =======================================================================================
def _tree_layout(trie, T: int, p: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries = target tokens p..T-1 (the suffix) then every trie node; keys = prefix [0,p)
    (cached) then the queries. Returns (position ids [1,Q], bool mask [1,1,Q,p+Q]): the
    suffix is causal, each node sees the whole sequence and its ancestors."""
    S = T - p
    N = trie.n_nodes
    Q = S + N
    mask = torch.zeros((Q, p + Q), dtype=torch.bool)
    mask[:, :p] = True
    mask[:S, p : p + S] = torch.tril(torch.ones((S, S), dtype=torch.bool))
    mask[S:, p : p + S] = True
    mask[S:, p + S :] = trie.ancestors
    pos = torch.cat([torch.arange(p, T), T - 1 + trie.depth]).unsqueeze(0)
    return pos.to(dev), mask.view(1, 1, Q, p + Q).to(dev)


def _attn_mask(model, mask: torch.Tensor, dtype) -> torch.Tensor:
    """The tree mask in the form the model's attention takes: boolean for SDPA (what
    load_model sets), additive float for eager attention."""
    impl = getattr(_base(model).config, "_attn_implementation", "sdpa")
    if impl == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


# =======================================================================================
# the unpatched trace of one side
# =======================================================================================
@dataclass
class Trace:
    """One unpatched pass over a side: every residual state (sequence and, with ``tree``,
    the trie nodes), the sub-layer outputs at the sequence positions, the sequence's keys and
    values per block, the greedy next tokens over the answer window, and the readout."""

    T: int
    resid: torch.Tensor  # [L+1, T (+N), d] input of block h / output of block h-1
    attn: torch.Tensor | None  # [L, T, d] (None where the blocks expose no such sub-layer)
    mlp: torch.Tensor | None  # [L, T, d]
    kv: list  # per block (K [1,kvh,T,hd], V)
    greedy: dict  # answer-window position -> argmax token
    readout: Readout | None  # from this pass (score_trie), when tree

    def state(self, component: str, h: int, pos: int) -> torch.Tensor:
        if component == "resid":
            return self.resid[h, pos]
        return (self.attn if component == "attn" else self.mlp)[h - 1, pos]


@torch.no_grad()
def trace(side: Side, tree: bool = True, window: tuple[int, int] | None = None) -> Trace:
    lm = side.lm
    model = lm.model
    layers = _layers(model)
    L = len(layers)
    body, to_logits = body_and_head(model)
    dev = arch.input_device(model)
    owner = _Owner()
    res: list[list[torch.Tensor]] = [[] for _ in range(L + 1)]
    att_o: list[list[torch.Tensor]] = [[] for _ in range(L)]
    mlp_o: list[list[torch.Tensor]] = [[] for _ in range(L)]
    phase = {"seq": True}
    handles = []

    def pre0(module, args, kwargs):
        if owner:
            h = args[0] if args else kwargs["hidden_states"]
            res[0].append(h[0].detach())

    handles.append(layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
    for i, layer in enumerate(layers):

        def post(module, args, output, i=i):
            if owner:
                res[i + 1].append(block_output(output)[0].detach())

        def post_attn(module, args, output, i=i):
            if owner and phase["seq"]:
                att_o[i].append(arch.as_btd(block_output(output), 1)[0].detach())

        def post_mlp(module, args, output, i=i):
            if owner and phase["seq"]:
                mlp_o[i].append(arch.as_btd(block_output(output), 1)[0].detach())

        handles.append(layer.register_forward_hook(post))
        if _sublayer(layer, "attn", model) is not None:
            handles.append(_sublayer(layer, "attn", model).register_forward_hook(post_attn))
        if _sublayer(layer, "mlp", model) is not None:
            handles.append(_sublayer(layer, "mlp", model).register_forward_hook(post_mlp))
    try:
        ids, att, pos = left_pad([side.ids], lm.tokenizer.pad_token_id, dev)
        T = ids.shape[1]
        out = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
        cache = out.past_key_values
        kv = []
        for i in range(L):
            k, v = _kv_of(cache, i)
            kv.append((k[:, :, :T, :], v[:, :, :T, :]))
        greedy = {}
        if window is not None:
            a0, a1 = window
            z = to_logits(out.last_hidden_state[0, a0 : a1 + 1])
            greedy = {a0 + j: int(t) for j, t in enumerate(z.argmax(-1).tolist())}
        readout = None
        if tree:
            phase["seq"] = False
            trie = get_trie(lm.tokenizer)
            tpos, mask = _tree_layout(trie, T, T, dev)
            tids = trie.token.to(dev).unsqueeze(0)
            mask = _attn_mask(model, mask, out.last_hidden_state.dtype)
            tout = body(input_ids=tids, attention_mask=mask, position_ids=tpos, past_key_values=cache, use_cache=True)
            hid = torch.cat([out.last_hidden_state[:, -1:], tout.last_hidden_state], dim=1)
            readout = score_trie(hid, to_logits, trie, dot_tol())
    finally:
        for h in handles:
            h.remove()
    resid = torch.stack([torch.cat(r, dim=0) for r in res])
    return Trace(
        T=T,
        resid=resid,
        attn=torch.stack([a[0] for a in att_o]) if all(att_o) else None,
        mlp=torch.stack([m[0] for m in mlp_o]) if all(mlp_o) else None,
        kv=kv,
        greedy=greedy,
        readout=readout,
    )


# =======================================================================================
# variants: one (component, layer) patch each, at one position
# =======================================================================================
@dataclass
class Variant:
    component: str
    h: int  # hidden-state index of the table ("layer")
    vec: torch.Tensor  # [d] the source state

    @property
    def block(self) -> int:
        """The first block whose computation differs from the unpatched target."""
        return self.h if self.component == "resid" else self.h - 1


class _PrefixKV:
    """Minimal cache for one hand-run pass: the target's keys/values of positions [0, p)
    per block, shared by every row, with this pass's own keys/values appended."""

    def __init__(self, kv: list, p: int):
        self.kv = kv
        self.p = p

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k0, v0 = self.kv[layer_idx]
        B = key_states.shape[0]
        k = torch.cat([k0[:, :, : self.p, :].expand(B, -1, -1, -1), key_states], dim=2)
        v = torch.cat([v0[:, :, : self.p, :].expand(B, -1, -1, -1), value_states], dim=2)
        return k, v


@contextlib.contextmanager
def _row_patch(module, rows: list[int], vecs: torch.Tensor, qi: int, owner, pre: bool = False, batch: int | None = None) -> Iterator[None]:
    """While active, rows ``rows`` of ``module``'s output (input with ``pre``) get ``vecs``
    at query index ``qi`` (only the first call in this thread)."""
    state = {"done": False}
    idx = torch.tensor(rows)

    def apply(h):
        shape = h.shape
        h = arch.as_btd(h.clone(), batch)  # sub-layers that see flattened tokens (OPT's fc2): [B*Q, d] -> [B, Q, d]
        h[idx, qi] = vecs.to(h.dtype)
        return h.reshape(shape)

    def first_in_owner() -> bool:
        if not owner or state["done"]:
            return False
        state["done"] = True
        return True

    with edit_hook(module, apply, pre, first_in_owner):
        yield


def _hook_point(layers, component: str, h: int, model):
    """(module, pre?) where the patch of (component, h) is written."""
    if component == "resid":
        return (layers[0], True) if h == 0 else (layers[h - 1], False)
    return _sublayer(layers[h - 1], component, model), False


@torch.no_grad()
def _run_skip(lm, tr: Trace, p: int, variants: list[Variant], owner) -> torch.Tensor:
    """Final hidden states [B, Q, d] (queries: suffix p..T-1, then the trie) of the variants,
    each starting at its own block from the target's cached inputs (rows sorted by block)."""
    body, _ = body_and_head(lm.model)
    layers = _layers(lm.model)
    L = len(layers)
    trie = get_trie(lm.tokenizer)
    dev = tr.resid.device
    T = tr.T
    pos, mask = _tree_layout(trie, T, p, dev)
    mask = _attn_mask(lm.model, mask, tr.resid.dtype)
    qidx = torch.cat([torch.arange(p, T), torch.arange(T, T + trie.n_nodes)]).to(dev)
    kv = _PrefixKV(tr.kv, p)
    hidden = None
    pe = None
    by_block: dict[int, list[int]] = {}
    for j, v in enumerate(variants):
        by_block.setdefault(v.block, []).append(j)
    start = min(by_block)
    for blk in range(start, L + 1):
        new = by_block.get(blk, [])
        patches = []
        if new:
            inp = tr.resid[blk].index_select(0, qidx).unsqueeze(0).repeat(len(new), 1, 1)
            off = 0 if hidden is None else hidden.shape[0]
            for r, j in enumerate(new):
                if variants[j].component == "resid":
                    inp[r, 0] = variants[j].vec.to(inp.dtype)
                else:
                    patches.append((off + r, j))
            hidden = inp if hidden is None else torch.cat([hidden, inp], dim=0)
        if blk == L:
            break
        if pe is None and hasattr(body, "rotary_emb"):
            pe = body.rotary_emb(hidden, position_ids=pos)
        stack = contextlib.ExitStack()
        with stack:
            for comp in ("attn", "mlp"):
                rows = [r for r, j in patches if variants[j].component == comp]
                if rows:
                    vecs = torch.stack([variants[j].vec for r, j in patches if variants[j].component == comp])
                    mod = _sublayer(layers[blk], comp, lm.model)
                    stack.enter_context(_row_patch(mod, rows, vecs, 0, owner, batch=hidden.shape[0]))
            extra = {} if pe is None else {"position_embeddings": pe}
            hidden = block_output(layers[blk](hidden, attention_mask=mask, position_ids=pos, past_key_values=kv,
                                              use_cache=True, **extra))
    return arch.final_norm(lm.model, body)(hidden)


@torch.no_grad()
def _run_full(lm, tr: Trace, ids: list[int], p: int, variants: list[Variant], owner) -> torch.Tensor:
    """Same as :func:`_run_skip` through the model's own forward over every block (patches by
    hooks), for architectures the hand-started path does not cover."""
    from transformers import DynamicCache

    body, _ = body_and_head(lm.model)
    layers = _layers(lm.model)
    trie = get_trie(lm.tokenizer)
    dev = tr.resid.device
    T = tr.T
    B = len(variants)
    pos, mask = _tree_layout(trie, T, p, dev)
    mask = _attn_mask(lm.model, mask, tr.resid.dtype)
    q = torch.cat([torch.tensor(ids[p:T], dtype=torch.long), trie.token]).to(dev).unsqueeze(0).expand(B, -1)
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :p].expand(B, -1, -1, -1).contiguous(), v[:, :, :p].expand(B, -1, -1, -1).contiguous()) for k, v in tr.kv])
    groups: dict[tuple, list[int]] = {}
    for j, v in enumerate(variants):
        groups.setdefault((v.component, v.h), []).append(j)
    with contextlib.ExitStack() as stack:
        for (comp, h), rows in groups.items():
            mod, pre = _hook_point(layers, comp, h, lm.model)
            stack.enter_context(_row_patch(mod, rows, torch.stack([variants[j].vec for j in rows]), 0, owner, pre=pre, batch=B))
        out = body(input_ids=q, attention_mask=mask, position_ids=pos.expand(B, -1), past_key_values=cache, use_cache=True)
    return out.last_hidden_state


@dataclass
class CellResult:
    probs: np.ndarray  # [101]
    other: float
    unresolved: float
    answer_unchanged: bool
    answer_flips: int


@torch.no_grad()
def _cells_from_final(lm, final: torch.Tensor, S: int, p: int, window, greedy: dict, check_answer: bool) -> list[CellResult]:
    trie = get_trie(lm.tokenizer)
    _, to_logits = body_and_head(lm.model)
    hid = final[:, S - 1 :]  # root then every node
    rd = score_trie(hid, to_logits, trie, dot_tol())
    flips = np.zeros(final.shape[0], dtype=int)
    if check_answer and window is not None:
        qs = [q for q in range(window[0], window[1] + 1) if q >= p]
        if qs:
            z = to_logits(final[:, [q - p for q in qs]])  # [B, |qs|, V]
            am = z.argmax(-1).cpu().numpy()
            ref = np.array([greedy[q] for q in qs])
            flips = (am != ref[None, :]).sum(1)
    return [CellResult(rd.probs[b], float(rd.other[b]), float(rd.unresolved[b]), bool(flips[b] == 0), int(flips[b]))
            for b in range(final.shape[0])]


@torch.no_grad()
def patch_position_fast(target: Side, tr: Trace, p: int, variants: list[Variant], check_answer: bool = True,
                        max_batch: int = 32, skip: bool | None = None) -> list[CellResult]:
    """Readouts of every variant at target position ``p`` (the fast path)."""
    lm = target.lm
    owner = _Owner()
    skip = supports_skip(lm) if skip is None else skip
    order = sorted(range(len(variants)), key=lambda j: variants[j].block)
    out: list[CellResult | None] = [None] * len(variants)
    window = _answer_window(target)
    S = tr.T - p
    for s in range(0, len(order), max_batch):
        chunk = order[s : s + max_batch]
        vs = [variants[j] for j in chunk]
        if skip:
            final = _run_skip(lm, tr, p, vs, owner)
            rank = sorted(range(len(vs)), key=lambda j: vs[j].block)  # rows come out in block order (stable)
        else:
            final = _run_full(lm, tr, target.ids, p, vs, owner)
            rank = list(range(len(vs)))
        cells = _cells_from_final(lm, final, S, p, window, tr.greedy, check_answer)
        for r, j in enumerate(rank):
            out[chunk[j]] = cells[r]
    return out  # type: ignore[return-value]


# =======================================================================================
# the reference: one patched forward per cell
# =======================================================================================
@contextlib.contextmanager
def patch_hook(model, component: str, h: int, pos: int, vec: torch.Tensor, first_call_only: bool = True,
               batch: int = 1) -> Iterator[None]:
    """While active, the (component, h) state at token ``pos`` of every row becomes ``vec``
    (only in the first forward when ``first_call_only``: the prefix pass of read_values).
    ``batch``: rows of the patched forward, for sub-layers whose output is flattened over tokens."""
    layers = _layers(model)
    mod, pre = _hook_point(layers, component, h, model)
    owner = _Owner()
    state = {"n": 0}

    def apply(x):
        shape = x.shape
        x = arch.as_btd(x.clone(), batch)  # flattened sub-layer outputs (OPT's fc2)
        x[:, pos] = vec.to(x.dtype)
        return x.reshape(shape)

    def active() -> bool:
        if not owner or (first_call_only and state["n"]):
            return False
        state["n"] += 1
        return True

    with edit_hook(mod, apply, pre, active):
        yield


@torch.no_grad()
def reference_greedy(target: Side) -> dict:
    """Unpatched greedy next token at every answer-window position (full-model forward)."""
    lm = target.lm
    a0, a1 = _answer_window(target)
    dev = arch.input_device(lm.model)
    body, to_logits = body_and_head(lm.model)
    ids, att, pos = left_pad([target.ids], lm.tokenizer.pad_token_id, dev)
    hs = body(input_ids=ids, attention_mask=att, position_ids=pos).last_hidden_state[0, a0 : a1 + 1]
    return {a0 + j: int(t) for j, t in enumerate(to_logits(hs).argmax(-1).tolist())}


@torch.no_grad()
def patch_cell_reference(target: Side, component: str, h: int, p: int, vec: torch.Tensor, greedy: dict | None = None,
                         check_answer: bool = True) -> CellResult:
    """One cell the plain way: :func:`metacog.readout.values.read_values` on the target with the
    patch in its prefix forward (one patched forward + the trie). The greedy check reads the
    same forward's final-norm output over the answer window."""
    lm = target.lm
    body, to_logits = body_and_head(lm.model)
    a0, a1 = _answer_window(target)
    want = check_answer and p <= a1
    grabbed: list[torch.Tensor] = []
    handle = None
    norm = arch.final_norm(lm.model, body) if want else None
    if norm is not None:
        owner = _Owner()

        def grab(m, args, output):
            if owner and not grabbed:
                grabbed.append(block_output(output)[0, a0 : a1 + 1].detach())

        handle = norm.register_forward_hook(grab)
    try:
        with patch_hook(lm.model, component, h, p, vec):
            r = read_values(lm, [target.ids], dot_tol=dot_tol())
    finally:
        if handle is not None:
            handle.remove()
    unres = float(r.unresolved[0])
    unchanged, flips = True, 0
    if want:
        if greedy is None:
            greedy = reference_greedy(target)
        if grabbed:
            am = to_logits(grabbed[0]).argmax(-1).tolist()
        else:  # no final norm to hook: one more patched forward of the full model
            dev = arch.input_device(lm.model)
            with patch_hook(lm.model, component, h, p, vec):
                am = lm.model(input_ids=torch.tensor([target.ids], device=dev)).logits[0, a0 : a1 + 1].argmax(-1).tolist()
        flips = sum(am[q - a0] != greedy[q] for q in range(max(a0, p), a1 + 1))
        unchanged = flips == 0
    return CellResult(r.probs[0], float(r.other[0]), unres, unchanged, int(flips))


# =======================================================================================
# one pair
# =======================================================================================
@dataclass
class Prepared:
    pair: Pair
    plans: list[PosPlan]
    src_read: Readout
    tgt_read: Readout
    src_trace: Trace
    tgt_trace: Trace | None


def _read(side: Side) -> Readout:
    return read_values(side.lm, [side.ids], dot_tol=dot_tol())


@torch.no_grad()
def prepare_pair(pair: Pair, spec: PatchSpec, method: str = "fast") -> Prepared:
    """Readouts of both sides (read_values), the source's states, and (fast) the target's trace."""
    plans = resolve_positions(pair, spec)
    src_read = _read(pair.source)
    tgt_read = _read(pair.target)
    src_tr = trace(pair.source, tree=False)
    fast = method == "fast" and conf.tree_ok(pair.target.lm.model, pair.target.T, get_trie(pair.target.lm.tokenizer))
    # (where the tree-masked pass is not exact — ALiBi, a sliding window shorter than the
    # sequence + trie — the fast method falls back to the reference, cell by cell)
    tgt_tr = trace(pair.target, tree=True, window=_answer_window(pair.target)) if fast else None
    return Prepared(pair, plans, src_read, tgt_read, src_tr, tgt_tr)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, _EPS, None)
    q = np.clip(q, _EPS, None)
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _variants(prep: Prepared, plan: PosPlan, spec: PatchSpec) -> list[Variant]:
    n_layers = prep.pair.target.lm.n_layers
    out = []
    for comp in spec.components:
        for h in spec.layer_list(n_layers, comp):
            out.append(Variant(comp, h, prep.src_trace.state(comp, h, plan.source)))
    return out


@torch.no_grad()
def patch_position(prep: Prepared, plan: PosPlan, spec: PatchSpec, method: str = "fast", max_batch: int = 32) -> pd.DataFrame:
    """Every (component, layer) cell at one position of one pair: a tidy frame."""
    pair = prep.pair
    tgt = pair.target
    variants = _variants(prep, plan, spec)
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


# =======================================================================================
# adapters (model → model)
# =======================================================================================
def _adapter_dir(ws, ref: str) -> Path:
    p = Path(ref).expanduser()
    cands = []
    if ws is not None:
        cands += [ws.path("runs", ref, "adapter"), ws.path("runs", ref)]
    cands += [p / "adapter", p]
    for c in cands:
        if (Path(c) / "adapter_config.json").exists():
            return Path(c)
    runs = sorted(x.name for x in ws.path("runs").iterdir() if x.is_dir()) if ws is not None and ws.path("runs").exists() else []
    raise PatchError(
        f"no adapter '{ref}': expected <workspace>/runs/{ref}/adapter/adapter_config.json or an adapter directory"
        + (f"; runs in this workspace: {', '.join(runs)}" if runs else "; this workspace has no fine-tuning runs yet")
    )


def _meta_hashes(adir: Path) -> set:
    """Base-model weight hashes recorded beside an adapter (metacog.json of the adapter, the
    run's settings.json)."""
    out = set()
    for f in (adir / "metacog.json", adir.parent / "settings.json"):
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict):
            continue
        if isinstance(m.get("base_weights_hash"), str):
            out.add(m["base_weights_hash"])
        base = m.get("base")
        if isinstance(base, dict) and isinstance(base.get("weights_hash"), str):
            out.add(base["weights_hash"])
    return out


def check_adapter(lm, adir: Path) -> dict:
    """Refuse, before loading it, an adapter made for another base model: the base weights
    hash recorded with it (metacog runs) must be this model's, every adapted module must
    exist here with the shapes the adapter's matrices expect (the fine-tuning stage's own
    check, :func:`metacog.finetune.evaluate.check_adapter`), and an adapter without metacog
    metadata must name this model as its base."""
    from metacog.core.workspace import WorkspaceError

    adir = Path(adir)
    try:
        cfg = json.loads((adir / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise PatchError(f"cannot read {adir / 'adapter_config.json'}: {e}") from None
    hashes = _meta_hashes(adir)
    if hashes and lm.weights_hash not in hashes:
        raise PatchError(
            f"adapter {adir} was trained on a base model with weights {', '.join(sorted(hashes))}, but this workspace's "
            f"model {lm.name} has weights {lm.weights_hash}: patch it in a workspace of its own base model"
        )
    base_name = str(cfg.get("base_model_name_or_path") or "")
    if base_name and not hashes:
        names = {str(x).lower() for x in (lm.source, lm.spec, lm.name, Path(str(lm.source)).name) if x}
        if base_name.lower() not in names and Path(base_name).name.lower() not in names:
            raise PatchError(f"adapter {adir} names base model '{base_name}', not this workspace's model {lm.name} ({lm.source})")
    from metacog.finetune.evaluate import check_adapter as ft_check  # the structural check (modules and shapes)

    try:
        ft_check(adir, lm.weights_hash, _unwrapped(lm))
    except WorkspaceError as e:
        raise PatchError(str(e)) from None
    return cfg


def _unwrapped(lm):
    return dataclasses.replace(lm, model=_base(lm.model))


_ADAPTERS: dict[tuple, object] = {}
_ADAPTERS_LOCK = threading.Lock()


def load_adapter_model(lm, adir: Path, label: str):
    """A LoadedModel of base + adapter on a private copy of the base weights (the shared base
    model is never modified), cached per (base, adapter). Uses the fine-tuning stage's loader."""
    adir = Path(adir).resolve()
    wf = adir / "adapter_model.safetensors"
    key = (id(lm.model), str(adir), wf.stat().st_mtime if wf.exists() else 0.0)
    with _ADAPTERS_LOCK:
        if key in _ADAPTERS:
            return _ADAPTERS[key]
        check_adapter(lm, adir)
        from metacog.finetune.backends.peft_backend import load_adapter_model as ft_load

        out = ft_load(lm, adir, copy_model=True)
        out = dataclasses.replace(out, spec=f"{lm.spec}+{label}", name=f"{lm.name} + {label}")
        _ADAPTERS[key] = out
        return out


def clear_adapters() -> None:
    with _ADAPTERS_LOCK:
        _ADAPTERS.clear()


# =======================================================================================
# building pairs from a workspace
# =======================================================================================
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
class SweepPlan:
    """Everything a sweep needs, checked: pairs (models loaded, sequences encoded), spec."""

    spec: PatchSpec
    pairs: list[Pair]
    source: str
    target: str
    description: dict = field(default_factory=dict)

    @property
    def sweep_id(self) -> str:
        from metacog.core.settings import stable_hash

        return stable_hash(
            "patching", PATCHING_VERSION, self.spec, self.source, self.target,
            [(p.kind, p.source.label, p.source.item_id, p.target.label, p.target.item_id) for p in self.pairs],
            sorted({p.source.lm.weights_hash for p in self.pairs} | {p.target.lm.weights_hash for p in self.pairs}),
            n=10,
        )

    def n_units(self) -> int:
        return len(self.pairs) * (len([p for p in self.spec.positions if not p.startswith("random:")]) + self.spec.n_random())


def _model_side_ref(ws, lm, ref: str):
    """'base' → lm; a run id / adapter dir → (adapter model, label); else None (not a model)."""
    if ref in ("base", "model", "default"):
        return lm, "base"
    try:
        adir = _adapter_dir(ws, ref)
    except PatchError:
        return None
    label = f"run:{adir.parent.name if adir.name == 'adapter' else adir.name}"
    return load_adapter_model(lm, adir, label), label


def plan_sweep(ws, lm, source: str, target: str, spec: PatchSpec, n_pairs: int = 10, by: str = "auto",
               split: str = "all", source_correct: str = "any", target_correct: str = "any",
               items: list[str] | None = None, pair_seed_: int | None = None, style: str | None = None,
               pool: list[str] | None = None) -> SweepPlan:
    """Resolve ``source``/``target`` (``base``, a run id or adapter dir, an item id, or the
    selectors ``high``/``low``/``random``) into pairs, and check every input before any work.

    - model → model (both sides models): ``n_pairs`` items of ``split`` (or ``items``),
      drawn with the seed; each pair is one item in both models.
    - item → item (both sides items/selectors, in the workspace's model): ``high``/``low``
      take the items with the highest/lowest score ``by`` (probe p, else E[v]); pairs are
      matched in rank order (the highest source with the lowest target, ...).

    ``pool`` (item ids) restricts every draw and selector to those items (e.g. a score range).
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
    return SweepPlan(spec=spec, pairs=pairs, source=source, target=target, description=desc)


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


# =======================================================================================
# the sweep in a workspace (resumable, stoppable)
# =======================================================================================
def sweep_dir(ws, sweep_id: str) -> Path:
    return ws.path("patching", sweep_id)


def list_sweeps(ws) -> list[dict]:
    """Sweeps saved in a workspace, newest first: their patching.json (or spec.json while running)."""
    d = ws.path("patching")
    if not d.exists():
        return []
    out = []
    for sub in d.iterdir():
        if not sub.is_dir():
            continue
        s = ws.read_json(f"patching/{sub.name}/patching.json") or ws.read_json(f"patching/{sub.name}/spec.json")
        if s:
            s = dict(s)
            s.setdefault("sweep_id", sub.name)
            s["_mtime"] = sub.stat().st_mtime
            out.append(s)
    return sorted(out, key=lambda s: -s["_mtime"])


def load_results(ws, sweep_id: str) -> pd.DataFrame:
    """The tidy table of a sweep (finished units of a running/stopped sweep included)."""
    d = sweep_dir(ws, sweep_id)
    if (d / "results.parquet").exists() and not (d / "parts").exists():
        return pd.read_parquet(d / "results.parquet")
    parts = sorted((d / "parts").glob("*.parquet")) if (d / "parts").exists() else []
    if not parts:
        if (d / "results.parquet").exists():
            return pd.read_parquet(d / "results.parquet")
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).sort_values(
        ["pair", "component", "position", "layer"], kind="mergesort").reset_index(drop=True)


def load_pairs(ws, sweep_id: str) -> pd.DataFrame:
    p = sweep_dir(ws, sweep_id) / "pairs.parquet"
    return pd.read_parquet(p) if p.exists() else pd.DataFrame()


def run_sweep(ws, plan: SweepPlan, progress=None, should_stop=None, method: str = "fast", max_batch: int = 32) -> dict:
    """Run (or resume) ``plan`` in ``ws``: one part file per (pair, position) as it finishes;
    then ``results.parquet``, ``results.csv`` and ``patching.json``. On stop, the finished
    rows are kept and summarised (``complete: false``) and :class:`~metacog.core.runtime.Stopped`
    is raised. A second run of the same sweep while one runs is refused (workspace lock)."""
    with ws.writer(f"patch-{sweep_id_for(plan, method)}"):
        return _run_sweep(ws, plan, progress, should_stop, method, max_batch)


def _run_sweep(ws, plan: SweepPlan, progress=None, should_stop=None, method: str = "fast", max_batch: int = 32) -> dict:
    """Run (or resume) ``plan`` in ``ws``: one part file per (pair, position) as it finishes;
    then ``results.parquet``, ``results.csv`` and ``patching.json``. On stop, the finished
    rows are kept and summarised (``complete: false``) and :class:`~metacog.core.runtime.Stopped` is raised."""
    from metacog.patching.stats import summarize
    from metacog.core.runtime import Stopped, check_stop
    from metacog.core.workspace import atomic_write_text

    sid = sweep_id_for(plan, method)
    rel = f"patching/{sid}"
    d = sweep_dir(ws, sid)
    prev = ws.read_json(f"{rel}/patching.json")
    if prev and prev.get("complete") and (d / "results.parquet").exists() and not (d / "parts").exists():
        if progress:
            progress(plan.n_units(), plan.n_units(), "patching")
        return prev  # the same sweep finished before: nothing to recompute
    (d / "parts").mkdir(parents=True, exist_ok=True)
    spec_json = {
        "sweep_id": sid, "version": PATCHING_VERSION, "spec": _spec_dict(plan.spec), **plan.description,
        "n_units": plan.n_units(), "method": method, "dot_tol": dot_tol(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "complete": False,
    }
    old = ws.read_json(f"{rel}/spec.json")
    if old:
        spec_json["created"] = old.get("created", spec_json["created"])
    ws.write_json(f"{rel}/spec.json", spec_json)
    t0 = time.time()
    total = plan.n_units()
    done = 0
    pair_recs = []
    old_pairs = load_pairs(ws, sid)
    old_pairs = {int(r["pair"]): r for r in old_pairs.to_dict("records")} if len(old_pairs) else {}
    stopped = None
    try:
        for pair in plan.pairs:
            plans = resolve_positions(pair, plan.spec)
            files = {pl.label: d / "parts" / f"p{pair.index:05d}-{pl.label}.parquet" for pl in plans}
            if all(f.exists() for f in files.values()) and pair.index in old_pairs:
                pair_recs.append(old_pairs[pair.index])
                done += len(plans)
                if progress:
                    progress(done, total, "patching")
                continue
            check_stop(should_stop)
            prep = prepare_pair(pair, plan.spec, method)
            rec = pair_record(prep)
            pair_recs.append(rec)
            ws.write_parquet(f"{rel}/pairs.parquet", pd.DataFrame(pair_recs))
            for pl in prep.plans:
                f = files[pl.label]
                if not f.exists():
                    check_stop(should_stop)
                    df = patch_position(prep, pl, plan.spec, method, max_batch)
                    df.insert(0, "sweep", sid)
                    ws.write_parquet(str(f.relative_to(ws.root)), df)
                done += 1
                if progress:
                    progress(done, total, "patching")
    except (Stopped, KeyboardInterrupt) as e:
        stopped = e
    res = load_results(ws, sid)
    if pair_recs:
        ws.write_parquet(f"{rel}/pairs.parquet", pd.DataFrame(pair_recs))
    complete = stopped is None
    if len(res):
        ws.write_parquet(f"{rel}/results.parquet", res)
        atomic_write_text(d / "results.csv", res.drop(columns=["probs"], errors="ignore").to_csv(index=False))
    summary = summarize(res, plan.spec, n_layers=plan.pairs[0].target.lm.n_layers)
    summary = {**spec_json, **summary, "complete": complete, "n_units_done": done, "seconds": round(time.time() - t0, 1),
               "threads": torch.get_num_threads(),
               "files": {"results": f"{rel}/results.parquet", "csv": f"{rel}/results.csv", "pairs": f"{rel}/pairs.parquet"}}
    ws.write_json(f"{rel}/patching.json", summary)
    if complete:
        from metacog.core.workspace import remove_tree

        remove_tree(d / "parts")
    if stopped is not None:
        raise stopped
    return summary


def sweep_id_for(plan: SweepPlan, method: str = "fast") -> str:
    """The sweep's directory name: the plan's hash (+ ``-ref`` for the reference method)."""
    return plan.sweep_id if method == "fast" else f"{plan.sweep_id}-ref"


def _spec_dict(spec: PatchSpec) -> dict:
    d = dataclasses.asdict(spec)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# =======================================================================================
# background sweeps (the app): one at a time per process, progress + cooperative stop
# =======================================================================================
class SweepJob(Job):
    """A sweep running in a background thread (see :mod:`metacog.core.jobs`); ``summary`` is run_sweep's."""

    def __init__(self, ws, plan: SweepPlan, method: str = "fast", max_batch: int = 32):
        self.ws, self.plan, self.method, self.max_batch = ws, plan, method, max_batch
        self.sweep_id = sweep_id_for(plan, method)
        super().__init__("patching", str(ws.root), lambda progress, should_stop: run_sweep(
            ws, plan, progress, should_stop, method, max_batch), label=f"patching sweep {self.sweep_id}")
        self.total = plan.n_units()

    @property
    def summary(self):
        return self.result


SWEEP_JOBS = JobKind("patching", "a patching sweep")


def start_sweep_job(ws, plan: SweepPlan, method: str = "fast", max_batch: int = 32) -> SweepJob:
    """Start ``plan`` in the background; refuses while another sweep runs in this process."""
    return SWEEP_JOBS.start(ws.root, SweepJob(ws, plan, method, max_batch))


def start_sweep_process(ws, plan_args: dict, method: str = "fast", max_batch: int = 32, sweep_id: str = "") -> Job:
    """Start a sweep as its own process (:mod:`metacog.core.jobs`): ``plan_args`` are
    :func:`plan_sweep`'s arguments (``source``, ``target``, ``spec`` as a dict, ``n_pairs``,
    ``by``, ``split``, ``source_correct``, ``target_correct``, ``pool``); the process loads the
    model, plans the same sweep (same id) and runs it. Refuses while another sweep runs."""
    from metacog.core.jobs import ProcessJob

    spec = {**plan_args, "method": method, "max_batch": int(max_batch), "sweep_id": sweep_id}
    job = ProcessJob("patching", ws.root, spec, label=f"patching sweep {sweep_id}".strip())
    job.sweep_id = sweep_id
    return SWEEP_JOBS.start(ws.root, job)


def run_job(ws, spec: dict, progress, should_stop) -> dict:
    """A patching sweep as an app job in its own process: plan (see :func:`start_sweep_process`), then run."""
    from metacog.model.loading import loader_from_env
    from metacog.core.settings import ModelSettings, from_dict, to_dict

    ms, _ = ws.settings()
    progress(0, 0, "loading the model")
    lm = loader_from_env()(from_dict(ModelSettings, {**to_dict(ms), "threads": int(spec.get("threads") or ms.threads)}))
    pspec = PatchSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["spec"].items()})
    plan = plan_sweep(ws, lm, spec["source"], spec["target"], pspec, n_pairs=int(spec.get("n_pairs") or 10),
                      by=spec.get("by") or "auto", split=spec.get("split") or "all",
                      source_correct=spec.get("source_correct") or "any", target_correct=spec.get("target_correct") or "any",
                      pool=spec.get("pool"))
    return run_sweep(ws, plan, progress, should_stop, spec.get("method") or "fast", int(spec.get("max_batch") or 32))


def get_sweep_job(ws) -> SweepJob | None:
    return SWEEP_JOBS.get(ws.root)


def running_sweep_job() -> SweepJob | None:
    return SWEEP_JOBS.running()


def private_model(lm):
    """A copy of ``lm`` whose weights no other code runs (hooks of a concurrent study in the
    same process cannot see the sweep's forwards, nor the sweep theirs); cached per model."""
    key = ("private", id(lm.model))
    with _ADAPTERS_LOCK:
        if key not in _ADAPTERS:
            _ADAPTERS[key] = dataclasses.replace(lm, model=copy.deepcopy(lm.model).eval())
        return _ADAPTERS[key]
