"""Search efficiency: the papers' fixed λ grid vs. mg-tune's samplers, each with and without MO-ASHA (issues 8, 21).

On the spurious TextBox variant (SMERF CNN, IxG at the input, Energy or L1
localisation loss, objectives F1 / EPG / IoU on the validation split), one
run of this script performs, for every seed ``s`` (training seed and
sampler seed), one after the other on one local Ray instance and one MLflow
store, each through :func:`mg_tune.search.runner.run_search` unchanged:

* **grid** -- the paper's protocol: ``sampler: grid``, i.e. the λ grid of the
  reproducibility study (Table 5) for each loss (3 λ x 2 losses), every
  trial trained for the fixed ``--epochs``, the front over all checkpoints;
  run once per seed and shared by every λ range;
* **random**, **tpe**, **nsga2**, **gp** -- mg-tune's multi-objective search
  over the loss and λ per loss (log-uniform) in each of ``--lam-ranges``
  (``default``: mg-tune's default range, one decade around the paper's
  grid; ``LOW,HIGH``: that range for both losses), ``--trials`` trials of the
  same epochs (the grid's budget);
* **<sampler>+mo_asha** -- the same with ``scheduler: mo_asha`` (grace 1
  epoch, η = 3, ``type: stopping``) and ``--asha-trials`` trials;
* **<sampler>+mo_asha_promotion** (not in the default ``--methods``) -- the
  same with ``type: promotion``: trials pause at a rung and resume later.

λ is in the papers' units everywhere (``lam_reduction: sum``: λ multiplies the
sum of the per-image localization losses of a batch, as the authors' train.py),
so the grid is the paper's guidance strength at this batch size (32).

Every search logs ``hypervolume`` on its parent run after every trial-epoch
(:class:`mg_tune.search.callbacks.HypervolumeTracker`: normalised to
[0, 1]^3, reference point 0, step = trial-epochs spent); this script reads
those histories back from MLflow. With ``HV_grid`` the grid's final
hypervolume and ``E_grid`` its trial-epochs (6 trials x ``--epochs``), per
search::

    E(method)   = the first step at which the method's hypervolume >= HV_grid (∞ if never)
    ratio       = E(method) / E_grid       (targets, in median over seeds: best sampler <= 1/4, with MO-ASHA <= 1/6)
    HV@E_grid   = the method's hypervolume after E_grid trial-epochs (equal budget)

Tables give every seed, then per method and range the median and interquartile
range over seeds (ratio, HV@E_grid) and the mean ± 95 % t-interval of the final
hypervolume's difference to the grid's (same seed); the plot (``--plot``)
shows, per range, the median hypervolume against trial-epochs with the
interquartile band per method. Trial order, and so the step at which a point
is counted, depends on which of the concurrent trials reports first; the
configurations and metrics are deterministic. The JSON (``--json``) is
rewritten after every search, so an interrupted run keeps what it measured;
``--report-only`` prints the tables and plot from it.

    nice -n 5 python bench/search_efficiency.py --seeds 0 1 2 3 4 --json bench/results/search_efficiency.json --plot docs/search_efficiency.png
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
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

OBJECTIVES = ["f1", "epg", "iou"]
LOSSES = ["energy", "l1"]
SAMPLERS = ["random", "tpe", "nsga2", "gp"]
ASHA_TYPES = {"mo_asha": "stopping", "mo_asha_promotion": "promotion"}
DEFAULT_METHODS = ["grid", *SAMPLERS, *(f"{s}+mo_asha" for s in SAMPLERS)]
METHODS = [*DEFAULT_METHODS, *(f"{s}+mo_asha_promotion" for s in SAMPLERS)]
GRID_EPOCHS_FRACTIONS = {"1/4": 1 / 4, "1/6": 1 / 6}


def range_tag(lam_range: str) -> str:
    """A short name of a λ range for search names: ``default`` or ``1e-05-1``."""
    return lam_range if lam_range == "default" else lam_range.replace(",", "-")


def bench_spec(method: str, seed: int, lam_range: str | None, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The search of ``method`` for ``seed`` in ``lam_range`` (None for the grid: ``eff-grid-<seed>``)."""
    sampler, _, scheduler = method.partition("+")
    name = f"eff-grid-{seed}" if sampler == "grid" else f"eff-{range_tag(lam_range)}-{method.replace('+', '-')}-{seed}"
    custom = lam_range not in (None, "default")  # the grid samples the paper's λ values of each loss whatever the range
    lam_by_loss = {loss: [float(v) for v in lam_range.split(",")] for loss in LOSSES} if custom else {}
    raw: dict[str, Any] = {
        "name": name,
        "data": {"variant": "spurious", "train_size": args.train_size, "val_size": args.val_size, "heldout_size": 32, "test_size": 16},
        "fixed": {
            "model": "smerf_cnn", "attribution": "ixg", "layer": "input", "epochs": args.epochs,
            "batch_size": 32, "lr": args.lr, "overlay_images": 0, "seed": seed,
        },
        "space": {"loss": {"choice": LOSSES}, "lam": {"loguniform_by_loss": lam_by_loss}},
        "objectives": OBJECTIVES,
        "sampler": sampler,
        "trials": args.asha_trials if scheduler else args.trials,
        "concurrency": args.concurrency,
        "resources": {"cpu": 1, "gpu": 0},
        "seed": seed,
        "storage_path": str(root / "runs"),
    }
    if scheduler:
        raw["scheduler"] = {"name": "mo_asha", "type": ASHA_TYPES[scheduler], "grace_period": 1, "reduction_factor": 3}
    return raw


