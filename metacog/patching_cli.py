"""`metacog patch`: activation-patching sweeps from the command line (registered by cli._extend).

Examples::

    # item → item in the workspace's model: the 20 highest-probe items into the 20 lowest
    metacog patch --workspace cache/workspaces/demo --source high --target low --by probe --pairs 20 \\
        --layers all --positions confidence,last-prompt,random:3 --seed 0

    # model → model: a fine-tuning run's adapter into the base model, 50 eval items (and back)
    metacog patch --workspace cache/workspaces/demo --source RUN_ID --target base --pairs 50
    metacog patch --workspace cache/workspaces/demo --source base --target RUN_ID --pairs 50

    metacog patch --workspace cache/workspaces/demo --list        # saved sweeps
"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "patch",
        help="activation patching: confidence slot vs random positions, every layer, exact 0-100 readout",
        description="Write a source's hidden state into a target's forward at (component, layer, position) and read the "
        "target's exact 0-100 distribution at the confidence slot. Writes patching/<sweep>/results.parquet, results.csv, "
        "pairs.parquet and patching.json (layer gradients: Spearman rho of layer vs mean normalised shift, per position kind). "
        "A re-run of the same sweep resumes; Ctrl-C keeps the finished rows.",
    )
    p.add_argument("--workspace", required=True, help="workspace directory (answers needed; E[v]/probes to rank items)")
    p.add_argument("--source", default="high", help="base | RUN (a fine-tuning run id or adapter dir) | ITEM id | high | low | random (default high)")
    p.add_argument("--target", default="low", help="same choices as --source (default low): both models (model → model) or both items (item → item)")
    p.add_argument("--pairs", type=int, default=10, help="number of pairs (model → model: items; item → item: matched high/low items), default 10")
    p.add_argument("--layers", default="all", help="all (outputs of every block, 1..L) | A-B | comma list | every:K; 0 = embeddings (default all)")
    p.add_argument("--positions", default="confidence,random:3",
                   help="comma list of confidence, last-prompt, last-answer, random:K, token:I (default confidence,random:3)")
    p.add_argument("--components", default="resid", help="resid, attn, mlp (comma list; default resid)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random positions and of the item draw (default 0)")
    p.add_argument("--by", default="auto", choices=["auto", "probe", "ev", "verbal"],
                   help="score that ranks items for high/low (auto: best-probe p if fitted, else E[v])")
    p.add_argument("--split", default="all", choices=["all", "train", "calibration", "eval"], help="items to draw from (default all)")
    p.add_argument("--items", default=None, help="model → model: comma list of item ids instead of a draw")
    p.add_argument("--source-correct", default="any", choices=["any", "yes", "no"], help="item → item: restrict source items by correctness")
    p.add_argument("--target-correct", default="any", choices=["any", "yes", "no"], help="restrict target items by correctness")
    p.add_argument("--min-denominator", type=float, default=None,
                   help="|E[source] - E[target]| below this (0-100 points) leaves the normalised shift undefined; those pairs are "
                   "reported, not dropped (default 1.0)")
    p.add_argument("--method", default="fast", choices=["fast", "reference"],
                   help="fast: shared prefix + layer-started batched variants; reference: one patched forward per cell")
    p.add_argument("--batch", type=int, default=32, help="variants per batch (memory), default 32")
    p.add_argument("--no-answer-check", action="store_true", help="skip the greedy-answer-unchanged check")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the workspace's setting)")
    p.add_argument("--dtype", default=None, choices=["auto", "bfloat16", "float16", "float32"], help="override the workspace's dtype")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="override the workspace's device")
    p.add_argument("--list", action="store_true", help="list the sweeps saved in the workspace and exit")
    p.add_argument("--json", action="store_true", help="print patching.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_patch)


def _fmt(x, nd=2):
    return "  n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def print_summary(s: dict) -> None:
    print(f"sweep {s['sweep_id']}: {s.get('kind', '?')} {s.get('source')} → {s.get('target')} | {s.get('n_pairs')} pair(s), "
          f"{s.get('n_rows')} rows | {'complete' if s.get('complete') else 'INCOMPLETE (stopped)'} | {s.get('seconds')} s, "
          f"{s.get('threads')} thread(s)")
    print(f"normalised shift = (patched - target)/(source - target); pairs with |source - target| < {s.get('min_denominator')} "
          f"points: {s.get('n_small_denominator', 0)} (reported, left out of the normalised numbers)")
    for key, g in (s.get("gradients") or {}).items():
        n = g["normalised"]
        lay = (s.get("layers") or {}).get(key, {})
        means = lay.get("mean", [])
        top = max((m for m in means if m is not None), default=None)
        print(f"  {key:22s} rho {_fmt(n['rho'])} [{_fmt(n['ci'][0])}, {_fmt(n['ci'][1])}] (Fisher [{_fmt(n['ci_fisher'][0])}, "
              f"{_fmt(n['ci_fisher'][1])}], p {_fmt(n['p'], 3)}) over {n['n_layers']} layers, {n['n_pairs']} pairs | "
              f"max layer mean {_fmt(top)} | raw-shift rho {_fmt(g['shift']['rho'])}")
    for k, v in (s.get("files") or {}).items():
        print(f"  {k}: {v}")


def _stop_on_signals():
    """Ctrl-C and ``kill`` (SIGTERM) stop a sweep the same way: the finished rows are written
    and summarised (``complete: false``) before the process ends. SIGINT is re-armed too: a
    job started in the background by a shell inherits it ignored. Returns the restorer."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    prev = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for sig, h in prev.items():
            signal.signal(sig, h)

    return restore


