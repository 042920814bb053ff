"""Multiple-choice layouts of a record: choices lists, ARC/OpenBookQA label objects, ``A``..``E``
columns, MMLU integer keys, SciQ distractors and TruthfulQA MC1 targets, resolved to
``(choices, answer_index)`` (0-based; see :mod:`metacog.data.readers` for the key rules)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from metacog.data.fields import (LETTERS, PLACEHOLDER, DataError, NoGold, as_list, as_text, first_of, is_gold,
                                 is_missing, is_placeholder, lower_keys)
from metacog.data.grading import normalize


def fixed_order(key: str, choices: list[str], right: int) -> tuple[list[str], int]:
    """Options in the order of SHA-256(key, option): stable, and not revealing the right one."""
    order = sorted(range(len(choices)), key=lambda i: hashlib.sha256(f"{key}\x00{choices[i]}".encode()).hexdigest())
    return [choices[i] for i in order], order.index(right)


def mc_special(path: Path, where: str, rec: dict, key: str) -> tuple[list[str], int] | None:
    """TruthfulQA MC1 and SciQ layouts (the file lists the right option first).

    Raises: DataError for malformed ``mc1_targets`` (not an object, counts that differ, several
    right options, an empty option) or fewer than 2 SciQ options; NoGold when no option is marked
    right or the SciQ answer is empty.
    """
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
        right = [i for i, x in enumerate(labels) if not is_missing(x) and float(x) == 1]
        if not right:
            raise NoGold("'mc1_targets' marks no option as right")
        if len(right) > 1:
            raise DataError(f"{path}, {where}: 'mc1_targets' marks {len(right)} options as right; MC1 has exactly one")
        choices = [as_text(c) for c in choices]
        if any(not c for c in choices):
            raise DataError(f"{path}, {where}: 'mc1_targets' has an empty option")
        return fixed_order(key, choices, right[0])
    dis = [k for k in ("distractor1", "distractor2", "distractor3", "distractor4") if k in rec]
    if dis and "correct_answer" in rec:  # SciQ
        if not is_gold(rec["correct_answer"]):
            raise NoGold("'correct_answer' is empty or a placeholder")
        choices = [as_text(rec["correct_answer"])] + [as_text(rec[k]) for k in dis if not is_missing(rec[k])]
        if len(choices) < 2:
            raise DataError(f"{path}, {where}: a multiple-choice item needs at least 2 choices, found {len(choices)}")
        return fixed_order(key, choices, 0)
    return None


def mc_choices(path: Path, where: str, rec: dict, key: str, notes: list | None = None) -> tuple[list[str], int] | None:
    """(choices, answer_index) when the record is multiple choice, else None.

    A key given as a digit string where the record has no label list ({"choices": [...],
    "answer": "1"}) is read as a 0-based index (the MMLU convention; "1" is the second option);
    ``notes`` (when given) gets ``("digit_key", where, key, index, option)`` for each such key, from
    which the reader warns once per file.

    Raises: DataError for fewer than 2 choices, texts and labels of different lengths, no answer
    field, a key that is not a valid index, label or option text, or two options the grader's
    normalize() makes identical ("Paris" / "paris.", "?" / "-"); NoGold for an empty or placeholder
    key (-1, "<unk>", "N/A", "?": ``fields.is_placeholder``) that is neither a label nor an option.
    """
    out = _resolve(path, where, rec, key, notes)
    if out is not None:
        distinct_options(path, where, out[0])
    return out


def distinct_options(path: Path, where: str, choices: list[str]) -> None:
    """Raises: DataError naming the first two options that are the same after the grader's
    normalize() (the grader, and a reader of the prompt, cannot tell them apart)."""
    seen: dict[str, int] = {}
    for i, c in enumerate(choices):
        n = normalize(c)
        if n in seen:
            j = seen[n]
            same = (f"the same after the grader's normalisation ({n!r})" if n
                    else "both empty after the grader's normalisation")
            raise DataError(f"{path}, {where}: options {j + 1} and {i + 1} ({choices[j]!r} and {c!r}) are {same}; "
                            "the grader cannot tell them apart: make them differ or drop one")
        seen[n] = i


def _resolve(path: Path, where: str, rec: dict, key: str, notes: list | None) -> tuple[list[str], int] | None:
    special = mc_special(path, where, rec, key)
    if special is not None:
        return special
    v = first_of(rec, "choices", "options")
    own_labels = True  # labels given by the record itself (strict key resolution)
    if v is not None:
        if isinstance(v, dict) and isinstance(v.get("text"), (list, tuple)):  # ARC / OpenBookQA
            choices = list(v["text"])
            labels = v.get("label")
            if labels is None:
                labels, own_labels = None, False
            else:
                labels = [as_text(x) for x in labels]
                if len(labels) != len(choices):
                    raise DataError(f"{path}, {where}: 'choices' has {len(choices)} texts but {len(labels)} labels")
        elif isinstance(v, dict):  # {"A": "...", "B": "..."}
            labels, choices = [as_text(k) for k in v], list(v.values())
        elif isinstance(v, (list, tuple)) and v and all(isinstance(c, dict) for c in v):  # [{"text", "label"}]
            choices = [lower_keys(c).get("text") for c in v]
            labels = [as_text(lower_keys(c).get("label", "")) for c in v]
            if not all(labels):
                labels, own_labels = None, False
        else:
            choices, labels, own_labels = as_list(path, where, "choices", v), None, False
    else:
        letters = [c for c in LETTERS if not is_missing(rec.get(c.lower()))]
        if not letters:
            return None
        choices, labels, own_labels = [rec[c.lower()] for c in letters], letters, False
    pairs = [(c, labels[i] if labels else None) for i, c in enumerate(choices) if not is_missing(c)]
    choices = [as_text(c) for c, _ in pairs]
    if labels:
        labels = [lab for _, lab in pairs]
    if len(choices) < 2:
        raise DataError(f"{path}, {where}: a multiple-choice item needs at least 2 choices, found {len(choices)}")
    key_fields = ("answer_index", "answerkey", "answer", "label", "correct")
    if not any(k in rec for k in key_fields):
        raise DataError(f"{path}, {where}: multiple-choice item without 'answer_index', 'answerKey' or 'answer' "
                        f"(fields found: {sorted(rec)[:12]})")
    field = next((k for k in key_fields if not is_missing(rec.get(k))), None)
    a = rec.get(field) if field else None
    if a is None or (isinstance(a, str) and (PLACEHOLDER.match(a) or a.strip() == "-1")) or (
        isinstance(a, (int, float)) and not isinstance(a, bool) and a == -1
    ):
        raise NoGold(f"the answer key is {'empty' if a is None else repr(a)}")
    if isinstance(a, str) and is_placeholder(a) and a.strip() not in (labels or []) and a.strip() not in choices:
        raise NoGold(f"the answer key {a!r} is a placeholder")
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
        a = by_label(path, where, as_text(a), labels, choices)
    elif isinstance(a, str):
        s = a.strip()
        letters = labels or list(LETTERS[: len(choices)])
        if s.lstrip("-").isdigit():  # a 0-based index; the text of an option only when out of range
            a = int(s)
            if not 0 <= a < len(choices) and s in choices:
                a = choices.index(s)
            elif 0 <= a < len(choices) and notes is not None:
                notes.append(("digit_key", where, s, a, choices[a]))
            elif not 0 <= a < len(choices):
                raise DataError(
                    f"{path}, {where}: answer {s!r} is out of range for {len(choices)} choices (a digit answer "
                    f"without a label list is a 0-based index, 0..{len(choices) - 1}; give the choices labels to use "
                    "1-based keys)"
                )
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


def by_label(path: Path, where: str, key: str, labels: list[str], choices: list[str]) -> int:
    """Index of ``key`` in the record's own labels (exact, then case-insensitive), else of the one
    option whose text it is; anything else is an error naming the labels.

    Raises: DataError when ``key`` is neither a label nor the text of exactly one option.
    """
    if key in labels:
        return labels.index(key)
    folded = [lab.casefold() for lab in labels]
    if folded.count(key.casefold()) == 1:
        return folded.index(key.casefold())
    if choices.count(key) == 1:
        return choices.index(key)
    raise DataError(f"{path}, {where}: answer key {key!r} is not one of this item's labels {labels} "
                    "(nor the text of an option)")
