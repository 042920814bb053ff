"""Read a dataset (a built-in name or a user's file) into the item table of docs/ARCHITECTURE.md.

Columns: ``id, question, answers, category, difficulty, choices, answer_index, kind``.

Accepted files (UTF-8, at most ``MAX_FILE_BYTES``):

- ``.jsonl``: one JSON object per line;
- ``.json``: a list of objects, ``{"data": [...]}``, or the official TriviaQA layout
  ``{"Data": [{"Question", "QuestionId", "Answer": {"Value", "Aliases", "NormalizedAliases"}}]}``;
- ``.csv`` / ``.tsv``: a header row, then one item per row.

Fields (case-insensitive): ``question``; short answers in ``answers`` (a list; in CSV a JSON
list or a ``|``- or ``;``-separated string), ``answer`` (a string, or TriviaQA-style
``{"value", "aliases", "normalized_aliases"}``), ``correct_answer`` or ``aliases``; multiple choice in ``choices``
(or ``options``, or ``A``..``E`` columns) with ``answer_index`` or ``answer`` (0-based integer,
a letter, or the text of the right option); optional ``id``, ``category`` (or ``type``,
``subject``), ``difficulty`` (or ``level``).

Every problem raises :class:`DataError` with one message naming the file, the line (or row)
and what is wrong. Missing ids get ``q-<sha1 of the question>``; ``limit`` keeps the items
with the smallest seeded hash of their id, so a larger limit is a superset of a smaller one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

MAX_FILE_BYTES = 200 * 1024 * 1024
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN = {
    "world-facts": (
        "world_facts.jsonl",
        "~1,800 short-answer facts (capitals, countries of cities, continents, currencies, chemical elements, "
        "US states), generated from GeoNames, periodictable and us; easy/medium/hard tiers",
    ),
    "world-facts-mc": (
        "world_facts_mc.jsonl",
        "~500 four-option multiple-choice questions from the same facts; correct option balanced across A-D",
    ),
}
COLUMNS = ["id", "question", "answers", "category", "difficulty", "choices", "answer_index", "kind"]
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
LETTERS = "ABCDE"


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file, the line or row, and the problem."""


# ----------------------------------------------------------------------------- public API
def list_builtin() -> dict[str, str]:
    """Built-in dataset names and one-line descriptions."""
    return {name: desc for name, (_, desc) in BUILTIN.items()}


def resolve_spec(spec) -> Path:
    """The file a spec names: a built-in name or a path."""
    if isinstance(spec, str) and spec in BUILTIN:
        return BUILTIN_DIR / BUILTIN[spec][0]
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise DataError(f"dataset must be a built-in name ({', '.join(BUILTIN)}) or a file path, not {spec!r}")
    return Path(spec).expanduser()


def load_dataset(spec, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Items of a built-in set or a file as a DataFrame with the columns in ``COLUMNS``.

    ``limit``: keep a seeded random subset of that many items (in file order); the same seed
    gives the same items and a larger limit a superset.
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) and not hasattr(limit, "__index__"):
            raise DataError(f"limit must be a positive integer or None, not {limit!r}")
        limit = int(limit)
        if limit <= 0:
            raise DataError(f"limit must be a positive integer or None, not {limit}")
    path = resolve_spec(spec)
    items = read_items(path)
    df = pd.DataFrame(items, columns=COLUMNS)
    df["answer_index"] = df["answer_index"].astype("int64")
    if limit is not None and limit < len(df):
        rank = [_rank(seed, i) for i in df["id"]]
        keep = sorted(range(len(df)), key=lambda k: rank[k])[:limit]
        df = df.iloc[sorted(keep)].reset_index(drop=True)
    return df


_INFO_CACHE: dict[tuple, dict] = {}


def dataset_info(spec) -> dict[str, Any]:
    """Cheap summary for a UI: name, path, n_items, kind, categories, difficulties (cached by file stat)."""
    path = resolve_spec(spec)
    st = _stat(path)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _INFO_CACHE:
        df = load_dataset(path)
        kinds = sorted(set(df["kind"]))
        _INFO_CACHE[key] = {
            "name": spec if isinstance(spec, str) and spec in BUILTIN else path.name,
            "path": str(path),
            "n_items": int(len(df)),
            "kind": kinds[0] if len(kinds) == 1 else "mixed",
            "categories": {str(k): int(v) for k, v in df["category"].value_counts().sort_index().items()},
            "difficulties": {str(k): int(v) for k, v in df["difficulty"].value_counts().sort_index().items()},
        }
    return dict(_INFO_CACHE[key])


