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
key is a 0-based integer index, a letter A..E, or the text of an option; a digit *string* there
("1") is ambiguous and is read 0-based too ("1" is the second option), with one
:class:`DataWarning` per file naming the convention and the first such line (none when some such
key in the file is "0", which shows the file is 0-based); give labels to use 1-based keys. Two
options of one item that the grader's ``normalize`` makes identical ("Paris" / "paris.", "?" /
"-") are an error.

Gold: an alias is not gold when it is empty or a placeholder (``fields.is_placeholder``): bracketed
(``<unk>``, ``[UNK]``, ``<none>``, ``<null>``, ``<na>``, ``<missing>``, ``<pad>``, ``<mask>``),
empty after the grader's ``normalize`` (punctuation or invisible characters only: "?", "???",
"-", "--", "\u200b"; the grader ignores such an alias, so nothing could be graded correct), a bare
placeholder word ("N/A", "n/a", "#N/A", "TBD", "TBA", "TODO", "null") or NaN as text ("nan",
"NaN", "NAN"; "Nan" is a name). "none", "unknown", "zero", "nil" and "NA" are real answers and are
kept. Placeholder aliases are removed beside real ones; an item with none left (or an empty or
``-1`` multiple-choice key, or a placeholder key that is neither a label nor an option) has no
gold. A file where no item has gold (an unlabelled test split) is refused, naming the first such
line; when only some items lack gold they are dropped with one :class:`DataWarning` that counts
them and names the first lines (the count is also in ``load_dataset(...).attrs["n_dropped_no_gold"]``).
A question that is blank or only invisible characters (zero-width space, BOM, joiners) is an error.

Every other problem raises :class:`DataError` with one message naming the file, the line (or
row) and what is wrong. Missing ids get ``q-<sha1 of the question>``; ``limit`` keeps the items
with the smallest seeded hash of their id, so a larger limit is a superset of a smaller one.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from metacog.data.fields import LAYOUTS, LETTERS, DataError, DataWarning, NoGold
from metacog.data.formats import csv_records, decode, json_records, jsonl_records, parquet_records
from metacog.data.items import record_item

__all__ = ["MAX_FILE_BYTES", "BUILTIN_DIR", "BUILTIN", "COLUMNS", "SUFFIXES", "LETTERS", "LAYOUTS", "DataError",
           "DataWarning", "list_builtin", "resolve_spec", "load_dataset", "dataset_info", "read_items"]

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


# ----------------------------------------------------------------------------- public API
def list_builtin() -> dict[str, str]:
    """Built-in dataset names and one-line descriptions."""
    return {name: desc for name, (_, desc) in BUILTIN.items()}


def resolve_spec(spec) -> Path:
    """The file a spec names: a built-in name or a path.

    Raises: DataError when ``spec`` is neither a built-in name nor a non-empty path.
    """
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

    Raises: DataError for a limit that is not a positive integer, and for every unreadable file,
    unknown layout or item without a usable question (the message names the file, the line or row
    and the problem); DataWarning (a warning) when items without gold are dropped.
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
        records = parquet_records(path)
    else:
        text = decode(path, path.read_bytes())
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        if suffix == ".jsonl":
            records = jsonl_records(path, text)
        elif suffix == ".json":
            records = json_records(path, text)
        else:
            records = csv_records(path, text, "\t" if suffix == ".tsv" else ",")
    if not records:
        raise DataError(f"{path}: the file holds no items")
    items, seen, no_gold, notes = [], {}, [], []
    for where, rec in records:
        try:
            item = record_item(path, where, rec, notes)
        except NoGold as e:
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
    _warn_digit_keys(path, notes)
    return items


def _warn_digit_keys(path: Path, notes: list) -> None:
    """One DataWarning per file whose multiple-choice answers are digit strings without a label list
    (read 0-based, the MMLU convention), naming the first such line; none when some such key is "0"
    (the file itself shows it is 0-based)."""
    keys = [n for n in notes if n[0] == "digit_key"]
    if not keys or any(k[2] == "0" for k in keys):
        return
    _, where, key, idx, option = keys[0]
    more = f"; {len(keys)} items give a digit answer without a label list, all read this way" if len(keys) > 1 else ""
    warnings.warn(
        f"{path}: answer {key!r} on {where} read as a 0-based index (choice {idx + 1}, {option!r}){more}; "
        "give the choices labels (choices.label, e.g. [\"1\", \"2\", ...]) to use 1-based keys, "
        "or answer_index to state the 0-based convention",
        DataWarning,
        stacklevel=4,
    )

