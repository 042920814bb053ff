"""Activation patching at the confidence slot vs other positions, with the exact 0–100 readout.

A *pair* is a source and a target, each a (model, token sequence) side:

- **model → model**: the same item's inline sequence in two models (a fine-tuned PEFT
  adapter and its base model, either direction);
- **item → item**: two items' inline sequences in one model (e.g. a high-probe item's state
  written into a low-probe item).

The sequence of a side is the inline format of :func:`metacog.data.prompts.encode_inline`
(answer prompt + the workspace's answer + ``"\nConfidence:"``), so every named position is
an exact token index, and the readout position — the confidence slot — is the last token.

For each (component, layer, position) *cell* the source's state at the source position
replaces the target's state at the target position, and the target's exact distribution over
0–100 is read after the confidence slot (the multi-token rule of :mod:`metacog.readout.values`).

Layers are hidden-state indices as everywhere in metacog (:mod:`metacog.model.hooks`): ``h = 0`` is
the input of block 0, ``h >= 1`` the output of block ``h-1``. Components:

- ``resid``: the residual stream at index ``h`` (0..L);
- ``attn`` / ``mlp``: the self-attention / MLP output of block ``h-1`` (h = 1..L), i.e. the
  sub-layer outputs that are added into hidden state ``h``.

Positions (target token indices; the source index is named the same way, or aligned):

- ``confidence``, ``last_prompt``, ``last_answer``: the named positions of both sides;
- ``random:K``: K target positions drawn per pair with a seed, by default from the **item's own
  tokens** — its question (with any options) and its answer — never from the chat template,
  a system prompt, the instruction or the ``Confidence:`` suffix, which carry nothing
  item-specific (``random_from="template"`` or ``"all"`` draws from those instead, labelled);
  never a special token, never the confidence slot; for item → item never inside the token
  prefix the two sequences share, where source and target states are identical and a patch
  is a no-op. Mapped to the source by a token alignment of the two sequences (identity for
  model → model). Every row records the class of its target and source token
  (``position_class``, ``source_position_class``: question | answer | template);
- ``token:I``: the target's token I (same alignment).

Readout per cell: P(0..100) (and ``other``, and the ``unresolved`` mass of the "." look-ahead
rule when :mod:`metacog.readout.values` has one), its expected value (``expected_value``), argmax,
KL from the target's distribution, and whether the greedy answer is unchanged: at every answer
position at or after the patch, the patched model's greedy next token equals the unpatched
target's (teacher forcing; equivalent to greedy decoding retracing the same tokens).

Normalised shift = (patched − target) / (source − target) on expected values; where
|source − target| < ``min_denominator`` it is NaN and the row is flagged, never dropped.

Speed (the *fast* method; ``method="reference"`` is one patched forward per cell through
:func:`metacog.readout.values.read_values`): a patch at position p leaves every earlier position
unchanged, so the target's keys/values before p are computed once and shared; and a patch
at layer h leaves every state below h unchanged, so (for Llama-family blocks) the variants
start at their own block from the target's cached inputs, sorted by layer and batched as
they join. What remains per cell — the positions from p on plus the ~200 nodes of the 0–100
trie through the blocks above the patch, and the LM head over the vocabulary for every trie
node — cannot be shared between cells without changing the readout (see docs/PATCHING.md).


Modules (one concern each): :mod:`metacog.patching.spec`, :mod:`metacog.patching.pairs`, :mod:`metacog.patching.hook_points`, :mod:`metacog.patching.trace`, :mod:`metacog.patching.fast`, :mod:`metacog.patching.reference`, :mod:`metacog.patching.cells`, :mod:`metacog.patching.adapters`, :mod:`metacog.patching.plan`, :mod:`metacog.patching.store`, :mod:`metacog.patching.run`, :mod:`metacog.patching.job` (+ ``stats``, ``plots``, ``cli``)."""
from __future__ import annotations

