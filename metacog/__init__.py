"""metacog: teach a language model to say how confident it really is.

Stages (each a plain function over plain data; see docs/ARCHITECTURE.md):
dataset -> answers -> activations -> probes -> finetune -> patching -> compare.

Public entries: the ``metacog`` command line (:func:`metacog.cli.main`) and, from Python,
:func:`metacog.stages.study.run_study` (one study into a
:class:`~metacog.core.workspace.Workspace`); each stage package names its own entry in its
docstring. The package itself imports nothing heavy (only ``__version__`` lives here).
"""
__version__ = "0.1.0"
