"""Datasets: built-in sets (and their seeded generator), readers for users' files, splits.

    from metacog.data import load_dataset, assign_splits, check_splits
    df = load_dataset("world-facts", limit=200, seed=0)
    df["split"] = assign_splits(df["id"], seed=0, strata=df["category"], groups=df.get("group"))
    check_splits(df)

Item columns: ``readers.COLUMNS`` (``group``: the fact/entity an item asks about, from an optional
``group`` field, else the item's id). ``metacog.data.generate`` rebuilds the built-in files; its fact packages are dev-only
(``requirements-dev-data.txt``) and are never imported here.
"""
from metacog.data.readers import (
    BUILTIN,
    COLUMNS,
    MAX_FILE_BYTES,
    LAYOUTS,
    DataError,
    DataWarning,
    dataset_info,
    list_builtin,
    load_dataset,
    resolve_spec,
)
from metacog.data.splits import SPLITS, assign_splits, check_eval_split, check_splits, group_keys, split_fraction_warnings

__all__ = [
    "BUILTIN",
    "COLUMNS",
    "MAX_FILE_BYTES",
    "SPLITS",
    "DataError",
    "DataWarning",
    "LAYOUTS",
    "assign_splits",
    "check_eval_split",
    "check_splits",
    "group_keys",
    "split_fraction_warnings",
    "dataset_info",
    "list_builtin",
    "load_dataset",
    "resolve_spec",
]
