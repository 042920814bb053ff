"""One record to one item: the question, the id, short-answer gold aliases (TriviaQA, SQuAD,
TruthfulQA generation, plain lists) or the multiple-choice layouts of :mod:`metacog.data.choices`,
and the optional category, difficulty and group fields."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

from metacog.data.choices import mc_choices
from metacog.data.fields import (LAYOUTS, QUESTION_KEYS, DataError, NoGold, as_list, as_text, dedupe, first_of,
                                 is_invisible, is_missing, lower_keys)


def short_answers(path: Path, where: str, rec: dict) -> list[str] | None:
    """The gold aliases of a short-answer record (placeholders removed: ``fields.is_placeholder``),
    or None when it has no answer field.

    Raises: DataError when an answer is a nested list or object; NoGold when no usable alias is
    left (the message quotes the first few values found).
    """
    present = False
    answers: list = []
    if "answers" in rec:
        present = True
        v = rec["answers"]
        if not is_missing(v):
            answers += as_list(path, where, "answers", v)
    for key in ("answer", "correct_answer"):
        if key not in rec:
            continue
        present = True
        v = rec[key]
        if isinstance(v, dict):  # TriviaQA: {"value"/"Value", "aliases", "normalized_aliases", ...}
            v = lower_keys(v)
            answers += [v.get("value")] + list(v.get("aliases") or []) + list(
                v.get("normalized_aliases", v.get("normalizedaliases")) or []
            ) + [v.get("normalized_value", v.get("normalizedvalue"))]
            if isinstance(v.get("text"), list):
                answers += v["text"]
        elif isinstance(v, list):
            answers += v
        elif not is_missing(v):
            answers.append(v)
    for key in ("aliases", "best_answer", "best answer", "correct_answers", "correct answers"):  # TruthfulQA generation
        if key in rec:
            present = True
            v = rec[key]
            if not is_missing(v):
                answers += as_list(path, where, key, v)
    if not present:
        return None
    if any(isinstance(a, (dict, list)) for a in answers):
        bad = next(a for a in answers if isinstance(a, (dict, list)))
        raise DataError(f"{path}, {where}: answers must be strings, found a nested {type(bad).__name__}")
    gold = dedupe(answers)
    if not gold:
        found = [repr(as_text(a)) for a in answers if not is_missing(a)]
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise NoGold("its answer fields are empty or placeholders" + (f" ({shown})" if found else ""))
    return gold

def question_text(path: Path, where: str, rec: dict):
    """The question text, unwrapping the original ARC/OpenBookQA {"stem", "choices"} object.

    Raises: DataError when the question is missing, not text, blank, or only invisible characters
    (zero-width spaces, BOMs, joiners: ``fields.is_invisible``).
    """
    q = None
    for k in QUESTION_KEYS:
        if k in rec and not is_missing(rec[k]):
            q = rec[k]
            break
    if isinstance(q, dict):
        inner = lower_keys(q)
        if "stem" in inner:
            if "choices" in inner and "choices" not in rec:
                rec["choices"] = inner["choices"]
            q = inner["stem"]
    if q is None or (isinstance(q, float) and math.isnan(q)):
        present = [k for k in QUESTION_KEYS if k in rec]
        if present:
            v = rec[present[0]]
            what = f"'{present[0]}' is " + ("null" if v is None else "NaN" if isinstance(v, float) else "blank")
        else:
            what = "no 'question' field"
        raise DataError(f"{path}, {where}: row without a question ({what}; fields found: {sorted(rec)[:12]}; "
                        f"supported layouts: {'; '.join(LAYOUTS)})")
    if not isinstance(q, str):
        raise DataError(f"{path}, {where}: the question must be text, found {type(q).__name__} {q!r:.40}")
    if is_invisible(q):
        raise DataError(f"{path}, {where}: row without a question (it is blank" + (
            f": only invisible characters {q!r:.60}" if q.strip() else "") + ")")
    return q.strip()


def record_item(path: Path, where: str, rec: dict, notes: list | None = None) -> dict:
    """One item dict (the keys of ``readers.COLUMNS`` plus ``_generated_id``) from one record;
    ``where`` names its line or row; ``notes`` collects conventions applied to it (see
    :func:`metacog.data.choices.mc_choices`). Raises: DataError for a record no layout fits; NoGold
    when it has a layout but no gold answer."""
    rec = lower_keys(rec)
    q = question_text(path, where, rec)
    rid = first_of(rec, "id", "question_id", "questionid", "qid")
    if rid is None or isinstance(rid, (dict, list)):
        rid = "q-" + hashlib.sha1(q.encode("utf-8")).hexdigest()[:12]
        generated = True
    else:
        generated = False
    rid = as_text(rid)
    mc = mc_choices(path, where, rec, rid if not generated else q, notes)
    if mc is not None:
        choices, idx = mc
        answers, kind = [choices[idx]], "mc"
    else:
        answers = short_answers(path, where, rec)
        if answers is None:
            raise DataError(
                f"{path}, {where}: unknown layout: no answer fields (fields found: {sorted(rec)[:15]}); "
                f"supported layouts: {'; '.join(LAYOUTS)}"
            )
        choices, idx, kind = None, -1, "short"
    category = first_of(rec, "category", "type", "subject")
    difficulty = first_of(rec, "difficulty", "level")
    group = first_of(rec, "group")
    if isinstance(group, (dict, list)):
        raise DataError(f"{path}, {where}: 'group' must be a string or a number, found {type(group).__name__}")
    return {
        "id": rid,
        "question": q,
        "answers": answers,
        "category": "" if category is None or isinstance(category, (dict, list)) else as_text(category),
        "difficulty": "" if difficulty is None or isinstance(difficulty, (dict, list)) else as_text(difficulty),
        "choices": choices,
        "answer_index": idx,
        "kind": kind,
        "group": rid if group is None else as_text(group),
        "_generated_id": generated,
    }
