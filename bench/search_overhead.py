"""Search overhead: mg-tune's full search path vs. bare Ray Tune on the same trial workload (issue 5).

One run of this script drives the same trials two ways, one after the other,
on one local Ray instance:

* **bare**: a Ray Tune function trainable, ``OptunaSearch`` (multi-objective,
  the spec's space and sampler via :mod:`mg_tune.search.sampling`) inside a
  ``ConcurrencyLimiter``, the same ``RunConfig`` (local ``storage_path``,
  ``FailureConfig``, ``CheckpointConfig(num_to_keep=1)``, ``verbose=1``) and
  resources as mg-tune. Per epoch the trial runs the workload, copies the
  checkpoint into a report folder and calls ``tune.report(metrics,
  checkpoint=...)``, exactly as :func:`mg_tune.search.runner.run_trial`
  does, but no MLflow.
* **mg-tune**: :func:`mg_tune.search.runner.run_search`, unchanged: MLflow
  SQLite store (search experiment, parent run, spec artifact), in every
  trial :func:`~mg_tune.search.runner.run_trial` (trial run, resume check,
  per epoch :meth:`~mg_tune.tracking.TrialLogger.log_epoch` -- a READY
  LoggedModel with the checkpoint file and linked metrics, the overlay PNG,
  metrics on the run -- then ``tune.report`` with a Ray checkpoint), and
  the Pareto front (with plots and write-back) from MLflow at the end.

**The workload** (identical in both): build a SMERF CNN
(``build_model("smerf_cnn", 4)``) and Adam with populated state, then per
epoch sleep ``--trial-seconds / --epochs``, perturb the weights, write a real
checkpoint with :func:`mg_tune.checkpoint.save_checkpoint` (3.6 MB: weights +
Adam moments + config) and a real overlay PNG with
:func:`mg_tune.overlay.save_overlay` (6 random 64 px images), and return 8
pseudo-random metrics (f1, map, accuracy, epg, iou, 3 train losses).

**How the stand-in reaches the Ray workers.** Trials run in separate worker
processes, so patching ``mg_tune.search.runner.train`` in the driver would
not reach them. Instead the driver replaces ``runner.run_trial`` -- the one
name :func:`~mg_tune.search.runner.build_tuner` wraps with
``tune.with_parameters`` -- by a closure defined here. Ray pickles it by
value (it lives in ``__main__``); in the worker it imports the *unpatched*
``mg_tune.search.runner``, sets ``runner.train`` to the stand-in (and wraps a
few runner/tracking functions with timers) in that process, then calls the
real ``runner.run_trial(config, spec, search_run)``. Everything else -- spec,
Optuna, Ray, MLflow, Pareto -- is the production code; the driver's patches
are undone afterwards.

**Definitions.** ``wall`` = the seconds of ``Tuner(...).fit()`` (bare) or of
``run_search(...)`` (mg-tune); Ray is started before and is not counted.
``Σ trial`` = the summed seconds spent inside the workload (model setup +
every epoch's sleep and file writes), measured in the trial processes. With
concurrency ``c`` the ideal wall is ``Σ trial / c``, and

    overhead = (wall - Σ trial / c) / wall.

It splits exactly into ``in-trial`` (time inside the trial function but
outside the workload: MLflow calls, ``tune.report``, imports, divided by
``c``) and ``outside`` (``wall - Σ trial-function time / c``: Ray scheduling
and actor start-up, driver set-up, the Pareto computation, idle slots).
The MLflow tracking store is created (schema migrated) before timing, as a
user's existing ``mlflow.db`` would be.

``--repeats N`` runs both paths N times, alternating which goes first, and
reports medians; ``--no-reuse-actors`` sets the spec's ``reuse_actors: false``
(Ray Tune's default: a new worker process per trial) for both paths. The
1-minute load average is sampled during each search: other jobs on the
machine inflate the (CPU-bound) start-up times. Results: docs/benchmarks.md.

    python bench/search_overhead.py                       # 8 trials x 30 s, concurrency 2 (~6 min)
    python bench/search_overhead.py --no-reuse-actors --json bench/results/search_overhead_no_reuse_actors.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

NUM_CLASSES = 4
OVERLAY_IMAGES = 6
IMAGE_PX = 64


# --------------------------------------------------------------------------- worker side
# Everything in this section runs in Ray's trial processes (pickled by value).


class _Recorder:
    """Timed intervals of one trial process, written as JSON lines to ``timing_dir`` at the end of the trial."""

    def __init__(self, timing_dir: str, kind: str) -> None:
        self.timing_dir = timing_dir
        self.kind = kind
        self.events: list[dict[str, Any]] = []
        self.trial_id: str | None = None

    def add(self, what: str, start: float, end: float) -> None:
        self.events.append({"what": what, "start": start, "end": end})

    def flush(self) -> None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
        path = Path(self.timing_dir) / f"{self.kind}-{trial_id}-{os.getpid()}.jsonl"
        with path.open("a") as f:
            for event in self.events:
                f.write(json.dumps({"kind": self.kind, "trial": trial_id, **event}) + "\n")
        self.events.clear()


class _Workload:
    """The stand-in for training: model + Adam state, then per epoch sleep + real checkpoint + real overlay."""

    def __init__(self, rec: _Recorder, seconds_per_epoch: float, model_name: str, config_json: dict, seed_text: str, dtype: str = "float32") -> None:
        import torch

        from mg_tune.models import build_model

        start = time.time()
        self.rec = rec
        self.seconds = seconds_per_epoch
        self.config_json = config_json
        self.seed_text = seed_text
        self.dtype = dtype
        self.model = build_model(model_name, NUM_CLASSES)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.optimizer.step()  # Adam moments exist, as in a real checkpoint
        rec.add("workload", start, time.time())

    def epoch(self, epoch: int, folder: Path) -> tuple[Path, Path, dict[str, float]]:
        import random

        import torch

        from mg_tune.checkpoint import CHECKPOINT_FILE, save_checkpoint
        from mg_tune.overlay import save_overlay

        start = time.time()
        time.sleep(self.seconds)
        rng = random.Random(f"{self.seed_text}/{epoch}")
        metrics = {k: rng.random() for k in ("f1", "map", "accuracy", "epg", "iou")}
        metrics |= {"train_loss": rng.random(), "train_class_loss": rng.random(), "train_loc_loss": rng.random()}
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn_like(p), alpha=1e-3)
        checkpoint = save_checkpoint(folder / CHECKPOINT_FILE, self.model, self.optimizer, epoch, metrics, self.config_json, dtype=self.dtype)
        g = torch.Generator().manual_seed(epoch)
        images = torch.rand(OVERLAY_IMAGES, 3, IMAGE_PX, IMAGE_PX, generator=g)
        maps = torch.rand(OVERLAY_IMAGES, IMAGE_PX, IMAGE_PX, generator=g)
        masks = torch.zeros(OVERLAY_IMAGES, IMAGE_PX, IMAGE_PX)
        masks[:, 16:48, 16:48] = 1
        overlay = save_overlay(folder / "overlay.png", images, maps, masks)
        self.rec.add("workload", start, time.time())
        return checkpoint, overlay, metrics


def _process_started(rec: _Recorder, entered: float) -> None:
    """Record ``process_start``: from the creation of this trial process to the trial function (Ray worker start-up, unpickling, imports it triggers)."""
    import psutil

    import mg_tune

    if not getattr(mg_tune, "_bench_process_seen", False):  # with reuse_actors a process runs several trials
        mg_tune._bench_process_seen = True
        rec.add("process_start", psutil.Process().create_time(), entered)


def _timed(rec_holder: Any, what: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            rec_holder._bench_recorder.add(what, start, time.time())

    return wrapper


def _standin_train(
    config: Any, callback: Any = None, checkpoint_dir: Any = None, resume_from: Any = None, checkpoint_dtype: str = "float32", *, seconds_per_epoch: float, rec: _Recorder
) -> Any:
    """Same signature and callback contract as :func:`mg_tune.train.train`; the workload instead of training."""
    from mg_tune.checkpoint import epoch_dir, load_checkpoint
    from mg_tune.train import EpochResult, TrainResult

    start_epoch = int(load_checkpoint(resume_from)["epoch"]) + 1 if resume_from else 1
    config_json = config.model_dump(mode="json")
    seed_text = json.dumps({k: v for k, v in config_json.items() if k != "data"}, sort_keys=True)
    work = _Workload(rec, seconds_per_epoch, config.model, config_json, seed_text, checkpoint_dtype)
    result = TrainResult()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        for epoch in range(start_epoch, config.epochs + 1):
            checkpoint, overlay, metrics = work.epoch(epoch, epoch_dir(root, epoch))
            epoch_result = EpochResult(epoch, metrics, checkpoint, overlay)
            result.history.append(epoch_result)
            if callback is not None:
                t = time.time()
                callback(epoch_result)
                rec.add("callback", t, time.time())
    return result


def make_mg_trial(timing_dir: str, seconds_per_epoch: float) -> Any:
    """The replacement for ``runner.run_trial`` in the driver: patches the *worker's* runner, then runs the real one."""

    def run_trial(config: dict, spec: Any, search_run: Any) -> None:
        t_import = time.time()
        import ray.tune

        import mg_tune.models  # noqa: F401  (the workload's imports, as in bare_trial)
        import mg_tune.overlay  # noqa: F401
        import mg_tune.search.runner as runner
        import mg_tune.tracking as tracking

        rec = _Recorder(timing_dir, "mg")
        _process_started(rec, t_import)
        rec.add("imports", t_import, time.time())
        real = runner.run_trial
        if getattr(real, "_mg_bench", False):
            raise RuntimeError("bench trial running in the driver process: the runner is patched here")
        runner._bench_recorder = rec
        runner.train = functools.partial(_standin_train, seconds_per_epoch=seconds_per_epoch, rec=rec)
        if not getattr(runner, "_bench_instrumented", False):
            runner._bench_instrumented = True
            runner.MlflowClient = _timed(runner, "mlflow_client", runner.MlflowClient)
            runner.find_trial_run = _timed(runner, "find_trial_run", runner.find_trial_run)
            runner._resume_point = _timed(runner, "resume_point", runner._resume_point)
            for name, what in (("__init__", "trial_logger_init"), ("set_tags", "set_tags"), ("log_epoch", "log_epoch"), ("finish", "finish")):
                setattr(tracking.TrialLogger, name, _timed(runner, what, getattr(tracking.TrialLogger, name)))
            ray.tune.report = _timed(runner, "tune_report", ray.tune.report)
        start = time.time()
        try:
            real(config, spec, search_run)
        finally:
            rec.add("trial", start, time.time())
            rec.flush()

    run_trial._mg_bench = True
    return run_trial


