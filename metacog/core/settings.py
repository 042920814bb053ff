"""Frozen settings for every stage, and a stable hash of them.

A stage's artifacts are keyed by the hash of everything that changes its result, so a
changed setting invalidates exactly the stages downstream of it and nothing else.

Public entry: :class:`ModelSettings`, :class:`StudySettings` and :func:`stable_hash`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

# Named token positions cached and probed. Defined here once; prompts.py says where they are.
# A study caches INLINE_POSITIONS, plus confidence_2p with StudySettings.two_pass
# (study_positions); a workspace's own list is metacog.stages.study.probe_positions.
POSITIONS = ("last_prompt", "last_answer", "confidence", "confidence_2p")
INLINE_POSITIONS = POSITIONS[:3]
MODES = ("inline", "two-pass")
# what every reader says where a study ran without StudySettings.two_pass (never NaN as data)
TWO_PASS_OFF = "two-pass not computed in this study (metacog study --two-pass)"


def computed_modes(study) -> tuple[str, ...]:
    """The elicitation modes a study computes: ``("inline",)``, plus ``"two-pass"`` with
    ``StudySettings.two_pass`` (docs/SCIENCE.md "Readouts computed")."""
    return MODES if study.two_pass else ("inline",)


def study_positions(two_pass: bool) -> tuple[str, ...]:
    """The positions a study caches and probes: :data:`INLINE_POSITIONS` (the inline sequence),
    plus ``confidence_2p`` (the two-pass sequence) where the study computes the two-pass mode
    (``StudySettings.two_pass``): without it the two-pass forward is not run at all
    (docs/SCIENCE.md "Readouts computed")."""
    return POSITIONS if two_pass else INLINE_POSITIONS


def computed_line(study) -> str:
    """One line for the CLI, the app and logs: which verbal replies and 0-100 readouts the study
    computes (its settings; a resumed stage that is fresh computes nothing)."""
    if study.two_pass:
        return ("this study computes: answers, verbal confidence and exact 0-100 readout, inline and two-pass, "
                "probes at the inline positions and confidence_2p")
    return ("this study computes: answers, inline verbal confidence and inline exact 0-100 readout, "
            "probes at the inline positions (two-pass off; --two-pass adds the two-pass reply, "
            "readout and confidence_2p probes)")
PROMPT_STYLES = ("plain", "reference")
# How a multiple-choice option is scored (docs/SCIENCE.md "Multiple-choice scoring"):
# sum = summed log-likelihood, per_token / per_char = that divided by the option's tokens /
# characters (lm-eval-harness acc_norm is per_char), pmi = log P(option | question) -
# log P(option | neutral prompt).
MC_SCORINGS = ("per_char", "sum", "per_token", "pmi")


def default_threads() -> int:
    """Default torch thread count: the CPUs this process may use (its affinity mask;
    ``os.cpu_count()`` where there is none, as on macOS), clamped to 1..8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@dataclass(frozen=True)
class ModelSettings:
    """Which model and how to run it."""

    model: str = "default"  # "default" | "gemma3-270m" | local HF dir | .gguf path | hub id
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (loading.resolve_dtype: ragged bf16 on CPUs with bf16 units, else float32) | bfloat16 | float16 | float32
    threads: int = field(default_factory=default_threads)
    trust_remote_code: bool = False
    # large models (see metacog.model.arch.load_options): layers spread over devices by accelerate
    device_map: str | None = None  # None: the whole model on `device` | "auto": GPUs, then CPU, then disk
    max_memory: str | None = None  # with device_map auto: per-device caps, e.g. "0=70GiB,1=70GiB,cpu=200GiB"
    offload_dir: str | None = None  # with device_map auto: folder for layers that fit nowhere (disk offload)
    quantize: str | None = None  # None | "8bit" | "4bit" (bitsandbytes; CUDA only)

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, not {self.device!r}")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, not {self.dtype!r}")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            raise ValueError(f"threads must be an integer from 1 to 256, not {self.threads!r}")
        if self.device_map not in (None, "auto"):
            raise ValueError(f"device_map must be auto or unset, not {self.device_map!r}")
        if self.quantize not in (None, "8bit", "4bit"):
            raise ValueError(f"quantize must be 8bit, 4bit or unset, not {self.quantize!r}")
        if (self.max_memory or self.offload_dir) and self.device_map != "auto":
            raise ValueError("max_memory and offload_dir apply with device_map auto")
        if self.max_memory:
            from metacog.model.arch import parse_max_memory

            parse_max_memory(self.max_memory)


