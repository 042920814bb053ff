"""Reading workspace files: a table (Parquet) or an array (``.npy``, never unpickled) that is
corrupt or not metacog's is refused with one :class:`~metacog.core.workspace.WorkspaceError`
naming the file, not the library's bare message.

Public entry: :func:`read_table`, :func:`load_array`, :func:`parquet_lineage`."""
from __future__ import annotations

import json
from pathlib import Path

from metacog.core.workspace import LINEAGE_KEY, WorkspaceError


def corrupt(path, what: str, e: BaseException) -> WorkspaceError:
    """The one-line error for ``path``, which is not ``what`` ("a table", "an array") metacog wrote."""
    return WorkspaceError(f"{path} is corrupt or not {what} metacog wrote ({e}); delete it and rerun the stage that writes it")


def load_array(path, mmap: bool = False):
    """``np.load`` of a workspace array, never unpickling (``allow_pickle=False``); ``mmap`` maps
    it read-only. A file that is not a plain ``.npy`` array (truncated, an object/pickle array,
    not written by metacog) raises :class:`WorkspaceError` naming the file, not numpy's bare message.

    Raises:
        WorkspaceError: the file cannot be read as a plain array.
        FileNotFoundError: it does not exist."""
    import numpy as np

    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise corrupt(path, "an array", e) from None


def read_table(path):
    """``pd.read_parquet`` of a workspace table; a file that is not Parquet (truncated, replaced,
    not written by metacog) raises :class:`WorkspaceError` naming the file.

    Raises:
        WorkspaceError: the file cannot be read as Parquet.
        FileNotFoundError: it does not exist."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise corrupt(path, "a table", e) from None


def parquet_lineage(path: Path) -> dict | None:
    """The lineage dict stored by :func:`atomic_write_parquet` (None if absent).

    Raises:
        WorkspaceError: the file is not Parquet (named, as :func:`read_table`)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as e:
        raise corrupt(path, "a table", e) from None
    raw = meta.get(LINEAGE_KEY)
    return json.loads(raw) if raw else None
