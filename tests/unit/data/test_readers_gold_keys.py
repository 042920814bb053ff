"""Gold that can never be graded correct is not gold (bare placeholders such as "N/A", "?", "TBD",
NaN as text, punctuation or invisible characters only: empty after the grader's own normalize);
questions of invisible characters only are refused; a digit multiple-choice key without a label
list is read 0-based with one warning per file; options the grader cannot tell apart are refused."""
from __future__ import annotations

import json
import warnings

import pytest

from metacog.data import DataWarning, load_dataset
from metacog.data.fields import is_gold, is_invisible, is_placeholder
from metacog.data.grading import grade_short, normalize
from test_readers_layouts import _err  # one helper for "one DataError line naming the file"

PLACEHOLDERS = ["N/A", "n/a", "#N/A", "n.a.", "?", "???", "-", "--", "...", "TBD", "TBD.", "TBA", "TODO", "todo",
                "null", "NULL", "NaN", "nan", "\u200b", "\ufeff", " \u200b\u200d ", "\u2060", "\u00ad", "*", "—"]
REAL = ["none", "None", "unknown", "zero", "0", "Na", "NA", "Nan", "nil", "C++", "-5", "3.14", "a", "Null set"]


def _jsonl(tmp_path, name, records):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return p


def _no_data_warning(p):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_dataset(p)
    assert not [w for w in caught if issubclass(w.category, DataWarning)], [str(w.message) for w in caught]
    return df


# ----------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("gold", PLACEHOLDERS)
def test_placeholder_is_not_gold(gold):
    assert is_placeholder(gold) and not is_gold(gold)


@pytest.mark.parametrize("gold", [g for g in PLACEHOLDERS if not normalize(g)])
def test_why_empty_normalised_gold_is_no_gold(gold):
    """The grader ignores an alias that normalises to "": no answer, not even the gold itself, is correct."""
    assert not grade_short(gold, [gold]) and not grade_short("Paris", [gold])


@pytest.mark.parametrize("gold", REAL)
def test_real_answers_are_kept_and_gradable(gold):
    assert is_gold(gold) and not is_placeholder(gold)
    assert grade_short(gold, [gold])


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("gold", PLACEHOLDERS)
def test_placeholder_gold_dropped_jsonl(tmp_path, gold):
    recs = [{"id": "ok1", "question": "Q1?", "answer": "x"}, {"id": "bad", "question": "Q2?", "answer": gold},
            {"id": "ok2", "question": "Q3?", "answers": ["y"]}]
    with pytest.warns(DataWarning, match=r"dropped 1 of 3 items .*line 2"):
        df = load_dataset(_jsonl(tmp_path, "d.jsonl", recs))
    assert df["id"].tolist() == ["ok1", "ok2"] and df.attrs["n_dropped_no_gold"] == 1


@pytest.mark.parametrize("gold", [g for g in PLACEHOLDERS if "," not in g and '"' not in g])
def test_placeholder_gold_dropped_csv(tmp_path, gold):
    p = tmp_path / "d.csv"
    p.write_text(f"question,answer\nQ1?,Paris\nQ2?,{gold}\nQ3?,Lima\n", encoding="utf-8")
    with pytest.warns(DataWarning, match=r"dropped 1 of 3 items .*line 3"):
        df = load_dataset(p)
    assert df["answers"].tolist() == [["Paris"], ["Lima"]]


def test_file_of_placeholder_gold_is_refused(tmp_path):
    p = tmp_path / "test.csv"
    p.write_text("question,answer\nQ1?,N/A\nQ2?,?\nQ3?,TBD\n", encoding="utf-8")
    msg = _err(p)
    assert "line 2" in msg and "without any answer" in msg and "'N/A'" in msg


