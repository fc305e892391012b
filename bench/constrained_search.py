"""Constraints inside the sampler vs. constraints only as a final filter (issue 21, part 2).

Same task as ``bench/search_efficiency.py`` (spurious TextBox, SMERF CNN, IxG at
the input, Energy or L1 loss, objectives F1 / EPG / IoU on the validation split,
λ log-uniform per loss in ``--lam-range``, papers' units). For every seed and
sampler, one run performs two searches through
:func:`mg_tune.search.runner.run_search` unchanged, with the same seed, trials
and epochs:

* **<sampler>+constrained** -- the spec names the constraint (default
  ``f1 >= 0.9``): each completed trial's violation reaches the sampler
  (``Trial.set_constraint``; TPE's and GP's feasibility-aware acquisition);
* **<sampler>** -- the spec names none, so the sampler proposes blind; the
  constraint is applied afterwards, as a filter of the front (what mg-tune did
  before issue 21).

Both are scored the same way, from the checkpoint table in MLflow, under the
constraint: a (trial, epoch) checkpoint is *feasible* when it meets it, and
the feasible hypervolume after ``s`` trial-epochs is::

    HV_s = normalized_hypervolume({y(trial, epoch) feasible : the first s checkpoints by creation time},
                                  bounds = (0, 1) per objective)        (mg_tune.front.hypervolume_curve)

the curve ``HypervolumeTracker`` logs for a constrained search. Per search:
the share of infeasible checkpoints, the share of trials whose last epoch is
infeasible, the final feasible HV, and the trial-epochs the constrained search
needs to reach the blind search's final feasible HV (same seed), as a ratio
to the blind search's trial-epochs (< 1: the constrained search gets to the
same feasible front sooner). Tables give every seed, then median [IQR] and
mean ± 95 % t-interval over seeds; ``--plot`` draws the median feasible HV
against trial-epochs with the interquartile band.

    nice -n 19 python bench/constrained_search.py --seeds 0 1 2 --json bench/results/constrained_search.json --plot docs/constrained_search.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import (  # noqa: E402
    LOSSES, OBJECTIVES, _ci, _iqr, add_task_arguments, bench_spec, epochs_to_reach, hypervolume_at, run_one_by_one,
)
from stats import fmt_ci  # noqa: E402

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def score(table: Any, constraint: str) -> dict[str, Any]:
    """The feasible-HV history (:func:`mg_tune.front.hypervolume_curve` under the constraint) and infeasible shares of one search's checkpoint table."""
    from mg_tune.front import hypervolume_curve, mark_pareto

    result = mark_pareto(table, OBJECTIVES, [True] * len(OBJECTIVES), [constraint])
    curve = hypervolume_curve(result)
    history = [(int(k), float(hv)) for k, hv in zip(curve["trial_epochs"], curve["hypervolume"])]
    feasible = result.table["feasible"]
    last = result.table.sort_values(["trial_id", "epoch"]).groupby("trial_id").tail(1)
    return {
        "trial_epochs": len(result.table),
        "infeasible_checkpoints": float(1 - feasible.mean()) if len(feasible) else math.nan,
        "infeasible_trials": float(1 - last["feasible"].mean()) if len(last) else math.nan,
        "hypervolume": history[-1][1] if history else 0.0,
        "history": history,
        "trials_sampled": [{"loss": r["params.loss"], "lam": float(r["params.lam"]), "f1": float(r["f1"]), "feasible": bool(r["feasible"])}
                           for r in last.to_dict("records")],
    }


