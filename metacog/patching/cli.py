"""`metacog patch`: activation-patching grids from the command line (registered by cli._extend).

Examples::

    # item → item in the workspace's model: the 20 highest-probe items into the 20 lowest
    metacog patch --workspace cache/workspaces/demo --source high --target low --by probe --pairs 20 \\
        --layers all --positions confidence,last-prompt,random:3 --seed 0

    # model → model: a fine-tuning run's adapter into the base model, 50 eval items (and back)
    metacog patch --workspace cache/workspaces/demo --source RUN_ID --target base --pairs 50
    metacog patch --workspace cache/workspaces/demo --source base --target RUN_ID --pairs 50

    metacog patch --workspace cache/workspaces/demo --list        # saved grids
"""
from __future__ import annotations

import json
import sys
from metacog.cli import add_runtime_overrides, fmt_num, fmt_p


def _fmt_pad(x, nd=2):
    return fmt_num(x, nd, missing="  n/a")


def register(sub) -> None:
    """Add ``metacog patch`` (a patching grid: plan, run or resume, print the across-pairs tests;
    ``--list`` the saved grids) to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "patch",
        help="activation patching: confidence slot vs random positions, every layer, exact 0-100 readout",
        description="Write a source's hidden state into a target's forward at (component, layer, position) and read the "
        "target's exact 0-100 distribution at the confidence slot. Writes patching/<grid>/results.parquet, results.csv, "
        "pairs.parquet and patching.json (layer gradients tested across pairs: mean per-pair Spearman rho of layer vs normalised shift, "
        "sign-flip p, bootstrap CI over pairs; each position vs the random positions; Holm-corrected per-layer tests). "
        "A re-run of the same grid resumes; Ctrl-C keeps the finished rows.",
    )
    p.add_argument("--workspace", required=True, help="workspace directory (answers needed; E[v]/probes to rank items)")
    p.add_argument("--source", default="high", help="base | RUN (a fine-tuning run id or adapter dir) | ITEM id | high | low | random (default high)")
    p.add_argument("--target", default="low", help="same choices as --source (default low): both models (model → model) or both items (item → item)")
    p.add_argument("--pairs", type=int, default=10, help="number of pairs (model → model: items; item → item: matched high/low items), default 10")
    p.add_argument("--layers", default="all", help="all (outputs of every block, 1..L) | A-B | comma list | every:K; 0 = embeddings (default all)")
    p.add_argument("--positions", default="confidence,random:3",
                   help="comma list of confidence, last-prompt, last-answer, random:K, token:I (default confidence,random:3)")
    p.add_argument("--random-from", default="item", choices=["item", "template", "all"],
                   help="where random:K draws: item = the item's question and answer tokens (default; the control), template = "
                        "chat template, system prompt, instruction and Confidence: suffix, all = both")
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
    add_runtime_overrides(p)
    p.add_argument("--list", action="store_true", help="list the grids saved in the workspace and exit")
    p.add_argument("--json", action="store_true", help="print the grid's patching.json instead of the text summary (the grid runs, or a finished one with the same settings is reused: see --list)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_patch)


def _ci(ci) -> str:
    ci = ci or [None, None]
    return f"[{_fmt_pad(ci[0])}, {_fmt_pad(ci[1])}]"


def print_summary(s: dict) -> None:
    """The grid's across-pairs inference: per component × position group the layer gradient
    (mean per-pair ρ, its CI and p, n pairs, unit), each group vs the random positions, and
    the layers whose Holm-corrected per-layer p is below 0.05 (docs/SCIENCE.md)."""
    print(f"grid {s['grid_id']}: {s.get('kind', '?')} {s.get('source')} → {s.get('target')} | {s.get('n_pairs')} pair(s), "
          f"{s.get('n_rows')} rows | {'complete' if s.get('complete') else 'INCOMPLETE (stopped)'} | {s.get('seconds')} s, "
          f"{s.get('threads')} thread(s)")
    print(f"normalised shift = (patched - target)/(source - target); pairs with |source - target| < {s.get('min_denominator')} "
          f"points: {s.get('n_small_denominator', 0)} (reported, left out of the normalised numbers)")
    rp = s.get("random_positions")
    if rp:
        cls = ", ".join(f"{k} {v}" for k, v in sorted(rp.get("classes", {}).items()))
        print(f"random positions drawn from: {rp.get('from')} tokens ({rp.get('n_draws')} draws: {cls})")
    t = s.get("tests") or {}
    corr = t.get("correction", "holm")
    print(f"unit: {t.get('unit', 'pair')} | rho = mean over pairs of each pair's Spearman rho(layer, normalised shift); "
          f"p: sign-flip test across pairs; CI: 95% bootstrap over pairs; per-layer p corrected by {corr}; "
          f"rho of the layer means is descriptive only")
    warned = False
    for key, g in (s.get("gradients") or {}).items():
        n = g["normalised"]
        lay = (s.get("layers") or {}).get(key, {})
        sig = [h for h, p in zip(lay.get("layer", []), lay.get("p_holm", [])) if p is not None and p < 0.05]
        print(f"  {key:22s} rho {_fmt_pad(n['rho'])} {_ci(n['ci'])} p {fmt_p(n['p'])} | n_pairs {n['n_pairs']} "
              f"(unit {n.get('unit', 'pair')}), {n.get('n_layers')} layers | {corr}-corrected layers p<0.05: "
              f"{len(sig)}/{len(lay.get('layer', []))}{(' (' + ','.join(map(str, sig[:12])) + ('…' if len(sig) > 12 else '') + ')') if sig else ''}"
              f" | descriptive rho of layer means {_fmt_pad(n.get('rho_of_means'))} | raw-shift rho {_fmt_pad(g['shift']['rho'])}")
        if not warned and n.get("n_pairs") and n.get("min_p", 0) > 0.05:
            print(f"  note: with {n['n_pairs']} pair(s) the smallest attainable p is {n['min_p']:.3g}: too few pairs to reject at 0.05 "
                  f"(6 or more are needed)")
            warned = True
    for key, c in (s.get("contrasts") or {}).items():
        e, gr = c["normalised"]["effect"], c["normalised"]["gradient"]
        print(f"  {key:22s} per-pair difference: effect {_fmt_pad(e['diff'])} {_ci(e['ci'])} p {fmt_p(e['p'])}, "
              f"rho {_fmt_pad(gr['diff'])} {_ci(gr['ci'])} p {fmt_p(gr['p'])} | n_pairs {c['normalised']['n_pairs']} (unit pair)")
    for k, v in (s.get("files") or {}).items():
        print(f"  {k}: {v}")


def _stop_on_signals():
    """Ctrl-C and ``kill`` (SIGTERM) stop a grid the same way: the finished rows are written
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
    """Run ``metacog patch``: load the workspace's model (``--dtype``/``--device``/``--threads``
    override it), plan the grid, run or resume it with a progress bar, print its summary (or
    ``--json``). Returns the exit code: 0, or 130 when stopped (SIGINT/SIGTERM; finished rows kept).
    Bad input raises :class:`~metacog.patching.spec.PatchError` before any model work."""
    from metacog import patching as P
    from metacog.model.loading import load_model
    from metacog.core.runtime import Stopped, TqdmProgress
    from metacog.core.settings import from_dict, to_dict
    from metacog.stages.study import open_workspace

    ws = open_workspace(args.workspace)
    if args.list:
        for s in P.list_grids(ws):
            print(f"{s['grid_id']}  {s.get('kind', '?'):5s} {s.get('source')} → {s.get('target')}  pairs {s.get('n_pairs')}  "
                  f"{'complete' if s.get('complete') else 'incomplete'}  {s.get('created', '')}"
                  + ("  stale: made on earlier answers of this study (it was rerun since)" if s.get("stale") else ""))
        return 0
    m0, _ = ws.settings()
    md = to_dict(m0)
    for k in ("threads", "dtype", "device"):
        if getattr(args, k) is not None:
            md[k] = getattr(args, k)
    from metacog.core.settings import ModelSettings

    model = from_dict(ModelSettings, md)
    spec = P.PatchSpec(
        layers=None, positions=args.positions, components=args.components, seed=args.seed,
        min_denominator=P.DEFAULT_MIN_DENOMINATOR if args.min_denominator is None else args.min_denominator,
        check_answer=not args.no_answer_check, random_from=args.random_from,
    )
    for name, v, lo in (("--batch", args.batch, 1), ("--pairs", args.pairs, 1), ("--seed", args.seed, 0)):
        if v is not None and v < lo:  # before the model loads and before anything is written
            raise P.PatchError(f"{name} must be an integer >= {lo}, not {v}")
    print(f"workspace: {ws.root}", file=sys.stderr)
    print(f"model: {model.model}  device: {model.device}  dtype: {model.dtype}  threads: {model.threads}", file=sys.stderr)
    lm = load_model(model)
    layers = P.parse_layers(args.layers, lm.n_layers)
    spec = P.PatchSpec(layers=layers, positions=spec.positions, components=spec.components, seed=spec.seed,
                       min_denominator=spec.min_denominator, check_answer=spec.check_answer, random_from=spec.random_from)
    items = [x.strip() for x in args.items.split(",")] if args.items else None
    plan = P.plan_grid(ws, lm, args.source, args.target, spec, n_pairs=args.pairs, by=args.by, split=args.split,
                        source_correct=args.source_correct, target_correct=args.target_correct, items=items)
    print(f"{len(plan.pairs)} {plan.pairs[0].kind} → {plan.pairs[0].kind} pair(s), {plan.n_units()} (pair, position) units, "
          f"{len(spec.components)} component(s) x {len(spec.layer_list(lm.n_layers, spec.components[0]))} layers each; "
          f"grid {plan.grid_id}", file=sys.stderr)
    prog = TqdmProgress(disable=args.quiet)
    restore = _stop_on_signals()
    try:
        summary = P.run_grid(ws, plan, progress=prog, method=args.method, max_batch=args.batch)
    except (KeyboardInterrupt, Stopped):
        prog.close()
        print(f"metacog: stopped; the finished rows are in {P.grid_dir(ws, plan.grid_id)} and a re-run resumes", file=sys.stderr)
        return 130
    finally:
        restore()
        prog.close()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0