def test_placeholder_aliases_removed_beside_a_real_one(tmp_path):
    recs = [{"id": "a", "question": "Capital of France?", "answers": ["N/A", "Paris", "?", "\u200b", "TBD"]},
            {"id": "b", "question": "Capital of Peru?", "answer": {"value": "Lima", "aliases": ["NaN", "--", "Lima"]}},
            {"id": "c", "question": "How many moons has Venus?", "answers": ["none", "zero", "0", "n/a"]}]
    df = _no_data_warning(_jsonl(tmp_path, "d.jsonl", recs))
    assert df["answers"].tolist() == [["Paris"], ["Lima"], ["none", "zero", "0"]]
    p = tmp_path / "d.csv"
    p.write_text("question,answers\nCapital of France?,N/A|Paris|???\n", encoding="utf-8")
    assert load_dataset(p)["answers"].tolist() == [["Paris"]]


def test_sciq_placeholder_correct_answer_dropped(tmp_path):
    recs = [{"question": "Q1?", "correct_answer": "a", "distractor1": "b", "distractor2": "c", "distractor3": "d"},
            {"question": "Q2?", "correct_answer": "N/A", "distractor1": "b", "distractor2": "c", "distractor3": "d"}]
    with pytest.warns(DataWarning, match=r"dropped 1 of 2 .*line 2"):
        assert len(load_dataset(_jsonl(tmp_path, "s.jsonl", recs))) == 1


@pytest.mark.parametrize("key", ["N/A", "?", "TBD", "--"])
def test_placeholder_mc_key_dropped(tmp_path, key):
    recs = [{"id": "ok", "question": "Q1?", "choices": ["a", "b"], "answer": "A"},
            {"id": "bad", "question": "Q2?", "choices": ["a", "b"], "answer": key},
            {"id": "arc", "question": "Q3?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": key}]
    with pytest.warns(DataWarning, match=r"dropped 2 of 3 .*line 2"):
        assert load_dataset(_jsonl(tmp_path, "m.jsonl", recs))["id"].tolist() == ["ok"]


def test_mc_key_that_is_an_option_text_is_kept(tmp_path):
    recs = [{"question": "Is it known?", "choices": ["yes", "no", "N/A"], "answer": "N/A"}]
    df = load_dataset(_jsonl(tmp_path, "m.jsonl", recs))
    assert df["answer_index"].tolist() == [2]


# ----------------------------------------------------------------------------- questions
@pytest.mark.parametrize("q", ["\u200b", "\ufeff", " \u200b\u2060 ", "\u200d\u200c", "\u3164", "\u00ad", "\u2800"])
def test_invisible_question_is_refused(tmp_path, q):
    recs = [{"question": "ok?", "answer": "a"}, {"question": q, "answer": "b"}]
    msg = _err(_jsonl(tmp_path, "q.jsonl", recs))
    assert "line 2" in msg and "without a question" in msg and "invisible" in msg
    assert is_invisible(q)


