"""The one grader used everywhere (SCIENCE.md bug 6: never a second one).

Rules, exactly:

``normalize(text)``
    1. Letters Unicode does not decompose are transliterated (``TRANSLIT``: Ł→L, Ø→O, Æ→AE,
       Œ→OE, ß→ss, Đ/Ð→D, Þ→TH, Ħ→H, ı→i, Ŋ→N, Ŧ→T, ...); then Unicode NFKD, and every
       combining mark (category ``Mn``) is dropped, so accents go ("Zürich" -> "zurich",
       "Łódź" -> "lodz", "ﬁ" -> "fi").
    2. ``str.casefold()`` (lower-case; also "ß" -> "ss").
    3. Numbers are kept whole: a comma between a digit and exactly three digits is a thousands
       separator and is removed ("1,000" -> "1000"); a point between two digits is a decimal
       point and is kept ("3.14" stays "3.14", so "3" does not match "3.14").
    4. Every other character that is not a letter, a digit or whitespace (punctuation,
       symbols, control characters, the remaining points and commas) becomes a space.
    5. Whitespace runs collapse to one space; leading/trailing space is stripped.
    6. One leading article ``a``, ``an`` or ``the`` is dropped when another word follows it
       ("the beatles" -> "beatles"; a lone "a" stays "a", so a multiple-choice letter survives).

``grade_short(answer, aliases)`` = ``grade_short_detail(answer, aliases).correct``

    **Base rule** (the TriviaQA convention): an alias matches where its words occur in the
    answer's words on word boundaries, both normalised and with number words read as numbers
    ("seven" = "7", "twenty-one" = "21", "one hundred and five" = "105"). Aliases that
    normalise to "" are ignored; no alias left (or an empty answer) grades False; a single
    string is one alias. Matching is one way ("paris" for alias "paris france" is wrong).
    A continent alias also matches its adjective + "continent" ("the European continent" for
    "Europe"; ``CONTINENT_ADJECTIVES``).

    **Guards**: a match is refused when one of these fires (``GUARDS``, checked in this order);
    the answer is correct iff some match of some alias is refused by none:

    - ``number`` -- an alias that is a number is compared as a number: the answer must state
      that value (sign and decimals count: "-5" is not "5", "5.0" is "5"), and not inside a run
      of candidate numbers of the same number of digits ("12 13 14 15 16", "6 or 7", "5-7"
      for "14", "7", "5"); "July 20, 1969" still states 1969. "nan", "inf" and "infinity"
      are words, not numbers (an alias "Nan" matches the word "Nan").
    - ``negation`` -- the match follows a negation (not, no, never, neither, nor, n't, isn't,
      wasn't, ..., "rather than", "instead of", "other than", "except") within three words in
      the same clause (clauses end at . ; : ! ? , and brackets): "It was not Mark Twain".
    - ``hedge`` -- the answer offers alternatives (split at "or", "either", "/" and, when one
      of those is present, at commas) and some alternative names no alias: "Paris, London or
      Rome" for "Paris" ("Burma or Myanmar" for aliases Burma and Myanmar is correct).
    - ``longer_name`` -- the matched alias is capitalised in the answer and is only part of a
      longer capitalised name: the word right after it, or right before it, in the same
      clause is capitalised and is not a stop word (scikit-learn's English list), a title or
      a place classifier (``NAME_CLASSIFIERS``: City, Mount, Lake, King, ...); a hyphenated
      name pair before a region noun (``REGION_NOUNS``: "the Texas-Mexico border") does not
      count; a word before it also counts only when it is not a region adjective
      (``REGION_ADJECTIVES``: "Eastern Pennsylvania", "Central Asia"), not a bare compass word
      before a continent or before a region noun (``COMPASS_WORDS``: "West Africa", "the South
      Florida region"; "West Virginia" is not Virginia), not a demonym-like adjective (-an, -ese, -ish, -i, -ic:
      "Australian Dollar") and the alias is not a one-word unit noun (``UNIT_NOUNS``: "Belize
      Dollar" is a dollar): "New York" for "York", "Paris Hilton" for "Paris", "Equatorial
      Guinea" and "Guinea-Bissau" for "Guinea".
    - ``symbol`` -- a symbol that is part of a name (``NAME_SYMBOLS``: + # & @ * ♯) is
      compared too: "C#" is not "C++", "C++" is not "C".

``grade_mc(option_logliks, answer_index)``
    The chosen option is the arg-max of the option log-likelihoods (NaN counts as -inf; ties
    go to the lowest index); correct iff it equals ``answer_index``.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

__all__ = ["normalize", "grade_short", "grade_short_detail", "Grade", "GUARDS", "grade_mc"]

GUARDS = ("number", "negation", "hedge", "longer_name", "symbol")
TRANSLIT = str.maketrans({
    "Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "ß": "ss", "ẞ": "SS",
    "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Þ": "TH", "þ": "th", "Ħ": "H", "ħ": "h", "ı": "i", "Ŀ": "L",
    "ŀ": "l", "Ŋ": "N", "ŋ": "n", "Ŧ": "T", "ŧ": "t", "ĸ": "k", "ſ": "s", "ƒ": "f", "Ɖ": "D", "ɖ": "d",
    "Ƚ": "L", "ƚ": "l", "Ɨ": "I", "ɨ": "i", "Ʉ": "U", "ʉ": "u",
})
NAME_SYMBOLS = frozenset("+#&@*♯")
CONTINENT_ADJECTIVES = {
    "europe": ("european",), "asia": ("asian",), "africa": ("african",), "north america": ("north american",),
    "south america": ("south american",), "oceania": ("oceanian", "australian"), "australia": ("australian",),
    "antarctica": ("antarctic",),
}
NAME_CLASSIFIERS = frozenset("""
city town village state county province region district territory island islands isle republic kingdom empire
mount mt mountain mountains lake river sea ocean bay gulf desert valley peninsula strait canal
saint st san santa sir dame lord lady king queen prince princess emperor empress pope president general captain
dr mr mrs ms miss prof professor
""".split())
REGION_ADJECTIVES = frozenset("""
northern southern eastern western central northeastern northwestern southeastern southwestern mid middle upper
lower greater inner outer
""".split())
COMPASS_WORDS = frozenset("north south east west northeast northwest southeast southwest".split())
REGION_NOUNS = frozenset("region regions area areas part parts coast side portion corner border borders interior".split())
UNIT_NOUNS = frozenset("""
dollar dollars peso pesos franc francs pound pounds dinar dinars rupee rupees shilling shillings krona krone kronor
euro euros rial riyal real reais rand won yen yuan renminbi lira ruble rouble dirham lev leu kwacha cedi naira
dram lari manat som sum tenge afghani taka ngultrum kyat riel kip ringgit rupiah baht dong rufiyaa ouguiya dalasi
birr nakfa loti lilangeni pula kwanza metical ariary leone escudo colon cordoba lempira quetzal balboa guarani
boliviano sol bolivar gourde florin guilder hryvnia denar zloty forint koruna kuna mark tala vatu pa'anga kina
""".split())
_HEDGE_WORDS = frozenset("""
maybe perhaps probably possibly definitely certainly surely likely clearly obviously actually yes answer answers
capital currency country continent city state element symbol i'm im it's its sure final think guess believe
say said
""".split())

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_ARTICLE = re.compile(r"^(?:a|an|the) (?=\S)")


@lru_cache(maxsize=1)
def _stop_words() -> frozenset:
    """scikit-learn's English stop-word list (imported on first use: sklearn is slow to import)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def normalize(text: str) -> str:
    """Normalise text for grading (the rule, step by step, is in the module docstring)."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKD", str(text).translate(TRANSLIT))
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Mn")  # 1. accents
    s = s.casefold()  # 2.
    s = _THOUSANDS.sub("", s)  # 3. "1,000" -> "1000"
    keep = {m.start() for m in _DECIMAL.finditer(s)}  # 3. decimal points kept
    s = "".join(
        ch if (ch.isalnum() or ch.isspace() or i in keep) else " " for i, ch in enumerate(s)
    )  # 4.
    s = " ".join(s.split())  # 5.
    return _ARTICLE.sub("", s)  # 6.


# ----------------------------------------------------------------------------- number words
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _words_to_numbers(tokens: list[str]) -> list[tuple[str, int, int]]:
    """Normalised tokens with runs of English number words replaced by their digits:
    [(token, first source index, last source index + 1)]."""
    out, i, n = [], 0, len(tokens)
    while i < n:
        if tokens[i] not in _UNITS and tokens[i] not in _TENS:
            out.append((tokens[i], i, i + 1))
            i += 1
            continue
        total, cur, j, last = 0, 0, i, i
        while j < n:
            t = tokens[j]
            if t in _UNITS:
                cur += _UNITS[t]
            elif t in _TENS:
                cur += _TENS[t]
            elif t in _SCALES and j > i:
                if _SCALES[t] == 100:
                    cur = max(cur, 1) * 100
                else:
                    total += max(cur, 1) * _SCALES[t]
                    cur = 0
            elif t == "and" and j > i and tokens[j - 1] in _SCALES and j + 1 < n and (
                tokens[j + 1] in _UNITS or tokens[j + 1] in _TENS
            ):
                pass
            else:
                break
            last = j
            j += 1
        out.append((str(total + cur), i, last + 1))
        i = last + 1
    return out


# ----------------------------------------------------------------------------- tokens of the answer
@dataclass(frozen=True)
class _Tok:
    norm: str  # normalised, number words as digits
    surface: str  # as written
    clause: int  # clause number (clauses end at . ; : ! ? , and brackets)
    sym_before: bool  # a name symbol is glued to its start
    sym_after: bool  # a name symbol is glued to its end
    sign: str  # "-" when a minus sign is glued before a number
    sep_before: str  # the raw text between the previous token and this one


_TOKEN = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?![^\W_])|[^\W_]+", re.UNICODE)  # "12CT" is one word
_CLAUSE_END = re.compile(r"[;:!?()\[\]{}\"“”—–]|,")
_FULL_STOP = re.compile(r"\.(?=\s+[^a-z\d]|\s*$)")


def _tokens(text: str) -> list[_Tok]:
    s = str(text or "").translate(TRANSLIT)
    raw = []
    clause = 0
    prev_end = 0
    for m in _TOKEN.finditer(s):
        between = s[prev_end:m.start()]
        if raw and (_CLAUSE_END.search(between) or (_FULL_STOP.search(between) and len(raw[-1][1]) > 1)):
            clause += 1  # a full stop after a one-letter word ("U.S. dollar") is an abbreviation
        norm = normalize(m.group(0))
        if not norm:
            prev_end = m.end()
            continue
        before = s[m.start() - 1] if m.start() > 0 else ""
        after = s[m.end()] if m.end() < len(s) else ""
        sign = "-" if before and before in "-−" and m.group(0)[0].isdigit() and (
            m.start() < 2 or not s[m.start() - 2].isalnum()) else ""
        for k, part in enumerate(norm.split()):
            raw.append((part, m.group(0), clause, bool(before) and before in NAME_SYMBOLS and k == 0,
                        bool(after) and after in NAME_SYMBOLS,
                        sign if k == 0 else "", between if k == 0 else " "))
        prev_end = m.end()
    words = _words_to_numbers([r[0] for r in raw])
    out = []
    for w, a, b in words:
        first, last = raw[a], raw[b - 1]
        surface = first[1] if b - a == 1 else " ".join(r[1] for r in raw[a:b])
        out.append(_Tok(w, surface, first[2], first[3], last[4], first[5], first[6]))
    return out


def _alias_tokens(alias: str) -> list[str]:
    return [w for w, _, _ in _words_to_numbers(normalize(alias).split())]


def _number(s: str) -> float | None:
    """The value of a numeric token, else None; "nan", "inf" and "infinity" are words (float() would
    read them, and NaN equals nothing, so an alias "Nan", a Thai province, could never match)."""
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------- guards
_NEG = frozenset("not no never neither nor isn wasn aren weren doesn didn don cannot except without".split())
_NEG2 = {("rather", "than"), ("instead", "of"), ("other", "than"), ("can", "t"), ("won", "t")}
_NEG_STOP = frozenset("but however yet".split())  # "not London but Paris": scope ends
_NEG_OF_CERTAINTY = frozenset("sure certain 100 entirely completely quite totally positive confident".split())


def _negated(toks: list[_Tok], i: int) -> bool:
    """A negation within the five words before toks[i], in its clause and not cut off by "but";
    a negation of certainty ("not sure") is not a negation of the answer."""
    c = toks[i].clause
    prev = []
    for k in range(i - 1, max(-1, i - 6), -1):
        if toks[k].clause != c or toks[k].norm in _NEG_STOP:
            break
        prev.insert(0, toks[k].norm)
    for k, w in enumerate(prev):
        nxt = prev[k + 1] if k + 1 < len(prev) else ""
        if nxt == "t" and k + 2 < len(prev):
            nxt = prev[k + 2]
        if (w in _NEG or (w, nxt) in _NEG2) and nxt not in _NEG_OF_CERTAINTY:
            return True
    return False


def _capitalised(t: _Tok) -> bool:
    return t.surface[:1].isupper()


def _name_word(t: _Tok) -> bool:
    """A capitalised word that continues a name (not a stop word, title or classifier)."""
    w = t.norm
    return (_capitalised(t) and not t.norm.isdigit() and w not in _stop_words() and w not in NAME_CLASSIFIERS
            and w not in _HEDGE_WORDS)


def _longer_name(toks: list[_Tok], i: int, j: int) -> bool:
    """The match toks[i:j] is capitalised and only part of a longer capitalised name."""
    if not (_capitalised(toks[i]) or _capitalised(toks[j - 1])):
        return False
    def region_noun_after(k):  # toks[k] (if any) is "region", "border", ... in the clause of toks[k - 1]
        return k < len(toks) and toks[k].clause == toks[k - 1].clause and toks[k].norm in REGION_NOUNS

    if j < len(toks) and toks[j].clause == toks[j - 1].clause and toks[j].sep_before.strip() in ("", "-") \
            and _name_word(toks[j]):
        k = j  # "Texas-Mexico border": a hyphenated pair of names before a region noun is no longer name
        while k < len(toks) and toks[k].clause == toks[j].clause and toks[k].sep_before.strip() == "-" and _name_word(toks[k]):
            k += 1
        if not (k > j and region_noun_after(k)):
            return True
    if i > 0 and toks[i - 1].clause == toks[i].clause and toks[i].sep_before.strip() in ("", "-", "."):
        prev = toks[i - 1]
        if not _name_word(prev) or prev.norm in REGION_ADJECTIVES:  # "Eastern Pennsylvania" is in Pennsylvania
            return False
        if prev.norm in COMPASS_WORDS and (" ".join(t.norm for t in toks[i:j]) in CONTINENT_ADJECTIVES
                                           or region_noun_after(j)):
            return False  # "West Africa", "the South Florida region"; but "West Virginia" is not Virginia
        if re.search(r"(?:an|ese|ish|i|ic)$", prev.norm) or (j - i == 1 and toks[i].norm in UNIT_NOUNS):
            return False
        return True
    return False


def _hedge(toks: list[_Tok], i: int, j: int, alias_seqs: list[list[str]]) -> bool:
    """The match lies in a list of alternatives ("A or B", "A, B or C", "either A or B", "A/B")
    and another alternative names no alias."""
    def is_marker(k):
        return not i <= k < j and (toks[k].norm in ("or", "either") or (k > 0 and "/" in toks[k].sep_before))

    def names_alias(item):
        ws = [toks[k].norm for k in item]
        return any(_find(ws, a) for a in alias_seqs)

    def content(item):
        return any(toks[k].norm not in _stop_words() and toks[k].norm not in _HEDGE_WORDS for k in item)

    for clause in sorted({t.clause for k, t in enumerate(toks) if is_marker(k)}):
        items, cur = [], []
        for k, t in enumerate(toks):
            if t.clause != clause:
                continue
            if is_marker(k):
                if cur:
                    items.append(cur)
                cur = [] if t.norm in ("or", "either") else [k]
            else:
                cur.append(k)
        if cur:
            items.append(cur)
        c = clause - 1  # "A, B or C": short comma-separated items before the clause with "or"
        first = min(k for k, t in enumerate(toks) if t.clause == clause)
        if toks[first].norm in ("or", "either") and re.search(r"[(\[]", toks[first].sep_before):
            continue  # "(or so I think)": an aside, not an alternative
        if toks[first].norm in ("or", "either") and c >= 0:  # "Paris? Or maybe Lyon": the item before it
            prev = [k for k, t in enumerate(toks) if t.clause == c]
            if len(prev) <= 6:
                items.insert(0, prev)
                c -= 1
        while c >= 0:
            prev = [k for k, t in enumerate(toks) if t.clause == c]
            nxt = prev[-1] + 1 if prev else len(toks)
            if not prev or len(prev) > 4 or nxt >= len(toks) or "," not in toks[nxt].sep_before:
                break
            items.insert(0, prev)
            c -= 1
        items = [it for it in items if content(it)]
        if len(items) >= 2 and any(i in it for it in items) and any(not names_alias(it) for it in items):
            return True
    return False


def _find(words: list[str], alias: list[str]) -> list[int]:
    n = len(alias)
    return [k for k in range(len(words) - n + 1) if words[k:k + n] == alias] if n else []


def _number_run(toks: list[_Tok], i: int) -> bool:
    """toks[i] is a number inside a run of candidate numbers with its own number of digits
    (numbers joined only by spaces, commas, "/", dashes, "or", "to" or "and")."""
    def num(k):
        return 0 <= k < len(toks) and _number(toks[k].norm) is not None

    def joined(k):  # toks[k] is joined to the token before it by a separator only
        return re.fullmatch(r"[\s,/\-–—]*", toks[k].sep_before) is not None

    run = []
    k = i
    while True:  # leftwards
        if num(k - 1) and joined(k):
            k -= 1
        elif k - 2 >= 0 and toks[k - 1].norm in ("or", "to", "and") and num(k - 2):
            k -= 2
        else:
            break
        run.append(k)
    k = i
    while True:  # rightwards
        if num(k + 1) and joined(k + 1):
            k += 1
        elif k + 2 < len(toks) and toks[k + 1].norm in ("or", "to", "and") and num(k + 2):
            k += 2
        else:
            break
        run.append(k)

    def digits(t):
        return len(t.norm.split(".")[0])

    return any(digits(toks[r]) == digits(toks[i]) and toks[r].norm != toks[i].norm for r in run)


# ----------------------------------------------------------------------------- grading
@dataclass(frozen=True)
class Grade:
    """A short answer's grade: ``correct``; ``guard``: the guard (one of ``GUARDS``) that
    refused the match(es) when it is wrong only because of one, else None; ``alias``: the
    alias that matched (correct) or was refused."""

    correct: bool
    guard: str | None = None
    alias: str | None = None


def grade_short_detail(answer: str, aliases: Iterable[str]) -> Grade:
    """Grade a short answer against aliases (rules and guards in the module docstring)."""
    if aliases is None or not normalize(answer):
        return Grade(False)
    if isinstance(aliases, str):  # one alias, not an iterable of characters
        aliases = [aliases]
    aliases = [str(a) for a in aliases if a is not None and normalize(a)]
    if not aliases:
        return Grade(False)
    toks = _tokens(answer)
    words = [t.norm for t in toks]
    seqs = [_alias_tokens(a) for a in aliases]
    refused: tuple[str, str] | None = None
    for alias, seq in zip(aliases, seqs):
        value = _number(seq[0]) if len(seq) == 1 else None
        if value is not None and alias.strip().startswith(("-", "−")):
            value = -value
        spans = [(k, k + len(seq)) for k in _find(words, seq)]
        cont = CONTINENT_ADJECTIVES.get(" ".join(seq))
        if cont:
            for adj in cont:
                spans += [(k, k + len(adj.split()) + 1) for k in _find(words, adj.split() + ["continent"])]
        if value is not None:  # a number: compare values
            num_spans = []
            for k, t in enumerate(toks):
                v = _number(t.norm)
                if v is not None and (-v if t.sign else v) == value:
                    num_spans.append((k, k + 1))
            if spans and not num_spans and refused is None:
                refused = ("number", alias)
            spans = num_spans
        for i, j in spans:
            guard = None
            if value is not None and _number_run(toks, i):
                guard = "number"
            elif _negated(toks, i):
                guard = "negation"
            elif _hedge(toks, i, j, seqs):
                guard = "hedge"
            elif _longer_name(toks, i, j):
                guard = "longer_name"
            elif _symbol_mismatch(answer, toks, i, j, alias):
                guard = "symbol"
            if guard is None:
                return Grade(True, None, alias)
            if refused is None or GUARDS.index(guard) < GUARDS.index(refused[0]):
                refused = (guard, alias)
    return Grade(False, refused[0], refused[1]) if refused else Grade(False)


def _sym_form(text: str) -> list[str]:
    """Words with name symbols kept glued to them ("c++", "c#", "at&t")."""
    s = str(text or "").translate(TRANSLIT)
    s = "".join(ch for ch in unicodedata.normalize("NFKD", s) if unicodedata.category(ch) != "Mn").casefold()
    s = "".join(ch if ch.isalnum() or ch in NAME_SYMBOLS or ch.isspace() else " " for ch in s)
    return s.split()


def _symbol_mismatch(answer: str, toks: list[_Tok], i: int, j: int, alias: str) -> bool:
    has = any(ch in NAME_SYMBOLS for ch in alias)
    if not has and not (toks[i].sym_before or toks[j - 1].sym_after):
        return False
    a, w = _sym_form(alias), _sym_form(answer)
    return not any(w[k:k + len(a)] == a for k in range(len(w) - len(a) + 1)) if a else False


def grade_short(answer: str, aliases: Iterable[str]) -> bool:
    """True iff some alias matches the answer and no guard refuses it (``grade_short_detail``)."""
    return grade_short_detail(answer, aliases).correct


def grade_mc(option_logliks: Sequence[float], answer_index: int) -> tuple[int, bool]:
    """(chosen index, correct): arg-max log-likelihood (NaN = -inf, ties -> lowest index).

    Raises: ValueError when there is no option log-likelihood, every one is NaN, or ``answer_index``
    is out of range.
    """
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
