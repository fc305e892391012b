"""Reading a search's Pareto front from MLflow: bounded paging vs one history request per run (issue 5).

Fills a fresh SQLite tracking store with ``--trials`` x ``--epochs``
checkpoints laid out exactly as :class:`mg_tune.tracking.TrialLogger` writes
them (one child run per trial, one READY LoggedModel per epoch with its
metrics linked, the same metrics with ``step=epoch`` on the run), but fast
and **without checkpoint files**: per trial one ``create_run``, one
``log_batch`` of params, then per epoch ``create_logged_model`` and
``finalize_logged_model``, and one ``log_batch`` of all its epochs' metrics
(MLflow has no batch call for LoggedModels). Artifacts play no part in
reading the front, so skipping them changes nothing measured. The writers
are ``--workers`` processes with SQLite's fsync turned off (fill only; the
store is put back into SQLite's default journal mode before reading).

Then, on the same store, it times and counts tracking-store requests
(:func:`mg_tune.tracking.count_requests`; against an MLflow server each is
one HTTP request) of

* **mg-tune**: :func:`mg_tune.front.search_pareto` with
  ``tag=False`` (experiment + ``search_runs`` pages + ``search_logged_models``
  pages, then the front and hypervolume);
* **naive**: ``search_runs`` pages, then ``get_metric_history(run, key)``
  for every run and objective (what the MLflow client offers for per-epoch
  values), then the same front.

Both must find the same front. ``--sizes`` runs several search sizes to
show the scaling: mg-tune's requests grow only by one per 1,000 runs or
checkpoints (a page), the naive count by 3 per trial. With ``--server`` the
reads also go over HTTP to an ``mlflow server`` (127.0.0.1) on the same
store, which is how a cluster reads them: one server per
``--server-workers`` value (default: ``mg-tune server``'s worker count).
Times are medians of ``--repeats`` reads; for mg-tune's reader it also
prints the CPU seconds one read costs in the server's processes ("srv cpu",
the server and its workers) and in this process ("cli cpu"): on a loaded
machine wall times swing, CPU seconds much less. ``--keep DIR`` keeps the
filled stores and reuses them next time (filling 10,000 checkpoints takes
4-7 minutes); ``--skip-naive`` times mg-tune's reader only.

    python bench/pareto_from_mlflow.py                      # 1,000 trials x 10 epochs
    python bench/pareto_from_mlflow.py --sizes 100 1000 --server
    python bench/pareto_from_mlflow.py --server --server-workers 1 4 --skip-naive --keep /tmp/pbench
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric, Param

from mg_tune.pareto import pareto_front
from mg_tune.front import search_pareto
from mg_tune.server import MlflowServer, ServerConfig, free_port
from mg_tune.tracking import (
    EPOCH_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    SearchRun,
    count_requests,
    iter_runs,
    start_search,
)

OBJECTIVES = ["f1", "epg", "iou"]


def _fast_sqlite() -> None:
    """Fill-only: no fsync per commit, WAL (so parallel writers mostly wait on CPU, not on disk)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()


def _start(uri: str, name: str, trials: int) -> SearchRun:
    return start_search(name, {"objectives": OBJECTIVES, "trials": trials}, "bench: true\n", uri, resume=False)


def _fill_trials(search: SearchRun, first: int, last: int, epochs: int) -> None:
    client = MlflowClient(search.tracking_uri)
    for t in range(first, last):
        rng = np.random.default_rng(t)
        trial = f"trial_{t:05d}"
        tags = {TRIAL_TAG: trial, PARENT_TAG: search.run_id, SEARCH_TAG: search.name, ROLE_TAG: "trial"}
        run_id = client.create_run(search.experiment_id, run_name=trial, tags=tags).info.run_id
        client.log_batch(run_id, params=[Param("lam", repr(float(10 ** rng.uniform(-3, 2)))), Param("loss", "energy")])
        metrics = []
        for epoch in range(1, epochs + 1):
            model = client.create_logged_model(
                search.experiment_id, name=f"{trial}-epoch-{epoch:03d}", source_run_id=run_id,
                tags={TRIAL_TAG: trial, EPOCH_TAG: str(epoch), SEARCH_TAG: search.name},
            )
            f1, epg, iou = rng.beta(2, 2, size=3)
            values = {"f1": f1, "epg": epg * (1.2 - f1) / 1.2, "iou": iou * epg, "loss": rng.uniform(), "epoch": epoch}
            metrics += [Metric(k, float(v), model.creation_timestamp, epoch, model_id=model.model_id) for k, v in values.items()]
            client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")


def fill(db: Path, name: str, trials: int, epochs: int, workers: int) -> float:
    """Write ``trials`` x ``epochs`` checkpoints (no files) from ``workers`` processes; return seconds.

    The writers are child processes with fill-only SQLite pragmas; afterwards
    the file is put back in SQLite's default (rollback journal) mode, so the
    measuring process reads an ordinary store.
    """
    uri = f"sqlite:///{db}"
    t0 = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=_fast_sqlite) as pool:
        search = pool.submit(_start, uri, name, trials).result()  # creates the schema, single writer
    bounds = np.linspace(0, trials, workers + 1).astype(int)
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_fast_sqlite) as pool:
        for job in [pool.submit(_fill_trials, search, a, b, epochs) for a, b in zip(bounds[:-1], bounds[1:])]:
            job.result()
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    return time.perf_counter() - t0


