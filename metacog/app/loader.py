"""The app's model: one loaded model per process and settings, and how a test injects its own.

The app loads models through :func:`get_lm` (``st.cache_resource``: once per process and
settings). What it calls is, in order: a loader installed with :func:`set_model_loader`
(in-process, e.g. a test that runs ``AppTest``), else ``$METACOG_MODEL_LOADER`` =
``"package.module:function"`` (for a ``streamlit run`` subprocess), else
:func:`metacog.model.loading.load_model`. A loader takes a :class:`~metacog.core.settings.ModelSettings`
and returns a :class:`~metacog.model.loading.LoadedModel`.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import streamlit as st

from metacog.core.jobs import executor
from metacog.core.settings import ModelSettings, from_dict, to_dict

#: environment variable naming a loader ``"package.module:function"`` for a ``streamlit run`` subprocess
LOADER_ENV = "METACOG_MODEL_LOADER"

_loader_override: Callable | None = None


def set_model_loader(fn: Callable[[ModelSettings], object] | None) -> None:
    """Install (or, with None, remove) the in-process model loader and forget cached models.
    While one is installed, background jobs run as threads of this process (:func:`in_process_models`)."""
    global _loader_override
    _loader_override = fn
    _load_cached.clear()


def model_loader() -> tuple[Callable, str]:
    """``(loader, loader_id)``: the override, else ``$METACOG_MODEL_LOADER``, else
    :func:`metacog.model.loading.load_model`; ``loader_id`` keys the model cache."""
    if _loader_override is not None:
        fn = _loader_override
        return fn, f"override:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    from metacog.model.loading import loader_from_env  # torch/transformers: loaded only when a model is

    spec = os.environ.get(LOADER_ENV, "").strip()
    return loader_from_env(), (f"env:{spec}" if spec else "metacog.model.loading.load_model")


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_cached(settings_json: str, loader_id: str):
    fn, _ = model_loader()
    return fn(from_dict(ModelSettings, json.loads(settings_json)))


def get_lm(model: ModelSettings):
    """The :class:`~metacog.model.loading.LoadedModel` for these settings, loaded once per
    process (``st.cache_resource``, at most two kept), with a spinner while it loads."""
    _, lid = model_loader()
    with st.spinner(f"Loading model '{model.model}' (once per app process)…"):
        return _load_cached(json.dumps(to_dict(model), sort_keys=True), lid)


def in_process_models() -> bool:
    """True when jobs must run as threads of this process: ``$METACOG_JOBS=thread``, or a model
    loader that exists only in memory (tests inject a tiny model this way)."""
    return executor() == "thread" or _loader_override is not None