@dataclass(frozen=True)
class StudySettings:
    """Everything that shapes the probing study's results (besides the model)."""

    dataset: str = "world-facts"
    limit: int | None = None  # first N items after a seeded shuffle; None = all
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # probe-train, calibration, eval
    prompt_style: str = "plain"  # "plain": the bare question; "reference": the study's inline instruction
    max_new_tokens: int = 32  # answer generation cap (the answer is the first line)
    confidence_max_new_tokens: int = 12  # two-pass verbal confidence generation
    batch_size: int = 32
    probe_folds: int = 5
    ece_bins: int = 10
    mc_scoring: str = "per_char"  # one of MC_SCORINGS: which option is the model's answer
    max_prompt_tokens: int = 1024  # an answer prompt longer than this is refused before any model work
    two_pass: bool = False  # also the two-pass verbal reply and two-pass 0-100 readout (docs/SCIENCE.md "Readouts computed")

    def __post_init__(self):
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer from 0 to 2**32 - 1, not {self.seed!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 10):
            raise ValueError(f"limit must be an integer of at least 10 (or None for all), not {self.limit!r}")
        fr = tuple(float(x) for x in self.split_fractions)
        if len(fr) != 3 or any(x <= 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must be three positive numbers summing to 1, not {self.split_fractions!r}")
        object.__setattr__(self, "split_fractions", fr)
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, not {self.prompt_style!r}")
        if not 1 <= self.max_new_tokens <= 512:
            raise ValueError(f"max_new_tokens must be 1..512, not {self.max_new_tokens}")
        if not 1 <= self.confidence_max_new_tokens <= 128:
            raise ValueError(f"confidence_max_new_tokens must be 1..128, not {self.confidence_max_new_tokens}")
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"batch_size must be 1..1024, not {self.batch_size}")
        if not 2 <= self.probe_folds <= 20:
            raise ValueError(f"probe_folds must be 2..20, not {self.probe_folds}")
        if not 2 <= self.ece_bins <= 100:
            raise ValueError(f"ece_bins must be 2..100, not {self.ece_bins}")
        if self.mc_scoring not in MC_SCORINGS:
            raise ValueError(f"mc_scoring must be one of {', '.join(MC_SCORINGS)}, not {self.mc_scoring!r}")
        if not isinstance(self.max_prompt_tokens, int) or not 16 <= self.max_prompt_tokens <= 131072:
            raise ValueError(f"max_prompt_tokens must be an integer from 16 to 131072, not {self.max_prompt_tokens!r}")
        if not isinstance(self.two_pass, bool):
            raise ValueError(f"two_pass must be true or false, not {self.two_pass!r}")


def to_dict(obj: Any) -> dict:
    """A settings dataclass as a JSON-able dict (tuples become lists), the inverse of :func:`from_dict`."""
    d = dataclasses.asdict(obj)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def stable_hash(*parts: Any, n: int = 12) -> str:
    """Hash of JSON-able parts (dataclasses are turned into dicts), stable across runs."""
    norm = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# Settings written before a field existed meant its old behaviour, not today's default:
# a workspace from before mc_scoring scored options by their summed log-likelihood.
# A workspace from before two_pass existed computed both modes.
LEGACY_DEFAULTS = {"StudySettings": {"mc_scoring": "sum", "two_pass": True}}


def from_dict(cls, d: dict):
    """Build a settings dataclass from a dict, ignoring unknown keys (forward compatible);
    a key the dict lacks takes its ``LEGACY_DEFAULTS`` value where it has one (backward
    compatible: an old workspace keeps the rule it was run with), else the field default."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in LEGACY_DEFAULTS.get(cls.__name__, {}).items() if k not in d}
    kw.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})
    return cls(**kw)


def parse_split_fractions(text: str) -> tuple[float, float, float]:
    """Parse "train,calibration,eval" fractions (e.g. ``"0.6,0.2,0.2"``). Raises ``ValueError``
    with a message naming the setting (StudySettings checks their range and sum)."""
    msg = (f"--splits must be three positive comma-separated fractions summing to 1 (train,calibration,eval), "
           f"e.g. 0.6,0.2,0.2; not {text!r}")
    try:
        vals = tuple(float(p.strip()) for p in str(text).split(","))
    except ValueError:
        raise ValueError(msg) from None
    if len(vals) != 3 or any(not x > 0 for x in vals) or abs(sum(vals) - 1.0) > 1e-6:
        raise ValueError(msg)
    return vals
