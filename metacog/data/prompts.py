"""Prompt templates and the named token positions they define.

Sequences are built from separately tokenised *segments* (prompt, answer, confidence prefix),
so every named position is an exact token index by construction, the same in the
activation cache, the 0–100 readout, fine-tuning targets and patching.

Chat models get the chat template (one user turn, generation prompt on). Base models (no
chat template) get a plain ``Question: … Answer:`` format.

Two answer-prompt styles:
- ``plain`` (default): the bare question. Inline confidence is then elicited in the same
  assistant turn: the answer, then ``\nConfidence:``, then the model's own continuation.
  Small models need this: given the study's instruction, SmolLM2-135M mostly replies
  "100%: 100% is the answer." instead of answering (12% vs ~42% accuracy on world-facts).
- ``reference``: the reference study's instruction ("After your answer, state your
  confidence…"), for models large enough to follow it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ANSWER_INSTRUCTION = (
    "You are answering trivia questions. After your answer, state your confidence as a percentage from 0 to 100.\n"
    "Question: {question}\n"
)
PLAIN_QUESTION = "{question}"
PLAIN_MC = "{question}\nOptions:\n{options}\nReply with the text of the correct option."
MC_INSTRUCTION = (
    "You are answering multiple-choice trivia questions. Reply with the text of the correct option. "
    "After your answer, state your confidence as a percentage from 0 to 100.\n"
    "Question: {question}\nOptions:\n{options}\n"
)
TWO_PASS_INSTRUCTION = (
    "You answered the following trivia question.\n"
    "Question: {question}\n"
    "Your answer: {answer}\n"
    "How confident are you that your answer is correct? State your confidence as a percentage from 0 to 100."
)
INLINE_CONF_PREFIX = "\nConfidence:"  # appended after the answer; its last token is the confidence slot
TWO_PASS_CONF_PREFIX = "Confidence:"  # starts the assistant turn of the two-pass prompt
VALUE_FMT = " {v}"  # how a value follows the prefix: "Confidence: 73"
TARGET_SUFFIX = "%"  # fine-tuning targets read "Confidence: 73%"


def format_options(choices) -> str:
    """Multiple-choice options as lines "A. text", "B. text", ... (letters from A)."""
    return "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))


def question_text(question: str, choices=None, style: str = "plain") -> str:
    """The user turn asking ``question`` (with its lettered ``choices`` for multiple choice) in the
    prompt ``style``: "plain" (the bare question) or the instruction style that asks for an answer
    with an inline confidence.

    Raises: ValueError for an unknown prompt ``style``.
    """
    mc = choices is not None and len(choices) > 0
    if style == "reference":
        if mc:
            return MC_INSTRUCTION.format(question=question, options=format_options(choices))
        return ANSWER_INSTRUCTION.format(question=question)
    if style != "plain":
        raise ValueError(f"unknown prompt style {style!r}")
    if mc:
        return PLAIN_MC.format(question=question, options=format_options(choices))
    return PLAIN_QUESTION.format(question=question)


def _chat(tok, user: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)


def answer_prompt_text(tok, is_chat: bool, question: str, choices=None, style: str = "plain") -> str:
    """The full answer prompt as text: the chat template around :func:`question_text` for a chat model,
    else "Question: ...\\nAnswer:" (plain style) or the instruction followed by "Answer:"."""
    user = question_text(question, choices, style)
    if is_chat:
        return _chat(tok, user)
    if style == "plain":
        return "Question: " + user + "\nAnswer:"
    return user + "Answer:"


def two_pass_prompt_text(tok, is_chat: bool, question: str, answer: str) -> str:
    """The prompt of the second pass, which asks for the confidence (0-100) that ``answer`` to
    ``question`` is correct (chat template for a chat model, else the instruction and a newline)."""
    user = TWO_PASS_INSTRUCTION.format(question=question, answer=answer)
    return _chat(tok, user) if is_chat else user + "\n"


def answer_sep(is_chat: bool) -> str:
    """What separates the prompt from the answer text ("Answer:" is followed by a space)."""
    return "" if is_chat else " "


@dataclass
class Encoded:
    """A tokenised prompt: ``ids`` (token ids), ``spans`` (segment name -> [start, end) token indices)
    and ``positions`` (named read-out position -> token index, e.g. "last_prompt")."""
    ids: list[int]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # segment -> [start, end)
    positions: dict[str, int] = field(default_factory=dict)  # named position -> token index

    def __len__(self) -> int:
        return len(self.ids)


def _tok_ids(tok, text: str, first: bool, is_chat: bool) -> list[int]:
    # Chat templates already carry their special tokens as text; a plain prompt gets the
    # tokenizer's own BOS on the first segment only.
    add = first and not is_chat
    ids = tok(text, add_special_tokens=add)["input_ids"]
    return list(ids)


def encode_segments(tok, is_chat: bool, segments: list[tuple[str, str]]) -> Encoded:
    """Tokenise named text segments one after another into one :class:`Encoded` with each segment's
    token span (only the first segment of a non-chat prompt gets the tokenizer's BOS)."""
    ids: list[int] = []
    spans = {}
    for i, (name, text) in enumerate(segments):
        part = _tok_ids(tok, text, first=(i == 0), is_chat=is_chat) if text else []
        spans[name] = (len(ids), len(ids) + len(part))
        ids.extend(part)
    return Encoded(ids=ids, spans=spans)


def encode_answer_prompt(tok, is_chat: bool, question: str, choices=None, style: str = "plain") -> Encoded:
    """The answer prompt (:func:`answer_prompt_text`) tokenised, with the named position
    ``last_prompt`` (its last token)."""
    enc = encode_segments(tok, is_chat, [("prompt", answer_prompt_text(tok, is_chat, question, choices, style))])
    enc.positions["last_prompt"] = enc.spans["prompt"][1] - 1
    return enc


def encode_inline(tok, is_chat: bool, question: str, answer: str, choices=None, style: str = "plain") -> Encoded:
    """prompt + answer + "\\nConfidence:" — positions last_prompt, last_answer, confidence."""
    enc = encode_segments(
        tok,
        is_chat,
        [
            ("prompt", answer_prompt_text(tok, is_chat, question, choices, style)),
            ("answer", answer_sep(is_chat) + (answer.strip() or "I don't know")),
            ("conf", INLINE_CONF_PREFIX),
        ],
    )
    enc.positions = {
        "last_prompt": enc.spans["prompt"][1] - 1,
        "last_answer": enc.spans["answer"][1] - 1,
        "confidence": enc.spans["conf"][1] - 1,
    }
    return enc


def encode_two_pass(tok, is_chat: bool, question: str, answer: str) -> Encoded:
    """two-pass prompt (question + given answer) + "Confidence:" — position confidence_2p."""
    enc = encode_segments(
        tok,
        is_chat,
        [("prompt", two_pass_prompt_text(tok, is_chat, question, answer.strip() or "I don't know")), ("conf", TWO_PASS_CONF_PREFIX)],
    )
    enc.positions = {"confidence_2p": enc.spans["conf"][1] - 1, "last_prompt_2p": enc.spans["prompt"][1] - 1}
    return enc


def encode_two_pass_prompt(tok, is_chat: bool, question: str, answer: str) -> Encoded:
    """The two-pass prompt alone (for free generation of the verbal two-pass confidence)."""
    enc = encode_segments(tok, is_chat, [("prompt", two_pass_prompt_text(tok, is_chat, question, answer.strip() or "I don't know"))])
    enc.positions["last_prompt_2p"] = enc.spans["prompt"][1] - 1
    return enc


UNCERTAINTY_QUERY = (
    "Question: {question}\n"
    "Proposed answer: {answer}\n"
    "Is the proposed answer correct? Reply with {yes} or {no}."
)
PAIRWISE_QUERY = (
    "Here are two trivia questions and the answers you gave.\n"
    "Question 1: {q1}\nYour answer 1: {a1}\n"
    "Question 2: {q2}\nYour answer 2: {a2}\n"
    "Which answer are you more likely to have gotten right? Reply with 1 or 2."
)
PAIRWISE_LABELS = ("1", "2")


def encode_uncertainty_query(tok, is_chat: bool, question: str, answer: str, labels: tuple[str, str] = ("Yes", "No")) -> Encoded:
    """The uncertainty query ("Is the proposed answer correct?") about a question and the
    model's own answer; the reply (one of ``labels``) starts right after the prompt. Used by
    P(True) (labels True/False) and calibration-tuning (Yes/No; its fine-tuning targets)."""
    user = UNCERTAINTY_QUERY.format(question=question, answer=answer.strip() or "I don't know", yes=labels[0], no=labels[1])
    text = _chat(tok, user) if is_chat else user + "\nAnswer:"
    enc = encode_segments(tok, is_chat, [("prompt", text)])
    enc.positions["last_prompt_uq"] = enc.spans["prompt"][1] - 1
    return enc


def label_text(label: str, is_chat: bool) -> str:
    """How a reply label follows its prompt: at the start of the assistant turn (chat), after
    "Answer:" with a space (plain)."""
    return label if is_chat else " " + label


def encode_pairwise(tok, is_chat: bool, q1: str, a1: str, q2: str, a2: str) -> Encoded:
    """Relative confidence: two questions with the model's answers; reply "1" or "2"."""
    user = PAIRWISE_QUERY.format(q1=q1, a1=a1.strip() or "I don't know", q2=q2, a2=a2.strip() or "I don't know")
    text = _chat(tok, user) if is_chat else user + "\nAnswer:"
    return encode_segments(tok, is_chat, [("prompt", text)])


def target_text(value: int) -> str:
    """The text that follows the confidence prefix in a fine-tuning target.

    Raises: ValueError when ``value`` is not an integer 0..100.
    """
    v = int(value)
    if not 0 <= v <= 100:
        raise ValueError(f"confidence target must be an integer 0..100, not {value!r}")
    return VALUE_FMT.format(v=v) + TARGET_SUFFIX
