"""Search efficiency: the papers' fixed λ grid vs. mg-tune's multi-objective search, with and without MO-ASHA (issue 8).

On the spurious TextBox variant (SMERF CNN, IxG at the input, Energy or L1
localisation loss, objectives F1 / EPG / IoU on the validation split), one
run of this script performs, for every seed ``s`` (training seed and
sampler seed), one after the other on one local Ray instance and one MLflow
store, each through :func:`mg_tune.search.runner.run_search` unchanged:

* **grid** -- the paper's protocol: ``sampler: grid``, i.e. the λ grid of the
  reproducibility study (Table 5) for each loss (3 λ x 2 losses), every
  trial trained for the fixed ``--epochs``, the front over all checkpoints;
* **nsga2**, **tpe** -- mg-tune's multi-objective search over the loss and
  λ ∈ ``--lam-range`` per loss (log-uniform; ``default``: mg-tune's default
  range, one decade around the paper's grid), ``--trials`` trials of the
  same epochs;

λ is in the papers' units everywhere (``lam_reduction: sum``: λ multiplies the
sum of the per-image localization losses of a batch, as the authors' train.py),
so the grid is the paper's guidance strength at this batch size (32).
* **nsga2+mo_asha**, **tpe+mo_asha** -- the same with ``scheduler: mo_asha``
  (grace 1 epoch, η = 3) and ``--asha-trials`` trials.

Every search logs ``hypervolume`` on its parent run after every trial-epoch
(:class:`mg_tune.search.callbacks.HypervolumeTracker`: normalised to
[0, 1]^3, reference point 0, step = trial-epochs spent); this script reads
those histories back from MLflow. With ``HV_grid`` the grid's final
hypervolume and ``E_grid`` its trial-epochs (6 trials x ``--epochs``)::

    E(method) = the first step at which the method's hypervolume >= HV_grid
    ratio     = E(method) / E_grid          (goal: <= 1/3 for the searches, <= 1/5 with mo_asha)

A method that never reaches ``HV_grid`` within its budget gets ``E = ∞``.
The tables show every seed, the median over seeds, and mean ± 95 % t-interval
over seeds of the final hypervolume and of its difference to the grid's
(same seed; > 0: the search's front is better); the plot
(``--plot``) shows hypervolume against trial-epochs. Trial order, and so the
step at which a point is counted, depends on which of the concurrent trials
reports first; the configurations and metrics are deterministic.

    nice -n 10 python bench/search_efficiency.py --lam-range default --json bench/results/search_efficiency_default_range.json
    nice -n 10 python bench/search_efficiency.py --lam-range 1e-5,1 --json bench/results/search_efficiency.json --plot docs/search_efficiency.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

OBJECTIVES = ["f1", "epg", "iou"]
LOSSES = ["energy", "l1"]
METHODS = ["grid", "nsga2", "tpe", "nsga2+mo_asha", "tpe+mo_asha"]


def bench_spec(method: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The search of ``method`` for ``seed`` (names ``eff-<method>-<seed>``)."""
    sampler, _, scheduler = method.partition("+")
    lam_range = {} if args.lam_range == "default" else {loss: [float(v) for v in args.lam_range.split(",")] for loss in LOSSES}
    raw: dict[str, Any] = {
        "name": f"eff-{method.replace('+', '-')}-{seed}",
        "data": {"variant": "spurious", "train_size": args.train_size, "val_size": args.val_size, "heldout_size": 32, "test_size": 16},
        "fixed": {
            "model": "smerf_cnn", "attribution": "ixg", "layer": "input", "epochs": args.epochs,
            "batch_size": 32, "lr": args.lr, "overlay_images": 0, "seed": seed,
        },
        "space": {"loss": {"choice": LOSSES}, "lam": {"loguniform_by_loss": lam_range}},
        "objectives": OBJECTIVES,
        "sampler": sampler,
        "trials": args.asha_trials if scheduler else args.trials,
        "concurrency": args.concurrency,
        "resources": {"cpu": 1, "gpu": 0},
        "seed": seed,
        "storage_path": str(root / "runs"),
    }
    if scheduler:
        raw["scheduler"] = {"name": "mo_asha", "grace_period": 1, "reduction_factor": 3}
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


