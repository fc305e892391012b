"""Faults injected for real into running searches (issue 10): a diverging trial, a killed worker,
a tracking server that goes away and comes back, a password in the tracking URI.

Every search here is tiny (TextBox, 32 training images, 2-4 epochs) and runs on the session's
local Ray (`ray_local`), but the one with a password (a Ray of its own, which inherits the
credentials moved out of the URI). Faults are injected deterministically: the test closes the trials'
gate (`conftest.Gate`, `mg_tune.search.gate`), so every trial is held after epoch 1, injects the fault
from a thread while they are held, and opens the gate.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import psutil
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from conftest import wait_for

from mg_tune.checkpoint import load_checkpoint
from mg_tune.cli import app
from mg_tune.front import checkpoint_table
from mg_tune.search.runner import run_search
from mg_tune.search.spec import SearchSpec
from mg_tune.server import AUTH_PASSWORD_ENV, MlflowServer, ServerConfig, free_port
from mg_tune.tracking import FAILURE_TAG, ROLE_TAG, TRIAL_TAG, download_checkpoint, experiment_name

runner = CliRunner()


def tiny_spec(name: str, root: Path, *, trials=2, epochs=2, space=None, sampler="random", **extra) -> dict:
    return {
        "name": name,
        "data": {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "loss": "energy", "lam": 1.0,
                  "epochs": epochs, "batch_size": 16, "overlay_images": 1, "device": "cpu"},
        "space": space or {"lr": {"loguniform": [3e-4, 3e-3]}},
        "sampler": sampler,
        "trials": trials,
        "concurrency": 2,
        "resources": {"cpu": 1},
        "storage_path": str(root / "runs"),
        **extra,
    }


def trial_runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def test_a_diverging_trial_fails_once_with_its_reason_and_the_search_goes_on(tmp_path, ray_local):
    study = f"sqlite:///{tmp_path}/optuna.db"
    raw = tiny_spec("diverge", tmp_path, space={"lr": {"choice": [1e-3, 1e30]}}, sampler="grid", study_storage=study, max_failures=1)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = runner.invoke(app, ["search", str(tmp_path / "spec.yaml"), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    runs = {float(r.data.params["lr"]): r for r in trial_runs(MlflowClient(uri), "diverge")}
    assert runs[1e-3].info.status == "FINISHED"
    assert runs[1e30].info.status == "FAILED"
    cause = runs[1e30].data.tags[FAILURE_TAG]
    assert cause.startswith("DivergedError: non-finite loss")
    # the console: one line for the failure and one for the retry's, no traceback; the summary names count and cause
    diverged = runs[1e30].data.tags[TRIAL_TAG]
    assert f"trial {diverged} failed, retry 1 of 1: {cause}" in result.output
    assert f"trial {diverged} FAILED: DivergedError: not retried: {cause}" in result.output
    assert "Traceback" not in result.output
    assert f"1 of 2 trials failed: {cause} (1)" in result.output.splitlines()
    # Ray's FailureConfig retried the trial (max_failures=1), but the retry failed at once without training
    errors = list((tmp_path / "runs" / "diverge").glob("*/error.txt"))
    assert len(errors) == 1 and "not retried: DivergedError: non-finite loss" in errors[0].read_text()
    states = {t.params["lr"]: t.state for t in optuna.load_study(study_name="diverge", storage=study).trials}
    assert states == {1e-3: optuna.trial.TrialState.COMPLETE, 1e30: optuna.trial.TrialState.FAIL}


def test_a_search_whose_every_trial_failed_exits_1_with_the_first_cause_in_one_line(tmp_path, ray_local):
    raw = tiny_spec("allfail", tmp_path, space={"lr": {"choice": [1e29, 1e30]}}, sampler="grid", max_failures=0)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = runner.invoke(app, ["search", str(tmp_path / "spec.yaml"), "--tracking-uri", uri])
    assert result.exit_code == 1, result.output
    client = MlflowClient(uri)
    runs = trial_runs(client, "allfail")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    causes = {r.data.tags[TRIAL_TAG]: r.data.tags[FAILURE_TAG] for r in runs}
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: search 'allfail': all 2 trials failed; trial ")
    trial_id = errors[0].split("; trial ")[1].split(":")[0]
    assert errors[0].endswith(f"trial {trial_id}: {causes[trial_id]}") and causes[trial_id].startswith("DivergedError: non-finite loss")
    assert "Traceback" not in result.output and "Pareto front of search" not in result.output
    search = client.search_runs([client.get_experiment_by_name(experiment_name("allfail")).experiment_id], f"tags.`{ROLE_TAG}` = 'search'")
    assert [r.info.status for r in search] == ["FAILED"]


def held_trials(client: MlflowClient, name: str, count: int) -> list | None:
    """The ``count`` trial runs of search ``name`` held at the gate after epoch 1 (logged, with their worker pid), or None yet."""
    runs = [r for r in trial_runs(client, name) if r.data.metrics.get("epoch", 0) >= 1 and "mg_tune.pid" in r.data.tags]
    return runs if len(runs) >= count else None


def test_a_killed_worker_restarts_its_trial_from_the_last_checkpoint_without_gaps_or_duplicates(tmp_path, gate):
    epochs = 4
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = tiny_spec("killed-worker", tmp_path, epochs=epochs, max_failures=2)
    killed: dict[str, int] = {}

    def kill_a_worker_held_after_epoch_1() -> None:
        try:
            run = wait_for(lambda: held_trials(MlflowClient(uri), "killed-worker", 1), "a trial held after epoch 1")[0]
            pid = int(run.data.tags["mg_tune.pid"])
            os.kill(pid, signal.SIGKILL)
            killed[run.data.tags[TRIAL_TAG]] = pid
        finally:
            gate.open()

    gate.close()  # every trial stops after epoch 1 until the worker is killed
    killer = threading.Thread(target=kill_a_worker_held_after_epoch_1, daemon=True)
    killer.start()
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri)
    killer.join()
    assert len(killed) == 1, "no trial was held after epoch 1"
    (trial_id, pid), = killed.items()
    assert outcome.trials == 2 and outcome.errors == 0
    table = checkpoint_table(uri, "killed-worker")
    assert sorted(table.groupby("trial_id")["epoch"].apply(list).tolist()) == [list(range(1, epochs + 1))] * 2
    client = MlflowClient(uri)
    run = next(r for r in trial_runs(client, "killed-worker") if r.data.tags[TRIAL_TAG] == trial_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["mg_tune.pid"]) != pid  # the trial finished in another worker process
    for key in ("f1", "epg", "epoch"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, epochs + 1))


class DeadServer:
    """The port of a stopped tracking server, held by a socket that accepts each connection and drops it at once.

    A client sees what it sees when a server goes away (its request fails), and the test learns which process tried:
    :meth:`wait_for_request_from` returns once one of ``pids`` has sent a request into the outage.
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_server(("127.0.0.1", port))
        self.socket.settimeout(1.0)

    def wait_for_request_from(self, pids: set[int], timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn, peer = self.socket.accept()
            except TimeoutError:
                continue
            owner = next((c.pid for c in psutil.net_connections("tcp") if c.laddr and tuple(c.laddr)[:2] == peer[:2]), None)
            conn.close()
            if owner in pids:
                return owner
        raise AssertionError(f"no request from the trials {sorted(pids)} reached the stopped server within {timeout:.0f} s")

    def close(self) -> None:
        self.socket.close()


def test_a_tracking_server_outage_loses_no_metric_or_checkpoint(tmp_path, gate):
    epochs = 3
    config = ServerConfig(backend_store_uri=f"sqlite:///{tmp_path}/mlflow.db", artifacts_destination=str(tmp_path / "artifacts"), port=free_port())
    server = MlflowServer(config, log_path=tmp_path / "server.log").start()
    outage: dict[str, int] = {}

    def stop_the_server_while_the_trials_log_epoch_2() -> None:
        try:
            held = wait_for(lambda: held_trials(MlflowClient(server.uri), "outage", 2), "both trials held after epoch 1")
            server.stop()
            dead = DeadServer(config.port)
            try:
                gate.open()  # the trials train epoch 2 and try to log it into the outage
                outage["failed_request_from"] = dead.wait_for_request_from({int(r.data.tags["mg_tune.pid"]) for r in held})
            finally:
                dead.close()
            server.start()
        finally:
            gate.open()

    gate.close()
    injector = threading.Thread(target=stop_the_server_while_the_trials_log_epoch_2, daemon=True)
    injector.start()
    try:
        raw = tiny_spec("outage", tmp_path, epochs=epochs)
        outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), server.uri)
        injector.join()
        assert "failed_request_from" in outage, "no trial's request met the outage"
        assert outcome.trials == 2 and outcome.errors == 0
        table = checkpoint_table(server.uri, "outage")
        assert len(table) == 2 * epochs and not table.duplicated(["trial_id", "epoch"]).any()
        assert table[["f1", "epg", "iou"]].notna().all().all() and (table["status"] == "FINISHED").all()
        for row in table.itertuples():
            state = load_checkpoint(download_checkpoint(server.uri, row.run_id, int(row.epoch), tmp_path / "ckpt" / f"{row.trial_id}-{row.epoch}.pt"))
            assert state["epoch"] == row.epoch and state["metrics"]["epg"] == pytest.approx(row.epg)
    finally:
        server.stop()


