"""The verbal-confidence parser (metacog.readout.verbal, re-exported by metacog.readout.values): every
case of issue 11 and more of each class, with the rule that fired."""
from __future__ import annotations

import math

import pytest

from metacog.readout import values as confidence
from metacog.readout.verbal import RULES, UNPARSABLE, parse_answer, parse_confidence, parse_inline, parse_inline_verbal, parse_verbal


def test_public_names_kept():
    assert confidence.parse_confidence is parse_confidence and confidence.parse_inline is parse_inline
    assert confidence.parse_answer is parse_answer
    assert set(UNPARSABLE) <= set(RULES)


@pytest.mark.parametrize("text, value, rule", [
    # scales
    ("Confidence: 9/10", 90, "scale"),
    ("Confidence: 4 out of 5", 80, "scale"),
    ("Confidence (0-10): 7", 70, "scale"),
    ("Confidence (0-100): 85", 85, "keyword"),
    ("Confidence 0-100: 85", 85, "keyword"),
    ("On a scale of 1 to 10, my confidence is 8", 80, "scale"),
    ("on a scale from 0 to 5 I'd say my confidence is 3", 60, "scale"),
    ("I would rate it 7 out of 10.", 70, "scale"),
    ("Confidence: 85/100", 85, "scale"),
    ("Confidence: 11/10", None, "out_of_range"),
    ("Confidence: 9.5/10", 95, "scale"),
    ("Confidence: 1/2", 50, "scale"),
    ("Confidence level: 85/100", 85, "scale"),
    # percent on a fraction is a percent
    ("Confidence: 0.5%", 0.5, "percent"),
    ("Confidence: 1.00%", 1.0, "percent"),
    ("Your confidence is 0.99%", 0.99, "percent"),
    # unit words, number first
    ("I am 80 percent sure.", 80, "percent"),
    ("I'm 65 per cent certain", 65, "percent"),
    ("About 70 pct.", 70, "percent"),
    ("I'm 0.9 confident", 90, "fraction"),
    ("I am 75 sure", 75, "keyword"),
    # dates, years, ranges, ordinals: unparsable, never a value
    ("Confidence: 2018-01", None, "date"),
    ("Confidence: 2022-02", None, "date"),
    ("Confidence: 2017-20", None, "date"),
    ("Confidence: 2018-01-05", None, "date"),
    ("Confidence: 5/1/2018", None, "date"),
    ("Confidence: March 2018", None, "date"),
    ("Confidence: May 5", None, "date"),
    ("Confidence: 12:30", None, "date"),
    ("Confidence: 1998", None, "date"),
    ("Confidence: 80-90%", None, "range"),
    ("Confidence: 80 to 90", None, "range"),
    ("Confidence: between 70 and 80 percent", None, "range"),
    ("Confidence: 05/2019", None, "date"),
    ("Confidence: Jan 3", None, "date"),
    ("Confidence: 50-50", None, "range"),
    ("Confidence: 20th century", None, "ordinal"),
    ("Confidence: 3rd", None, "ordinal"),
    ("Confidence: 21st", None, "ordinal"),
    # the old rules still hold
    ("Confidence: 73%", 73, "percent"),
    ("confidence 5", 5, "keyword"),
    ("Confidence: 0.85", 85, "fraction"),
    ("0.9999", 99.99, "fraction"),
    ("The answer is 100.", 100, "trailing"),
    ("Confidence: 250%", None, "out_of_range"),
    ("Confidence: -5", None, "out_of_range"),
    ("no number here", None, "none"),
    ("", None, "none"),
    ("Confidence: H2O", None, "none"),
])
def test_parse_verbal_value_and_rule(text, value, rule):
    r = parse_verbal(text)
    assert r.rule == rule, (text, r)
    if value is None:
        assert r.value is None
        assert parse_confidence(text) is None
    else:
        assert r.value == pytest.approx(value)
        assert parse_confidence(text) == pytest.approx(value)


@pytest.mark.parametrize("text, answer, value, rule", [
    ("Paris (90% confident)", "Paris", 90, "percent"),
    ("Paris (confidence: 70%)", "Paris", 70, "percent"),
    ("Canberra [85%]", "Canberra", 85, "percent"),
    ("Paris | 90%", "Paris", 90, "percent"),
    ("Paris; confidence 0.9", "Paris", 90, "fraction"),
    ("**Paris** (95%)", "Paris", 95, "percent"),
    ("Answer: Paris (Confidence: 90%)", "Paris", 90, "percent"),
    ("Confidence: ~80%\nParis", "Paris", 80, "percent"),
    ("Confidence: 75% (fairly sure)\nParis", "Paris", 75, "percent"),
    ("Paris\n\nConfidence level: 85/100", "Paris", 85, "scale"),
    ("Canberra, 95% confident", "Canberra", 95, "percent"),
    ("Answer and Confidence (0-100): Paris, 90%", "Paris", 90, "percent"),
    ("Answer and Confidence (0-100): Paris, 90", "Paris", 90, "trailing"),
    ("Answer and Confidence (0-10): Rome, 8", "Rome", 80, "scale"),
    ("**Answer:** Paris\n**Confidence:** 85%", "Paris", 85, "percent"),
    # confidence before the answer
    ("90% confident: Paris", "Paris", 90, "percent"),
    ("Confidence: 90%. Answer: Paris", "Paris", 90, "percent"),
    ("Confidence: 80%\nAnswer: Lima", "Lima", 80, "percent"),
    ("Confidence: 9/10\nLima", "Lima", 90, "scale"),
    ("I'm 90% sure it's Paris", "Paris", 90, "percent"),
    ("Paris - I'm 80% sure.", "Paris", 80, "percent"),
    ("Paris. Confidence: 95%", "Paris", 95, "percent"),
    ("Answer: Lima\nConfidence: 80", "Lima", 80, "keyword"),
    ("Tokyo\n\nI am 99% confident.", "Tokyo", 99, "percent"),
    ("Paris\nConfidence: 2018-01", "Paris", None, "date"),
    ("Paris\nConfidence: 2017-20", "Paris", None, "date"),
    ("Paris\n2019", "Paris", None, "date"),
    # numbers inside the answer are not confidences
    ("The atomic number of carbon is 6.", "The atomic number of carbon is 6.", None, "none"),
    ("About 71%", "About 71%", None, "none"),
    ("The capital of France is Paris.", "The capital of France is Paris.", None, "none"),
])
def test_parse_inline_answer_and_confidence(text, answer, value, rule):
    a, r = parse_inline_verbal(text)
    assert a == answer and r.rule == rule, (text, a, r)
    assert (r.value is None) if value is None else r.value == pytest.approx(value)
    a2, v2 = parse_inline(text)
    assert a2 == answer and ((v2 is None) if value is None else math.isclose(v2, value))
    assert parse_answer(text) == answer


def test_forced_continuations_from_a_default_study():
    """Forced "Confidence:" continuations of SmolLM2 seen in a default study (dates and
    unit-glued letters were read as 1, 2, 12 or 20 before)."""
    for cont, value, rule in [(" 2018-01", None, "date"), (" 2015-20", None, "date"), (" 12,000,", None, "out_of_range"),
                              (" 2C\n\nThis is a", None, "none"), (" 12D\nDakota:", None, "none"),
                              (" 100%", 100, "percent"), (" 95% (very", 95, "percent"), (" 0.5%", 0.5, "percent")]:
        r = parse_verbal("Confidence:" + cont)
        assert r.rule == rule and (r.value == value if value is not None else r.value is None), (cont, r)