from metacog.patching.spec import (
    COMPONENTS, NAMED, KINDS, DEFAULT_MIN_DENOMINATOR, PATCHING_VERSION, POSITION_CLASSES, RANDOM_FROM,
    PatchError, PatchSpec, parse_positions, parse_layers, spec_dict,
)
from metacog.patching.pairs import (
    Side, Pair, PosPlan, special_ids, shared_prefix, item_char_spans, token_classes, make_side, random_pool,
    pair_seed, draw_random_positions, align, resolve_positions, answer_window,
)
from metacog.patching.hook_points import (
    base_model, decoder_blocks, ThreadOwner, sublayer, available_components, Variant, row_patch, hook_point,
    patch_hook,
)
from metacog.patching.trace import dot_tol, tree_layout, tree_attention_mask, Trace, trace, CellResult
from metacog.patching.fast import (
    supports_skip, skip_selftest, run_skip, run_full, cells_from_final, patch_position_fast,
)
from metacog.patching.reference import reference_greedy, patch_cell_reference
from metacog.patching.cells import (
    Prepared, read_side, prepare_pair, variants_for, patch_position, patch_pair, pair_record,
)
from metacog.patching.adapters import adapter_dir, check_adapter, load_adapter_model, clear_adapters, private_model
from metacog.patching.plan import SCORES, item_table, filter_items, GridPlan, plan_grid
from metacog.patching.store import grid_dir, list_grids, load_results, load_pairs, read_meta
from metacog.patching.run import run_grid, grid_id_for
from metacog.patching.job import (
    GridJob, GRID_JOBS, start_grid_job, start_grid_process, run_job, get_grid_job, running_grid_job,
)

__all__ = [
    "COMPONENTS", "NAMED", "KINDS", "DEFAULT_MIN_DENOMINATOR", "PATCHING_VERSION", "POSITION_CLASSES",
    "RANDOM_FROM", "PatchError", "PatchSpec", "parse_positions", "parse_layers", "spec_dict", "Side", "Pair",
    "PosPlan", "special_ids", "shared_prefix", "item_char_spans", "token_classes", "make_side", "random_pool",
    "pair_seed", "draw_random_positions", "align", "resolve_positions", "answer_window", "base_model",
    "decoder_blocks", "ThreadOwner", "sublayer", "available_components", "Variant", "row_patch", "hook_point",
    "patch_hook", "dot_tol", "tree_layout", "tree_attention_mask", "Trace", "trace", "CellResult",
    "supports_skip", "skip_selftest", "run_skip", "run_full", "cells_from_final", "patch_position_fast",
    "reference_greedy", "patch_cell_reference", "Prepared", "read_side", "prepare_pair", "variants_for",
    "patch_position", "patch_pair", "pair_record", "adapter_dir", "check_adapter", "load_adapter_model",
    "clear_adapters", "private_model", "SCORES", "item_table", "filter_items", "GridPlan", "plan_grid",
    "grid_dir", "list_grids", "load_results", "load_pairs", "read_meta", "run_grid", "grid_id_for", "GridJob",
    "GRID_JOBS", "start_grid_job", "start_grid_process", "run_job", "get_grid_job", "running_grid_job",
]

# Deprecated names from before patching's "sweep" became a "grid" (metacog.sweeps owns "sweep":
# seed sweeps). Kept for code written against the old names — scripts, notebooks and branches
# in flight; each access warns. The on-disk layout (patching/<id>/) did not change.
_RENAMED = {
    "plan_sweep": "plan_grid", "SweepPlan": "GridPlan", "run_sweep": "run_grid", "sweep_id_for": "grid_id_for",
    "sweep_dir": "grid_dir", "list_sweeps": "list_grids", "SweepJob": "GridJob", "SWEEP_JOBS": "GRID_JOBS",
    "start_sweep_job": "start_grid_job", "start_sweep_process": "start_grid_process", "get_sweep_job": "get_grid_job",
    "running_sweep_job": "running_grid_job",
}


def __getattr__(name: str):
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module 'metacog.patching' has no attribute {name!r}")
    import warnings

    warnings.warn(f"metacog.patching.{name} is deprecated: use {new} (a patching 'grid'; 'sweep' is metacog.sweeps')",
                  DeprecationWarning, stacklevel=2)
    return globals()[new]