@pytest.mark.slow  # a search in a subprocess: starts Ray
def test_a_password_in_the_tracking_uri_is_never_logged_stored_or_printed(tmp_path):
    """The laptop way: ``mg-tune search`` starts its own Ray, whose workers inherit the credentials moved out of the URI."""
    password = "Pw-never-LOGGED-4711"
    auth_ini = tmp_path / "basic_auth.ini"
    auth_ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/basic_auth.db\n"
        f"admin_username = admin\nadmin_password = {password}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    config = ServerConfig(backend_store_uri=f"sqlite:///{tmp_path}/mlflow.db", artifacts_destination=str(tmp_path / "artifacts"), port=free_port(), auth=True)
    env = {AUTH_PASSWORD_ENV: password, "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini)}
    ray_tmp = Path(tempfile.mkdtemp(prefix="mgt-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    try:
        with MlflowServer(config, env=env, log_path=tmp_path / "server.log") as server:
            uri = server.uri.replace("http://", f"http://admin:{password}@")
            spec_path = tmp_path / "spec.yaml"
            spec_path.write_text(yaml.safe_dump(tiny_spec("secret", tmp_path, epochs=1, tracking_uri=uri)))
            cli_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "COLUMNS")} | {"RAY_TMPDIR": str(ray_tmp)}
            done = subprocess.run([sys.executable, "-m", "mg_tune.cli", "search", str(spec_path)], env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert f"http://127.0.0.1:{config.port}/#/experiments/" in done.stdout and password not in done.stdout + done.stderr
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name("secret"))
            runs = client.search_runs([experiment.experiment_id], "")
            assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # the search and its two trials
            parent = next(r for r in runs if r.data.tags[ROLE_TAG] == "search")
            assert parent.data.params["tracking_uri"] == f"http://127.0.0.1:{config.port}"  # the URI as kept: the password moved out
            for run in runs:
                assert password not in repr(run.data.params) + repr(run.data.tags)
            spec_text = Path(client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path))).read_text()
            assert f"tracking_uri: http://127.0.0.1:{config.port}" in spec_text and password not in spec_text
        # nothing on disk holds it either: MLflow's database and artifacts, Ray Tune's state, everything of Ray's (logs, session)
        leaks = [
            str(path)
            for root in (tmp_path / "mlflow.db", tmp_path / "artifacts", tmp_path / "runs", ray_tmp)
            for path in ([root] if root.is_file() else root.rglob("*"))
            if path.is_file() and password.encode() in path.read_bytes()
        ]
        assert leaks == []
        assert list(ray_tmp.rglob("logs")), "Ray's logs were not where the test looked"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_study_storage_pickles_without_its_password(postgres_database, monkeypatch, tmp_path):
    import pickle

    from mg_tune.search.runner import study_storage
    from mg_tune.search.spec import SearchSpec
    from mg_tune.tracking import credentials

    monkeypatch.setattr(credentials, "_PASSFILE", None)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    admin = postgres_database()
    url = admin.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")  # trust auth ignores it
    storage = study_storage(SearchSpec(name="pickled", study_storage=url))
    assert storage.url == admin  # the password went to $PGPASSFILE, keyed by host, port, database and user
    where = urlsplit(admin)
    assert f"{where.hostname}:{where.port or '*'}:{where.path[1:]}:postgres:s3cret-pw" in Path(os.environ["PGPASSFILE"]).read_text().splitlines()
    frozen = pickle.dumps(storage)
    assert b"s3cret-pw" not in frozen
    thawed = pickle.loads(frozen)  # any process: the URL is whole, the password is where libpq looks
    study = optuna.create_study(study_name="pickled", storage=thawed, directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5]))
    assert len(optuna.load_study(study_name="pickled", storage=admin).trials) == 1
