"""Reading a search's Pareto front from MLflow: the checkpoint index, bounded paging, one history request per run (issues 5, 22).

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
Each checkpoint's index row (:func:`mg_tune.tracking.checkpoint_record`,
what a trial reports) then goes through the driver's
:class:`mg_tune.search.checkpoint_index.CheckpointIndexWriter` as Tune's
results would, and its ``on_experiment_end`` checks it against the trial
runs and writes the complete index to the parent run, as a search does.
A store kept by ``--keep`` from before the index gets its index from a full
read (the writer's ``setup``).

Then, on the same store, it times and counts tracking-store requests
(:func:`mg_tune.tracking.count_requests`; against an MLflow server each is
one HTTP request) of

* **index**: what :func:`mg_tune.front.search_pareto` with ``tag=False``
  does (experiment, parent run, the index artifact, ``search_runs`` pages,
  then the front and hypervolume);
* **full**: the same with the index ignored (``search_logged_models`` pages
  instead of the artifact): what a search without a complete index costs;
* **naive**: ``search_runs`` pages, then ``get_metric_history(run, key)``
  for every run and objective (what the MLflow client offers for per-epoch
  values), then the same front.

All must find the same front (and index and full the same table).
``--sizes`` runs several search sizes to
show the scaling: mg-tune's requests grow only by one per 1,000 runs or
checkpoints (a page), the naive count by 3 per trial. With ``--server`` the
reads also go over HTTP to an ``mlflow server`` (127.0.0.1) on the same
store, which is how a cluster reads them: one server per
``--server-workers`` value (default: ``mg-tune server``'s worker count).
Times are medians of ``--repeats`` reads; for mg-tune's readers it also
prints the CPU seconds one read costs in the server's processes ("srv cpu",
the server and its workers) and in this process ("cli cpu"): on a loaded
machine wall times swing, CPU seconds much less. ``--keep DIR`` keeps the
filled stores and reuses them next time (filling 10,000 checkpoints takes
4-7 minutes); ``--skip-naive`` times mg-tune's readers only.

    python bench/pareto_from_mlflow.py                      # 1,000 trials x 10 epochs
    python bench/pareto_from_mlflow.py --sizes 100 1000 --server
    python bench/pareto_from_mlflow.py --server --server-workers 1 4 --skip-naive --keep /tmp/pbench
    python bench/pareto_from_mlflow.py --sizes 1000 --server --skip-naive --keep /tmp/pbench   # issue 22 item 4
"""

from __future__ import annotations

import argparse
import contextlib
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
from types import SimpleNamespace

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric, Param

from mg_tune.checkpoint_table import read_search, search_table
from mg_tune.pareto import pareto_front
from mg_tune.front import mark_pareto
from mg_tune.search.checkpoint_index import RESULT_KEY, CheckpointIndexWriter
from mg_tune.server import MlflowServer, ServerConfig, free_port
from mg_tune.tracking import (
    EPOCH_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    SearchRun,
    checkpoint_record,
    count_requests,
    experiment_name,
    find_search_run,
    index_rows,
    iter_runs,
    start_search,
)

OBJECTIVES = ["f1", "epg", "iou"]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as the mg-tune CLI does


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


def _fill_trials(search_run: SearchRun, first: int, last: int, epochs: int) -> list[tuple[str, dict]]:
    """Write trials ``first .. last-1``; return what each epoch's trial reports: (trial id, index row)."""
    client = MlflowClient(search_run.tracking_uri)
    reports = []
    for t in range(first, last):
        rng = np.random.default_rng(t)
        trial = f"trial_{t:05d}"
        tags = {TRIAL_TAG: trial, PARENT_TAG: search_run.run_id, SEARCH_TAG: search_run.name, ROLE_TAG: "trial"}
        run_id = client.create_run(search_run.experiment_id, run_name=trial, tags=tags).info.run_id
        client.log_batch(run_id, params=[Param("lam", repr(float(10 ** rng.uniform(-3, 2)))), Param("loss", "energy")])
        metrics = []
        for epoch in range(1, epochs + 1):
            model = client.create_logged_model(
                search_run.experiment_id, name=f"{trial}-epoch-{epoch:03d}", source_run_id=run_id,
                tags={TRIAL_TAG: trial, EPOCH_TAG: str(epoch), SEARCH_TAG: search_run.name},
            )
            f1, epg, iou = rng.beta(2, 2, size=3)
            values = {"f1": f1, "epg": epg * (1.2 - f1) / 1.2, "iou": iou * epg, "loss": rng.uniform(), "epoch": epoch}
            metrics += [Metric(k, float(v), model.creation_timestamp, epoch, model_id=model.model_id) for k, v in values.items()]
            client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
            reports.append((trial, checkpoint_record(run_id, epoch, model, values)))
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
    return reports