def test_invisible_question_refused_in_csv(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("question,answer\nok?,a\n\u200b,b\n", encoding="utf-8")
    msg = _err(p)
    assert "line 3" in msg and "without a question" in msg


@pytest.mark.parametrize("q", ["Capital\u200b of France?", "?", "\U0001F1EB\U0001F1F7 capital?", "2+2=?"])
def test_visible_questions_are_kept(tmp_path, q):
    assert not is_invisible(q)
    assert len(load_dataset(_jsonl(tmp_path, "q.jsonl", [{"question": q, "answer": "a"}]))) == 1


# ----------------------------------------------------------------------------- digit keys without labels
def test_digit_key_without_labels_read_0_based_with_one_warning(tmp_path):
    recs = [{"id": "m0", "question": "Q0?", "choices": ["a", "b"], "answer": 1},  # an integer: MMLU, no warning
            {"id": "m1", "question": "Q1?", "choices": ["one", "two", "three"], "answer": "1"},
            {"id": "m2", "question": "Q2?", "choices": ["x", "y", "z"], "answer": "2"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_dataset(_jsonl(tmp_path, "mc.jsonl", recs))
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1, msgs
    assert "mc.jsonl" in msgs[0] and "answer '1' on line 2 read as a 0-based index (choice 2, 'two')" in msgs[0]
    assert "2 items" in msgs[0] and "labels" in msgs[0] and "1-based" in msgs[0] and "\n" not in msgs[0]
    assert df["answer_index"].tolist() == [1, 1, 2] and df["answers"].tolist() == [["b"], ["two"], ["z"]]


def test_digit_key_warning_for_letter_columns_csv(tmp_path):
    p = tmp_path / "mc.csv"
    p.write_text("question,A,B,C,D,answer\n2+2?,3,4,5,6,B\nThird?,a,b,c,d,2\n", encoding="utf-8")
    with pytest.warns(DataWarning, match=r"answer '2' on line 3 read as a 0-based index \(choice 3, 'c'\)"):
        df = load_dataset(p)
    assert df["answer_index"].tolist() == [1, 2]


def test_no_digit_key_warning_when_convention_is_explicit(tmp_path):
    arc = {"question": "Q1?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "1"}
    idx = {"question": "Q2?", "choices": ["a", "b", "c"], "answer_index": "1"}
    mmlu = {"question": "Q3?", "choices": ["a", "b", "c"], "answer": 2}
    df = _no_data_warning(_jsonl(tmp_path, "ok.jsonl", [arc, idx, mmlu]))
    assert df["answer_index"].tolist() == [0, 1, 2]
    # a "0" key shows the file is 0-based: nothing is ambiguous
    p = tmp_path / "zero.csv"
    p.write_text("question,A,B,C,D,answer\nFirst?,a,b,c,d,0\nSecond?,a,b,c,d,1\n", encoding="utf-8")
    assert _no_data_warning(p)["answer_index"].tolist() == [0, 1]


def test_digit_key_out_of_range_names_the_convention(tmp_path):
    msg = _err(_jsonl(tmp_path, "mc.jsonl", [{"question": "Q?", "choices": ["a", "b", "c"], "answer": "3"}]))
    assert "line 1" in msg and "out of range" in msg and "0-based" in msg and "labels" in msg


# ----------------------------------------------------------------------------- options the grader cannot tell apart
@pytest.mark.parametrize("rec,pair", [
    ({"choices": ["Paris", "paris.", "Lima"], "answer": 0}, "options 1 and 2"),
    ({"choices": ["Zürich", "Bern", "Zurich"], "answer": "B"}, "options 1 and 3"),
    ({"choices": ["?", "yes", "-"], "answer": "yes"}, "options 1 and 3"),
    ({"choices": {"text": ["the Beatles", "Beatles"], "label": ["A", "B"]}, "answerKey": "A"}, "options 1 and 2"),
    ({"correct_answer": "Oxygen", "distractor1": "oxygen", "distractor2": "neon", "distractor3": "argon"}, "options"),
    ({"mc1_targets": {"choices": ["Nothing happens.", "nothing happens", "You die"], "labels": [1, 0, 0]}}, "options"),
])
def test_mc_options_identical_after_normalisation_refused(tmp_path, rec, pair):
    recs = [{"question": "ok?", "choices": ["a", "b"], "answer": 0}, dict({"question": "Q?"}, **rec)]
    msg = _err(_jsonl(tmp_path, "dup.jsonl", recs))
    assert "line 2" in msg and pair in msg and "normalisation" in msg and "cannot tell them apart" in msg


@pytest.mark.parametrize("text", ["The N/A", "the TODO", "an n.a.", "The N / A", "William Shakespeare", "abcdefgh",
                                  "a TBD", "the ???", "ｔｈｅ n/a", "N/A N/A N/A", "null" * 2, "The  -  n/a  ."])
def test_fast_path_equals_the_full_rule(text):
    from metacog.data.fields import BARE_PLACEHOLDERS
    n = normalize(text)
    assert is_placeholder(text) == (not n or n in BARE_PLACEHOLDERS)
