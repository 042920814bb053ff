"""Stable public names of the confidence readout (kept importable from here since 0.1).

The readout lives in :mod:`metacog.readout` (:mod:`metacog.readout.values`: the exact 0–100
distribution; :mod:`metacog.readout.verbal`: the one verbal-confidence parser). New code should
import from there.
"""
from metacog.readout.values import (  # noqa: F401
    VALUES,
    Readout,
    expected_value,
    get_trie,
    read_labels,
    read_values,
)
from metacog.readout.verbal import (  # noqa: F401
    parse_answer,
    parse_confidence,
    parse_inline,
    parse_inline_verbal,
    parse_verbal,
)