def cmd_patch(args) -> int:
    from . import patching as P
    from .models import load_model
    from .runtime import Stopped, TqdmProgress
    from .settings import from_dict, to_dict
    from .study import open_workspace

    ws = open_workspace(args.workspace)
    if args.list:
        for s in P.list_sweeps(ws):
            print(f"{s['sweep_id']}  {s.get('kind', '?'):5s} {s.get('source')} → {s.get('target')}  pairs {s.get('n_pairs')}  "
                  f"{'complete' if s.get('complete') else 'incomplete'}  {s.get('created', '')}")
        return 0
    m0, _ = ws.settings()
    md = to_dict(m0)
    for k in ("threads", "dtype", "device"):
        if getattr(args, k) is not None:
            md[k] = getattr(args, k)
    from .settings import ModelSettings

    model = from_dict(ModelSettings, md)
    spec = P.PatchSpec(
        layers=None, positions=args.positions, components=args.components, seed=args.seed,
        min_denominator=P.DEFAULT_MIN_DENOMINATOR if args.min_denominator is None else args.min_denominator,
        check_answer=not args.no_answer_check,
    )
    print(f"workspace: {ws.root}", file=sys.stderr)
    print(f"model: {model.model}  device: {model.device}  dtype: {model.dtype}  threads: {model.threads}", file=sys.stderr)
    lm = load_model(model)
    layers = P.parse_layers(args.layers, lm.n_layers)
    spec = P.PatchSpec(layers=layers, positions=spec.positions, components=spec.components, seed=spec.seed,
                       min_denominator=spec.min_denominator, check_answer=spec.check_answer)
    items = [x.strip() for x in args.items.split(",")] if args.items else None
    plan = P.plan_sweep(ws, lm, args.source, args.target, spec, n_pairs=args.pairs, by=args.by, split=args.split,
                        source_correct=args.source_correct, target_correct=args.target_correct, items=items)
    print(f"{len(plan.pairs)} {plan.pairs[0].kind} → {plan.pairs[0].kind} pair(s), {plan.n_units()} (pair, position) units, "
          f"{len(spec.components)} component(s) x {len(spec.layer_list(lm.n_layers, spec.components[0]))} layers each; "
          f"sweep {plan.sweep_id}", file=sys.stderr)
    prog = TqdmProgress(disable=args.quiet)
    restore = _stop_on_signals()
    try:
        summary = P.run_sweep(ws, plan, progress=prog, method=args.method, max_batch=args.batch)
    except (KeyboardInterrupt, Stopped):
        prog.close()
        print(f"metacog: stopped; the finished rows are in {P.sweep_dir(ws, plan.sweep_id)} and a re-run resumes", file=sys.stderr)
        return 130
    finally:
        restore()
        prog.close()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0
