"""Shared fixtures: servers and clusters are started once per test session."""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from mg_tune.search.gate import GATE_ENV

T = TypeVar("T")

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

SLOW_FIXTURES = frozenset({"ray_local", "ray_cluster", "s3_endpoint", "mlflow_server", "cluster", "browser"})
"""Fixtures that start Ray, a server or a browser: every test using one (directly or through another fixture) is ``slow``."""


def pytest_collection_modifyitems(items):
    """Mark ``slow`` every test that starts Ray or a server through a fixture, so ``-m "not slow"`` (``make test-fast``) leaves it out.

    Tests that start one themselves (a search in a subprocess, ``mlflow models serve``) carry ``@pytest.mark.slow``.
    """
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class Gate:
    """The trials' gate (:mod:`mg_tune.search.gate`) seen from a test: hold every trial after its next epoch, release one or all.

    Deterministic fault injection: a test closes the gate, waits (:func:`wait_for`) until a trial is held
    after epoch k, injects its fault there, and opens the gate; no timing decides what the trial has done.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Every trial now waits after the epoch it logs next: none can run past the test."""
        (self.root / "closed").touch()

    def open(self, trial_id: str | None = None) -> None:
        """Let ``trial_id`` run on; every trial when None."""
        if trial_id is None:
            (self.root / "closed").unlink(missing_ok=True)
        else:
            (self.root / f"open-{trial_id}").touch()


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 300.0, every: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail naming ``what`` after ``timeout`` s.

    Only for states the test has made certain (a trial held at the gate, a server that is up), never to hope that
    a race goes one way.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


CREDENTIAL_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSFILE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
)
"""Where ``mg_tune.tracking.move_credentials`` puts a password it takes out of a URI (in this process's environment)."""


@pytest.fixture(autouse=True)
def credentials_stay_in_their_test():
    """A test whose command moved a password into the environment (``mg-tune search`` in-process) leaves it there: undo that."""
    saved = {key: os.environ.get(key) for key in CREDENTIAL_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def gate_dir(tmp_path_factory) -> Path:
    """The gate of every trial on the session's local Ray (``$MG_TUNE_GATE_DIR`` of its workers); open unless a test closes it."""
    return tmp_path_factory.mktemp("gate")


@pytest.fixture
def gate(ray_local, gate_dir):
    """The session Ray's :class:`Gate`, opened again after the test whatever happens in it."""
    gate = Gate(gate_dir)
    yield gate
    gate.open()


@pytest.fixture(scope="session")
def ray_local(gate_dir):
    """A new local Ray instance with 2 CPUs (never a cluster another process started), shut down at the end of the session.

    Its workers inherit ``$MG_TUNE_GATE_DIR`` (the :func:`gate` fixture) from this process.
    """
    import ray

    os.environ[GATE_ENV] = str(gate_dir)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def finished_search_console(tmp_path_factory) -> Path:
    """The file :func:`finished_search` printed its console to (event lines, as in a pipe or a job log)."""
    return tmp_path_factory.mktemp("finished-search-console") / "console.txt"


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory, ray_local, new_mlflow_store, finished_search_console):
    """One real search on the session's Ray, run once for every test that only reads it; returns ``(uri, outcome)``.

    :func:`helpers.searches.spec_dict` named ``FINISHED_SEARCH``: NSGA-II, 6 trials x 2 epochs, 4 at a time, overlays
    logged. Read it, never write to it (no new runs, tags or models): a test that must, works on a copy of the store
    (``tests/services/test_dashboard.py``). What it printed is in :func:`finished_search_console`.
    """
    import yaml
    from rich.console import Console

    from mg_tune.search.runner import run_search
    from mg_tune.search.spec import SearchSpec

    from helpers.searches import FINISHED_SEARCH, spec_dict

    root = tmp_path_factory.mktemp("finished-search")
    uri = new_mlflow_store()
    raw = spec_dict(FINISHED_SEARCH, root / "runs", concurrency=4)
    with finished_search_console.open("w") as printed:
        console = Console(file=printed, width=200, soft_wrap=True, highlight=False)
        outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri, live=False, console=console)
    return uri, outcome


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1 at a free port for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A new bucket on the session's S3 server, dummy credentials in the environment; returns the bucket name."""
    import uuid

    import boto3

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"mg-tune-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """Factory of fresh SQLite tracking stores: MLflow's schema migration (~8 s) runs once, then the file is copied."""
    import shutil

    from mlflow import MlflowClient

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    def make() -> str:
        db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
        shutil.copyfile(template, db)
        return f"sqlite:///{db}"

    return make


@pytest.fixture(scope="session")
def postgres_database():
    """Factory of fresh PostgreSQL databases on 127.0.0.1:5432 (dropped at the end); skips where none is reachable."""
    import uuid

    import psycopg

    admin_uri = os.environ.get("MG_TUNE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        admin = psycopg.connect(admin_uri, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL reachable at {admin_uri} ({str(exc).strip().splitlines()[0]}); set MG_TUNE_TEST_POSTGRES")
    created = []

    def make() -> str:
        name = f"mg_tune_test_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return admin_uri.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with admin.cursor() as cursor:
        for name in created:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def s3_credentials():
    """Dummy AWS credentials for the session's moto server (processes started by tests inherit them)."""
    values = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    return values


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, postgres_database, s3_endpoint, s3_credentials):
    """An ``mlflow server`` process (mg_tune.server): PostgreSQL backend store, artifacts in a moto S3 bucket.

    Yields ``(uri, bucket)``; artifacts land under ``s3://<bucket>/mlartifacts``.
    """
    import uuid

    import boto3

    from mg_tune.server import MlflowServer, ServerConfig, free_port

    bucket = f"mg-tune-server-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, **_boto_credentials(s3_credentials)).create_bucket(Bucket=bucket)
    config = ServerConfig(backend_store_uri=postgres_database(), artifacts_destination=f"s3://{bucket}/mlartifacts", port=free_port())
    env = {**s3_credentials, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with MlflowServer(config, env=env, log_path=log) as server:
        yield server.uri, bucket


def _boto_credentials(values: dict) -> dict:
    return {
        "aws_access_key_id": values["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": values["AWS_SECRET_ACCESS_KEY"],
        "region_name": values["AWS_DEFAULT_REGION"],
    }


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium under Playwright, one per test module (the dashboard's and MLflow's UI tests)."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser missing: Debian's chromium at {CHROMIUM} (apt-get install -y chromium; `make install` does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
