"""The one verbal-confidence parser: a model's stated confidence as a number 0–100, the rule
that produced it, and the answer with the confidence statement taken out.

The rules (docs/SCIENCE.md, "Parsing verbal confidence", states them; this is the code):

1. **Scale declarations** are read and blanked first: ``(0-100)``, ``[0, 10]``, ``(1 to 10)``
   (a bracketed pair with low 0 or 1 and high 1, 5, 7, 10 or 100), ``on a scale of/from A to B``,
   ``on a scale of B``. A unit-less value then means value/B·100.
2. Every number in the text is classified (``expressions``), the first matching form winning:
   *date* (``2018-01``, ``2018-01-05``, ``5/1/2018``, ``12:30``, ``March 5``, ``5 May``,
   ``May 2018``; and a bare integer 1000–2100, a year), *ordinal* (``3rd``), *range*
   (``80-90%``, ``80 to 90``, ``80 or 90``, ``between 80 and 90``), *scale* (``9/10``,
   ``4 out of 5``), *percent* (``85%``, ``85 percent``, ``85 per cent``, ``85 pct``), *number*.
   A number glued to letters (``H2O``) is not a number.
3. Which number is the confidence, in this order:
   a. the first number after a confidence word (``confiden…``, ``certainty``, ``probability``,
      ``likelihood``) on the same line, at most 40 characters after it;
   b. else the first number with a unit (percent, scale, or a range with a unit) anywhere;
   c. else a number right before a confidence word (``0.9 confident``, ``80 sure``; at most
      12 characters before ``confiden…``/``sure``/``certain…``);
   d. else (``allow_trailing``) a number that ends the text (only ``%``, ``)``, ``.``, ``!``
      and spaces after it).
   Only the number so located is used: when it is a date, ordinal or range the text is
   *unparsable* — no other number is tried.
4. Its value: percent → the number as written (``0.5%`` is 0.5, never 50); scale → N/M·100;
   a unit-less number under a declared scale → N/B·100; a unit-less number written with a
   decimal point and in [0, 1] → a fraction ×100 (``0.85`` → 85); any other unit-less
   number → itself. A value outside 0–100 is unparsable.

``VerbalParse.rule`` is one of ``RULES``: ``percent``, ``scale``, ``fraction``, ``keyword``
(a unit-less 0–100 number located by rule a or c), ``trailing`` (rule d), and, with value
None, ``date``, ``ordinal``, ``range``, ``out_of_range``, ``none`` (no number located).

The answer (``parse_answer``): the text after an ``Answer:`` label (``Final answer:``,
``Answer and Confidence (0-100):``, markdown bold allowed) on its line, else the first
non-empty line that is not only a confidence statement; then a leading confidence statement
(``90% confident: Paris``, ``Confidence: 90%. Paris``) and trailing ones (``Paris (90%
confident)``, ``Paris, 90%``, ``Paris. Confidence: 95%``, ``Paris - I'm 80% sure``) are cut
off. ``parse_inline`` reads the confidence from the pieces cut off the answer's line (rules
a–c; a bare trailing number only after a label that named the confidence), else from the
lines after it (rules a–d), so a number inside the answer ("Carbon has atomic number 6") is
not a confidence.

Public entry: :func:`parse_verbal` (:func:`parse_confidence` for the value alone).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "RULES",
    "UNPARSABLE",
    "VerbalParse",
    "expressions",
    "parse_verbal",
    "parse_confidence",
    "parse_answer",
    "parse_inline",
    "parse_inline_verbal",
]

RULES = ("percent", "scale", "fraction", "keyword", "trailing", "date", "ordinal", "range", "out_of_range", "none")
UNPARSABLE = ("date", "ordinal", "range", "out_of_range", "none")


@dataclass(frozen=True)
class VerbalParse:
    """One parse: ``value`` 0–100 (None when unparsable) and the ``rule`` (one of ``RULES``)."""

    value: float | None
    rule: str


# ----------------------------------------------------------------------------- expressions
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_PCT = r"(?:\s*[%％]|\s*percent\b|\s*per\s?cent\b|\s*pct\b)"
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_B = r"(?<![\w.])"  # a number starts here: not inside a word or another number
_EXPR = re.compile(
    "|".join([
        rf"(?P<date>{_B}\d{{4}}[-/.]\d{{1,2}}(?:[-/.]\d{{1,2}})?(?!\d)"
        rf"|{_B}\d{{1,2}}(?P<dsep>[-/.])\d{{1,2}}(?P=dsep)\d{{2,4}}(?!\d)"
        rf"|{_B}\d{{1,2}}[-/]\d{{4}}(?!\d)"
        rf"|{_B}\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?!\d)"
        rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?!\d)(?:,?\s+\d{{4}})?"
        rf"|{_B}\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b(?:,?\s+\d{{4}})?"
        rf"|\b{_MONTH}\.?\s+\d{{4}}(?!\d))",
        rf"(?P<ordinal>{_B}\d+(?:st|nd|rd|th)\b)",
        rf"(?P<range>\bbetween\s+{_NUM}{_PCT}?\s+and\s+{_NUM}{_PCT}?"
        rf"|{_B}{_NUM}{_PCT}?\s*(?:-|–|—|\bto\b|\bor\b)\s*{_NUM}(?!\w|\.\d){_PCT}?)",
        rf"(?P<scale>{_B}(?P<s1>{_NUM})\s*(?:/|\bout\s+of\b)\s*(?P<s2>{_NUM})(?!\d|\.\d))",
        rf"(?P<percent>{_B}(?P<p>{_NUM}){_PCT})",
        rf"(?P<number>{_B}(?P<n>[-−]?(?:\d{{1,3}}(?:,\d{{3}})+|{_NUM}))(?![\w]))",
    ]),
    re.I,
)
_RANGE_UNIT = re.compile(_PCT, re.I)
_DECL = re.compile(
    r"[(\[]\s*(?P<lo>[01])\s*(?:-|–|—|\bto\b|,)\s*(?P<hi>1|5|7|10|100)\s*%?\s*[)\]]"
    r"|\bon\s+a\s+scale\s+(?:of|from)\s+(?P<lo2>\d+)\s*(?:-|–|—|\bto\b)\s*(?P<hi2>\d+(?:\.\d+)?)"
    r"|\bon\s+a\s+scale\s+of\s+(?P<hi3>\d+)\b(?!\s*(?:-|–|—|to\b))"
    r"|(?<![\w.])[01]\s*(?:-|–|—|\bto\b)\s*(?P<hi4>1|5|7|10|100)\s*%?\s*(?=:)",
    re.I,
)
_KEY_AFTER = re.compile(r"\b(?:confiden\w*|certainty|probability|likelihood)\b", re.I)
_KEY_BEFORE = re.compile(r"\b(?:confiden\w*|sure|certain\w*)\b", re.I)


@dataclass(frozen=True)
class _Expr:
    kind: str  # date | ordinal | range | scale | percent | number
    start: int
    end: int
    text: str
    a: str | None = None  # the number (scale: numerator)
    b: str | None = None  # scale: denominator


def _declared_scale(text: str) -> tuple[str, float | None]:
    """The text with scale declarations blanked (same length) and the declared maximum."""
    hi = None
    out = text
    for m in _DECL.finditer(text):
        h = m.group("hi") or m.group("hi2") or m.group("hi3") or m.group("hi4")
        try:
            h = float(h)
        except (TypeError, ValueError):
            continue
        if h <= 0:
            continue
        hi = h if hi is None else hi
        out = out[: m.start()] + " " * (m.end() - m.start()) + out[m.end():]
    return out, hi


def expressions(text: str) -> list[_Expr]:
    """Every number-like expression in ``text``, classified (rule 2), in order."""
    out = []
    for m in _EXPR.finditer(text or ""):
        kind = m.lastgroup
        if kind == "dsep":
            kind = "date"
        if kind in ("s1", "s2"):
            kind = "scale"
        elif kind == "p":
            kind = "percent"
        elif kind == "n":
            kind = "number"
        if kind == "scale":
            out.append(_Expr("scale", m.start(), m.end(), m.group(0), m.group("s1"), m.group("s2")))
        elif kind == "percent":
            out.append(_Expr("percent", m.start(), m.end(), m.group(0), m.group("p")))
        elif kind == "number":
            n = m.group("n")
            digits = n.replace(",", "").lstrip("-−")
            if re.fullmatch(r"\d{4}", digits) and 1000 <= int(digits) <= 2100 and n[0] not in "-−":
                out.append(_Expr("date", m.start(), m.end(), m.group(0)))
            else:
                out.append(_Expr("number", m.start(), m.end(), m.group(0), n))
        else:
            out.append(_Expr(kind, m.start(), m.end(), m.group(0)))
    return out


def _value(e: _Expr, how: str, scale_hi: float | None) -> VerbalParse:
    """Rule 4: the value of the located expression ``e`` (``how``: keyword or trailing)."""
    if e.kind in ("date", "ordinal", "range"):
        return VerbalParse(None, e.kind)
    if e.kind == "percent":
        v = float(e.a)
        return VerbalParse(v, "percent") if 0.0 <= v <= 100.0 else VerbalParse(None, "out_of_range")
    if e.kind == "scale":
        n, d = float(e.a), float(e.b)
        if d <= 0 or not 0.0 <= n <= d:
            return VerbalParse(None, "out_of_range")
        return VerbalParse(100.0 * n / d, "scale")
    s = e.a.replace("−", "-").replace(",", "")
    try:
        v = float(s)
    except ValueError:
        return VerbalParse(None, "none")
    if scale_hi is not None and scale_hi != 100:
        if not 0.0 <= v <= scale_hi:
            return VerbalParse(None, "out_of_range")
        return VerbalParse(100.0 * v / scale_hi, "scale")
    if "." in s and 0.0 <= v <= 1.0:
        return VerbalParse(100.0 * v, "fraction")
    if not 0.0 <= v <= 100.0:
        return VerbalParse(None, "out_of_range")
    return VerbalParse(v, how)


def parse_verbal(text: str, allow_trailing: bool = True, *, scale_hi: float | None = None,
                 unit_anywhere: bool = True, before_word: bool = True) -> VerbalParse:
    """The verbal confidence stated in ``text`` and the rule that read it (module docstring).

    ``allow_trailing``: apply rule 3d; ``unit_anywhere``: rule 3b; ``before_word``: rule 3c;
    ``scale_hi``: a scale maximum declared elsewhere (e.g. in a label on another line).
    """
    if not text:
        return VerbalParse(None, "none")
    blanked, hi = _declared_scale(str(text))
    hi = hi if hi is not None else scale_hi
    ex = expressions(blanked)
    if not ex:
        return VerbalParse(None, "none")
    for k in _KEY_AFTER.finditer(blanked):  # a. after a confidence word
        line_end = blanked.find("\n", k.end())
        line_end = len(blanked) if line_end < 0 else line_end
        e = next((e for e in ex if e.start >= k.end()), None)
        if e is not None and e.start <= line_end and e.start - k.end() <= 40:
            return _value(e, "keyword", hi)
    if unit_anywhere:  # b. the first number with a unit
        for e in ex:
            if e.kind in ("percent", "scale") or (e.kind == "range" and _RANGE_UNIT.search(e.text)):
                return _value(e, "keyword", hi)
    for k in (_KEY_BEFORE.finditer(blanked) if before_word else ()):  # c. right before a confidence word
        before = [e for e in ex if e.end <= k.start() and k.start() - e.end <= 12
                  and "\n" not in blanked[e.end:k.start()]]
        if before:
            return _value(before[-1], "keyword", hi)
    if allow_trailing:  # d. a number that ends the text
        e = ex[-1]
        if re.fullmatch(r"[\s%).!]*", blanked[e.end:]):
            return _value(e, "trailing", hi)
    return VerbalParse(None, "none")


def parse_confidence(text: str, allow_trailing: bool = True) -> float | None:
    """The verbal confidence in ``text`` as a number 0–100, or None (``parse_verbal(...).value``)."""
    return parse_verbal(text, allow_trailing).value


# ----------------------------------------------------------------------------- the answer
_LABEL = re.compile(
    r"^\s*(?:[*_#>\-]+\s*)?(?:(?:final|short|my)\s+)?answer(?P<conf>\s*(?:and|&|,|/)\s*confiden\w*)?"
    r"\s*(?:\([^)\n]*\)|\[[^\]\n]*\])?\s*(?:[*_]+\s*)?[:\-–—]\s*(?:[*_]+\s*)?",
    re.I,
)
_LABEL_INNER = re.compile(r"(?:^|(?<=[.!;]\s))\s*(?:[*_]+\s*)?(?:final\s+)?answer\s*(?:[*_]+\s*)?:\s*(?:[*_]+\s*)?", re.I)
_N = rf"(?:{_NUM}(?:\s*(?:/|\bout\s+of\b)\s*{_NUM})?(?:{_PCT})?)"
_NU = rf"(?:{_NUM}(?:{_PCT}|\s*(?:/|\bout\s+of\b)\s*{_NUM}))"
_CONF_WORD = r"(?:confiden\w*|sure|certain(?:ty)?)"
_LEAD = re.compile(
    rf"^\s*(?:[*_]+\s*)?(?:"
    rf"(?:my\s+)?confiden\w*(?:\s+level)?(?:\s+score)?\s*(?:\([^)\n]*\))?\s*(?:[*_]+\s*)?(?:is\s+|of\s+)?[:=\-–—]?\s*(?:[*_]+\s*)?"
    rf"(?:(?:about|around|approximately|roughly)\s+|[~≈]\s*)?{_N}\s*\+?"
    rf"\s*(?:[*_]+\s*)?[:,.;\-–—]?"
    rf"|(?:i(?:'m|’m|\s+am)\s+)?(?:about\s+)?{_N}\s*"
    rf"{_CONF_WORD}(?:\s+(?:that\s+)?(?:it\s+is|it's|it’s|the\s+answer\s+is))?\s*(?:[*_]+\s*)?[:,.;\-–—]?"
    rf"|{_NU}\s*(?:[*_]+\s*)?[:;\-–—]"
    rf")\s*",
    re.I,
)
_TAIL = [
    # "(90% confident)", "(confidence: 70%)", "[80%]"
    re.compile(r"\s*[(\[][^()\[\]\n]*(?:[%％]|percent|confiden|\bsure\b|certain)[^()\[\]\n]*[)\]]\s*[.!]?\s*$", re.I),
    # ". Confidence: 95%", ", my confidence is 8/10"
    re.compile(r"[\s,;:.(\[\-–—]*(?:(?:and|with|at|my|i am|i'm|i’m)\s+)*(?:confiden\w*|certainty)\b.*$", re.I),
    # ". I'm 80% sure.", " 90% confident" (a confidence word after the number)
    re.compile(rf"[\s,;:.(\[\-–—]*(?:(?:i am|i'm|i’m|with|at|about|approximately|roughly|~)\s+)*"
               rf"(?:{_NUM}{_PCT}|{_NUM}\s*(?:/|\bout\s+of\b)\s*{_NUM}|{_NUM})\s*{_CONF_WORD}\s*[)\].!]*\s*$", re.I),
    # ", 90%", " - 9/10" (a separator before the number)
    re.compile(rf"\s*[,;|(\[\-–—]\s*(?:(?:i am|i'm|i’m|with|at|about|approximately|roughly|~)\s+)*"
               rf"(?:{_NUM}{_PCT}|{_NUM}\s*(?:/|\bout\s+of\b)\s*{_NUM})\s*[)\].!]*\s*$", re.I),
]
_CONF_ONLY = re.compile(r"[\W_]*|\s*[(\[][^()\[\]\n]*(?:confiden|sure|certain|guess)[^()\[\]\n]*[)\]]\s*[.!]?\s*", re.I)
_TAIL_NUMBER = re.compile(rf"\s*[,;\-–—]\s*{_NUM}\s*[.!]?\s*$")


def _split_line(line: str, conf_label: bool) -> tuple[str, list[str]]:
    """(answer, [confidence pieces cut off the line]): leading then trailing statements."""
    pieces = []
    blanked = _declared_scale(line)[0]  # "Confidence 0-100: 85" is not the range 0-100
    m = _LEAD.match(blanked)
    if m and m.end() > 0 and expressions(m.group(0)) and not any(
        e.start < m.end() < e.end for e in expressions(blanked)  # "80-90%", "3rd", "12:30" are not cut in two
    ):
        pieces.append(line[: m.end()])
        line = line[m.end():]
        if _CONF_ONLY.fullmatch(line):  # "Confidence: 75% (fairly sure)": nothing but a comment follows
            pieces.append(line)
            line = ""
    changed = True
    while changed:
        changed = False
        for rx in _TAIL + ([_TAIL_NUMBER] if conf_label else []):
            m = rx.search(line)
            if m and m.start() > 0 and line[: m.start()].strip() and not any(
                e.start < m.start() < e.end for e in expressions(line)
            ):
                pieces.append(m.group(0))
                line = line[: m.start()]
                changed = True
    return line.strip().strip("*_").strip(), pieces


def _answer_and_pieces(text: str) -> tuple[str, list[str], int, bool, float | None]:
    """(answer, confidence pieces from its line, index of its line, label named confidence, declared scale)."""
    lines = (text or "").splitlines()
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        lab = _LABEL.match(raw)
        if lab is None:
            inner = _LABEL_INNER.search(raw)
            if inner and inner.start() > 0:  # "Confidence: 90%. Answer: Paris"
                before = raw[: inner.start()]
                ans, pieces = _split_line(raw[inner.end():], False)
                if ans:
                    return ans, [before] + pieces, i, False, None
        conf_label = bool(lab and lab.group("conf"))
        hi = _declared_scale(raw)[1]
        body = raw[lab.end():] if lab else raw
        ans, pieces = _split_line(body, conf_label)
        if ans:
            return ans, pieces, i, conf_label, hi
        # a line that is only a confidence statement (or only a label): the answer is further on
    return "", [], len(lines), False, None


def parse_answer(text: str) -> str:
    """The answer: after an ``Answer:`` label, else the first line that is not only a
    confidence statement, minus leading and trailing confidence statements."""
    return _answer_and_pieces(text)[0]


def parse_inline_verbal(text: str) -> tuple[str, VerbalParse]:
    """(answer, parse) of an inline reply such as "Paris (90% confident)", "Answer and
    Confidence (0-100): Paris, 90%", "Confidence: 80%\\nAnswer: Lima" or "Lima\\nConfidence: 80"."""
    text = text or ""
    answer, pieces, idx, conf_label, hi = _answer_and_pieces(text)
    lines = text.splitlines()
    last = None
    for p in pieces:  # the statements cut off the answer's line
        r = parse_verbal(p, allow_trailing=conf_label, scale_hi=hi)
        if r.value is not None:
            return answer, r
        last = r if r.rule != "none" else last
    if last is not None:
        return answer, last
    rest = [ln for k, ln in enumerate(lines) if k != idx and ln.strip()]
    if rest:  # other lines (before or after the answer)
        r = parse_verbal("\n".join(rest), allow_trailing=True, scale_hi=hi)
        if r.rule != "none":
            return answer, r
    if idx < len(lines):  # the answer's own line: only a number after a confidence word (rule a)
        return answer, parse_verbal(lines[idx], allow_trailing=False, scale_hi=hi, unit_anywhere=False,
                                    before_word=False)
    return answer, VerbalParse(None, "none")


def parse_inline(text: str) -> tuple[str, float | None]:
    """(answer, confidence 0–100 or None) of an inline reply (:func:`parse_inline_verbal`)."""
    answer, r = parse_inline_verbal(text)
    return answer, r.value