def make_bare_trial(timing_dir: str, seconds_per_epoch: float, epochs: int, model_name: str) -> Any:
    """Plain Ray Tune: the workload, a checkpoint copied into a report folder, ``tune.report`` -- no MLflow."""

    def bare_trial(config: dict) -> None:
        t_import = time.time()
        from ray import tune

        import mg_tune.models  # noqa: F401  (the workload's imports, as in make_mg_trial)
        import mg_tune.overlay  # noqa: F401
        from mg_tune.checkpoint import CHECKPOINT_FILE, RESUME_FILE, epoch_dir, load_checkpoint

        rec = _Recorder(timing_dir, "bare")
        _process_started(rec, t_import)
        rec.add("imports", t_import, time.time())
        start = time.time()
        work_dir = Path(tempfile.mkdtemp(prefix="bare-trial-"))
        try:
            restored = tune.get_checkpoint()
            first = 1
            if restored is not None:
                first = int(load_checkpoint(Path(restored.to_directory()) / CHECKPOINT_FILE)["epoch"]) + 1
            params = {("lam" if k.startswith("lam_") else k): v for k, v in config.items()}  # sampling.trial_params, without importing Optuna
            work = _Workload(rec, seconds_per_epoch, model_name, {"model": model_name, **params}, json.dumps(params, sort_keys=True))
            for epoch in range(first, epochs + 1):
                checkpoint, _overlay, metrics = work.epoch(epoch, epoch_dir(work_dir / "checkpoints", epoch))
                t = time.time()
                folder = work_dir / "report"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                shutil.copy(checkpoint, folder / CHECKPOINT_FILE)
                shutil.copy(checkpoint.with_name(RESUME_FILE), folder / RESUME_FILE)  # weights and optimizer state, as a Ray Tune user checkpoints
                t_report = time.time()
                tune.report({**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))
                rec.add("tune_report", t_report, time.time())
                rec.add("callback", t, time.time())
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
            rec.add("trial", start, time.time())
            rec.flush()

    return bare_trial


