"""Dataset readers on the layouts users export (issue 11): every layout in JSONL, JSON and
parquet; answer keys resolved through the record's own labels; placeholder gold refused or
dropped; bad questions and deep JSON refused with file and line; the optional group column."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from metacog.data import COLUMNS, DataError, DataWarning, load_dataset
from metacog.data.grading import grade_mc
from metacog.readout.verbal import RULES


def _write(tmp_path, name: str, records: list[dict], fmt: str):
    p = tmp_path / f"{name}.{fmt}"
    if fmt == "jsonl":
        p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        p.write_text(json.dumps(records), encoding="utf-8")
    else:
        pd.DataFrame.from_records(records).to_parquet(p)
    return p


def _err(p) -> str:
    with pytest.raises(DataError) as ei:
        load_dataset(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg
    return msg


FMTS = ["jsonl", "json", "parquet"]

ARC_DIGITS = {"id": "arc-1", "question": "Which gas do green plants take in from the air?",
              "choices": {"text": ["carbon dioxide", "oxygen", "helium", "neon"], "label": ["1", "2", "3", "4"]},
              "answerKey": "1"}


# ----------------------------------------------------------------------------- layouts x formats
@pytest.mark.parametrize("fmt", FMTS)
def test_arc_digit_labels_resolve_through_record_labels(tmp_path, fmt):
    recs = [ARC_DIGITS,
            {"id": "arc-2", "question": "Q2?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "3"},
            {"id": "arc-3", "question": "Q3?", "choices": {"text": ["a", "b", "c", "d", "e"], "label": list("ABCDE")},
             "answerKey": "E"},
            {"id": "arc-4", "question": "Q4?", "choices": {"text": ["w", "x", "y", "z"], "label": ["5", "6", "7", "8"]},
             "answerKey": "6"},
            {"id": "arc-5", "question": "Q5?", "choices": {"text": ["w", "x"], "label": ["b", "a"]}, "answerKey": "a"}]
    df = load_dataset(_write(tmp_path, "arc", recs, fmt))
    assert df["answer_index"].tolist() == [0, 2, 4, 1, 1]
    assert df["answers"].tolist()[0] == ["carbon dioxide"]
    assert (df["kind"] == "mc").all() and list(df.columns) == COLUMNS


@pytest.mark.parametrize("fmt", FMTS)
def test_arc_key_not_in_labels_is_an_error(tmp_path, fmt):
    recs = [ARC_DIGITS, dict(ARC_DIGITS, id="bad", answerKey="E")]
    msg = _err(_write(tmp_path, "arcbad", recs, fmt))
    where = {"jsonl": "line 2", "json": "item 2", "parquet": "row 2"}[fmt]
    assert where in msg and "'E'" in msg and "['1', '2', '3', '4']" in msg


def test_arc_original_nested_layout_and_openbookqa(tmp_path):
    arc = {"id": "Mercury_1", "answerKey": "2", "question": {
        "stem": "Which is a mammal?", "choices": [{"text": "shark", "label": "1"}, {"text": "whale", "label": "2"},
                                                   {"text": "trout", "label": "3"}]}}
    obqa = {"id": "7-980", "question_stem": "The sun is responsible for",
            "choices": {"text": ["puppies learning", "plants sprouting", "stars", "rocks"], "label": list("ABCD")},
            "answerKey": "B"}
    df = load_dataset(_write(tmp_path, "nested", [arc, obqa], "jsonl"))
    assert df["question"].tolist() == ["Which is a mammal?", "The sun is responsible for"]
    assert df["answer_index"].tolist() == [1, 1] and df["answers"].tolist() == [["whale"], ["plants sprouting"]]


@pytest.mark.parametrize("fmt", FMTS)
def test_mmlu_layout(tmp_path, fmt):
    recs = [{"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
            {"question": "Red planet?", "subject": "astro", "choices": ["Venus", "Mars", "Saturn", "Pluto"], "answer": 0}]
    df = load_dataset(_write(tmp_path, "mmlu", recs, fmt))
    assert df["answer_index"].tolist() == [1, 0] and df["category"].tolist() == ["math", "astro"]
    assert df["answers"].tolist() == [["4"], ["Venus"]]


@pytest.mark.parametrize("fmt", FMTS)
def test_triviaqa_hf_layout(tmp_path, fmt):
    recs = [{"question": "Who wrote Hamlet?", "question_id": "tc_1", "question_source": "x", "entity_pages": {},
             "answer": {"aliases": ["William Shakespeare", "Shakespeare"], "normalized_aliases": ["shakespeare"],
                        "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                        "normalized_value": "william shakespeare", "type": "WikipediaEntity", "value": "William Shakespeare"}},
            {"question": "Capital of Peru?", "question_id": "tc_2", "question_source": "x", "entity_pages": {},
             "answer": {"aliases": ["Lima"], "normalized_aliases": ["lima"], "matched_wiki_entity_name": "",
                        "normalized_matched_wiki_entity_name": "", "normalized_value": "lima", "type": "x", "value": "Lima"}}]
    if fmt == "parquet":  # empty structs cannot be written to parquet
        for r in recs:
            r.pop("entity_pages")
    df = load_dataset(_write(tmp_path, "tqa", recs, fmt))
    assert df["id"].tolist() == ["tc_1", "tc_2"] and (df["kind"] == "short").all()
    assert df.loc[0, "answers"] == ["William Shakespeare", "Shakespeare"]
    assert df.loc[1, "answers"] == ["Lima"]


@pytest.mark.parametrize("fmt", FMTS)
def test_sciq_layout_right_option_not_always_first(tmp_path, fmt):
    recs = [{"question": f"Q{i}?", "distractor1": f"d1-{i}", "distractor2": f"d2-{i}", "distractor3": f"d3-{i}",
             "correct_answer": f"right-{i}", "support": ""} for i in range(40)]
    df = load_dataset(_write(tmp_path, "sciq", recs, fmt))
    assert (df["kind"] == "mc").all()
    assert [c[i] for c, i in zip(df["choices"], df["answer_index"])] == [f"right-{i}" for i in range(40)]
    assert all(sorted(c) == sorted([f"right-{i}", f"d1-{i}", f"d2-{i}", f"d3-{i}"]) for i, c in enumerate(df["choices"]))
    assert df["answer_index"].nunique() == 4  # the position does not reveal the answer
    again = load_dataset(_write(tmp_path, "sciq2", recs, fmt))
    assert again["choices"].tolist() == df["choices"].tolist()  # a fixed order


@pytest.mark.parametrize("fmt", FMTS)
def test_truthfulqa_mc1_layout(tmp_path, fmt):
    recs = [{"question": f"Q{i}?", "mc1_targets": {"choices": [f"true-{i}", f"false-a-{i}", f"false-b-{i}"],
                                                   "labels": [1, 0, 0]}} for i in range(30)]
    df = load_dataset(_write(tmp_path, "tqa_mc", recs, fmt))
    assert [c[i] for c, i in zip(df["choices"], df["answer_index"])] == [f"true-{i}" for i in range(30)]
    assert df["answer_index"].nunique() == 3


def test_truthfulqa_generation_layouts(tmp_path):
    recs = [{"type": "Adversarial", "category": "Misconceptions", "question": "What happens if you eat watermelon seeds?",
             "best_answer": "Nothing happens", "correct_answers": ["Nothing happens", "You digest them"],
             "incorrect_answers": ["You grow watermelons"], "source": "x"}]
    df = load_dataset(_write(tmp_path, "tqa_gen", recs, "parquet"))
    assert df.loc[0, "answers"] == ["Nothing happens", "You digest them"] and df.loc[0, "category"] == "Misconceptions"
    p = tmp_path / "TruthfulQA.csv"
    p.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                 "Adversarial,Misconceptions,What happens if you eat watermelon seeds?,Nothing happens,"
                 "Nothing happens; You digest them,You grow watermelons,x\n")
    df = load_dataset(p)
    assert df.loc[0, "answers"] == ["Nothing happens", "You digest them"]


def test_truthfulqa_original_dict_layout(tmp_path):
    recs = [{"question": "What happens if you crack your knuckles?",
             "mc1_targets": {"Nothing in particular happens": 1, "You get arthritis": 0}}]
    df = load_dataset(_write(tmp_path, "mc_task", recs, "json"))
    assert df.loc[0, "answers"] == ["Nothing in particular happens"]


def test_unknown_layout_lists_fields_and_layouts(tmp_path):
    msg = _err(_write(tmp_path, "odd", [{"question": "Q?", "solution": "x", "hint": "y"}], "jsonl"))
    assert "line 1" in msg and "solution" in msg and "hint" in msg
    for layout in ("TriviaQA", "ARC", "MMLU", "SciQ", "TruthfulQA"):
        assert layout in msg
    msg = _err(_write(tmp_path, "odd2", [{"prompt_text": "Q?", "solution": "x"}], "parquet"))
    assert "row 1" in msg and "prompt_text" in msg and "MMLU" in msg


# ----------------------------------------------------------------------------- gold
PLACEHOLDER_TQA = {"value": "<unk>", "aliases": [], "normalized_aliases": [], "normalized_value": "<unk>"}


@pytest.mark.parametrize("fmt", FMTS)
def test_placeholder_gold_file_is_refused(tmp_path, fmt):
    recs = [{"question": f"Q{i}?", "question_id": f"t{i}", "answer": PLACEHOLDER_TQA} for i in range(3)]
    msg = _err(_write(tmp_path, "tqa_test", recs, fmt))
    assert {"jsonl": "line 1", "json": "item 1", "parquet": "row 1"}[fmt] in msg and "gold" in msg


@pytest.mark.parametrize("gold", [
    {"answers": ["[UNK]"]}, {"answers": [""]}, {"answer": "<unk>"}, {"answer": "<none>"}, {"answers": []},
    {"answer": {"value": "", "aliases": []}}, {"choices": ["a", "b"], "answer": -1},
    {"choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": ""},
    {"mc1_targets": {"choices": ["a", "b"], "labels": [0, 0]}},
])
def test_some_items_without_gold_are_dropped_with_a_counted_warning(tmp_path, gold):
    recs = [{"id": "ok1", "question": "Q1?", "answer": "x"}, dict({"id": "bad", "question": "Q2?"}, **gold),
            {"id": "ok2", "question": "Q3?", "answer": "y"}]
    with pytest.warns(DataWarning, match=r"dropped 1 of 3 items .*line 2"):
        df = load_dataset(_write(tmp_path, "mixed", recs, "jsonl"))
    assert df["id"].tolist() == ["ok1", "ok2"] and df.attrs["n_dropped_no_gold"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        _err(_write(tmp_path, "allbad", [dict({"id": "bad", "question": "Q2?"}, **gold)], "jsonl"))


# ----------------------------------------------------------------------------- questions, nesting
@pytest.mark.parametrize("q", [float("nan"), None, 42, ["a"], {"x": 1}, True])
def test_bad_question_refused_with_file_and_line(tmp_path, q):
    recs = [{"question": "ok?", "answer": "a"}, {"question": q, "answer": "b"}]
    msg = _err(_write(tmp_path, "q", recs, "json"))
    assert "item 2" in msg and "question" in msg and "nan" not in msg.split("question")[0]


def test_nan_question_in_parquet_not_read_as_text(tmp_path):
    p = tmp_path / "q.parquet"
    pd.DataFrame({"question": ["ok?", np.nan], "answer": ["a", "b"]}).to_parquet(p)
    msg = _err(p)
    assert "row 2" in msg and "question" in msg


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_deep_json_is_one_clear_error(tmp_path, name):
    p = tmp_path / name
    p.write_text('{"question": "Q?", "answer": ' + "[" * 100000 + "]" * 100000 + "}\n")
    msg = _err(p)
    assert "nested too deeply" in msg and "line 1" in msg


# ----------------------------------------------------------------------------- group
def test_group_column_optional(tmp_path):
    recs = [{"id": "a", "question": "Capital of France?", "answer": "Paris", "group": "france"},
            {"id": "b", "question": "Which country has Paris as capital?", "answer": "France", "group": "france"},
            {"id": "c", "question": "Capital of Peru?", "answer": "Lima"},
            {"id": "d", "question": "Q?", "answer": "x", "group": 7}]
    for fmt in ("jsonl", "json"):
        df = load_dataset(_write(tmp_path, "g", recs, fmt))
        assert df["group"].tolist() == ["france", "france", "c", "7"]
    assert load_dataset("world-facts", limit=20)["group"].map(type).eq(str).all()
    wf = load_dataset("world-facts", limit=20)
    assert "group" in wf.columns and wf["group"].notna().all()


# ----------------------------------------------------------------------------- the 20-item ARC study
def test_arc_digit_labels_20_item_study_grades_by_record_labels(tmp_path):
    """The issue's 20-item file: every key is a digit label; grading the option the model
    would pick (here: a fixed choice per item) must use the record's label -> index map."""
    rng = np.random.default_rng(0)
    recs, truth = [], []
    for i in range(20):
        k = int(rng.integers(0, 4))
        recs.append({"id": f"arc-{i}", "question": f"Q{i}?", "choices": {"text": [f"o{j}-{i}" for j in range(4)],
                     "label": ["1", "2", "3", "4"]}, "answerKey": str(k + 1)})
        truth.append(k)
    df = load_dataset(_write(tmp_path, "arc20", recs, "jsonl"))
    assert df["answer_index"].tolist() == truth
    picks = [0] * 20  # a model that always picks the first option
    correct = [grade_mc([0.0 if j == p else -1.0 for j in range(4)], ai)[1] for p, ai in zip(picks, df["answer_index"])]
    assert np.mean(correct) == pytest.approx(np.mean(np.array(truth) == 0))


