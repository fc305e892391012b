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

"Ready" is said only of the server this process started: MLflow's ``/health``
answers "OK" for any MLflow server, so before starting, the port must be free
(:func:`check_port_free`), and once ``/health`` answers, the socket listening
on the port must belong to the started process or one of its children
(:func:`listening`, psutil). That process was started with the backend
store asked for, so the store that answers is that one too.

Stopping: :meth:`MlflowServer.serve` forwards SIGTERM and SIGINT to the
server's process group, waits for it (SIGKILL after a grace period), and
returns; ``mg-tune server`` then exits 0 (a requested stop), so a supervisor
(systemd, docker, ``supervisord``) sees a clean end.
"""

from __future__ import annotations

import errno
import os
import signal
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


def check_port_free(host: str, port: int) -> None:
    """Bind ``(host, port)`` once, as the server will (``SO_REUSEADDR``, so a closing connection does not count).

    Raises:
        ServerError: the port is taken (by another MLflow server or anything else), or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerError(f"port {port} on {host} is already in use (another server is listening there); choose another --port") from None
            raise ServerError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def listening(pids: set[int], port: int) -> set[int]:
    """Those of ``pids`` that hold a TCP socket listening on ``port`` (any address)."""
    import psutil

    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections):
            found.add(pid)
    return found


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants (the ``mlflow`` command, its uvicorn server and workers); empty once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


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

    ``start()`` checks that the port is free, starts the process and returns
    once ``/health`` answers from it (see the module docstring); output goes to
    ``log_path`` (or is discarded). ``stop()`` terminates the process group
    and waits for it; ``serve()`` waits for it, forwarding SIGTERM/SIGINT.
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
        check_port_free(self.config.host, self.config.port)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.config.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        try:
            self.wait_healthy(timeout)
        except BaseException:  # not ready, refused, or interrupted (Ctrl+C, SIGTERM): no server is left behind
            self.stop()
            raise
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
                    pass
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
                continue
            if self.answers_itself():
                return
            raise ServerError(
                f"port {self.config.port} is answered by another process, not by the mlflow server started for {self.config.backend_store_uri}; "
                "choose another --port"
            )
        raise ServerError(f"mlflow server on {self.uri} did not answer /health within {timeout:.0f} s")

    def answers_itself(self) -> bool:
        """Whether a process of this server's tree listens on its port (then ``/health`` was its answer)."""
        assert self.process is not None
        return bool(listening(process_tree(self.process.pid), self.config.port))

    def serve(self, grace: float = 30.0) -> tuple[int, int | None]:
        """Block until the server exits; return ``(its exit code, the signal that stopped it or None)``.

        SIGTERM and SIGINT sent to this process are forwarded to the server's
        process group (the ``mlflow`` command, uvicorn and its workers); if it
        has not exited ``grace`` seconds after the first, the group gets SIGKILL.
        The handlers only send signals: waiting happens here, in one place
        (waiting inside a handler would interrupt this wait and deadlock on
        ``Popen``'s lock, leaving a defunct child behind).
        """
        assert self.process is not None
        received: list[int] = []

        def forward(signum: int, _frame: object) -> None:
            received.append(signum)
            self._signal_group(signum)

        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            deadline = None
            while True:
                try:
                    code = self.process.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if received and deadline is None:
                        deadline = time.monotonic() + grace
                    if deadline is not None and time.monotonic() > deadline:
                        self._signal_group(signal.SIGKILL)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self._wait_group_gone()
        return code, (received[0] if received else None)

    def stop(self, grace: float = 30.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after ``grace`` s) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)  # the server and its uvicorn workers
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        self._wait_group_gone()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:  # the group has ended already
            pass

    def _wait_group_gone(self, timeout: float = 10.0) -> None:
        """After the ``mlflow`` command exits, its uvicorn processes may still be closing: wait (then SIGKILL) so the port is free on return."""
        import psutil

        assert self.process is not None
        members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == self.process.pid]
        _, alive = psutil.wait_procs(members, timeout=timeout)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=timeout)

    def __enter__(self) -> "MlflowServer":
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