# --------------------------------------------------------------------------- driver side


def bench_spec(args: Any, root: Path, cpus: int) -> dict[str, Any]:
    """The quickstart search (SMERF CNN on TextBox, 3 losses, 2 layers, λ by loss, lr) with the bench's sizes."""
    return {
        "name": "overhead",
        "data": {"name": "textbox", "variant": "multilabel"},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "epochs": args.epochs, "overlay_images": OVERLAY_IMAGES},
        "space": {
            "loss": {"choice": ["energy", "l1", "rrr"]},
            "layer": {"choice": ["input", "mid2"]},
            "lam": {"loguniform_by_loss": {"energy": [1e-2, 3.0], "l1": [1e-2, 3.0], "rrr": [1e-4, 1e-1]}},
            "lr": {"loguniform": [3e-4, 3e-3]},
        },
        "objectives": ["f1", "epg", "iou"],
        "sampler": "nsga2",
        "trials": args.trials,
        "concurrency": args.concurrency,
        "resources": {"cpu": min(1.0, cpus / args.concurrency), "gpu": 0},
        "seed": 0,
        "storage_path": str(root / "runs-mg"),
        "reuse_actors": args.reuse_actors,
    }


def run_bare(spec: Any, args: argparse.Namespace, root: Path, timing_dir: Path, name: str = "overhead-bare") -> tuple[float, float, int]:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from mg_tune.search.sampling import build_sampler, DefineByRun

    start = time.time()
    trainable = tune.with_resources(
        make_bare_trial(str(timing_dir), args.trial_seconds / args.epochs, args.epochs, "smerf_cnn"),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    searcher = OptunaSearch(DefineByRun(spec), metric=spec.metric_names, mode=spec.modes, sampler=build_sampler(spec), seed=spec.seed)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.concurrency), num_samples=spec.trials, reuse_actors=spec.reuse_actors
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root / "runs-bare"),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )
    results = tuner.fit()
    return start, time.time(), len(results.errors)


