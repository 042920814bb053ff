"""The one registry of confidence methods.

A method is a :class:`Method`: a name, what it costs, the settings it depends on, and a
``compute(ctx) -> MethodResult`` that scores every item of the context's *pool* (the
calibration and eval splits) with a confidence in [0, 1]. Adding a method is one small
file in this package that calls :func:`register`; :mod:`metacog.methods` imports them all.

Public entry: :func:`register` (and :func:`get`, :func:`resolve`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd


@dataclass
class MethodResult:
    """What a method's ``compute`` returns: ``scores`` (one row per pool item: ``row`` and
    ``score``, a confidence in [0, 1], NaN only where a baseline's text did not parse; more columns
    allowed) and ``info`` (JSON-able: forward passes, train updates, run id, ...)."""
    scores: pd.DataFrame  # row, score in [0, 1] (NaN only for baselines with unparsed text), extra columns allowed
    info: dict = field(default_factory=dict)  # forward_passes, train_updates, run id, ...


@dataclass(frozen=True)
class Method:
    """One confidence method: ``name`` (registry key; no ``+``), ``label`` for figures, ``family``
    (baseline | prompting | sampling | probe | training | relative | steering), ``cost`` in words,
    ``compute(ctx) -> MethodResult``, the :class:`~metacog.methods.settings.MethodSettings` fields its
    result depends on (part of its freshness key, with ``version``), whether it needs the model or
    trains, whether it reads the study's two-pass outputs (``two_pass``: skipped, not failed, in a
    study run without ``--two-pass``; :func:`unavailable`), and its ``order`` in the table."""
    name: str
    label: str
    family: str  # baseline | prompting | sampling | probe | training | relative | steering
    cost: str  # what it costs, in words (forward passes per item, training)
    compute: Callable[..., MethodResult]
    settings: tuple[str, ...] = ()  # MethodSettings fields its result depends on
    needs_model: bool = True
    trains: bool = False
    two_pass: bool = False  # reads the study's two-pass answers or readout
    version: int = 1
    order: int = 100


_REGISTRY: dict[str, Method] = {}


def register(m: Method) -> Method:
    """Add ``m`` to the registry (idempotent for the same object); returns ``m``.

    Raises:
        ValueError: another method already has this name, or the name contains ``+``
            (reserved for post-hoc variants such as ``p_true+platt``)."""
    if m.name in _REGISTRY and _REGISTRY[m.name] is not m:
        raise ValueError(f"method {m.name!r} is registered twice")
    if "+" in m.name:
        raise ValueError("'+' is reserved for post-hoc calibrated variants (method+platt)")
    _REGISTRY[m.name] = m
    return m


def get(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: no method has that name (the message lists the known ones)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    """The registered method names, in table order (``order``, then name)."""
    return [m.name for m in sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name))]


def all_methods() -> list[Method]:
    """The registered methods, in table order."""
    return [_REGISTRY[n] for n in names()]


def unavailable(m: Method, study) -> str | None:
    """Why ``m`` cannot run on a study with settings ``study`` (a
    :class:`~metacog.core.settings.StudySettings`), or None: a method that reads the two-pass
    outputs in a study that did not compute them (:data:`~metacog.core.settings.TWO_PASS_OFF`)."""
    from metacog.core.settings import TWO_PASS_OFF

    if m.two_pass and not getattr(study, "two_pass", False):
        return TWO_PASS_OFF
    return None


def resolve(spec) -> list[str]:
    """``"all"`` | ``"a,b"`` | a list -> registered method names (unknown ones refused at once).

    Raises:
        ValueError: a name that is not registered (the message lists the known ones)."""
    if spec is None or spec == "all" or spec == ["all"]:
        return names()
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p and p.strip()]
    if "all" in parts:
        return names()
    bad = [p for p in parts if p not in _REGISTRY]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; known: {', '.join(names())}")
    return [n for n in names() if n in parts]
