"""``mg-tune server``: the MLflow tracking server of a cluster (see :mod:`mg_tune.server`)."""

from __future__ import annotations

import signal
from typing import Optional

import typer

from mg_tune.cli._common import console
from mg_tune.output import fail


def check_backend_store(uri: str) -> None:
    """Connect once to a database backend store, so a wrong URI fails here in one line.

    Raises:
        ValueError: the database cannot be reached (the message names the URI, without a password: see :func:`server`).
    """
    from mg_tune.tracking import check_database

    if "://" in uri and not uri.startswith(("sqlite:", "file:")):
        check_database(uri, "--backend-store-uri", timeout=5)


def server(
    backend_store_uri: str = typer.Option("sqlite:///mlflow.db", "--backend-store-uri", help="runs and metrics: postgresql://user@host/db, or sqlite:///file"),
    artifacts_destination: str = typer.Option("./mlartifacts", "--artifacts-destination", help="checkpoints and plots: s3://bucket/prefix or a directory"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; a cluster head uses its private IP"),
    port: int = typer.Option(5000, "--port"),
    workers: int = typer.Option(1, "--workers", help="server processes (~0.5 GB each)"),
    auth: bool = typer.Option(False, "--auth", help="MLflow basic auth; admin password from $MLFLOW_AUTH_ADMIN_PASSWORD"),
    allowed_hosts: Optional[str] = typer.Option(None, "--allowed-hosts", help="comma-separated Host headers to accept besides localhost"),
    log_file: Optional[str] = typer.Option(None, "--log-file", help="append the server's output here"),
) -> None:
    """Start the MLflow tracking server trials log to, and print the URI to use.

    It says "ready" only once its own server answers on --port (a port in use is refused, exit 2).
    SIGTERM or SIGINT stops the server and then this command, with exit code 0.
    """
    from mg_tune.server import MlflowServer, ServerConfig, ServerError
    from mg_tune.tracking import move_credentials

    try:  # a password leaves the URIs first (for the server's environment): no message below shows it
        backend_store_uri = move_credentials(backend_store_uri, "--backend-store-uri")
        artifacts_destination = move_credentials(artifacts_destination, "--artifacts-destination")
        check_backend_store(backend_store_uri)
    except ValueError as exc:
        fail(str(exc))
    config = ServerConfig(
        backend_store_uri=backend_store_uri, artifacts_destination=artifacts_destination, host=host, port=port,
        workers=workers, auth=auth, allowed_hosts=[h.strip() for h in (allowed_hosts or "").split(",") if h.strip()],
    )
    mlflow_server = MlflowServer(config, log_path=log_file)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop while starting: KeyboardInterrupt, start() stops the child
    try:
        mlflow_server.start()
    except ServerError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(f"MLflow tracking server ready ({backend_store_uri}, artifacts {artifacts_destination})", highlight=False, markup=False)
    console.print(f"export MLFLOW_TRACKING_URI={config.uri}", highlight=False, markup=False)
    code, stopped_by = mlflow_server.serve()  # SIGTERM/SIGINT go on to the server; it is reaped before this returns
    if stopped_by is not None:
        raise typer.Exit(0)  # a requested stop is a clean end (systemd, docker, supervisord)
    where = f"; see {log_file}" if log_file else ""
    typer.echo(f"error: mlflow server for {backend_store_uri} exited on its own with code {code}{where}", err=True)
    raise typer.Exit(code if code > 0 else 1)  # killed by a signal nobody sent through this command: not a clean end