def run(args: argparse.Namespace, root: Path, save: Any) -> list[dict[str, Any]]:
    """Every (seed, sampler, constrained or not) search; ``save(rows)`` after each one."""
    from mg_tune.checkpoint_table import checkpoint_table

    plan = []
    for seed, sampler, constrained in [(seed, sampler, c) for seed in args.seeds for sampler in args.samplers for c in (True, False)]:
        method = f"{sampler}+constrained" if constrained else sampler
        raw = {**bench_spec(sampler, seed, args.lam_range, args, root), "name": f"con-{method.replace('+', '-')}-{seed}",
               "constraints": [args.constraint] if constrained else []}
        plan.append(((seed, sampler, method), raw))
    rows: list[dict[str, Any]] = []
    for i, ((seed, sampler, method), raw, outcome, wall, uri) in enumerate(run_one_by_one(plan, root, args.concurrency), 1):
        rows.append({"seed": seed, "sampler": sampler, "method": method, "search": raw["name"], "trials": outcome.trials,
                     "errors": outcome.errors, "wall_s": wall, **score(checkpoint_table(uri, raw["name"]), args.constraint)})
        r = rows[-1]
        print(f"[{i}/{len(plan)}] seed {seed} {method:>16}: {r['trial_epochs']} trial-epochs, infeasible {r['infeasible_checkpoints']:.0%} "
              f"of checkpoints, feasible HV {r['hypervolume']:.4f}, {r['wall_s']:.0f} s", flush=True)
        save(rows)
    return rows


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each constrained row with the trial-epochs it needs to reach its blind twin's final feasible HV (same seed, sampler)."""
    out = []
    for r in rows:
        blind = next((b for b in rows if b["seed"] == r["seed"] and b["method"] == r["sampler"]), None)
        if r["method"] == r["sampler"] or blind is None:
            continue
        reached = epochs_to_reach(r["history"], blind["hypervolume"])
        out.append({**r, "blind_hypervolume": blind["hypervolume"], "epochs_to_blind_hv": reached,
                    "ratio_to_blind": reached / blind["trial_epochs"], "hv_difference": r["hypervolume"] - blind["hypervolume"]})
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the per-seed table and the summaries over seeds."""
    print(f"\n## Constraint {args.constraint!r} in the sampler vs as a final filter; λ range {args.lam_range}; {args.trials} trials x {args.epochs} epochs\n")
    print("| method | seed | trial-epochs | infeasible checkpoints | trials ending infeasible | final feasible HV |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["sampler"], r["method"], r["seed"])):
        print(f"| {r['method']} | {r['seed']} | {r['trial_epochs']} | {r['infeasible_checkpoints']:.0%} | {r['infeasible_trials']:.0%} | {r['hypervolume']:.4f} |")
    print("\nOver seeds: median [interquartile range] and mean ± 95 % t-interval\n")
    print("| method | seeds | infeasible checkpoints, % | trials ending infeasible, % | final feasible HV | HV at half the budget |")
    print("|---|---:|---:|---:|---:|---:|")
    half = args.trials * args.epochs // 2
    methods = list(dict.fromkeys(r["method"] for r in sorted(rows, key=lambda r: (r["sampler"], r["method"]))))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        print(f"| {method} | {len(mine)} | {fmt_ci([100 * r['infeasible_checkpoints'] for r in mine], 0)} | {fmt_ci([100 * r['infeasible_trials'] for r in mine], 0)} | "
              f"{_iqr([r['hypervolume'] for r in mine], 4)} | {_iqr([hypervolume_at(r['history'], half) for r in mine], 4)} |")
    if all("trials_sampled" in r for r in rows):
        print("\nWhere the searches sampled (all seeds' trials): trials per loss, λ median [IQR], share of the loss's trials ending feasible\n")
        print("| method | " + " | ".join(f"{loss}: trials, λ, feasible" for loss in LOSSES) + " |")
        print("|---|" + "---:|" * len(LOSSES))
        for method in methods:
            trials = [t for r in rows if r["method"] == method for t in r["trials_sampled"]]
            cells = []
            for loss in LOSSES:
                mine = [t for t in trials if t["loss"] == loss]
                q = np.percentile([t["lam"] for t in mine], [25, 50, 75]) if mine else [math.nan] * 3
                share = sum(t["feasible"] for t in mine) / len(mine) if mine else math.nan
                cells.append(f"{len(mine)}, {q[1]:.2g} [{q[0]:.2g}, {q[2]:.2g}], {share:.0%}")
            print(f"| {method} | " + " | ".join(cells) + " |")
    compared = compare(rows)
    if compared:
        print("\nConstrained vs blind (same seed): trial-epochs until the constrained search's feasible HV reaches the blind search's final one, / the blind search's trial-epochs\n")
        print("| sampler | per seed | median [IQR] | final feasible HV, constrained − blind |")
        print("|---|---|---:|---:|")
        for sampler in dict.fromkeys(r["sampler"] for r in compared):
            mine = sorted((r for r in compared if r["sampler"] == sampler), key=lambda r: r["seed"])
            per_seed = ", ".join("∞" if math.isinf(r["ratio_to_blind"]) else f"{r['ratio_to_blind']:.2f}" for r in mine)
            print(f"| {sampler} | {per_seed} | {_iqr([r['ratio_to_blind'] for r in mine])} | {_ci([r['hv_difference'] for r in mine])} |")


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """Median feasible HV over seeds against trial-epochs, interquartile band, per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    colors = dict(zip(dict.fromkeys(r["sampler"] for r in rows), ["tab:orange", "tab:green", "tab:blue", "tab:gray"]))
    steps = np.arange(0, max(r["trial_epochs"] for r in rows) + 1)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        curves = np.array([[hypervolume_at(r["history"], s) for s in steps] for r in mine])
        q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
        color = colors[mine[0]["sampler"]]
        ax.step(steps, med, where="post", color=color, ls="-" if "+constrained" in method else "--", label=f"{method} (n={len(mine)})")
        ax.fill_between(steps, q1, q3, step="post", color=color, alpha=0.1, lw=0)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(f"feasible-front HV ({args.constraint}), median + IQR")
    ax.set_title(f"Constraint in the sampler (solid) vs final filter only (dashed); λ range {args.lam_range}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "gp"], choices=["random", "tpe", "nsga2", "gp"])
    parser.add_argument("--constraint", default="f1 >= 0.9")
    parser.add_argument("--lam-range", default="1e-5,1", help="'default' or LOW,HIGH (papers' units) for both losses")
    add_task_arguments(parser)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--json", type=Path, help="write all numbers here (rewritten after every search)")
    parser.add_argument("--plot", type=Path, help="write the feasible-HV-vs-trial-epochs plot (PNG) here")
    parser.add_argument("--report-only", type=Path, metavar="JSON", help="print the tables (and --plot) from a previous --json; runs nothing")
    args = parser.parse_args(argv)
    args.asha_trials = args.trials  # bench_spec reads it for MO-ASHA searches, which this bench does not run

    if args.report_only:
        saved = json.loads(args.report_only.read_text())
        for key in ("constraint", "lam_range", "epochs", "trials"):
            setattr(args, key, saved["args"][key])
        rows = [{k: (math.inf if v is None and k.startswith("epochs_to") else v) for k, v in r.items()} for r in saved["runs"]]
    else:
        root = Path(tempfile.mkdtemp(prefix="mg-constrained-"))
        started = time.time()

        def save(rows: list[dict[str, Any]]) -> None:
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "wall_s": time.time() - started, "runs": rows,
                }, indent=2, default=str) + "\n")

        try:
            rows = run(args, root, save)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    report(rows, args)
    if args.plot:
        plot(rows, args, args.plot)
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
