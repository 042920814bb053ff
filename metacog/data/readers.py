"""Read a dataset (a built-in name or a user's file) into the item table of docs/ARCHITECTURE.md.

Columns: ``id, question, answers, category, difficulty, choices, answer_index, kind, group``.

Accepted files (UTF-8, at most ``MAX_FILE_BYTES``):

- ``.jsonl``: one JSON object per line;
- ``.json``: a list of objects, ``{"data": [...]}``, or the official TriviaQA layout
  ``{"Data": [{"Question", "QuestionId", "Answer": {"Value", "Aliases", "NormalizedAliases"}}]}``;
- ``.parquet``: one item per row (nested columns as Hugging Face ``datasets`` writes them);
- ``.csv`` / ``.tsv``: a header row, then one item per row.

Layouts (field names case-insensitive; ``LAYOUTS`` lists them for error messages):

- short answer: ``question`` with ``answers`` (a list; in CSV a JSON list or a ``|``- or
  ``;``-separated string; or SQuAD-style ``{"text": [...]}``), ``answer`` (a string, or
  TriviaQA-style ``{"value", "aliases", "normalized_aliases"}`` as the Hugging Face
  ``trivia_qa`` export has it), ``correct_answer``, ``aliases``, or TruthfulQA generation's
  ``best_answer`` / ``correct_answers`` (CSV: ``Best Answer`` / ``Correct Answers``, ``;``-separated);
- multiple choice: ``choices`` (or ``options``) as a list (MMLU: with an integer ``answer``,
  0-based), as ``{"text": [...], "label": [...]}`` (ARC, OpenBookQA: with ``answerKey``), as a
  list of ``{"text", "label"}`` or a ``question: {"stem", "choices"}`` object (the original
  ARC/OpenBookQA JSONL), as ``{label: text}``; or ``A``..``E`` columns; SciQ
  (``correct_answer`` + ``distractor1..3``); TruthfulQA MC1 (``mc1_targets``: ``{"choices",
  "labels"}`` or ``{text: 0/1}``). SciQ and TruthfulQA list the right option first, so their
  options are put in a fixed order given by the SHA-256 of (item id or question, option text):
  the same file always gives the same order and the position does not reveal the answer.
- optional: ``id`` (or ``question_id``, ``qid``), ``category`` (or ``type``, ``subject``),
  ``difficulty`` (or ``level``), ``group`` (the underlying fact/entity the item asks about;
  items of one group belong together when splitting; default: the item's own id).

Answer keys are resolved through the record's own label list when it has one (``choices.label``,
the keys of a ``{label: text}`` object, the ``label`` of each option): a key is a label of that
list ("A".."E", "1".."5", anything), else, failing that, exactly the text of one option; a key
that is neither is an error. ``answer_index`` is always a 0-based index. Without a label list a
key is a 0-based integer index, a letter A..E, or the text of an option.

Gold: an item whose gold is empty or a placeholder (``<unk>``, ``[UNK]``, ``<none>``,
``<null>``, ``<na>``, ``<missing>``, ``<pad>``, ``<mask>``, an empty alias list, an empty
or ``-1`` multiple-choice key) has no gold. A file where no item has gold (an unlabelled test
split) is refused, naming the first such line; when only some items lack gold they are dropped
with one :class:`DataWarning` that counts them and names the first lines (the count is also in
``load_dataset(...).attrs["n_dropped_no_gold"]``).

Every other problem raises :class:`DataError` with one message naming the file, the line (or
row) and what is wrong. Missing ids get ``q-<sha1 of the question>``; ``limit`` keeps the items
with the smallest seeded hash of their id, so a larger limit is a superset of a smaller one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
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
COLUMNS = ["id", "question", "answers", "category", "difficulty", "choices", "answer_index", "kind", "group"]
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
LETTERS = "ABCDE"
LAYOUTS = (
    "short answer: question + answers/answer/correct_answer/aliases (TriviaQA: answer.value/aliases/normalized_aliases)",
    "ARC/OpenBookQA: question (or question_stem) + choices.text/choices.label + answerKey",
    "MMLU: question + choices (list) + answer (0-based integer)",
    "SciQ: question + correct_answer + distractor1..3",
    "TruthfulQA MC1: question + mc1_targets (choices + labels); TruthfulQA generation: question + best_answer/correct_answers",
    "generic MC: question + choices/options or A..E columns + answer_index/answer",
)
_PLACEHOLDER = re.compile(r"^\s*[<\[]\s*(?:unk|unknown|none|null|nan|na|n/a|missing|blank|pad|mask|empty)\s*[>\]]\s*$", re.I)


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file, the line or row, and the problem."""


