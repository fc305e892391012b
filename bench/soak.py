"""Soak: a long local search of many short trials; memory over time, MLflow rows, failures.

    python bench/soak.py --trials 200 --concurrency 4 [--epochs 1] [--out bench/results/soak.json]

Runs one real search (local Ray with ``concurrency`` CPUs, MLflow in a fresh
SQLite file, TextBox data of 16 training images, random sampler over lr and
λ) in this process, and every ``--interval`` seconds samples the resident
memory (RSS, psutil) of

* the driver (this process),
* the Ray worker processes that run trials (``ray::`` processes, summed, and
  the largest one),
* Ray's own daemons (raylet, GCS, ...; the other descendants, summed).

At the end it counts what reached MLflow against what must have:

* trial runs (FINISHED) = trials,
* READY LoggedModels (one per trial and epoch) = trials × epochs,
* rows in the ``metrics`` table = Σ over trial runs of (metric keys × epochs):
  every epoch logs every key exactly once, so a missing or duplicated epoch
  shows up as a difference,

and the failures (trials Ray reports as errored, runs not FINISHED). Memory is
"flat" when its linear trend in steady state (see :func:`trend`),
extrapolated over 100 trials, is small against its level.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from mg_tune.search.runner import run_search
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import ROLE_TAG, experiment_name, iter_logged_models, iter_runs


def spec(name: str, trials: int, concurrency: int, epochs: int, root: Path) -> dict:
    return {
        "name": name,
        "data": {"variant": "multilabel", "train_size": 16, "val_size": 8, "heldout_size": 8, "test_size": 8},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "loss": "energy", "epochs": epochs,
                  "batch_size": 16, "overlay_images": 1, "device": "cpu"},
        "space": {"lr": {"loguniform": [3e-4, 3e-3]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 3.0]}}},
        "sampler": "random",
        "trials": trials,
        "concurrency": concurrency,
        "resources": {"cpu": 1},
        "storage_path": str(root / "runs"),
    }


class MemorySampler(threading.Thread):
    """Samples the RSS of the driver, its ``ray::`` worker processes and Ray's other processes every ``interval`` s."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.driver = psutil.Process(os.getpid())
        self.start_time = time.monotonic()

    def sample(self) -> dict:
        workers, daemons, n_workers, largest = 0, 0, 0, 0
        for proc in self.driver.children(recursive=True):
            try:
                rss = proc.memory_info().rss
                title = " ".join(proc.cmdline()[:1])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if title.startswith("ray::"):
                workers += rss
                n_workers += 1
                largest = max(largest, rss)
            else:
                daemons += rss
        return {
            "t": round(time.monotonic() - self.start_time, 1),
            "driver_mb": self.driver.memory_info().rss / 2**20,
            "workers_mb": workers / 2**20,
            "workers": n_workers,
            "largest_worker_mb": largest / 2**20,
            "ray_daemons_mb": daemons / 2**20,
        }

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.samples.append(self.sample())


def mlflow_counts(uri: str, db: Path, name: str, epochs: int) -> dict:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(name))
    runs = list(iter_runs(client, experiment.experiment_id, f"tags.`{ROLE_TAG}` = 'trial'"))
    models = list(iter_logged_models(client, experiment.experiment_id))
    with sqlite3.connect(db) as conn:
        (metric_rows,) = conn.execute(
            "SELECT COUNT(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = 'trial' WHERE r.experiment_id = ?",
            (ROLE_TAG, experiment.experiment_id),
        ).fetchone()
    return {
        "trial_runs": len(runs),
        "finished_runs": sum(r.info.status == "FINISHED" for r in runs),
        "ready_models": sum(m.status == LoggedModelStatus.READY for m in models),
        "other_models": sum(m.status != LoggedModelStatus.READY for m in models),
        "metric_rows": metric_rows,
        "expected_metric_rows": sum(len(r.data.metrics) * epochs for r in runs),
    }


def trend(samples: list[dict], key: str, trials: int) -> dict:
    """Levels and the linear trend in steady state (samples from 25 % to 90 % of the run), as MB per 100 trials.

    The start (workers booting) and the end (workers exiting) are left out of the trend.
    """
    steady = samples[len(samples) // 4 : max(len(samples) // 4 + 3, len(samples) * 9 // 10)]
    t = np.array([s["t"] for s in steady])
    y = np.array([s[key] for s in steady])
    duration = samples[-1]["t"] - samples[0]["t"]
    slope = float(np.polyfit(t, y, 1)[0]) if len(steady) > 2 else 0.0  # MB per second
    return {
        "first_mb": round(samples[0][key], 1),
        "steady_first_mb": round(float(y[0]), 1),
        "steady_median_mb": round(float(np.median(y)), 1),
        "steady_last_mb": round(float(y[-1]), 1),
        "max_mb": round(max(s[key] for s in samples), 1),
        "mb_per_100_trials_steady": round(slope * duration / trials * 100, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(tempfile.mkdtemp(prefix="mg-tune-soak-"))
    db = root / "mlflow.db"
    uri = f"sqlite:///{db}"
    raw = spec("soak", args.trials, args.concurrency, args.epochs, root)
    ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False, configure_logging=False)
    sampler = MemorySampler(args.interval)
    sampler.samples.append(sampler.sample())
    sampler.start()
    started = time.monotonic()
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri)
    wall = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    ray.shutdown()

    counts = mlflow_counts(uri, db, "soak", args.epochs)
    expected = {"trial_runs": args.trials, "finished_runs": args.trials, "ready_models": args.trials * args.epochs,
                "other_models": 0, "metric_rows": counts["expected_metric_rows"]}
    report = {
        "trials": args.trials,
        "concurrency": args.concurrency,
        "epochs": args.epochs,
        "wall_s": round(wall, 1),
        "cpus": os.cpu_count(),
        "load_avg_1min_end": round(os.getloadavg()[0], 2),
        "failures": {"ray_errors": outcome.errors, "runs_not_finished": counts["trial_runs"] - counts["finished_runs"]},
        "mlflow": {k: {"written": counts[k], "expected": v} for k, v in expected.items()},
        "memory": {k: trend(sampler.samples, k, args.trials) for k in ("driver_mb", "workers_mb", "largest_worker_mb", "ray_daemons_mb")},
        "workers_max": max(s["workers"] for s in sampler.samples),
        "samples": sampler.samples,
        "workdir": str(root),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    ok = all(v["written"] == v["expected"] for v in report["mlflow"].values()) and not any(report["failures"].values())
    print("soak:", "OK" if ok else "MISMATCH")


if __name__ == "__main__":
    main()
