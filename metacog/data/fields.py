"""The vocabulary of a dataset record, shared by every reader: the errors (:class:`DataError`,
:class:`DataWarning`, :class:`NoGold`), the layout names for error messages (:data:`LAYOUTS`), the
field names looked for, and the look-up and cleaning of one field (see
:mod:`metacog.data.readers` for the accepted layouts)."""
from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path

from metacog.data.grading import normalize

LETTERS = "ABCDE"
LAYOUTS = (
    "short answer: question + answers/answer/correct_answer/aliases (TriviaQA: answer.value/aliases/normalized_aliases)",
    "ARC/OpenBookQA: question (or question_stem) + choices.text/choices.label + answerKey",
    "MMLU: question + choices (list) + answer (0-based integer)",
    "SciQ: question + correct_answer + distractor1..3",
    "TruthfulQA MC1: question + mc1_targets (choices + labels); TruthfulQA generation: question + best_answer/correct_answers",
    "generic MC: question + choices/options or A..E columns + answer_index/answer",
)
PLACEHOLDER = re.compile(r"^\s*[<\[]\s*(?:unk|unknown|none|null|nan|na|n/a|missing|blank|pad|mask|empty)\s*[>\]]\s*$", re.I)
# Bare placeholders, compared after the grader's own normalize() ("N/A", "n/a", "#N/A", "n.a." -> "n a";
# "TBD." -> "tbd"). "none", "unknown", "zero", "nil" and "NA" (sodium's symbol) can be real answers: kept.
BARE_PLACEHOLDERS = frozenset({"n a", "tbd", "tba", "todo", "null"})
# NaN as text (str(float("nan")), a spreadsheet's export), matched as written: "Nan" (a Thai province, a
# given name) is kept.
NAN_TEXTS = frozenset({"nan", "NaN", "NAN"})
# Letters that render as nothing (Hangul fillers, braille blank, Mongolian vowel separator); with every
# control, format (zero-width space, joiners, BOM, soft hyphen), separator and combining-mark character
# they make a text "invisible" (see is_invisible).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# 8 or more ASCII letters/digits: normalize() keeps every one of them (it only adds letters, from
# non-ASCII ones, and drops at most a 3-letter leading article), so the result has 5 or more and is
# neither empty nor a bare placeholder (4 letters at most): is_placeholder skips normalize() for the
# common long alias (25x faster; equal to the full rule, tested).
_MANY_ASCII_ALNUM = re.compile(r"(?:[^A-Za-z0-9]*[A-Za-z0-9]){8}")
QUESTION_KEYS = ("question", "question_stem", "query", "prompt")
ANSWER_KEYS = ("answers", "answer", "correct_answer", "aliases", "choices", "options", "answer_index", "a",
               "mc1_targets", "answerkey", "best_answer", "best answer", "correct_answers", "correct answers")


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file, the line or row, and the problem."""


class DataWarning(UserWarning):
    """Something a user should see about a file that was read: items dropped for lack of gold
    (counted in the message), or a convention the reader applied to ambiguous keys (digit answers
    without a label list read as 0-based indices); one warning per kind per file."""


class NoGold(Exception):
    """This record has the fields of a layout but no gold answer (caught by the reader, which drops
    the item with a :class:`DataWarning`); the message says why."""


def lower_keys(rec: dict) -> dict:
    """The record with its keys stripped and lower-cased (field names are case-insensitive)."""
    return {str(k).strip().lower(): v for k, v in rec.items()}


def is_missing(v) -> bool:
    """None, NaN, or a blank string."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def first_of(rec: dict, *keys):
    """First non-missing value among keys (rec's keys already lower-cased)."""
    for k in keys:
        v = rec.get(k)
        if not is_missing(v):
            return v
    return None


def as_text(v) -> str:
    """A field value as stripped text (an integral float such as 3.0 becomes "3")."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def is_invisible(text: str) -> bool:
    """True when ``text`` has no visible character: empty, or only whitespace, control, format
    (zero-width space, joiners, BOM, soft hyphen), separator or combining-mark characters and
    blank-rendering letters (Hangul fillers, braille blank)."""
    return all(unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ch.isspace() or ch in _BLANK_LETTERS
               for ch in str(text))


def is_placeholder(text: str) -> bool:
    """A gold text that is no answer: bracketed ("<unk>", "[UNK]", "<none>"), empty after the
    grader's normalize() (punctuation or invisible characters only: "?", "???", "-", "--",
    "\u200b"; grade_short ignores such an alias, so no answer could match it), a bare placeholder
    word (``BARE_PLACEHOLDERS`` after normalize: "N/A", "n/a", "#N/A", "TBD", "TBA", "TODO", "null")
    or NaN as text (``NAN_TEXTS``). "none" and "unknown" are real answers and are kept."""
    s = str(text).strip()
    if PLACEHOLDER.match(s) or s in NAN_TEXTS:
        return True
    if _MANY_ASCII_ALNUM.match(s):
        return False
    n = normalize(s)
    return not n or n in BARE_PLACEHOLDERS


def is_gold(v) -> bool:
    """A usable gold value: not missing, not a list/object/bool, not a placeholder (:func:`is_placeholder`)."""
    return not is_missing(v) and not isinstance(v, (dict, list, bool)) and not is_placeholder(as_text(v))


def dedupe(values) -> list[str]:
    """The gold strings of ``values`` as text, in order, without case-insensitive duplicates; missing
    values and placeholders (:func:`is_placeholder`: "<unk>", "N/A", "?", "\u200b") are skipped."""
    out, seen = [], set()
    for v in values:
        if not is_gold(v):
            continue
        s = as_text(v)
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def as_list(path: Path, where: str, field: str, v) -> list:
    """A list field: a list, a JSON list string, or a '|'- or ';'-separated string.

    Raises: DataError when ``v`` is neither a list nor a string, or is a malformed JSON list.
    """
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, dict) and isinstance(v.get("text"), list):  # SQuAD-style {"text": [...], "answer_start": [...]}
        return list(v["text"])
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [v]
    if not isinstance(v, str):
        raise DataError(f"{path}, {where}: '{field}' must be a list or a string, found {type(v).__name__}")
    s = v.strip()
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, {where}: '{field}' looks like a JSON list but is malformed ({e.msg})") from None
        if not isinstance(parsed, list):
            raise DataError(f"{path}, {where}: '{field}' must be a list")
        return parsed
    for sep in ("|", ";"):
        if sep in s:
            return s.split(sep)
    return [s]