class DataWarning(UserWarning):
    """Items dropped while reading (those without gold answers), counted in the message."""


class _NoGold(Exception):
    """Internal: this record has the fields of a layout but no gold answer."""


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
    gives the same items and a larger limit a superset. ``attrs["n_dropped_no_gold"]``: items
    dropped for lack of gold (see the module docstring).
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) and not hasattr(limit, "__index__"):
            raise DataError(f"limit must be a positive integer or None, not {limit!r}")
        limit = int(limit)
        if limit <= 0:
            raise DataError(f"limit must be a positive integer or None, not {limit}")
    path = resolve_spec(spec)
    dropped: list[str] = []
    items = read_items(path, dropped=dropped)
    df = pd.DataFrame(items, columns=COLUMNS)
    df["answer_index"] = df["answer_index"].astype("int64")
    if limit is not None and limit < len(df):
        rank = [_rank(seed, i) for i in df["id"]]
        keep = sorted(range(len(df)), key=lambda k: rank[k])[:limit]
        df = df.iloc[sorted(keep)].reset_index(drop=True)
    df.attrs["n_dropped_no_gold"] = len(dropped)
    return df


_INFO_CACHE: dict[tuple, dict] = {}


def dataset_info(spec) -> dict[str, Any]:
    """Cheap summary for a UI: name, path, n_items, kind, categories, difficulties (cached by file stat)."""
    path = resolve_spec(spec)
    st = _stat(path)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _INFO_CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            df = load_dataset(path)
        kinds = sorted(set(df["kind"]))
        _INFO_CACHE[key] = {
            "name": spec if isinstance(spec, str) and spec in BUILTIN else path.name,
            "path": str(path),
            "n_items": int(len(df)),
            "n_dropped_no_gold": int(df.attrs.get("n_dropped_no_gold", 0)),
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


def read_items(path: Path, dropped: list[str] | None = None) -> list[dict]:
    """Parse and validate one file into item dicts (no limit applied).

    Items without gold are dropped with a :class:`DataWarning` (their places are appended to
    ``dropped``); a file none of whose items has gold raises :class:`DataError`.
    """
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
    if suffix == ".parquet":
        records = _parquet_records(path)
    else:
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
    items, seen, no_gold = [], {}, []
    for where, rec in records:
        try:
            item = _item(path, where, rec)
        except _NoGold as e:
            no_gold.append((where, str(e)))
            continue
        generated = item.pop("_generated_id")
        if item["id"] in seen:
            what = "duplicate question (no ids given)" if generated else "duplicate id"
            raise DataError(f"{path}, {where}: {what} '{item['id']}', first seen on {seen[item['id']]}")
        seen[item["id"]] = where
        items.append(item)
    if no_gold and not items:
        where, why = no_gold[0]
        raise DataError(
            f"{path}, {where}: row without any answer: {why}; none of the {len(no_gold)} items has a gold answer "
            "(an unlabelled split, e.g. a test split?); use a split with answers"
        )
    if no_gold:
        first = ", ".join(w for w, _ in no_gold[:3]) + (", ..." if len(no_gold) > 3 else "")
        warnings.warn(
            f"{path}: dropped {len(no_gold)} of {len(records)} items without a gold answer "
            f"(placeholder or empty; {first}: {no_gold[0][1]})",
            DataWarning,
            stacklevel=3,
        )
        if dropped is not None:
            dropped.extend(w for w, _ in no_gold)
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


def _too_deep(path: Path, where: str) -> DataError:
    return DataError(f"{path}, {where}: JSON nested too deeply to be an item (thousands of levels); not a dataset file?")


def _jsonl_records(path: Path, text: str) -> list[tuple[str, dict]]:
    out = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise _too_deep(path, f"line {n}") from None
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
    except RecursionError:
        raise _too_deep(path, "line 1") from None
    label = "item"
    if isinstance(doc, dict):
        for key in ("Data", "data", "items", "questions", "rows"):
            if isinstance(doc.get(key), list):
                doc, label = doc[key], f"{key} item"
                break
        else:
            if any(str(k).strip().lower() in _QUESTION_KEYS for k in doc):  # a single item
                doc = [doc]
            else:
                raise DataError(
                    f"{path}, line 1: unrecognised JSON layout: expected a list of items, or an object with a "
                    f"'Data' (TriviaQA) or 'data' list; found keys {sorted(map(str, doc))[:10]}; "
                    f"supported item layouts: {'; '.join(LAYOUTS)}"
                )
    if not isinstance(doc, list):
        raise DataError(f"{path}, line 1: expected a JSON list of items, found {type(doc).__name__}")
    out = []
    for n, rec in enumerate(doc, start=1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}, {label} {n}: expected a JSON object, found {type(rec).__name__}")
        out.append((f"{label} {n}", rec))
    return out


def _parquet_records(path: Path) -> list[tuple[str, dict]]:
    """Rows of a parquet file as plain Python dicts (nested structs/lists as dicts/lists)."""
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        rows = table.to_pylist()
    except RecursionError:
        raise _too_deep(path, "row 1") from None
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet bytes
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return [(f"row {n}", rec) for n, rec in enumerate(rows, start=1)]


_QUESTION_KEYS = ("question", "question_stem", "query", "prompt")
_ANSWER_KEYS = ("answers", "answer", "correct_answer", "aliases", "choices", "options", "answer_index", "a",
                "mc1_targets", "answerkey", "best_answer", "best answer", "correct_answers", "correct answers")


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
            f"'A'..'D' for multiple choice); found columns {header}; supported layouts: {'; '.join(LAYOUTS)}"
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


def _missing(v) -> bool:
    """None, NaN, or a blank string."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _get(rec: dict, *keys):
    """First non-missing value among keys (rec's keys already lower-cased)."""
    for k in keys:
        v = rec.get(k)
        if not _missing(v):
            return v
    return None


def _text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _is_gold(v) -> bool:
    """A usable gold string: not missing, not a placeholder such as "<unk>"."""
    return not _missing(v) and not isinstance(v, (dict, list, bool)) and not _PLACEHOLDER.match(_text(v))


def _dedupe(values) -> list[str]:
    out, seen = [], set()
    for v in values:
        if not _is_gold(v):
            continue
        s = _text(v)
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def _as_list(path: Path, where: str, field: str, v) -> list:
    """A list field: a list, a JSON list string, or a '|'- or ';'-separated string."""
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, dict) and isinstance(v.get("text"), list):  # SQuAD-style {"text": [...], "answer_start": [...]}
        return list(v["text"])
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


def _short_answers(path: Path, where: str, rec: dict) -> list[str] | None:
    """The gold aliases of a short-answer record (possibly empty), or None when it has no answer field."""
    present = False
    answers: list = []
    if "answers" in rec:
        present = True
        v = rec["answers"]
        if not _missing(v):
            answers += _as_list(path, where, "answers", v)
    for key in ("answer", "correct_answer"):
        if key not in rec:
            continue
        present = True
        v = rec[key]
        if isinstance(v, dict):  # TriviaQA: {"value"/"Value", "aliases", "normalized_aliases", ...}
            v = _lower(v)
            answers += [v.get("value")] + list(v.get("aliases") or []) + list(
                v.get("normalized_aliases", v.get("normalizedaliases")) or []
            ) + [v.get("normalized_value", v.get("normalizedvalue"))]
            if isinstance(v.get("text"), list):
                answers += v["text"]
        elif isinstance(v, list):
            answers += v
        elif not _missing(v):
            answers.append(v)
    for key in ("aliases", "best_answer", "best answer", "correct_answers", "correct answers"):  # TruthfulQA generation
        if key in rec:
            present = True
            v = rec[key]
            if not _missing(v):
                answers += _as_list(path, where, key, v)
    if not present:
        return None
    if any(isinstance(a, (dict, list)) for a in answers):
        bad = next(a for a in answers if isinstance(a, (dict, list)))
        raise DataError(f"{path}, {where}: answers must be strings, found a nested {type(bad).__name__}")
    return _dedupe(answers)


def _fixed_order(key: str, choices: list[str], right: int) -> tuple[list[str], int]:
    """Options in the order of SHA-256(key, option): stable, and not revealing the right one."""
    order = sorted(range(len(choices)), key=lambda i: hashlib.sha256(f"{key}\x00{choices[i]}".encode()).hexdigest())
    return [choices[i] for i in order], order.index(right)


def _mc_special(path: Path, where: str, rec: dict, key: str) -> tuple[list[str], int] | None:
    """TruthfulQA MC1 and SciQ layouts (the file lists the right option first)."""
    t = rec.get("mc1_targets")
    if t is not None:
        if isinstance(t, dict) and "choices" in t:
            choices, labels = list(t.get("choices") or []), list(t.get("labels") or [])
        elif isinstance(t, dict):  # the original TruthfulQA mc_task.json: {option text: 0/1}
            choices, labels = list(t), list(t.values())
        else:
            raise DataError(f"{path}, {where}: 'mc1_targets' must be an object with 'choices' and 'labels', "
                            f"found {type(t).__name__}")
        if len(choices) != len(labels):
            raise DataError(f"{path}, {where}: 'mc1_targets' has {len(choices)} choices but {len(labels)} labels")
        right = [i for i, x in enumerate(labels) if not _missing(x) and float(x) == 1]
        if not right:
            raise _NoGold("'mc1_targets' marks no option as right")
        if len(right) > 1:
            raise DataError(f"{path}, {where}: 'mc1_targets' marks {len(right)} options as right; MC1 has exactly one")
        choices = [_text(c) for c in choices]
        if any(not c for c in choices):
            raise DataError(f"{path}, {where}: 'mc1_targets' has an empty option")
        return _fixed_order(key, choices, right[0])
    dis = [k for k in ("distractor1", "distractor2", "distractor3", "distractor4") if k in rec]
    if dis and "correct_answer" in rec:  # SciQ
        if not _is_gold(rec["correct_answer"]):
            raise _NoGold("'correct_answer' is empty or a placeholder")
        choices = [_text(rec["correct_answer"])] + [_text(rec[k]) for k in dis if not _missing(rec[k])]
        if len(choices) < 2:
            raise DataError(f"{path}, {where}: a multiple-choice item needs at least 2 choices, found {len(choices)}")
        return _fixed_order(key, choices, 0)
    return None


def _mc(path: Path, where: str, rec: dict, key: str) -> tuple[list[str], int] | None:
    """(choices, answer_index) when the record is multiple choice, else None."""
    special = _mc_special(path, where, rec, key)
    if special is not None:
        return special
    v = _get(rec, "choices", "options")
    own_labels = True  # labels given by the record itself (strict key resolution)
    if v is not None:
        if isinstance(v, dict) and isinstance(v.get("text"), (list, tuple)):  # ARC / OpenBookQA
            choices = list(v["text"])
            labels = v.get("label")
            if labels is None:
                labels, own_labels = None, False
            else:
                labels = [_text(x) for x in labels]
                if len(labels) != len(choices):
                    raise DataError(f"{path}, {where}: 'choices' has {len(choices)} texts but {len(labels)} labels")
        elif isinstance(v, dict):  # {"A": "...", "B": "..."}
            labels, choices = [_text(k) for k in v], list(v.values())
        elif isinstance(v, (list, tuple)) and v and all(isinstance(c, dict) for c in v):  # [{"text", "label"}]
            choices = [_lower(c).get("text") for c in v]
            labels = [_text(_lower(c).get("label", "")) for c in v]
            if not all(labels):
                labels, own_labels = None, False
        else:
            choices, labels, own_labels = _as_list(path, where, "choices", v), None, False
    else:
        letters = [c for c in LETTERS if not _missing(rec.get(c.lower()))]
        if not letters:
            return None
        choices, labels, own_labels = [rec[c.lower()] for c in letters], letters, False
    pairs = [(c, labels[i] if labels else None) for i, c in enumerate(choices) if not _missing(c)]
    choices = [_text(c) for c, _ in pairs]
    if labels:
        labels = [lab for _, lab in pairs]
    if len(choices) < 2:
        raise DataError(f"{path}, {where}: a multiple-choice item needs at least 2 choices, found {len(choices)}")
    key_fields = ("answer_index", "answerkey", "answer", "label", "correct")
    if not any(k in rec for k in key_fields):
        raise DataError(f"{path}, {where}: multiple-choice item without 'answer_index', 'answerKey' or 'answer' "
                        f"(fields found: {sorted(rec)[:12]})")
    field = next((k for k in key_fields if not _missing(rec.get(k))), None)
    a = rec.get(field) if field else None
    if a is None or (isinstance(a, str) and (_PLACEHOLDER.match(a) or a.strip() == "-1")) or (
        isinstance(a, (int, float)) and not isinstance(a, bool) and a == -1
    ):
        raise _NoGold(f"the answer key is {'empty' if a is None else repr(a)}")
    if isinstance(a, bool):
        raise DataError(f"{path}, {where}: answer must be an index, a label or the right option's text, not {a!r}")
    if isinstance(a, float) and a.is_integer():
        a = int(a)
    if field == "answer_index":
        if isinstance(a, str) and a.strip().lstrip("-").isdigit():
            a = int(a.strip())
        if not isinstance(a, int):
            raise DataError(f"{path}, {where}: 'answer_index' must be a 0-based integer, not {a!r}")
    elif own_labels and labels and not (isinstance(a, int) and not any(lab.lstrip("-").isdigit() for lab in labels)):
        a = _by_label(path, where, _text(a), labels, choices)
    elif isinstance(a, str):
        s = a.strip()
        letters = labels or list(LETTERS[: len(choices)])
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
        raise DataError(f"{path}, {where}: answer must be an index, a label or the right option's text, not {a!r}")
    if not 0 <= a < len(choices):
        raise DataError(
            f"{path}, {where}: answer index {a} is out of range for {len(choices)} choices (0-based, 0..{len(choices) - 1})"
        )
    return choices, a


def _by_label(path: Path, where: str, key: str, labels: list[str], choices: list[str]) -> int:
    """Index of ``key`` in the record's own labels (exact, then case-insensitive), else of the one
    option whose text it is; anything else is an error naming the labels."""
    if key in labels:
        return labels.index(key)
    folded = [lab.casefold() for lab in labels]
    if folded.count(key.casefold()) == 1:
        return folded.index(key.casefold())
    if choices.count(key) == 1:
        return choices.index(key)
    raise DataError(f"{path}, {where}: answer key {key!r} is not one of this item's labels {labels} "
                    "(nor the text of an option)")


def _question(path: Path, where: str, rec: dict):
    """The question text, unwrapping the original ARC/OpenBookQA {"stem", "choices"} object."""
    q = None
    for k in _QUESTION_KEYS:
        if k in rec and not _missing(rec[k]):
            q = rec[k]
            break
    if isinstance(q, dict):
        inner = _lower(q)
        if "stem" in inner:
            if "choices" in inner and "choices" not in rec:
                rec["choices"] = inner["choices"]
            q = inner["stem"]
    if q is None or (isinstance(q, float) and math.isnan(q)):
        present = [k for k in _QUESTION_KEYS if k in rec]
        if present:
            v = rec[present[0]]
            what = f"'{present[0]}' is " + ("null" if v is None else "NaN" if isinstance(v, float) else "blank")
        else:
            what = "no 'question' field"
        raise DataError(f"{path}, {where}: row without a question ({what}; fields found: {sorted(rec)[:12]}; "
                        f"supported layouts: {'; '.join(LAYOUTS)})")
    if not isinstance(q, str):
        raise DataError(f"{path}, {where}: the question must be text, found {type(q).__name__} {q!r:.40}")
    if not q.strip():
        raise DataError(f"{path}, {where}: row without a question (it is blank)")
    return q.strip()


def _item(path: Path, where: str, rec: dict) -> dict:
    rec = _lower(rec)
    q = _question(path, where, rec)
    rid = _get(rec, "id", "question_id", "questionid", "qid")
    if rid is None or isinstance(rid, (dict, list)):
        rid = "q-" + hashlib.sha1(q.encode("utf-8")).hexdigest()[:12]
        generated = True
    else:
        generated = False
    rid = _text(rid)
    mc = _mc(path, where, rec, rid if not generated else q)
    if mc is not None:
        choices, idx = mc
        answers, kind = [choices[idx]], "mc"
    else:
        answers = _short_answers(path, where, rec)
        if answers is None:
            raise DataError(
                f"{path}, {where}: unknown layout: no answer fields (fields found: {sorted(rec)[:15]}); "
                f"supported layouts: {'; '.join(LAYOUTS)}"
            )
        if not answers:
            raise _NoGold("its answer fields are empty or placeholders such as '<unk>'")
        choices, idx, kind = None, -1, "short"
    category = _get(rec, "category", "type", "subject")
    difficulty = _get(rec, "difficulty", "level")
    group = _get(rec, "group")
    if isinstance(group, (dict, list)):
        raise DataError(f"{path}, {where}: 'group' must be a string or a number, found {type(group).__name__}")
    return {
        "id": rid,
        "question": q,
        "answers": answers,
        "category": "" if category is None or isinstance(category, (dict, list)) else _text(category),
        "difficulty": "" if difficulty is None or isinstance(difficulty, (dict, list)) else _text(difficulty),
        "choices": choices,
        "answer_index": idx,
        "kind": kind,
        "group": rid if group is None else _text(group),
        "_generated_id": generated,
    }
