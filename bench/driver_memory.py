"""Driver memory per trial: bare Ray Tune and mg-tune side by side, same trials, one run (issue 22, item 2).

Each path runs in its own fresh process (``--mode bare`` / ``--mode mg``,
started by this script) so neither inherits the other's memory:

* **bare**: a function trainable, ``OptunaSearch`` (NSGA-II over the spec's
  space), ``ConcurrencyLimiter``, ``reuse_actors`` -- Ray Tune as a user
  would write it (``bench/search_overhead.py``'s ``run_bare``);
* **mg**: ``mg_tune.search.runner.run_search`` unchanged, on a SQLite MLflow
  store (``run_mg``).

Both train the same stand-in (``search_overhead.py``'s workload: the SMERF
CNN, a real checkpoint per epoch, no real training) for ``--epochs`` epochs of
``--trial-seconds`` each, so trials are short and the driver's bookkeeping per
trial is what grows. Every ``--interval`` s a thread samples the driver's
resident memory (RSS, psutil) and the number of finished trials (Ray's result
count for bare; MLflow's FINISHED trial runs would cost requests, so mg counts
the trial-timing files the workers write). Reported per path: RSS at the first
and last sample and the **growth per trial**, the slope of a linear fit of RSS
against finished trials over the steady part (from 25 % of the trials finished until the last one ends:
not the start-up, not the search's end with its Pareto plots).

    python bench/driver_memory.py --trials 1000 --json bench/results/driver_memory.json --plot docs/driver_memory.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent


class Sampler(threading.Thread):
    """(seconds, driver RSS MB, finished trials) every ``interval`` s; ``count`` reads the finished trials."""

    def __init__(self, interval: float, count) -> None:
        super().__init__(daemon=True)
        self.interval, self.count = interval, count
        self.samples: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()
        self.process = psutil.Process()

    def take(self) -> None:
        self.samples.append((round(time.monotonic() - self.start_time, 1), self.process.memory_info().rss / 2**20, self.count()))

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.take()


def child(mode: str, args: argparse.Namespace) -> dict:
    """One path in this process: run it while sampling, return the samples."""
    import ray
    import yaml

    sys.path.insert(0, str(HERE))
    import search_overhead as so

    from mg_tune.search.spec import SearchSpec

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(tempfile.mkdtemp(prefix=f"mg-tune-driver-{mode}-"))
    timing = root / "timing"
    timing.mkdir()
    options = SimpleNamespace(epochs=args.epochs, trials=args.trials, concurrency=args.concurrency, reuse_actors=True, trial_seconds=args.trial_seconds * args.epochs)
    raw = so.bench_spec(options, root, args.concurrency)
    raw["name"] = f"driver-{mode}"
    spec = SearchSpec.model_validate(raw)
    ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False, configure_logging=False)
    kind = "bare" if mode == "bare" else "mg"
    sampler = Sampler(args.interval, lambda: sum(1 for _ in timing.glob(f"{kind}-*.jsonl")))
    sampler.take()
    sampler.start()
    if mode == "bare":
        start, end, errors = so.run_bare(spec, options, root, timing, name=raw["name"])
    else:
        start, end, errors, _, _ = so.run_mg(spec, yaml.safe_dump(raw), options, f"sqlite:///{root}/mlflow.db", timing)
    sampler.stop.set()
    sampler.join()
    sampler.take()
    ray.shutdown()
    return {"mode": mode, "wall_s": round(end - start, 1), "errors": errors, "samples": sampler.samples}


def growth(samples: list[tuple[float, float, int]], trials: int) -> dict:
    """RSS levels and the slope of RSS against finished trials from 25 % of the trials on (MB per trial)."""
    t, rss, done = (np.array(c, dtype=float) for c in zip(*samples))
    steady = (done >= 0.25 * trials) & (done < trials)  # trials still running: not start-up, not the end (Pareto, plots)
    slope = float(np.polyfit(done[steady], rss[steady], 1)[0]) if steady.sum() > 2 else float("nan")
    return {"first_mb": round(rss[0], 1), "last_mb": round(rss[-1], 1), "max_mb": round(rss.max(), 1), "mb_per_trial": round(slope, 4), "mb_per_1000_trials": round(1000 * slope, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--trial-seconds", type=float, default=0.2, help="seconds of the stand-in workload per epoch")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--mode", choices=["bare", "mg"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.mode:
        args.out.write_text(json.dumps(child(args.mode, args)))
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("bare", "mg"):
            out = Path(tmp) / f"{mode}.json"
            cmd = [sys.executable, __file__, "--mode", mode, "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in ("trials", "epochs", "trial_seconds", "concurrency", "interval")]
            subprocess.run(cmd, check=True)
            runs[mode] = json.loads(out.read_text())
    summary = {mode: {"wall_s": r["wall_s"], "errors": r["errors"], **growth(r["samples"], args.trials)} for mode, r in runs.items()}
    bare, mg = summary["bare"]["mb_per_trial"], summary["mg"]["mb_per_trial"]
    print(json.dumps(summary, indent=1))
    print(f"driver growth per trial: bare {bare:.4f} MB, mg-tune {mg:.4f} MB, mg-tune − bare {mg - bare:+.4f} MB ({(mg / bare if bare > 0 else float('nan')):.2f}×)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs}, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for mode, label in (("bare", "bare Ray Tune"), ("mg", "mg-tune")):
            _, rss, done = zip(*runs[mode]["samples"])
            ax.plot(done, rss, label=f"{label}: {summary[mode]['mb_per_1000_trials']:+.0f} MB / 1000 trials")
        ax.set_xlabel("finished trials")
        ax.set_ylabel("driver RSS (MB)")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