def _ci(values: list[float]) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stats import fmt_ci

    return fmt_ci(values, 4)


def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    import ray
    import yaml
    from mlflow import MlflowClient

    from mg_tune.pareto_report import checkpoint_table
    from mg_tune.search.runner import run_search
    from mg_tune.search.spec import SearchSpec

    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # schema migration once
    rows = []
    ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for seed in args.seeds:
            for method in args.methods:
                raw = bench_spec(method, seed, args, root)
                start = time.time()
                outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw, sort_keys=False), uri)
                wall = time.time() - start
                table = checkpoint_table(uri, raw["name"])
                history = hypervolume_history(uri, raw["name"])
                rows.append({
                    "seed": seed, "method": method, "search": raw["name"], "trials": outcome.trials, "errors": outcome.errors,
                    "trial_epochs": len(table), "stopped_early": int(table.groupby("trial_id")["epoch"].max().lt(args.epochs).sum()),
                    "hypervolume": history[-1][1] if history else 0.0, "history": history, "wall_s": wall,
                    "front": outcome.pareto.front[["trial_id", "epoch", "params.loss", "params.lam", *OBJECTIVES]].to_dict("records"),
                })
                print(f"seed {seed} {method:>14}: {len(table)} trial-epochs, HV {rows[-1]['hypervolume']:.4f}, {wall:.0f} s", flush=True)
    finally:
        ray.shutdown()
    return compare(rows)


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to every row the trial-epochs it needed to reach the grid's final HV (same seed) and the ratio to
    the grid's trial-epochs; to ``+mo_asha`` rows also those to reach the final HV of the same sampler without it."""
    for r in rows:
        grid = next(g for g in rows if g["seed"] == r["seed"] and g["method"] == "grid")
        r["grid_hypervolume"] = grid["hypervolume"]
        r["epochs_to_grid_hv"] = epochs_to_reach(r["history"], grid["hypervolume"])
        r["ratio"] = r["epochs_to_grid_hv"] / grid["trial_epochs"]
        plain = next((p for p in rows if p["seed"] == r["seed"] and p["method"] == r["method"].partition("+")[0]), None)
        if "+" in r["method"] and plain is not None:
            r["epochs_to_plain_hv"] = epochs_to_reach(r["history"], plain["hypervolume"])
            r["ratio_to_plain"] = r["epochs_to_plain_hv"] / plain["trial_epochs"]
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    print()
    print(f"Hypervolume (F1/EPG/IoU in [0,1]^3) vs trial-epochs; grid = {len(LOSSES)} losses x 3 λ x {args.epochs} epochs")
    print()
    print("| method | seed | trials | stopped early | trial-epochs | final HV | grid HV | trial-epochs to grid HV | ratio to grid's |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians = []
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        for r in mine:
            reached = "not reached" if math.isinf(r["epochs_to_grid_hv"]) else f"{r['epochs_to_grid_hv']:.0f}"
            print(
                f"| {method} | {r['seed']} | {r['trials']} | {r['stopped_early']} | {r['trial_epochs']} | {r['hypervolume']:.4f} | "
                f"{r['grid_hypervolume']:.4f} | {reached} | {r['ratio']:.3f} |"
            )
        med = {
            "method": method,
            "ratio": statistics.median(r["ratio"] for r in mine),
            "trial_epochs": statistics.median(r["trial_epochs"] for r in mine),
            "hypervolume": statistics.median(r["hypervolume"] for r in mine),
        }
        medians.append(med)
    print()
    print("| method | median trial-epochs spent | median final HV | median ratio (trial-epochs to the grid's final HV / grid's) |")
    print("|---|---:|---:|---:|")
    for m in medians:
        print(f"| {m['method']} | {m['trial_epochs']:.0f} | {m['hypervolume']:.4f} | {m['ratio']:.3f} |")
    print()
    print(f"Mean ± 95 % t-interval over {len(args.seeds)} seeds")
    print()
    print("| method | final HV | final HV − grid HV (same seed) | seeds reaching the grid's HV | ratio to grid's (seeds that reach it) |")
    print("|---|---:|---:|---:|---:|")
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        reached = [r["ratio"] for r in mine if not math.isinf(r["ratio"])]
        print(
            f"| {method} | {_ci([r['hypervolume'] for r in mine])} | {_ci([r['hypervolume'] - r['grid_hypervolume'] for r in mine])} | "
            f"{len(reached)}/{len(mine)} | {_ci(reached) if reached else '–'} |"
        )
    print()
    print("MO-ASHA vs the same sampler without it: trial-epochs to reach the plain search's final HV / the plain search's trial-epochs")
    print()
    print("| method | seed | plain final HV | trial-epochs to it | ratio |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        if "epochs_to_plain_hv" in r:
            plain_hv = next(p["hypervolume"] for p in rows if p["seed"] == r["seed"] and p["method"] == r["method"].partition("+")[0])
            reached = "not reached" if math.isinf(r["epochs_to_plain_hv"]) else f"{r['epochs_to_plain_hv']:.0f}"
            print(f"| {r['method']} | {r['seed']} | {plain_hv:.4f} | {reached} | {r['ratio_to_plain']:.3f} |")
    return medians


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.figure import Figure

    colors = dict(zip(METHODS, ["black", "tab:blue", "tab:orange", "tab:green", "tab:red"]))
    fig = Figure(figsize=(7.5, 4.5), dpi=110, layout="constrained")
    ax = fig.subplots()
    for r in rows:
        steps, values = zip(*r["history"]) if r["history"] else ((), ())
        ax.step(steps, values, where="post", color=colors.get(r["method"], "gray"), alpha=0.85, lw=1.4,
                ls="-" if r["seed"] == args.seeds[0] else "--", label=f"{r['method']} (seed {r['seed']})")
    grid_epochs = len(LOSSES) * 3 * args.epochs
    for frac, label in ((1 / 3, "1/3 of the grid's trial-epochs"), (1 / 5, "1/5")):
        ax.axvline(grid_epochs * frac, color="0.6", lw=0.8, ls=":")
        ax.text(grid_epochs * frac, 0.0, f" {label}", rotation=90, va="bottom", fontsize="x-small", color="0.4")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("hypervolume of the front (F1, EPG, IoU)")
    ax.set_title(f"Spurious TextBox: hypervolume vs compute (search λ range: {args.lam_range})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6, help="trials of nsga2 / tpe (6 x epochs = the grid's budget)")
    parser.add_argument("--asha-trials", type=int, default=12, help="trials of the mo_asha searches")
    parser.add_argument("--lam-range", default="1e-5,1", help="λ range LOW,HIGH (papers' units: sum over the batch) of the searches for each loss, or 'default' (mg-tune's: a decade around the paper's grid)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-size", type=int, default=192)
    parser.add_argument("--val-size", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--plot", type=Path, help="write the hypervolume-vs-trial-epochs plot (PNG) here")
    parser.add_argument("--report-only", type=Path, metavar="JSON", help="print the tables (and --plot) from a previous run's --json; runs nothing")
    parser.add_argument("--workdir", type=Path, help="keep the Ray storage and MLflow store here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    if "grid" not in args.methods:
        parser.error("--methods must include grid (the reference)")

    if args.report_only:
        saved = json.loads(args.report_only.read_text())
        rows = compare([{k: (math.inf if v is None and k.startswith("epochs_to") else v) for k, v in r.items()} for r in saved["runs"]])
        args.seeds, args.epochs = saved["args"]["seeds"], saved["args"]["epochs"]
        args.lam_range = saved["args"]["lam_range"] if isinstance(saved["args"]["lam_range"], str) else ",".join(f"{v:g}" for v in saved["args"]["lam_range"])
        args.methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
        report(rows, args)
        if args.plot:
            plot(rows, args, args.plot)
        return 0
    root = Path(tempfile.mkdtemp(prefix="mg-efficiency-")) if args.workdir is None else args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    rows = run(args, root)
    medians = report(rows, args)
    print(f"\ntotal {time.time() - start:.0f} s; trial errors: {sum(r['errors'] for r in rows)}")
    if args.plot:
        plot(rows, args, args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_after": os.getloadavg()},
            "versions": {m: __import__(m).__version__ for m in ("ray", "optuna", "mlflow", "torch")},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "runs": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows],
            "medians": medians,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
