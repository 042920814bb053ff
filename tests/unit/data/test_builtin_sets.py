"""The committed built-in sets: groups, multiple-choice option lengths, alias rules
(docs/SCIENCE.md "Multiple-choice scoring" and "Splits by fact")."""
from __future__ import annotations

import collections
import json

import pytest

from metacog.data import generate as gen
from metacog.data.grading import grade_short

BUILTIN = gen.BUILTIN_DIR


def _rows(name):
    return [json.loads(line) for line in (BUILTIN / name).open(encoding="utf-8")]


SHORT, MC = _rows(gen.SHORT_FILE), _rows(gen.MC_FILE)


def _length_heuristic(rows, pick):
    """For answering with the shortest (pick=min) or longest (pick=max) option in characters:
    its accuracy (ties split evenly); among items that have a unique such option, the share
    where it is the correct one (the audit's number: 75 of 170, 44%); and the rate at which
    the correct option is the unique extreme, beside the mean rate of one distractor."""
    acc = correct_unique = distractor_unique = has_unique = 0.0
    for r in rows:
        lens = [len(c) for c in r["choices"]]
        m = pick(lens)
        ext = [j for j, n in enumerate(lens) if n == m]
        acc += (r["answer_index"] in ext) / len(ext)
        if len(ext) == 1:
            has_unique += 1
            if ext[0] == r["answer_index"]:
                correct_unique += 1
            else:
                distractor_unique += 1 / (len(lens) - 1)
    n = len(rows)
    return acc / n, correct_unique / max(has_unique, 1), correct_unique / n, distractor_unique / n


@pytest.mark.parametrize("pick", [min, max], ids=["shortest", "longest"])
def test_mc_option_length_does_not_reveal_the_answer(pick):
    assert all(len(r["choices"]) == 4 for r in MC)
    acc, when_unique, correct, distractor = _length_heuristic(MC, pick)
    # chance is 25%; the previous uniform draw of distractors: 27.9% / 30.4% (shortest)
    assert acc <= 0.27, f"answering with the {pick.__name__} option scores {acc:.1%}"
    assert when_unique <= 0.27, f"the unique {pick.__name__} option is correct in {when_unique:.1%} of such items"
    # the correct option is the unique extreme about as often as one distractor is
    assert abs(correct - distractor) <= 0.05, (correct, distractor)


def test_length_balanced_puts_the_answer_at_the_asked_rank():
    import random

    cands = ["x" * n for n in range(1, 41)]
    ranks = collections.Counter()
    for i in range(400):
        rng = random.Random(i)
        correct = cands[10 + i % 20]
        d = gen.length_balanced([c for c in cands if c != correct], correct, i % 4, rng)
        assert len(set(d)) == 3 and correct not in d
        assert all(abs(len(x) - len(correct)) <= 6 for x in d)  # alike in length
        got = sorted(d + [correct], key=len).index(correct)
        assert got == i % 4
        ranks[got] += 1
    assert set(ranks.values()) == {100}
    # at the short end of the pool the nearest feasible rank is used
    d = gen.length_balanced(cands[1:], cands[0], 3, random.Random(0))
    assert sorted(d + [cands[0]], key=len)[0] == cands[0]


def test_every_item_has_a_group_and_reverse_questions_share_it():
    for rows in (SHORT, MC):
        assert all(isinstance(r.get("group"), str) and r["group"] for r in rows)
    by_id = {r["id"]: r["group"] for r in SHORT}
    # the audit's pair: "chemical symbol for neptunium?" / "which element has the symbol Np?"
    assert by_id["wf-element-symbol-neptunium"] == by_id["wf-element-of-symbol-np"] == "element:Np"
    # a country's capital question and its reverse
    assert by_id["wf-capital-of-country-france"] == by_id["wf-country-of-capital-paris"] == "country:FR"
    assert by_id["wf-us-state-capital-texas"] == by_id["wf-us-state-of-capital-austin"]
    # every reverse pair (an answer of one question is the subject of another) shares a group
    groups = collections.defaultdict(set)
    for r in SHORT:
        groups[r["group"]].add(r["category"])
    assert max(len(v) for v in groups.values()) >= 4  # an element: symbol, of-symbol, number, of-number


def test_continent_answers_accept_the_adjective():
    it = {r["id"]: r for r in SHORT}["wf-continent-of-country-albania"]
    assert grade_short("It is a European country.", it["answers"])
    assert grade_short("Europe", it["answers"])
    assert not grade_short("Asia", it["answers"])


def test_currency_answers_are_not_a_bare_shared_name():
    """A bare "Dollar" alias would grade "the US dollar" correct for Canada: a name that
    several currencies share is accepted only qualified."""
    it = {r["id"]: r for r in SHORT}
    canada = it["wf-currency-of-country-canada"]["answers"]
    assert grade_short("The Canadian dollar", canada)
    assert not grade_short("The US dollar", canada) and not grade_short("Australian dollar", canada)
    ecuador = it["wf-currency-of-country-ecuador"]["answers"]
    assert grade_short("the U.S. dollar", ecuador) and grade_short("United States dollar", ecuador)
    assert not grade_short("the Canadian dollar", ecuador)
    benin = it["wf-currency-of-country-benin"]["answers"]
    assert grade_short("West African CFA franc", benin) and not grade_short("Swiss franc", benin)
    generic = {"dollar", "franc", "peso", "dinar", "pound", "rupee", "shilling", "krone", "krona", "riyal", "rial", "won"}
    for r in SHORT:
        if r["category"] == "currency-of-country":
            assert not generic & {gen.norm(gen.fold(a)) for a in r["answers"]}, r
