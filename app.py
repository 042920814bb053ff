"""metacog workbench: `streamlit run app.py`.

Entry point only: page navigation (every ``pages/<n>_<Name>.py``, in number order, the first
is the home page) and the workspace picker in the sidebar. Each page reads the chosen
workspace's artifacts through ``metacog.app.ui`` and draws ``metacog.viz.plots`` figures.
"""
import re
from pathlib import Path

import streamlit as st

from metacog.app import ui

st.set_page_config(page_title="metacog", page_icon="🧭", layout="wide")


def _pages() -> list:
    files = sorted(
        (Path(__file__).parent / "pages").glob("*.py"),
        key=lambda p: (int(m.group(1)) if (m := re.match(r"(\d+)", p.name)) else 10**6, p.name),
    )
    return [st.Page(str(p.relative_to(Path(__file__).parent)), default=(i == 0)) for i, p in enumerate(files)]


nav = st.navigation(_pages())
st.sidebar.markdown("### metacog")
ui.workspace_picker()
ui.sidebar_status()
nav.run()
