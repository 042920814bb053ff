"""Pairs and positions: the source and target sides of a patch (a model and an inline token
sequence each), the class of every token (question | answer | template), the random positions
drawn from the item's own tokens, and the alignment of source and target token indices.

In TransformerLens/pyvene terms the **source** side is the run whose activations are cached
and written in (the "clean" run of a denoising patch), the **target** the run that receives
them (the "corrupted" run); the target with the source's state written in is the *patched run*."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from metacog.patching.spec import NAMED, RANDOM_FROM, PatchError, PatchSpec


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
        """Sequence length in tokens."""
        return len(self.ids)


@dataclass
class Pair:
    """A source side and a target side (``kind``: ``model`` = one item in two models, ``item`` =
    two items in one model); ``index`` numbers the pair within its grid."""
    index: int
    source: Side
    target: Side
    kind: str  # "model" | "item"

    @property
    def direction(self) -> str:
        """``"<source model>→<target model>"`` (model → model, e.g. ``run:r1→base``) or ``"item→item"``."""
        if self.kind == "model":
            return f"{self.source.model_label}→{self.target.model_label}"
        return "item→item"


@dataclass(frozen=True)
class PosPlan:
    """One resolved position of a pair: its label (``confidence``, ``random1``, ``token17``, ...),
    kind (one of ``KINDS``), the target and source token indices, and their token classes
    (question | answer | template; "" when a side has none)."""
    label: str  # confidence | last_prompt | last_answer | random1.. | token17
    kind: str  # one of KINDS
    target: int
    source: int
    target_class: str = ""  # question | answer | template (POSITION_CLASSES); "" when the side has no classes
    source_class: str = ""


def special_ids(tok) -> set[int]:
    """Token ids a random position must never be: the tokenizer's special tokens plus the chat
    markers it knows (``<|im_start|>``, ``<s>``, ``<eos>``, ...)."""
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
    """The number of leading tokens ``a`` and ``b`` share (an item → item patch there is a no-op)."""
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
    formatted question, so a system prompt that happened to contain the words does not count).

    Raises:
        PatchError: the question is not in the prompt text (the prompt template changed).
    """
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
    confidence slot, and (item → item) not in the shared token prefix, whose states are identical.

    Raises:
        PatchError: unknown ``random_from``, or the target side has no token classes.
    """
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
    """The seed of a pair's random positions: (``seed``, a hash of the pair's kind, labels and item
    ids), so a pair draws the same positions in every grid with the same seed."""
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
    """The (target, source) token indices of every requested position for this pair.

    Raises:
        PatchError: a ``token:I`` outside the target sequence.
    """
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


def answer_window(side: Side) -> tuple[int, int]:
    """Positions whose greedy next token makes the answer: last prompt token .. last answer token."""
    return side.positions["last_prompt"], side.positions["last_answer"]