# ----------------------------------------------------------------------------- reading
def _rank(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{item_id}".encode()).hexdigest()


def _stat(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return st


def read_items(path: Path) -> list[dict]:
    """Parse and validate one file into item dicts (no limit applied)."""
    path = Path(path)
    st = _stat(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{path.suffix or '(none)'}'; use one of {', '.join(SUFFIXES)}")
    if st.st_size > MAX_FILE_BYTES:
        raise DataError(
            f"{path}: file is {st.st_size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit; "
            "take a subset of it first"
        )
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if suffix == ".jsonl":
        records = _jsonl_records(path, text)
    elif suffix == ".json":
        records = _json_records(path, text)
    else:
        records = _csv_records(path, text, "\t" if suffix == ".tsv" else ",")
    if not records:
        raise DataError(f"{path}: the file holds no items")
    items, seen = [], {}
    for where, rec in records:
        item = _item(path, where, rec)
        generated = item.pop("_generated_id")
        if item["id"] in seen:
            what = "duplicate question (no ids given)" if generated else "duplicate id"
            raise DataError(f"{path}, {where}: {what} '{item['id']}', first seen on {seen[item['id']]}")
        seen[item["id"]] = where
        items.append(item)
    return items


def _decode(path: Path, blob: bytes) -> str:
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if blob.startswith(b"\xef\xbb\xbf") and e.start < 3 else 0)
        line = blob.count(b"\n", 0, start) + 1
        col = start - (blob.rfind(b"\n", 0, start) + 1) + 1
        raise DataError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{blob[start]:02x} at byte offset {start}, column {col}); "
            "save the file as UTF-8"
        ) from None


def _jsonl_records(path: Path, text: str) -> list[tuple[str, dict]]:
    out = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object, found {type(rec).__name__}")
        out.append((f"line {n}", rec))
    return out


def _json_records(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path}, line {e.lineno}: malformed JSON ({e.msg} at column {e.colno}){hint}") from None
    label = "item"
    if isinstance(doc, dict):
        for key in ("Data", "data", "items", "questions"):
            if isinstance(doc.get(key), list):
                doc, label = doc[key], f"{key} item"
                break
        else:
            raise DataError(
                f"{path}, line 1: unrecognised JSON layout: expected a list of items, or an object with a "
                f"'Data' (TriviaQA) or 'data' list; found keys {sorted(doc)[:10]}"
            )
    if not isinstance(doc, list):
        raise DataError(f"{path}, line 1: expected a JSON list of items, found {type(doc).__name__}")
    out = []
    for n, rec in enumerate(doc, start=1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}, {label} {n}: expected a JSON object, found {type(rec).__name__}")
        out.append((f"{label} {n}", rec))
    return out


_QUESTION_KEYS = ("question", "query", "prompt")
_ANSWER_KEYS = ("answers", "answer", "correct_answer", "aliases", "choices", "options", "answer_index", "a")