def run_mg(spec: Any, spec_text: str, args: argparse.Namespace, tracking_uri: str, timing_dir: Path) -> tuple[float, float, int, dict, Any]:
    import mg_tune.search.runner as runner

    driver: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.time()
            try:
                return fn(*a, **k)
            finally:
                driver[name].append((t, time.time()))

        return wrapper

    def build_tuner(*a: Any, **k: Any) -> Any:
        tuner = saved["build_tuner"](*a, **k)
        tuner.fit = timed("tuner_fit", tuner.fit)
        return tuner

    names = ("run_trial", "build_tuner", "start_search", "mark_orphans", "finish_search", "search_pareto")
    saved = {n: getattr(runner, n) for n in names}
    runner.run_trial = make_mg_trial(str(timing_dir), args.trial_seconds / args.epochs)
    runner.build_tuner = timed("build_tuner", build_tuner)
    for n in ("start_search", "mark_orphans", "finish_search", "search_pareto"):
        setattr(runner, n, timed(n, saved[n]))
    try:
        start = time.time()
        outcome = runner.run_search(spec, spec_text, tracking_uri)
        end = time.time()
    finally:
        for n, fn in saved.items():
            setattr(runner, n, fn)
    return start, end, outcome.errors, dict(driver), outcome


def analyse(kind: str, start: float, end: float, concurrency: int, timing_dir: Path) -> dict[str, Any]:
    events = [json.loads(line) for path in sorted(timing_dir.glob(f"{kind}-*.jsonl")) for line in path.read_text().splitlines()]
    per: dict[str, float] = defaultdict(float)
    for e in events:
        # a pooled worker may predate the search: count its start-up from the start of the search only
        per[e["what"]] += e["end"] - max(e["start"], start) if e["what"] == "process_start" else e["end"] - e["start"]
    trials = [e for e in events if e["what"] == "trial"]
    wall = end - start
    work = per["workload"]
    in_trial_fn = per["trial"]
    ideal = work / concurrency
    return {
        "kind": kind,
        "trials": len(trials),
        "wall_s": wall,
        "sum_trial_s": work,
        "ideal_wall_s": ideal,
        "overhead_s": wall - ideal,
        "overhead": (wall - ideal) / wall,
        # exact split of overhead_s (seconds of wall): in-trial + outside
        "in_trial_s": (in_trial_fn - work) / concurrency,
        "outside_s": wall - in_trial_fn / concurrency,
        # of which: trial processes starting up (Ray worker boot, unpickling, imports) ...
        "startup_s": (per["process_start"] + per["imports"]) / concurrency,
        # ... and the rest (scheduling, driver set-up and tear-down, Pareto, idle slots)
        "other_outside_s": wall - in_trial_fn / concurrency - (per["process_start"] + per["imports"]) / concurrency,
        "first_trial_start_s": min(e["start"] for e in trials) - start if trials else None,
        "after_last_trial_s": end - max(e["end"] for e in trials) if trials else None,
        "per_category_sum_s": dict(per),
        "trial_function_s": sorted(e["end"] - e["start"] for e in trials),
    }


