"""metacog.readout: what a model says about its confidence — the exact distribution over the
integers 0–100 read from the logits (:mod:`metacog.readout.values`; public entry
:func:`metacog.readout.values.read_values`, ``probs`` ``[B, 101]``) and the one parser of a
verbal confidence in generated text (:mod:`metacog.readout.verbal`; public entry
:func:`metacog.readout.verbal.parse_verbal`). ``metacog.readout.values`` re-exports the stable names.
"""
