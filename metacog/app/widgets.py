"""Small display pieces every page uses: figures and tables with downloads, item links,
definitions, and a guard that turns errors into messages."""
from __future__ import annotations

import contextlib
import traceback
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st

from metacog.app.state import workspace_label
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.stats import metrics

#: plotly toolbar: no logo; its camera button downloads a PNG at twice the size
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
#: url path of pages/4_Item_explorer.py
ITEM_PAGE = "Item_explorer"


def show_figure(fig, key: str, filename: str | None = None) -> None:
    """The plotly figure (toolbar: PNG download named ``filename``) plus a button that downloads it
    as a self-contained HTML file (generated on click). ``key``: unique on the page."""
    name = filename or key
    cfg = {**PLOTLY_CONFIG, "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"], "filename": name}}
    st.plotly_chart(fig, key=f"fig-{key}", config=cfg, theme=None)
    st.download_button("Download figure (HTML)", data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                       file_name=f"{name}.html", mime="text/html", key=f"dl-{key}", on_click="ignore", icon=":material/download:")


def show_table(df: pd.DataFrame, key: str, filename: str | None = None, column_config: dict | None = None,
               height: int | str = "auto", caption: str | None = None) -> None:
    """A dataframe (no index) plus a CSV download of exactly its rows and columns, and an optional caption."""
    st.dataframe(df, key=f"tbl-{key}", column_config=column_config, height=height, hide_index=True)
    cols = st.columns([1, 3])
    cols[0].download_button("Download CSV", data=csv_bytes(df), file_name=f"{filename or key}.csv", mime="text/csv",
                            key=f"dlcsv-{key}", on_click="ignore", icon=":material/download:")
    if caption:
        cols[1].caption(caption)


def csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV without the index; list/array cells joined with ``|``."""
    d = df.copy()
    for c in d.columns:
        if d[c].dtype == object:
            d[c] = d[c].map(lambda v: "|".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    return d.to_csv(index=False).encode("utf-8")


def item_url(item_id: str, ws: Workspace | None = None) -> str:
    """Relative link to the item explorer for one item (``?item=<id>``, plus ``&ws=``)."""
    q = f"{ITEM_PAGE}?item={quote(str(item_id), safe='')}"
    if ws is not None:
        q += f"&ws={quote(workspace_label(ws.root), safe='')}"
    return q


def with_links(df: pd.DataFrame, ws: Workspace, id_col: str = "id") -> pd.DataFrame:
    """A copy of ``df`` with a first column ``open``: the item-explorer link of each row's ``id_col``
    (show it with ``column_config=LINK_COLUMN``)."""
    out = df.copy()
    out.insert(0, "open", [item_url(i, ws) for i in out[id_col]])
    return out


#: column_config of the ``open`` column made by :func:`with_links`
LINK_COLUMN = {"open": st.column_config.LinkColumn("open", display_text="explore ↗", help="open in the item explorer", width="small")}


def definitions(*names: str) -> None:
    """An expander with the definitions used on a page (texts from metacog.stats.metrics).
    ``names``: any of ``ece``, ``validity``, ``auroc``, ``readouts``, ``probes``, ``type_prior``.

    Raises:
        KeyError: an unknown name.
    """
    texts = {
        "ece": ("ECE bins", getattr(metrics, "ECE_BINS_DOC", "ECE with equal-width bins") + " "
                + getattr(metrics, "ECE_NULL_DOC", "")),
        "validity": ("Validity screen", getattr(metrics, "VALIDITY_DOC", "")),
        "auroc": ("AUROC", "AUROC = P(score of a correct item > score of an incorrect one) + ½ P(tie) (Mann–Whitney U / n₊n₋). "
                  + getattr(metrics, "BOOTSTRAP_DOC", "95% CI = percentile interval of a stratified bootstrap (1,000 resamples).")),
        "readouts": ("Readouts", "verbal = the number the model writes (inline: after its answer; two-pass: asked in a second prompt "
                     "that shows question and answer). E[v] = expected value of the exact distribution over the 101 numbers 0–100 "
                     "(renormalised); argmax = its most probable number; other = probability mass on anything that is not an integer 0–100."),
        "probes": ("Probes", "One standardised logistic-regression probe per (layer, position) predicts correctness from the residual "
                   "stream. p for train items is cross-fitted with nested CV (the model that predicts a fold has its C chosen "
                   "without that fold); calibration/eval items get the probe fitted on train. Metrics are on the eval split; the "
                   "best probe is chosen by train-split (nested) CV AUROC, never by eval. Selection null: the best of all probes "
                   "is compared with the best of the same selection on shuffled labels (see docs/SCIENCE.md)."),
        "type_prior": ("Question-type prior", "Baseline that scores each item by its category's accuracy on the train split "
                       "(Laplace-smoothed): what a confidence gets for free by recognising the question type."),
    }
    with st.expander("Definitions"):
        for n in names:
            t, d = texts[n]
            st.markdown(f"**{t}.** {d}")


@contextlib.contextmanager
def guard(what: str = "this page"):
    """Show problems as messages, never as a bare traceback (Streamlit's own control flow passes):
    a workspace, data, missing-file, key or value error as "Could not show …", anything else as
    "Something went wrong …", each with the traceback folded away."""
    from metacog.data import DataError

    try:
        yield
    except (WorkspaceError, DataError, FileNotFoundError, KeyError, ValueError) as e:
        st.error(f"Could not show {what}: {e}")
        with st.expander("details"):
            st.code(traceback.format_exc())
    except Exception as e:
        st.error(f"Something went wrong while drawing {what}: {type(e).__name__}: {e}")
        with st.expander("details (traceback)"):
            st.code(traceback.format_exc())