def hypervolume_history(tracking_uri: str, name: str) -> list[tuple[int, float]]:
    """``(trial-epochs, hypervolume)`` as logged on the search's parent run."""
    from mlflow import MlflowClient

    from mg_tune.search.callbacks import HYPERVOLUME_METRIC
    from mg_tune.tracking import experiment_name, find_search_run

    client = MlflowClient(tracking_uri)
    parent = find_search_run(client, client.get_experiment_by_name(experiment_name(name)).experiment_id)
    return sorted((m.step, m.value) for m in client.get_metric_history(parent.info.run_id, HYPERVOLUME_METRIC))


def epochs_to_reach(history: list[tuple[int, float]], target: float) -> float:
    """The first step whose hypervolume is >= ``target`` (∞ if none)."""
    return next((step for step, hv in history if hv >= target - 1e-12), math.inf)


def hypervolume_at(history: list[tuple[int, float]], step: float) -> float:
    """The hypervolume after ``step`` trial-epochs: the last value logged at a step <= ``step`` (0 before any)."""
    return max((hv for s, hv in history if s <= step), default=0.0)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3), each an observed value (nearest rank), so that ∞ ("never reached") stays usable."""
    q = np.percentile(np.asarray(values, dtype=float), [25, 50, 75], method="nearest")
    return float(q[0]), float(q[1]), float(q[2])


def _ci(values: list[float]) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stats import fmt_ci

    return fmt_ci(values, 4)


def run_one_by_one(plan: list[tuple[Any, dict[str, Any]]], root: Path, concurrency: int) -> Iterator[tuple[Any, dict[str, Any], Any, float, str]]:
    """Run each ``(key, raw spec)`` of ``plan`` in turn through :func:`run_search`, on one local Ray and one SQLite store in ``root``;
    yield ``(key, raw, outcome, wall seconds, tracking URI)`` after each."""
    import ray
    import yaml
    from mlflow import MlflowClient

    from mg_tune.search.runner import run_search
    from mg_tune.search.spec import SearchSpec

    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # schema migration once
    ray.init(address="local", num_cpus=concurrency, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for key, raw in plan:
            start = time.time()
            outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw, sort_keys=False), uri)
            yield key, raw, outcome, time.time() - start, uri
    finally:
        ray.shutdown()


def run(args: argparse.Namespace, root: Path, save: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """Run every (seed, method, range) search; ``save(rows)`` after each one."""
    from mg_tune.front import checkpoint_table

    rows: list[dict[str, Any]] = []
    keys = [(seed, method, None if method == "grid" else lam_range) for seed in args.seeds for method in args.methods
            for lam_range in (args.lam_ranges if method != "grid" else [None])]
    plan = [(key, bench_spec(key[1], key[0], key[2], args, root)) for key in keys]
    for i, ((seed, method, lam_range), raw, outcome, wall, uri) in enumerate(run_one_by_one(plan, root, args.concurrency), 1):
        table = checkpoint_table(uri, raw["name"])
        history = hypervolume_history(uri, raw["name"])
        rows.append({
            "seed": seed, "method": method, "range": lam_range, "search": raw["name"], "trials": outcome.trials, "errors": outcome.errors,
            "trial_epochs": len(table), "stopped_early": int(table.groupby("trial_id")["epoch"].max().lt(args.epochs).sum()),
            "hypervolume": history[-1][1] if history else 0.0, "history": history, "wall_s": wall,
            "front": outcome.pareto.front[["trial_id", "epoch", "params.loss", "params.lam", *OBJECTIVES]].to_dict("records"),
        })
        print(f"[{i}/{len(plan)}] seed {seed} {method:>14} {lam_range or '':>8}: {len(table)} trial-epochs, "
              f"HV {rows[-1]['hypervolume']:.4f}, {wall:.0f} s", flush=True)
        save(rows)
    return rows


def compare(rows: list[dict[str, Any]], lam_range: str) -> list[dict[str, Any]]:
    """The rows of ``lam_range`` (and the grid's), each with the trial-epochs it needed to reach the grid's final HV
    (same seed), the ratio to the grid's trial-epochs and its HV at the grid's budget; ``+mo_asha`` rows also get the
    trial-epochs to reach the final HV of the same sampler without it."""
    mine = [dict(r) for r in rows if r["range"] in (None, lam_range)]
    for r in mine:
        grid = next((g for g in mine if g["seed"] == r["seed"] and g["method"] == "grid"), None)
        if grid is None:
            continue
        r["grid_hypervolume"] = grid["hypervolume"]
        r["epochs_to_grid_hv"] = epochs_to_reach(r["history"], grid["hypervolume"])
        r["ratio"] = r["epochs_to_grid_hv"] / grid["trial_epochs"]
        r["hv_at_grid_budget"] = hypervolume_at(r["history"], grid["trial_epochs"])
        plain = next((p for p in mine if p["seed"] == r["seed"] and p["method"] == r["method"].partition("+")[0]), None)
        if "+" in r["method"] and plain is not None:
            r["epochs_to_plain_hv"] = epochs_to_reach(r["history"], plain["hypervolume"])
            r["ratio_to_plain"] = r["epochs_to_plain_hv"] / plain["trial_epochs"]
    return [r for r in mine if "ratio" in r]


def _iqr(values: list[float], digits: int = 3) -> str:
    q1, med, q3 = quartiles(values)
    fmt = lambda v: "∞" if math.isinf(v) else f"{v:.{digits}f}"  # noqa: E731
    return f"{fmt(med)} [{fmt(q1)}, {fmt(q3)}]"


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Print the tables of every λ range; return the per-method summaries by range."""
    summaries: dict[str, list[dict[str, Any]]] = {}
    for lam_range in args.lam_ranges:
        compared = compare(rows, lam_range)
        methods = [m for m in args.methods if any(r["method"] == m for r in compared)]
        seeds = sorted({r["seed"] for r in compared})
        print(f"\n## λ range {lam_range}: hypervolume (F1/EPG/IoU in [0,1]^3) vs trial-epochs; grid = {len(LOSSES)} losses x 3 λ x {args.epochs} epochs\n")
        print("| method | seed | trials | stopped early | trial-epochs | final HV | grid HV | HV at the grid's budget | trial-epochs to grid HV | ratio to grid's |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for method in methods:
            for r in (r for r in compared if r["method"] == method):
                reached = "not reached" if math.isinf(r["epochs_to_grid_hv"]) else f"{r['epochs_to_grid_hv']:.0f}"
                print(f"| {method} | {r['seed']} | {r['trials']} | {r['stopped_early']} | {r['trial_epochs']} | {r['hypervolume']:.4f} | "
                      f"{r['grid_hypervolume']:.4f} | {r['hv_at_grid_budget']:.4f} | {reached} | {r['ratio']:.3f} |")
        print(f"\nOver {len(seeds)} seeds: median [interquartile range]; mean ± 95 % t-interval of the final HV's difference to the grid's (same seed)\n")
        print("| method | trial-epochs spent | ratio: trial-epochs to the grid's final HV / grid's | HV at the grid's budget | final HV − grid HV | seeds reaching the grid's HV |")
        print("|---|---:|---:|---:|---:|---:|")
        summary = []
        for method in methods:
            mine = [r for r in compared if r["method"] == method]
            summary.append({"method": method, "seeds": len(mine), "ratio_quartiles": quartiles([r["ratio"] for r in mine]),
                            "hv_at_grid_budget_quartiles": quartiles([r["hv_at_grid_budget"] for r in mine]),
                            "reached": sum(not math.isinf(r["ratio"]) for r in mine)})
            print(f"| {method} | {_iqr([r['trial_epochs'] for r in mine], 0)} | {_iqr([r['ratio'] for r in mine])} | "
                  f"{_iqr([r['hv_at_grid_budget'] for r in mine], 4)} | {_ci([r['hypervolume'] - r['grid_hypervolume'] for r in mine])} | "
                  f"{summary[-1]['reached']}/{len(mine)} |")
        searches = [m for m in summary if m["method"] != "grid"]
        for label, asha in (("without MO-ASHA (target <= 1/4)", False), ("with MO-ASHA (target <= 1/6)", True)):
            group = [m for m in searches if ("+mo_asha" in m["method"]) == asha]
            if group:
                best = min(group, key=lambda m: m["ratio_quartiles"][1])
                print(f"\nbest median ratio {label}: {best['method']} {best['ratio_quartiles'][1]:.3f}")
        plain = [r for r in compared if "ratio_to_plain" in r]
        if plain:
            print("\nMO-ASHA vs the same sampler without it: trial-epochs to reach the plain search's final HV / the plain search's trial-epochs, median [IQR]\n")
            print("| method | ratio |")
            print("|---|---:|")
            for method in methods:
                mine = [r["ratio_to_plain"] for r in plain if r["method"] == method]
                if mine:
                    print(f"| {method} | {_iqr(mine)} |")
        summaries[lam_range] = summary
    return summaries


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """Per λ range: the median hypervolume over seeds against trial-epochs, with the interquartile band, per method."""
    from matplotlib.figure import Figure

    colors = dict(zip(["grid", *SAMPLERS], ["black", "tab:gray", "tab:orange", "tab:blue", "tab:green"]))
    fig = Figure(figsize=(6.0 * len(args.lam_ranges), 4.8), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(args.lam_ranges), sharey=True))
    grid_epochs = len(LOSSES) * 3 * args.epochs
    for ax, lam_range in zip(axes, args.lam_ranges):
        compared = compare(rows, lam_range)
        end = max((r["trial_epochs"] for r in compared), default=grid_epochs)
        steps = np.arange(0, end + 1)
        for method in [m for m in args.methods if any(r["method"] == m for r in compared)]:
            curves = np.array([[hypervolume_at(r["history"], s) for s in steps] for r in compared if r["method"] == method])
            q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
            sampler, _, asha = method.partition("+")
            ax.step(steps, med, where="post", color=colors[sampler], ls={"": "-", "mo_asha": "--"}.get(asha, ":"), lw=1.6 if method == "grid" else 1.3,
                    label=f"{method} (n={len(curves)})")
            ax.fill_between(steps, q1, q3, step="post", color=colors[sampler], alpha=0.08 if asha else 0.12, lw=0)
        for label, frac in GRID_EPOCHS_FRACTIONS.items():
            ax.axvline(grid_epochs * frac, color="0.6", lw=0.8, ls=":")
            ax.text(grid_epochs * frac, 0.0, f" {label} of the grid's", rotation=90, va="bottom", fontsize="x-small", color="0.4")
        ax.set_xlabel("trial-epochs spent")
        ax.set_title(f"λ range: {lam_range}", fontsize="medium")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hypervolume of the front (F1, EPG, IoU): median, IQR band")
    axes[-1].legend(fontsize="x-small", ncol=2)
    fig.suptitle("Spurious TextBox: hypervolume vs compute, grid vs samplers (dashed: + MO-ASHA stopping, dotted: promotion)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The task's options that :func:`bench_spec` reads: epochs per trial, learning rate, data sizes, concurrent trials."""
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    parser.add_argument("--lam-ranges", nargs="+", default=["default", "1e-5,1"],
                        help="λ ranges of the searches: 'default' (mg-tune's: a decade around the paper's grid) or LOW,HIGH (papers' units) for both losses")
    add_task_arguments(parser)
    parser.add_argument("--trials", type=int, default=6, help="trials of a search without MO-ASHA (6 x epochs = the grid's budget)")
    parser.add_argument("--asha-trials", type=int, default=12, help="trials of the mo_asha searches")
    parser.add_argument("--json", type=Path, help="write all numbers here (rewritten after every search)")
    parser.add_argument("--plot", type=Path, help="write the hypervolume-vs-trial-epochs plot (PNG) here")
    parser.add_argument("--report-only", type=Path, nargs="+", metavar="JSON",
                        help="print the tables (and --plot) from previous runs' --json (runs concatenated, the first one's args); runs nothing")
    parser.add_argument("--workdir", type=Path, help="keep the Ray storage and MLflow store here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    if "grid" not in args.methods:
        parser.error("--methods must include grid (the reference)")

    if args.report_only:
        saved_runs = [json.loads(path.read_text()) for path in args.report_only]
        saved = saved_runs[0]
        merged = {(r["seed"], r["method"], r["range"]): r for one in reversed(saved_runs) for r in one["runs"]}  # a repeated search: the first file's
        rows = [{k: (math.inf if v is None and k.startswith("epochs_to") else v) for k, v in r.items()} for r in merged.values()]
        args.epochs = saved["args"]["epochs"]
        args.seeds = sorted({r["seed"] for r in rows})
        args.lam_ranges = list(dict.fromkeys(lam for one in saved_runs for lam in one["args"]["lam_ranges"]))
        args.methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
        report(rows, args)
        if args.plot:
            plot(rows, args, args.plot)
        return 0
    root = Path(tempfile.mkdtemp(prefix="mg-efficiency-")) if args.workdir is None else args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def save(rows: list[dict[str, Any]], summaries: dict | None = None) -> None:
        if not args.json:
            return
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
            "versions": {m: __import__(m).__version__ for m in ("ray", "optuna", "mlflow", "torch")},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "wall_s": time.time() - started,
            "runs": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows],
            "summaries": summaries,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    rows = run(args, root, save)
    summaries = report(rows, args)
    print(f"\ntotal {time.time() - started:.0f} s; trial errors: {sum(r['errors'] for r in rows)}")
    save(rows, summaries)
    if args.plot:
        plot(rows, args, args.plot)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
