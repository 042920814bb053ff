"""The one grader used everywhere (SCIENCE.md bug 6: never a second one).

Rules, exactly:

``normalize(text)``
    1. Unicode NFKD, then every combining mark (category ``Mn``) is dropped, so accents go
       ("Zürich" -> "zurich", "ﬁ" -> "fi").
    2. ``str.casefold()`` (lower-case; also "ß" -> "ss").
    3. Numbers are kept whole: a comma between a digit and exactly three digits is a thousands
       separator and is removed ("1,000" -> "1000"); a point between two digits is a decimal
       point and is kept ("3.14" stays "3.14", so "3" does not match "3.14").
    4. Every other character that is not a letter, a digit or whitespace (punctuation,
       symbols, control characters, the remaining points and commas) becomes a space.
    5. Whitespace runs collapse to one space; leading/trailing space is stripped.
    6. One leading article ``a``, ``an`` or ``the`` is dropped when another word follows it
       ("the beatles" -> "beatles"; a lone "a" stays "a", so a multiple-choice letter survives).

``grade_short(answer, aliases)``
    True iff some alias, normalised, is non-empty and occurs in the normalised answer on word
    boundaries, i.e. ``" " + alias + " "`` is a substring of ``" " + answer + " "``.  Aliases
    that normalise to "" are ignored; no alias left (or an empty answer) grades False; a single
    string is one alias. So "paris" matches "the capital is paris", "oman" does not match "romania" and "8" does
    not match "18" or "8.5".  Matching is one way: an answer shorter than the alias
    ("paris" for alias "paris france") is not correct.

``grade_mc(option_logliks, answer_index)``
    The chosen option is the arg-max of the option log-likelihoods (NaN counts as -inf; ties
    go to the lowest index); correct iff it equals ``answer_index``.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

__all__ = ["normalize", "grade_short", "grade_mc"]

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_ARTICLE = re.compile(r"^(?:a|an|the) (?=\S)")


def normalize(text: str) -> str:
    """Normalise text for grading (the rule, step by step, is in the module docstring)."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKD", str(text))
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Mn")  # 1. accents
    s = s.casefold()  # 2.
    s = _THOUSANDS.sub("", s)  # 3. "1,000" -> "1000"
    keep = {m.start() for m in _DECIMAL.finditer(s)}  # 3. decimal points kept
    s = "".join(
        ch if (ch.isalnum() or ch.isspace() or i in keep) else " " for i, ch in enumerate(s)
    )  # 4.
    s = " ".join(s.split())  # 5.
    return _ARTICLE.sub("", s)  # 6.


def grade_short(answer: str, aliases: Iterable[str]) -> bool:
    """True iff a non-empty normalised alias occurs in the normalised answer on word boundaries."""
    a = normalize(answer)
    if not a:
        return False
    hay = f" {a} "
    if aliases is None:
        return False
    if isinstance(aliases, str):  # one alias, not an iterable of characters
        aliases = [aliases]
    for alias in aliases:
        n = normalize(alias)
        if n and f" {n} " in hay:
            return True
    return False


def grade_mc(option_logliks: Sequence[float], answer_index: int) -> tuple[int, bool]:
    """(chosen index, correct): arg-max log-likelihood (NaN = -inf, ties -> lowest index)."""
    ll = np.asarray(option_logliks, dtype=float).ravel()
    if ll.size == 0:
        raise ValueError("grade_mc needs at least one option log-likelihood")
    ai = int(answer_index)
    if not 0 <= ai < ll.size:
        raise ValueError(f"answer_index {answer_index} is out of range for {ll.size} options")
    if np.all(np.isnan(ll)):
        raise ValueError("every option log-likelihood is NaN")
    ll = np.where(np.isnan(ll), -np.inf, ll)
    chosen = int(np.argmax(ll))
    return chosen, chosen == ai