def _arc20(tmp_path):
    rng = np.random.default_rng(0)
    recs, truth = [], []
    for i in range(20):
        k = int(rng.integers(0, 4))
        opts = [["carbon dioxide", "oxygen", "helium", "neon"], ["Paris", "Lima", "Oslo", "Rome"]][i % 2]
        recs.append({"id": f"arc-{i}", "question": f"Question {i}: which one?",
                     "choices": {"text": opts, "label": ["1", "2", "3", "4"]}, "answerKey": str(k + 1)})
        truth.append(k)
    return _write(tmp_path, "arc20", recs, "jsonl"), truth


def test_study_on_arc_digit_labels_grades_by_the_records_labels(tmp_path, tiny_lm):
    """`metacog study`'s answers stage (tiny model) on a 20-item ARC file with digit labels:
    an item is correct iff the chosen option is the one its own label list names."""
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study
    from metacog.core.workspace import Workspace

    path, truth = _arc20(tmp_path)
    study = StudySettings(dataset=str(path), max_new_tokens=4, confidence_max_new_tokens=4, batch_size=8, two_pass=True)
    run_study(tmp_path / "ws", ModelSettings(threads=1), study, lm=tiny_lm, stages=("answers",))
    ws = Workspace(tmp_path / "ws")
    ans = ws.read_parquet("answers.parquet").set_index("id")
    want = {f"arc-{i}": k for i, k in enumerate(truth)}
    got = {i: (int(r.chosen_index), bool(r.correct)) for i, r in ans.iterrows()}
    assert len(got) == 20
    assert all(correct == (chosen == want[i]) for i, (chosen, correct) in got.items())
    assert ans["verbal_inline_rule"].isin(RULES).all() and ans["verbal_two_pass_rule"].isin(RULES).all()
    assert (ans["grade_guard"] == "").all()


def test_cli_refuses_placeholder_gold_file(tmp_path, capsys, monkeypatch):
    from metacog.cli import main as cli_main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recs = [{"question": f"Q{i}?", "question_id": f"t{i}", "answer": PLACEHOLDER_TQA} for i in range(5)]
    p = _write(tmp_path, "triviaqa-test", recs, "jsonl")
    rc = cli_main(["study", "--dataset", str(p), "--workspace", str(tmp_path / "ws"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "triviaqa-test.jsonl" in err and "line 1" in err and "gold" in err and "Traceback" not in err