def _csv_records(path: Path, text: str, delimiter: str) -> list[tuple[str, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    header = [h.strip() for h in header]
    lower = [h.lower() for h in header]
    if not any(k in lower for k in _QUESTION_KEYS) or not any(k in lower for k in _ANSWER_KEYS):
        raise DataError(
            f"{path}, line 1: missing required columns: need 'question' and 'answers' (or 'answer'; or 'choices' / "
            f"'A'..'D' for multiple choice); found columns {header}"
        )
    dup = sorted({h for h in lower if h and lower.count(h) > 1})
    if dup:
        raise DataError(f"{path}, line 1: duplicate column names {dup}")
    out = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
        n = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise DataError(
                f"{path}, line {n}: {len(row)} fields but the header has {len(header)} "
                f"(an unquoted '{delimiter}' inside a field?)"
            )
        rec = {h: (row[i] if i < len(row) else "") for i, h in enumerate(header) if h}
        out.append((f"line {n}", rec))
    return out


# ----------------------------------------------------------------------------- one record
def _lower(rec: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in rec.items()}


def _get(rec: dict, *keys):
    """First non-empty value among keys (rec's keys already lower-cased)."""
    for k in keys:
        v = rec.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return v
    return None


def _text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _dedupe(values) -> list[str]:
    out, seen = [], set()
    for v in values:
        s = _text(v) if v is not None else ""
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def _as_list(path: Path, where: str, field: str, v) -> list:
    """A list field: a list, a JSON list string, or a '|'- or ';'-separated string."""
    if isinstance(v, list):
        return v
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


def _short_answers(path: Path, where: str, rec: dict) -> list[str]:
    answers: list = []
    v = _get(rec, "answers")
    if v is not None:
        answers += _as_list(path, where, "answers", v)
    v = _get(rec, "answer", "correct_answer")
    if isinstance(v, dict):  # TriviaQA: {"value"/"Value", "aliases", "normalized_aliases", ...}
        v = _lower(v)
        answers += [_get(v, "value")] + list(_get(v, "aliases") or []) + list(
            _get(v, "normalized_aliases", "normalizedaliases") or []
        ) + [_get(v, "normalized_value", "normalizedvalue")]
    elif isinstance(v, list):
        answers += v
    elif v is not None:
        answers.append(v)
    v = _get(rec, "aliases")
    if v is not None:
        answers += _as_list(path, where, "aliases", v)
    if any(isinstance(a, (dict, list)) for a in answers):
        raise DataError(f"{path}, {where}: answers must be strings, found a nested {type(answers[0]).__name__}")
    return _dedupe(answers)


def _mc(path: Path, where: str, rec: dict) -> tuple[list[str], int] | None:
    """(choices, answer_index) when the record is multiple choice, else None."""
    v = _get(rec, "choices", "options")
    if v is not None:
        if isinstance(v, dict):  # {"A": "...", "B": "..."} or {"text": [...], "label": [...]} (ARC)
            if isinstance(v.get("text"), list):
                labels = [str(x).strip().upper() for x in v.get("label") or []]
                choices, letters = list(v["text"]), labels
            else:
                keys = sorted(v)
                choices, letters = [v[k] for k in keys], [str(k).strip().upper() for k in keys]
        else:
            choices, letters = _as_list(path, where, "choices", v), None
    else:
        letters = [c for c in LETTERS if rec.get(c.lower()) is not None and _text(rec[c.lower()])]
        if not letters:
            return None
        choices = [rec[c.lower()] for c in letters]
    choices = [_text(c) for c in choices if c is not None and _text(c)]
    if len(choices) < 2:
        raise DataError(f"{path}, {where}: a multiple-choice item needs at least 2 choices, found {len(choices)}")
    letters = letters if letters and len(letters) == len(choices) else list(LETTERS[: len(choices)])
    a = _get(rec, "answer_index", "answerkey", "answer", "label", "correct")
    if a is None:
        raise DataError(f"{path}, {where}: multiple-choice item without 'answer_index' or 'answer'")
    if isinstance(a, bool):
        raise DataError(f"{path}, {where}: answer must be an index, a letter or the right option's text, not {a!r}")
    if isinstance(a, float) and a.is_integer():
        a = int(a)
    if isinstance(a, str):
        s = a.strip()
        if s.lstrip("-").isdigit():  # an index; the text of an option only when out of range
            a = int(s)
            if not 0 <= a < len(choices) and s in choices:
                a = choices.index(s)
        elif s.upper() in letters and len(s) <= 2:
            a = letters.index(s.upper())
        elif s in choices:
            a = choices.index(s)
        else:
            raise DataError(
                f"{path}, {where}: answer {s!r} is neither an index, a letter ({'/'.join(letters)}) nor one of the choices"
            )
    if not isinstance(a, int):
        raise DataError(f"{path}, {where}: answer must be an index, a letter or the right option's text, not {a!r}")
    if not 0 <= a < len(choices):
        raise DataError(
            f"{path}, {where}: answer index {a} is out of range for {len(choices)} choices (0-based, 0..{len(choices) - 1})"
        )
    return choices, a


def _item(path: Path, where: str, rec: dict) -> dict:
    rec = _lower(rec)
    q = _get(rec, *_QUESTION_KEYS)
    if q is None or isinstance(q, (dict, list)) or not _text(q):
        raise DataError(f"{path}, {where}: row without a question (fields found: {sorted(rec)[:12]})")
    q = _text(q)
    mc = _mc(path, where, rec)
    if mc is not None:
        choices, idx = mc
        answers, kind = [choices[idx]], "mc"
    else:
        answers = _short_answers(path, where, rec)
        if not answers:
            raise DataError(f"{path}, {where}: row without any answer (give 'answers' or 'answer')")
        choices, idx, kind = None, -1, "short"
    rid = _get(rec, "id", "question_id", "questionid", "qid")
    if rid is None or isinstance(rid, (dict, list)):
        rid = "q-" + hashlib.sha1(q.encode("utf-8")).hexdigest()[:12]
        generated = True
    else:
        generated = False
    category = _get(rec, "category", "type", "subject")
    difficulty = _get(rec, "difficulty", "level")
    return {
        "id": _text(rid),
        "question": q,
        "answers": answers,
        "category": "" if category is None else _text(category),
        "difficulty": "" if difficulty is None else _text(difficulty),
        "choices": choices,
        "answer_index": idx,
        "kind": kind,
        "_generated_id": generated,
    }
