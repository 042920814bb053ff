"""The app layer's one import for the pages: ``from metacog.app import ui`` then ``ui.x``.

It re-exports the public names of the ``metacog.app`` modules, one concern each:

- :mod:`metacog.app.state` — workspace naming, the picker, ``?ws=`` confinement, uploads;
- :mod:`metacog.app.loader` — the app's loaded model and how a test injects its own;
- :mod:`metacog.app.launch` — background jobs (study, methods, seed sweep, steering, patching) on
  :mod:`metacog.core.jobs`;
- :mod:`metacog.app.readers` — cached artifact readers and the backend calls that score them;
- :mod:`metacog.app.widgets` — figures and tables with downloads, item links, definitions, guard;
- :mod:`metacog.app.panels` — header, small-sample warnings, noise-floor caption, "run the
  study first", job progress and outcome;
- :mod:`metacog.app.patching_view` — the Patching page's cached sweep readers and tables.

Pages stay thin: they read artifacts through these, call :mod:`metacog.viz.plots` builders and
backend functions, and display the result; no page computes a metric. A test that changes a
setting patches the module that defines it (``metacog.app.state.FIRST_LOOK_ITEMS``).
"""
from __future__ import annotations

from metacog.app.launch import (STUDIES, busy_elsewhere, clear_job, default_stages, estimate_text, get_job, job_kind,
                                known_kinds, probes_available, register_kind, running_job, start_first_look,
                                start_methods, start_patching, start_seed_sweep, start_steering, start_study,
                                wait_job)
from metacog.app.loader import LOADER_ENV, get_lm, in_process_models, model_loader, set_model_loader
from metacog.app.panels import (NEXT_PAGES, fmt_secs, header, job_outcome, job_panel, job_progress, noise_floor_caption,
                                require, run_button, sample_warnings, sidebar_status, what_next)
from metacog.app.readers import (MODE_KEYS, SPLITS, mode_keys, two_pass_note, artifact_status, has, item_distributions, model_name, mtime, oof,
                                 probe_metrics, probe_positions, readout_metrics, readouts, reliability, results,
                                 split_frame, stamp, summary, type_prior_auroc)
from metacog.app.state import (DEFAULT_STUDY, FIRST_LOOK_ITEMS, allowed_roots, confine, current_workspace,
                               default_root, default_settings, first_look_root, list_workspaces, save_upload,
                               select_workspace, workspace_label, workspace_picker, workspace_root_for,
                               workspaces_dir)
from metacog.app.widgets import (ITEM_PAGE, LINK_COLUMN, PLOTLY_CONFIG, csv_bytes, definitions, guard, item_url,
                                 show_figure, show_table, with_links)
from metacog.core.workspace import Workspace, WorkspaceError

__all__ = [
    # state
    "DEFAULT_STUDY", "FIRST_LOOK_ITEMS", "allowed_roots", "confine", "current_workspace", "default_root",
    "default_settings", "first_look_root", "list_workspaces", "save_upload", "select_workspace", "workspace_label",
    "workspace_picker", "workspace_root_for", "workspaces_dir",
    # loader
    "LOADER_ENV", "get_lm", "in_process_models", "model_loader", "set_model_loader",
    # launch
    "STUDIES", "busy_elsewhere", "clear_job", "default_stages", "estimate_text", "get_job", "job_kind", "known_kinds",
    "probes_available", "register_kind", "running_job", "start_first_look", "start_methods", "start_patching",
    "start_seed_sweep",
    "start_steering", "start_study", "wait_job",
    # readers
    "MODE_KEYS", "SPLITS", "mode_keys", "two_pass_note", "artifact_status", "has", "item_distributions", "model_name", "mtime", "oof",
    "probe_metrics", "probe_positions", "readout_metrics", "readouts", "reliability", "results", "split_frame",
    "stamp", "summary", "type_prior_auroc",
    # widgets
    "ITEM_PAGE", "LINK_COLUMN", "PLOTLY_CONFIG", "csv_bytes", "definitions", "guard", "item_url", "show_figure",
    "show_table", "with_links",
    # panels
    "NEXT_PAGES", "fmt_secs", "header", "job_outcome", "job_panel", "job_progress", "noise_floor_caption", "require",
    "run_button", "sample_warnings", "sidebar_status", "what_next",
    # workspace types the pages name
    "Workspace", "WorkspaceError",
]
