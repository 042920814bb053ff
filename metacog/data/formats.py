"""File formats of a dataset: bytes to ``(where, record)`` pairs for ``.jsonl``, ``.json``,
``.parquet`` and ``.csv``/``.tsv`` (``where`` names the line or row for error messages)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from metacog.data.fields import ANSWER_KEYS, LAYOUTS, QUESTION_KEYS, DataError


def decode(path: Path, blob: bytes) -> str:
    """The UTF-8 text of a file (a BOM is skipped). Raises: DataError naming the line, column and byte
    offset of the first invalid byte."""
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


def too_deep(path: Path, where: str) -> DataError:
    """The DataError for JSON nested too deeply to parse (Python raised RecursionError)."""
    return DataError(f"{path}, {where}: JSON nested too deeply to be an item (thousands of levels); not a dataset file?")


def jsonl_records(path: Path, text: str) -> list[tuple[str, dict]]:
    """``(f"line {n}", object)`` per non-blank line of a JSON Lines text. Raises: DataError on
    malformed JSON or a line that is not an object."""
    out = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise too_deep(path, f"line {n}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object, found {type(rec).__name__}")
        out.append((f"line {n}", rec))
    return out


def json_records(path: Path, text: str) -> list[tuple[str, dict]]:
    """``(where, object)`` per item of a JSON document: a list, a single item, or a list under ``Data``
    (TriviaQA), ``data``, ``items``, ``questions`` or ``rows``. Raises: DataError on malformed JSON
    or an unrecognised layout."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path}, line {e.lineno}: malformed JSON ({e.msg} at column {e.colno}){hint}") from None
    except RecursionError:
        raise too_deep(path, "line 1") from None
    label = "item"
    if isinstance(doc, dict):
        for key in ("Data", "data", "items", "questions", "rows"):
            if isinstance(doc.get(key), list):
                doc, label = doc[key], f"{key} item"
                break
        else:
            if any(str(k).strip().lower() in QUESTION_KEYS for k in doc):  # a single item
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


def parquet_records(path: Path) -> list[tuple[str, dict]]:
    """Rows of a parquet file as plain Python dicts (nested structs/lists as dicts/lists).

    Raises: DataError when the file is not readable parquet or is nested too deeply.
    """
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        rows = table.to_pylist()
    except RecursionError:
        raise too_deep(path, "row 1") from None
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet bytes
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return [(f"row {n}", rec) for n, rec in enumerate(rows, start=1)]

def csv_records(path: Path, text: str, delimiter: str) -> list[tuple[str, dict]]:
    """``(f"line {n}", {column: cell})`` per non-blank row of a CSV/TSV text with a header row
    (``delimiter`` "," or a tab). Raises: DataError on malformed CSV, missing question/answer
    columns, duplicate column names or a row with more fields than the header."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    header = [h.strip() for h in header]
    lower = [h.lower() for h in header]
    if not any(k in lower for k in QUESTION_KEYS) or not any(k in lower for k in ANSWER_KEYS):
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