def fill(db: Path, name: str, trials: int, epochs: int, workers: int) -> float:
    """Write ``trials`` x ``epochs`` checkpoints (no files) from ``workers`` processes, then the search's index; return seconds.

    The writers are child processes with fill-only SQLite pragmas; afterwards
    the file is put back in SQLite's default (rollback journal) mode, so the
    measuring process reads an ordinary store. The index is written by the
    driver's callback from the trials' reports (:func:`write_driver_index`).
    """
    uri = f"sqlite:///{db}"
    t0 = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=_fast_sqlite) as pool:
        search_run = pool.submit(_start, uri, name, trials).result()  # creates the schema, single writer
    index = CheckpointIndexWriter(search_run)  # its setup() would read the new search's no checkpoints (and lock the file the fill writes)
    bounds = np.linspace(0, trials, workers + 1).astype(int)
    reports = []
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_fast_sqlite) as pool:
        for job in [pool.submit(_fill_trials, search_run, a, b, epochs) for a, b in zip(bounds[:-1], bounds[1:])]:
            reports += job.result()
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    write_driver_index(index, reports)
    return time.perf_counter() - t0


def write_driver_index(index: CheckpointIndexWriter, reports: list[tuple[str, dict]]) -> None:
    """Feed the trials' reports to the driver's index callback as Tune would, then end the experiment (check, write, tag)."""
    t0 = time.perf_counter()
    for trial_id, record in sorted(reports, key=lambda r: r[1]["created"]):
        index.on_trial_result(0, [], SimpleNamespace(trial_id=trial_id), {"epoch": record["epoch"], RESULT_KEY: record})
    index.on_experiment_end([])
    print(f"driver index: {len(index.records)} rows, {index.bytes_written / 1e3:.0f} kB written in all, {time.perf_counter() - t0:.1f} s", flush=True)


def ensure_index(uri: str, name: str) -> None:
    """A store filled before the index existed gets one from a full read (the driver's ``setup``), complete."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment_name(name)).experiment_id
    parent = find_search_run(client, experiment_id)
    if index_rows(parent) is None:
        index = CheckpointIndexWriter(SearchRun(uri, experiment_id, parent.info.run_id, name))
        index.setup()
        write_driver_index(index, [])


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


@contextlib.contextmanager
def parent_artifacts_through_server(db: Path):
    """While a server serves this store, the parent run's artifacts are proxied by it (``mlflow-artifacts:/…``).

    The store was filled directly (SQLite), so its runs' artifact URIs are
    local files (``<dir>/mlartifacts/…``), which a client would read without
    the server. A search run through a server has ``mlflow-artifacts:/``
    URIs, so the index is downloaded through the server: for the time the
    server runs (its ``--artifacts-destination`` is ``<dir>/mlartifacts``),
    the parent run's URI is rewritten to the proxied one for the same files.
    """
    root = (db.parent / "mlartifacts").resolve().as_uri()
    query = "SELECT r.run_uuid, r.artifact_uri FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = ? AND t.value = 'search'"
    with sqlite3.connect(db) as connection:
        run_id, local = connection.execute(query, (ROLE_TAG,)).fetchone()
        assert local.startswith(root), (local, root)
        connection.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", ("mlflow-artifacts:" + local[len(root) :], run_id))
    try:
        yield
    finally:
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (local, run_id))


def pareto_read(uri: str, name: str, use_index: bool):
    """What :func:`mg_tune.front.search_pareto` does with ``tag=False``; ``use_index=False`` ignores the search's index."""
    return mark_pareto(search_table(read_search(uri, name, use_index)), OBJECTIVES, [True, True, True])


