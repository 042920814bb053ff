"""Settings of the methods comparison (one frozen dataclass; every field is recorded).

Public entry: :class:`MethodSettings`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from metacog.core.settings import to_dict


class MethodSettingsError(ValueError):
    """An invalid methods setting (the message names the field and its allowed range)."""


@dataclass(frozen=True)
class MethodSettings:
    """Every setting of the methods comparison (frozen; each method's freshness key holds the
    fields it depends on). Units: ``temperature`` a softmax temperature (0, 5]; ``tune_updates``
    optimizer updates; ``tune_lr`` a learning rate; ``n_comparisons`` pairwise matchups;
    ``bt_prior`` the Bradley–Terry L2 strength λ; ``elo_k`` Elo's K on the 400-point scale;
    ``steer_gain`` multiples of σ (the train states' spread along the probe direction);
    ``steer_layer`` a hidden-state index; ``ece_bins`` equal-width bins; ``n_boot`` bootstrap resamples.

    Raises:
        MethodSettingsError: on construction, for a value out of range."""
    # which items: the calibration split (post-hoc fits) and the eval split (metrics)
    eval_limit: int | None = None  # first N eval items by row (None = all)
    calibration_limit: int | None = None  # first N calibration items by row (None = all)
    batch_size: int = 16
    seed: int = 0
    # self-consistency
    k_samples: int = 5
    temperature: float = 1.0
    # relative confidence
    n_comparisons: int = 2000
    bt_prior: float = 0.1  # L2 (Gaussian prior) strength of the Bradley-Terry fit
    elo_k: float = 32.0
    # training methods (calibration-tuning, Brier tuning): short LoRA runs
    tune_updates: int = 24
    tune_rank: int = 8
    tune_lr: float = 1e-4
    tune_batch_size: int = 4
    tune_target_modules: str = "auto"  # LoRA targets: auto (the architecture's default), all-linear, or names a,b
    probe_run: str | None = None  # probe-targeted: use this finished run of the workspace (None = train a short one)
    brier_format: str = "inline"  # where Brier tuning reads the 0-100 distribution: inline | two-pass
    # probe-conditioned steering: shift = steer_gain * 2(p - 0.5) * sigma along the probe direction at steer_layer
    steer_gain: float = 4.0
    steer_layer: int | None = None  # hidden-state index written (None = probe layer + ceil(L/6))
    # post-hoc calibration and metrics
    ece_bins: int = 10
    n_boot: int = 1000

    def __post_init__(self):
        def bad(msg):
            raise MethodSettingsError(msg)

        for f in ("eval_limit", "calibration_limit"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 2):
                bad(f"{f} must be an integer >= 2 (or None for all), not {v!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 1024:
            bad(f"batch_size must be an integer 1..1024, not {self.batch_size!r}")
        if not isinstance(self.k_samples, int) or not 1 <= self.k_samples <= 100:
            bad(f"k_samples must be an integer 1..100, not {self.k_samples!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature <= 5):
            bad(f"temperature must be in (0, 5], not {self.temperature!r}")
        if not isinstance(self.n_comparisons, int) or not 1 <= self.n_comparisons <= 1_000_000:
            bad(f"n_comparisons must be an integer 1..1,000,000, not {self.n_comparisons!r}")
        if not (self.bt_prior >= 0) or not (self.elo_k > 0):
            bad("bt_prior must be >= 0 and elo_k > 0")
        if not isinstance(self.tune_updates, int) or not 1 <= self.tune_updates <= 100_000:
            bad(f"tune_updates must be a positive integer, not {self.tune_updates!r}")
        if not isinstance(self.tune_rank, int) or self.tune_rank < 1:
            bad(f"tune_rank must be a positive integer, not {self.tune_rank!r}")
        if not (0 < self.tune_lr < 1):
            bad(f"tune_lr must be in (0, 1), not {self.tune_lr!r}")
        if self.probe_run is not None and (not isinstance(self.probe_run, str) or not self.probe_run.strip()):
            bad(f"probe_run must be a run id of the workspace, not {self.probe_run!r}")
        if self.brier_format not in ("inline", "two-pass"):
            bad(f"brier_format must be inline or two-pass, not {self.brier_format!r}")
        if not (isinstance(self.steer_gain, (int, float)) and math.isfinite(self.steer_gain)):
            bad(f"steer_gain must be a finite number, not {self.steer_gain!r}")
        if self.steer_layer is not None and (not isinstance(self.steer_layer, int) or self.steer_layer < 0):
            bad(f"steer_layer must be a hidden-state index >= 0 (or None), not {self.steer_layer!r}")
        if not isinstance(self.ece_bins, int) or self.ece_bins < 1:
            bad(f"ece_bins must be a positive integer, not {self.ece_bins!r}")

    def pick(self, fields) -> dict:
        """The values of ``fields`` as a dict (JSON-able), e.g. a method's settings for its key."""
        d = to_dict(self)
        return {f: d[f] for f in fields}