class LoadSampler:
    """Samples the 1-minute load average every ``period`` s in a thread (other jobs on the machine inflate start-up times)."""

    def __init__(self, period: float = 5.0) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(period)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        return {"load1_mean": sum(self.samples) / len(self.samples), "load1_max": max(self.samples)} if self.samples else {}


PATHS = {"bare": "bare Ray Tune", "mg": "mg-tune run_search"}
SUMMARY = ("wall_s", "sum_trial_s", "ideal_wall_s", "overhead_s", "overhead", "in_trial_s", "startup_s", "other_outside_s")
CATEGORIES = (
    "process_start", "imports", "mlflow_client", "find_trial_run", "trial_logger_init", "set_tags", "resume_point",
    "callback", "log_epoch", "tune_report", "finish",
)


def median_row(rows: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    import statistics

    mine = [r for r in rows if r["kind"] == kind]
    out: dict[str, Any] = {"kind": kind, "repeat": "median", "trials": mine[0]["trials"]}
    out |= {k: statistics.median(r[k] for r in mine) for k in SUMMARY}
    out["per_category_sum_s"] = {c: statistics.median(r["per_category_sum_s"].get(c, 0.0) for r in mine) for c in CATEGORIES}
    if kind == "mg":
        names = {n for r in mine for n in r["driver_s"]}
        out["driver_s"] = {n: statistics.median(r["driver_s"].get(n, 0.0) for r in mine) for n in sorted(names)}
    return out


def print_report(rows: list[dict[str, Any]], medians: list[dict[str, Any]], args: argparse.Namespace) -> float:
    print()
    print(
        f"Search overhead: {args.trials} trials x {args.trial_seconds:g} s ({args.epochs} epochs), concurrency {args.concurrency}"
        f", reuse_actors={args.reuse_actors}; seconds of wall"
    )
    print()
    print("| path | run | trials | wall s | Σ trial s | ideal wall s | overhead s | overhead | in-trial s | start-up s | other outside s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    shown = rows + (medians if args.repeats > 1 else [])
    for r in sorted(shown, key=lambda r: (r["kind"], str(r["repeat"]))):
        run = r["repeat"] if r["repeat"] == "median" else f"{r['repeat'] + 1} ({r['position']})"
        print(
            f"| {PATHS[r['kind']]} | {run} | {r['trials']} | {r['wall_s']:.1f} | {r['sum_trial_s']:.1f} | {r['ideal_wall_s']:.1f} | "
            f"{r['overhead_s']:.1f} | {100 * r['overhead']:.1f} % | {r['in_trial_s']:.1f} | {r['startup_s']:.1f} | {r['other_outside_s']:.1f} |"
        )
    bare, mg = medians
    ratio = mg["overhead"] / bare["overhead"] if bare["overhead"] > 0 else float("inf")
    print()
    print(
        f"mg-tune overhead {100 * mg['overhead']:.1f} %, bare {100 * bare['overhead']:.1f} %, ratio {ratio:.2f}x"
        f"{' (medians)' if args.repeats > 1 else ''}   (goal: mg-tune <= 5 % and <= 1.5x bare)"
    )
    print()
    print("Trial-process time outside the workload, summed over a search's trials (s; / concurrency = seconds of wall)"
          f"{', median over runs' if args.repeats > 1 else ''}:")
    print("| what | bare | mg-tune |")
    print("|---|---:|---:|")
    for k in CATEGORIES:
        b, m = bare["per_category_sum_s"][k], mg["per_category_sum_s"][k]
        print(f"| {k} | {f'{b:.2f}' if b else ''} | {f'{m:.2f}' if m else ''} |")
    print()
    print("mg-tune driver (s of wall): " + ", ".join(f"{k} {v:.2f}" for k, v in mg["driver_s"].items()))
    for r in sorted(rows, key=lambda r: (r["kind"], r["repeat"])):
        print(
            f"{r['kind']} run {r['repeat'] + 1}: first trial started {r['first_trial_start_s']:.1f} s after the start, "
            f"the last ended {r['after_last_trial_s']:.1f} s before the end; 1-min load average mean {r.get('load1_mean', float('nan')):.1f}, "
            f"max {r.get('load1_max', float('nan')):.1f} ({os.cpu_count()} CPUs)"
        )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--trial-seconds", type=float, default=30.0, help="workload seconds per trial (sleep, split over the epochs)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="run both paths this many times, alternating which goes first; report medians")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--reuse-actors", action=argparse.BooleanOptionalAction, default=True, help="the spec's reuse_actors for both paths (default on, as shipped)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up search (bare, 1 epoch per slot) that warms Ray and the page cache")
    parser.add_argument("--workdir", type=Path, help="keep the Ray storage, MLflow store and timings here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)

    import ray
    import yaml
    from mlflow import MlflowClient

    from mg_tune.search.spec import SearchSpec

    root = Path(tempfile.mkdtemp(prefix="mg-overhead-")) if args.workdir is None else args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri).search_experiments()  # schema migration: not part of a search

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    fronts = []
    errors = 0
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if not args.no_warmup:
            warm_dir = root / "timings" / "warmup"
            warm_dir.mkdir(parents=True, exist_ok=True)
            warm_args = argparse.Namespace(**{**vars(args), "epochs": 1, "trial_seconds": 0.1})
            warm_spec = SearchSpec.model_validate(bench_spec(warm_args, root, cpus) | {"trials": args.concurrency})
            run_bare(warm_spec, warm_args, root, warm_dir, name="overhead-warmup")
        for repeat in range(args.repeats):
            raw = bench_spec(args, root, cpus) | {"name": f"overhead-{repeat + 1}"}
            spec = SearchSpec.model_validate(raw)
            order = ("bare", "mg") if repeat % 2 == 0 else ("mg", "bare")
            for position, kind in enumerate(order, 1):
                timing_dir = root / "timings" / f"{kind}-{repeat + 1}"
                timing_dir.mkdir(parents=True, exist_ok=True)
                driver: dict[str, Any] = {}
                with LoadSampler() as load:
                    if kind == "bare":
                        start, end, errs = run_bare(spec, args, root, timing_dir, name=f"overhead-bare-{repeat + 1}")
                    else:
                        start, end, errs, timed_calls, outcome = run_mg(spec, yaml.safe_dump(raw, sort_keys=False), args, tracking_uri, timing_dir)
                        driver = {k: sum(e - s for s, e in v) for k, v in timed_calls.items()}
                        fronts.append({"front": len(outcome.pareto.front), "checkpoints": len(outcome.pareto.table)})
                row = analyse(kind, start, end, args.concurrency, timing_dir)
                row |= {"repeat": repeat, "position": "first" if position == 1 else "second", "errors": errs, "driver_s": driver} | load.summary()
                rows.append(row)
                errors += errs
    finally:
        ray.shutdown()
    medians = [median_row(rows, "bare"), median_row(rows, "mg")]
    ratio = print_report(rows, medians, args)
    print(f"mg-tune Pareto fronts: {fronts}; trial errors: {errors}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": {
                "platform": platform.platform(), "python": platform.python_version(), "cpus": cpus,
                "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            },
            "versions": {m: __import__(m).__version__ for m in ("ray", "optuna", "mlflow", "torch")},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "runs": rows,
            "medians": medians,
            "ratio_mg_over_bare": ratio,
            "pareto": fronts,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