def measure(uri: str, name: str, repeats: int, naive: bool = True, server_pid: int | None = None) -> dict:
    """Median-of-``repeats`` seconds, CPU seconds and request counts of each reader; asserts they agree.

    Per mg-tune reader (``index``, ``full``): ``s`` (wall), ``server_cpu`` /
    ``client_cpu`` (median CPU seconds of one read in the server's processes,
    ``server_pid`` and its workers, and in this process), ``req`` / ``http``
    (store calls / HTTP requests of one read), ``calls``, ``all`` (every wall time).
    """
    out: dict = {}
    results = {}
    for reader, use_index in (("index", True), ("full", False)):
        wall, server_cpu, client_cpu = [], [], []
        for _ in range(repeats):
            with count_requests() as count:
                s0, c0, t0 = _tree_cpu(server_pid), time.process_time(), time.perf_counter()
                results[reader] = pareto_read(uri, name, use_index)
                wall.append(time.perf_counter() - t0)
                server_cpu.append(_tree_cpu(server_pid) - s0)
                client_cpu.append(time.process_time() - c0)
        out[reader] = {
            "s": statistics.median(wall), "all": wall, "server_cpu": statistics.median(server_cpu), "client_cpu": statistics.median(client_cpu),
            "req": count.store, "http": count.http, "calls": dict(count.calls),
        }
    assert read_search(uri, name).from_index, "the search has no complete index"
    pd.testing.assert_frame_equal(results["index"].table, results["full"].table, check_exact=True)
    front = set(zip(results["index"].front.run_id, results["index"].front.epoch.astype(int)))
    nan = float("nan")
    out["naive"] = {"s": nan, "req": 0, "http": 0}
    if naive:
        times = []
        for _ in range(repeats):
            with count_requests() as count:
                t0 = time.perf_counter()
                naive_set, rows = naive_front(uri, name)
                times.append(time.perf_counter() - t0)
        assert naive_set == front and rows == len(results["index"].table), "the readers disagree"
        out["naive"] = {"s": statistics.median(times), "req": count.store, "http": count.http}
    out["rows"], out["front"] = len(results["index"].table), len(front)
    return out


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
        f"{'via':7} {'trials':>6} {'ckpts':>6} {'front':>5} | {'reader':6} {'req':>5} {'wall s':>7} {'srv cpu':>7} {'cli cpu':>7} | "
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
                ensure_index(uri, "bench")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                fill_s = fill(db, "bench", trials, args.epochs, args.workers)
                print(f"filled {trials} trials x {args.epochs} epochs in {fill_s:.1f} s ({args.workers} writer processes)", flush=True)
            targets: list[tuple[str, int | None]] = [("sqlite", None)] + ([("http", w) for w in args.server_workers] if args.server else [])
            for via, workers in targets:
                with contextlib.ExitStack() as stack:
                    server = None
                    if workers is not None:
                        stack.enter_context(parent_artifacts_through_server(db))
                        server = MlflowServer(ServerConfig(uri, (folder / "mlartifacts").resolve().as_uri(), port=free_port(), workers=workers)).start()
                        stack.callback(server.stop)
                    target = uri if server is None else server.uri
                    m = measure(target, "bench", args.repeats, naive=not args.skip_naive, server_pid=None if server is None else server.process.pid)
                key = "http" if via == "http" else "req"
                label = via if workers is None else f"http/{workers}"
                for reader in ("index", "full"):
                    r = m[reader]
                    naive = f"{'-':>9} {'-':>7} | {'-':>9} {'-':>10}" if args.skip_naive else (
                        f"{m['naive'][key]:>9} {m['naive']['s']:>7.2f} | {m['naive'][key] / r[key]:>8.0f}x {m['naive']['s'] / r['s']:>9.1f}x"
                    )
                    lines.append(
                        f"{label:7} {trials:>6} {m['rows']:>6} {m['front']:>5} | {reader:6} {r[key]:>5} {r['s']:>7.2f} {r['server_cpu']:>7.2f} {r['client_cpu']:>7.2f} | {naive}"
                    )
                    print(lines[-1], f"  calls: {r['calls']}; reads: {[round(t, 2) for t in r['all']]} s; load average {os.getloadavg()[0]:.1f}", flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