def naive_front(uri: str, name: str) -> tuple[set[tuple[str, int]], int]:
    """Front via one ``get_metric_history`` per run and objective; returns (front, rows)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"mg-tune/{name}")
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for run in iter_runs(client, experiment.experiment_id, f"tags.`{ROLE_TAG}` = 'trial'"):
        for key in OBJECTIVES:
            for metric in client.get_metric_history(run.info.run_id, key):
                rows.setdefault((run.info.run_id, metric.step), {})[key] = metric.value
    keys = sorted(rows)
    points = np.array([[rows[k].get(o, np.nan) for o in OBJECTIVES] for k in keys]).reshape(-1, len(OBJECTIVES))
    return {keys[i] for i in pareto_front(points, [True] * len(OBJECTIVES))}, len(keys)


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children so far; 0 without a process."""
    if pid is None:
        return 0.0
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(uri: str, name: str, repeats: int, naive: bool = True, server_pid: int | None = None) -> dict:
    """Median-of-``repeats`` seconds and request counts for both readers; asserts they agree.

    ``fast_server_cpu`` / ``fast_client_cpu``: median CPU seconds of one mg-tune read in the
    server's processes (``server_pid`` and its workers) and in this process.
    """
    fast, naive_s, server_cpu, client_cpu = [], [], [], []
    front, rows, naive_count = None, None, None
    for _ in range(repeats):
        with count_requests() as fast_count:
            s0, c0, t0 = _tree_cpu(server_pid), time.process_time(), time.perf_counter()
            result = search_pareto(uri, name, OBJECTIVES, [True, True, True], tag=False)
            fast.append(time.perf_counter() - t0)
            server_cpu.append(_tree_cpu(server_pid) - s0)
            client_cpu.append(time.process_time() - c0)
        if naive:
            with count_requests() as naive_count:
                t0 = time.perf_counter()
                front, rows = naive_front(uri, name)
                naive_s.append(time.perf_counter() - t0)
    fast_front = set(zip(result.front.run_id, result.front.epoch.astype(int)))
    if naive:
        assert fast_front == front and rows == len(result.table), "the two readers disagree"
    nan = float("nan")
    return {
        "rows": len(result.table),
        "front": len(fast_front),
        "fast_s": statistics.median(fast),
        "fast_all": fast,
        "fast_server_cpu": statistics.median(server_cpu),
        "fast_client_cpu": statistics.median(client_cpu),
        "naive_s": statistics.median(naive_s) if naive else nan,
        "fast_req": fast_count.store,
        "naive_req": naive_count.store if naive else 0,
        "fast_http": fast_count.http,
        "naive_http": naive_count.http if naive else 0,
        "fast_calls": dict(fast_count.calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000], help="numbers of trials (one store each)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the median of this many reads")
    parser.add_argument("--skip-naive", action="store_true", help="time only mg-tune's reader (the naive one takes minutes through a server)")
    parser.add_argument("--workers", type=int, default=1, help="writer processes for the fill (SQLite serialises writers: 2 were slower than 1 here)")
    parser.add_argument("--server", action="store_true", help="also read over HTTP from an mlflow server")
    parser.add_argument("--server-workers", type=int, nargs="+", default=[ServerConfig.workers], help=f"worker processes of that server, one server per value (mg-tune server's default: {ServerConfig.workers}; mlflow server's own: 4)")
    parser.add_argument("--keep", type=Path, help="keep the filled stores in this folder (n<trials>/e<epochs>/mlflow.db) and reuse them on the next run instead of filling again")
    args = parser.parse_args()

    print(f"# Pareto from MLflow: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    header = (
        f"{'via':7} {'trials':>6} {'ckpts':>6} {'front':>5} | {'mg-tune req':>11} {'s':>7} {'srv cpu':>7} {'cli cpu':>7} | "
        f"{'naive req':>9} {'s':>7} | {'req ratio':>9} {'time ratio':>10}"
    )
    lines = [header, "-" * len(header)]
    with tempfile.TemporaryDirectory() as tmp:
        for trials in args.sizes:
            folder = (args.keep or Path(tmp)) / f"n{trials}" / (f"e{args.epochs}" if args.keep else "")
            db = folder / "mlflow.db"
            uri = f"sqlite:///{db}"
            if args.keep and db.exists():
                print(f"reusing {db}", flush=True)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                fill_s = fill(db, "bench", trials, args.epochs, args.workers)
                print(f"filled {trials} trials x {args.epochs} epochs in {fill_s:.1f} s ({args.workers} writer processes)", flush=True)
            targets: list[tuple[str, int | None]] = [("sqlite", None)] + ([("http", w) for w in args.server_workers] if args.server else [])
            for via, workers in targets:
                server = None if workers is None else MlflowServer(ServerConfig(uri, (folder / "artifacts").as_uri(), port=free_port(), workers=workers)).start()
                try:
                    target = uri if server is None else server.uri
                    m = measure(target, "bench", args.repeats, naive=not args.skip_naive, server_pid=None if server is None else server.process.pid)
                finally:
                    if server is not None:
                        server.stop()
                req = (m["fast_http"], m["naive_http"]) if via == "http" else (m["fast_req"], m["naive_req"])
                label = via if workers is None else f"http/{workers}"
                naive = f"{'-':>9} {'-':>7} | {'-':>9} {'-':>10}" if args.skip_naive else (
                    f"{req[1]:>9} {m['naive_s']:>7.2f} | {req[1] / req[0]:>8.0f}x {m['naive_s'] / m['fast_s']:>9.1f}x"
                )
                lines.append(
                    f"{label:7} {trials:>6} {m['rows']:>6} {m['front']:>5} | {req[0]:>11} {m['fast_s']:>7.2f} {m['fast_server_cpu']:>7.2f} {m['fast_client_cpu']:>7.2f} | {naive}"
                )
                print(lines[-1], f"  mg-tune calls: {m['fast_calls']}; reads: {[round(t, 2) for t in m['fast_all']]} s; load average {os.getloadavg()[0]:.1f}", flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
