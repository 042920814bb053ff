"""Grader guards and equivalences (issue 11): every case of the issue and more of each class,
with the guard that fired."""
from __future__ import annotations

from pathlib import Path

import pytest

from metacog.data import load_dataset
from metacog.data.grading import GUARDS, grade_short, grade_short_detail, normalize


@pytest.mark.parametrize("answer, aliases, ok, guard", [
    # negated mentions
    ("It was not Mark Twain.", ["Mark Twain"], False, "negation"),
    ("Not Paris.", ["Paris"], False, "negation"),
    ("I don't think it is Lima", ["Lima"], False, "negation"),
    ("It isn't Oslo", ["Oslo"], False, "negation"),
    ("Paris, not London", ["London"], False, "negation"),
    ("Lyon rather than Paris", ["Paris"], False, "negation"),
    ("Paris, not London", ["Paris"], True, None),
    ("No, it is Paris.", ["Paris"], True, None),
    ("It's not London but Paris", ["Paris"], True, None),
    ("I'm not sure, but I think it is Paris", ["Paris"], True, None),
    ("I am not sure it is Paris", ["Paris"], True, None),
    # hedged lists
    ("Paris, London or Rome", ["Paris"], False, "hedge"),
    ("It is Paris or Lyon", ["Paris"], False, "hedge"),
    ("Either Paris or Lyon", ["Paris"], False, "hedge"),
    ("Paris/London", ["Paris"], False, "hedge"),
    ("Lyon, Marseille, or Paris", ["Paris"], False, "hedge"),
    ("Paris? Or maybe Lyon.", ["Paris"], False, "hedge"),
    ("Neither Paris nor Lyon", ["Paris"], False, "negation"),
    ("five or six", ["6"], False, "number"),
    ("Burma or Myanmar", ["Burma", "Myanmar"], True, None),
    ("Canberra, the capital of Australia (or so I think)", ["Canberra"], True, None),
    ("AC/DC", ["AC/DC"], True, None),
    ("Lima, Peru", ["Lima", "Callao"], True, None),
    # numbers compared as numbers
    ("-5", ["5"], False, "number"),
    ("It is −5 degrees", ["5"], False, "number"),
    ("12 13 14 15 16", ["14"], False, "number"),
    ("6 or 7", ["7"], False, "number"),
    ("5-7", ["5"], False, "number"),
    ("between 1968 or 1969", ["1969"], False, "number"),
    ("-5", ["-5"], True, None),
    ("5.0", ["5"], True, None),
    ("July 20, 1969", ["1969"], True, None),
    ("The atomic number of carbon is 6.", ["6"], True, None),
    ("18", ["8"], False, None),
    ("8.5", ["8"], False, None),
    ("1,000", ["1000"], True, None),
    ("The abbreviation is 12CT.", ["CT"], False, None),
    ("It was in the 1960s", ["1960"], False, None),
    ("H2O", ["2"], False, None),
    # an alias that is only part of a longer name
    ("New York", ["York"], False, "longer_name"),
    ("Paris Hilton", ["Paris"], False, "longer_name"),
    ("Equatorial Guinea", ["Guinea"], False, "longer_name"),
    ("Guinea-Bissau", ["Guinea"], False, "longer_name"),
    ("Papua New Guinea", ["Guinea"], False, "longer_name"),
    ("West Virginia", ["Virginia"], False, "longer_name"),
    ("North Korea", ["Korea"], False, "longer_name"),
    ("New Jersey", ["Jersey"], False, "longer_name"),
    ("New York City", ["new york"], True, None),
    ("Mount Everest", ["Everest"], True, None),
    ("Definitely Paris", ["Paris"], True, None),
    ("It is in Eastern Europe", ["Europe"], True, None),
    ("It is in Eastern Pennsylvania.", ["Pennsylvania"], True, None),
    ("It is located in the South Florida region of the United States.", ["Florida"], True, None),
    ("It is on the Texas-Mexico border.", ["Texas"], True, None),
    ("It is in the Southeastern Turkey region.", ["Turkey"], True, None),
    ("It is in the South China Sea region.", ["China"], False, "longer_name"),
    ("West Africa", ["Africa"], True, None),
    ("Southeast Asia", ["Asia"], True, None),
    ("The Bahamian Dollar", ["Dollar"], True, None),
    ("The currency of Belize is the Belize Dollar (BZD).", ["Dollar"], True, None),
    ("The capital of India is New Delhi.", ["New Delhi"], True, None),
    # symbols that carry the answer
    ("C#", ["C++"], False, "symbol"),
    ("C++", ["C"], False, "symbol"),
    ("F#", ["F"], False, "symbol"),
    ("C++", ["C++"], True, None),
    ("AT&T", ["AT&T"], True, None),
    ("It is C#.", ["C#"], True, None),
    # letters Unicode does not decompose
    ("Lodz", ["Łódź"], True, None),
    ("Orsted", ["Ørsted"], True, None),
    ("Aesop", ["Æsop"], True, None),
    ("Strasse", ["Straße"], True, None),
    ("Dakovica", ["Đakovica"], True, None),
    ("Thorshofn", ["Þórshöfn"], True, None),
    ("Łódź", ["Lodz"], True, None),
    # number words
    ("seven", ["7"], True, None),
    ("7", ["seven"], True, None),
    ("It has seven continents", ["7"], True, None),
    ("twenty-one", ["21"], True, None),
    ("one hundred and five", ["105"], True, None),
    ("Apollo eleven", ["Apollo 11"], True, None),
    ("seventeen", ["7"], False, None),
    # continent adjectives
    ("the European continent", ["Europe"], True, None),
    ("It is on the African continent.", ["Africa"], True, None),
    ("the South American continent", ["South America"], True, None),
    ("European Union", ["Europe"], False, None),
])
def test_guards(answer, aliases, ok, guard):
    g = grade_short_detail(answer, aliases)
    assert (g.correct, g.guard) == (ok, guard), (answer, aliases, g)
    assert grade_short(answer, aliases) is ok


def test_normalize_transliterates():
    assert normalize("Łódź") == "lodz" and normalize("Ø") == "o" and normalize("Æ") == "ae" and normalize("Đ") == "d"
    assert normalize("ẞ") == "ss" and normalize("Þór") == "thor"


def test_non_string_aliases():
    assert grade_short("It has 7 days", [7]) and not grade_short("It has -7 days", [7.0])
    assert grade_short("", ["x"]) is False and grade_short("x", None) is False


def test_guard_names():
    assert GUARDS == ("number", "negation", "hedge", "longer_name", "symbol")


def test_builtin_aliases_still_grade_themselves():
    """Every built-in short-answer item's own aliases (and "The answer is <alias>.") grade correct:
    no guard refuses a gold answer stated plainly."""
    wf = load_dataset("world-facts")
    for al in wf["answers"]:
        for a in al:
            assert grade_short(a, al), (a, al)
            assert grade_short(f"The answer is {a}.", al), (a, al)


def test_answers_page_counts_guards_and_rules():
    """The rules and guards the Answers page tabulates are the modules' own lists."""
    src = (Path(__file__).resolve().parents[3] / "pages" / "2_Answers_and_confidence.py").read_text(encoding="utf-8")
    assert "verbal_inline_rule" in src and "grade_guard" in src and "GUARDS" in src and "RULES" in src
