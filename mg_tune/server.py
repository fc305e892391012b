"""The MLflow tracking server a cluster's trials log to (``mg-tune server``).

One ``mlflow server`` process: backend store (PostgreSQL on a cluster,
SQLite for one machine), artifacts proxied by the server to
``artifacts_destination`` (``s3://bucket/prefix`` on a cluster), so trials
need no cloud credentials of their own; only the server does (instance role
or ``AWS_*`` in its environment, ``MLFLOW_S3_ENDPOINT_URL`` for an
S3-compatible store).

Defaults are the safe and small ones: it binds ``127.0.0.1`` (a cluster head
passes ``--host`` with its private address), runs one worker with MLflow's
job runner off (~0.5 GB RSS instead of ~2 GB, STACK.md), and with
``auth=True`` runs MLflow's ``basic-auth`` app, whose admin password comes
from ``MLFLOW_AUTH_ADMIN_PASSWORD`` in the environment, never from a flag. A
password in the backend store's URI moves to the server's environment
(``PGPASSFILE``; :func:`mg_tune.tracking.move_credentials`), so it is not
on the ``mlflow server`` command line either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from mg_tune.tracking import move_credentials

AUTH_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
AUTH_SECRET_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


class ServerError(RuntimeError):
    """The server could not be started; the message says why in one line."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerConfig:
    """How to run ``mlflow server``; see the module docstring for the defaults."""

    backend_store_uri: str = "sqlite:///mlflow.db"
    artifacts_destination: str = "./mlartifacts"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    auth: bool = False
    allowed_hosts: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        """The tracking URI clients use (``0.0.0.0`` is reached as this machine's hostname)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        """The ``mlflow server`` command line (no secret on it)."""
        cmd = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
        ]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        if self.allowed_hosts:
            cmd += ["--allowed-hosts", ",".join(self.allowed_hosts)]
        return cmd


class MlflowServer:
    """A running ``mlflow server`` process: ``with MlflowServer(config) as server: server.uri``.

    ``start()`` returns once ``/health`` answers; output goes to ``log_path``
    (or is discarded). ``stop()`` terminates the process and waits for it.
    """

    def __init__(self, config: ServerConfig, env: dict[str, str] | None = None, log_path: str | Path | None = None) -> None:
        self.config = replace(  # a password in a store's URI goes to the server's environment (PGPASSFILE, AWS_*), not its command line
            config,
            backend_store_uri=move_credentials(config.backend_store_uri, "backend store"),
            artifacts_destination=move_credentials(config.artifacts_destination, "artifacts destination"),
        )
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return self.config.uri

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        if self.config.auth and not self.env.get(AUTH_PASSWORD_ENV):
            raise ServerError(f"--auth needs the admin password in ${AUTH_PASSWORD_ENV} (never on the command line)")
        if self.config.auth:
            self.env.setdefault(AUTH_SECRET_ENV, os.urandom(24).hex())
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.config.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.config.port}/health" if self.config.host in ("0.0.0.0", "::") else f"{self.uri}/health"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise ServerError(f"mlflow server for {self.config.backend_store_uri} exited with code {self.process.returncode}{where}")
            try:
                with urllib.request.urlopen(health, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(f"mlflow server on {self.uri} did not answer /health within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until the server exits; return its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)  # the server and its uvicorn workers
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def __enter__(self) -> "MlflowServer":
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
