"""``metacog steer``: a steering sweep (directions × layers × α) with the exact 0–100 readout
and its across-items statistics (metacog/steering/__init__.py, docs/STEERING.md)."""
from __future__ import annotations

import json
import sys
from metacog.cli import add_runtime_overrides, fmt_num, fmt_p


def register(sub) -> None:
    """Add ``metacog steer`` (a steering sweep: directions × layers × α, the exact 0–100 readout
    and its across-items tests; ``--list`` the saved sweeps) to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "steer",
        help="steering along the probe direction (and controls): dose-response of the exact 0-100 readout",
        description="Add alpha * sigma_d * d to the residual stream at hidden-state index h (at the confidence slot, or at "
        "every position from the answer on) and read the exact 0-100 distribution (E[v], argmax), the greedy verbal "
        "confidence and (from-answer) the regenerated answer. Directions from the train split: probe, mean-diff, random "
        "(matched norm; always added as the control), probe-minus-type. Writes steering/<id>/results.parquet (one row per "
        "item x direction x layer x alpha) and steering.json (per item shifts vs alpha=0; direction - random per item, "
        "sign-flip test across items, Holm over the grid, bootstrap CIs over items). A re-run resumes.",
    )
    p.add_argument("--workspace", required=True, help="workspace with answers, activations and probes")
    p.add_argument("--layers", default="every:5", help="hidden-state indices: comma list | A-B | every:K | all (default every:5)")
    p.add_argument("--alphas", default="-4,-2,2,4,8", help="multiples of sigma_d, comma list (0 is always the baseline); write --alphas=-4,-2,2 when the list starts with a minus")
    p.add_argument("--direction", default="probe", help="probe | mean-diff | random | probe-minus-type, or a comma list "
                                                        "(random is always run too: the paired control)")
    p.add_argument("--where", default="slot", choices=["slot", "from-answer"], help="slot = the confidence slot only; "
                   "from-answer = every position from the first answer token on (the answer is also regenerated)")
    p.add_argument("--position", default="confidence", choices=["confidence", "last_answer", "last_prompt"],
                   help="position whose train states define the directions and sigma (default confidence)")
    p.add_argument("--split", default="eval", choices=["eval", "calibration", "train", "all"], help="items steered (default eval)")
    p.add_argument("--limit", type=int, default=None, help="first N items of the split by row")
    p.add_argument("--seed", type=int, default=0, help="seed of the random direction")
    p.add_argument("--no-verbal", action="store_true", help="skip the greedy verbal confidence (exact readout only)")
    p.add_argument("--no-answers", action="store_true", help="from-answer: do not regenerate the answers")
    p.add_argument("--chunk", type=int, default=16, help="items per saved chunk / batch (default 16)")
    add_runtime_overrides(p)
    p.add_argument("--list", action="store_true", help="list the sweeps saved in the workspace and exit")
    p.add_argument("--json", action="store_true", help="print steering.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_steer)


def _ci(ci) -> str:
    """A 95% CI as ``[lo, hi]`` (``[n/a, n/a]`` where it could not be computed)."""
    lo, hi = (list(ci) + [None, None])[:2] if ci else (None, None)
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def print_summary(s: dict) -> None:
    """Per direction and layer: the per-item dose-response slope (E[v] points per sigma) of the
    direction and of random, their difference with CI and p (Holm over layers); the cells whose
    Holm-corrected contrast p < 0.05."""
    print(f"steering {s['id']}: {s['n_items']} items | where {s['spec']['where']} | layers {s['spec']['layers']} | "
          f"alphas {s['spec']['alphas']} | {s['seconds']} s, {s['threads']} thread(s)")
    print(f"unit: {s['unit']} | shift = E[v](alpha) - E[v](0) per item | slope = OLS of shift on alpha (points per sigma) | "
          f"test: sign-flip across items | CI: 95% bootstrap over items | {s['correction']}")
    for r in s.get("slopes", []):
        print(f"  {r['direction']:17s} h={r['layer']:3d} slope {fmt_num(r['slope'])} {_ci(r['slope_ci'])} | random "
              f"{fmt_num(r['slope_random'])} | diff {fmt_num(r['slope_diff'])} {_ci(r['ci'])} p {fmt_p(r['p'])} "
              f"p_holm {fmt_p(r['p_holm'])} | |slope|-|random| {fmt_num(r.get('abs_diff'))} "
              f"{_ci(r.get('abs_ci'))} p_holm {fmt_p(r.get('abs_p_holm'))} (n {r['n']})")
    sig = [c for c in s.get("contrasts", []) if c.get("p_holm") is not None and c["p_holm"] < 0.05]
    print(f"  cells with Holm p < 0.05 (direction - random, per item): {len(sig)}/{len(s.get('contrasts', []))}")
    if s.get("n_items", 0) < 6:
        print("  note: with fewer than 6 items no sign-flip test can reach p < 0.05")


def cmd_steer(args) -> int:
    """Run ``metacog steer``: build the :class:`~metacog.steering.run.SteerSpec`, load the model
    (``--dtype``/``--device``/``--threads`` override the workspace's; they are part of the sweep id),
    run or resume the sweep and print its summary (or ``--json``). Returns 0.

    Raises:
        WorkspaceError: no workspace or no complete activation cache.
        ValueError: bad ``--alphas``/``--layers``/spec values."""
    from metacog.model.loading import load_model
    from metacog.core.runtime import TqdmProgress
    from metacog.core.settings import ModelSettings, from_dict, to_dict
    from metacog.steering import SteerSpec, list_sweeps, parse_layers, run_steering
    from metacog.core.workspace import Workspace, WorkspaceError

    ws = Workspace(args.workspace)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace: run `metacog study --workspace {ws.root}` first")
    if args.list:
        for r in list_sweeps(ws):
            sp = r["spec"] or {}
            rt = r.get('runtime') or {}
            print(f"{r['id']}  {r['created']}  {'complete' if r['complete'] else 'incomplete'}  {rt.get('dtype', '?')}/{rt.get('device', '?')}  {sp.get('directions')} "
                  f"{sp.get('where')} layers {sp.get('layers')} alphas {sp.get('alphas')}"
                  + ("  stale: made on an earlier hidden-state cache of this study (it was rerun since)" if r.get("stale") else ""))
        return 0
    try:
        alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
    except ValueError:
        raise ValueError(f"--alphas must be a comma list of numbers, not {args.alphas!r}") from None
    man = ws.read_json("activations/manifest.json") or {}
    if not man.get("complete"):
        raise WorkspaceError(f"no complete activation cache in {ws.root}: run `metacog study --workspace {ws.root}`")
    spec = SteerSpec(layers=parse_layers(args.layers, int(man["n_layers"])), alphas=alphas,
                     directions=tuple(d.strip() for d in args.direction.split(",") if d.strip()), where=args.where,
                     position=args.position, split=args.split, limit=args.limit, seed=args.seed, verbal=not args.no_verbal,
                     answers=not args.no_answers, chunk=args.chunk)
    ms, _ = ws.settings()
    over = {k: v for k, v in (("threads", args.threads), ("dtype", args.dtype), ("device", args.device)) if v is not None}
    lm = load_model(from_dict(ModelSettings, {**to_dict(ms), **over}))
    prog = None if args.quiet else TqdmProgress()
    try:
        s = run_steering(ws, lm, spec, progress=prog)
    finally:
        if prog is not None and hasattr(prog, "close"):
            prog.close()
    if args.json:
        json.dump(s, sys.stdout, indent=1, default=str)
        print()
    else:
        print_summary(s)
        print(f"  files: {ws.path('steering', s['id'])}/results.parquet, steering.json")
    return 0
