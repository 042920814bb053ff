"""metacog: teach a language model to say how confident it really is.

Stages (each a plain function over plain data; see docs/ARCHITECTURE.md):
dataset -> answers -> activations -> probes -> finetune -> patching -> compare.
"""
__version__ = "0.1.0"
