"""The Pareto explorer (``mg-tune dashboard``): a plotly Dash page over a search in MLflow.

:mod:`mg_tune.dashboard._data` reads a search (no Ray, nothing written),
:mod:`mg_tune.dashboard._app` builds the page, :func:`serve` runs it.
"""

from __future__ import annotations

import logging
import socket

from mg_tune.dashboard._app import build_app, export_command
from mg_tune.dashboard._data import FILTERS, Snapshot, Source

__all__ = ["FILTERS", "Snapshot", "Source", "build_app", "export_command", "serve"]


def serve(
    tracking_uri: str,
    search_name: str,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh_s: float = 10.0,
    objectives: str | None = None,
    mlflow_url: str | None = None,
    on_ready=None,
) -> None:
    """Read the search once, check that ``host:port`` is free, then serve the page until interrupted.

    ``on_ready(url)`` is called just before serving. ``objectives``: ``--objectives`` as given
    (``"f1,epg:max"``), None for the search's own (:class:`Source`).

    Raises:
        ValueError: unknown search or objective, ``refresh_s <= 0``, or the port is taken.
    """
    if refresh_s <= 0:
        raise ValueError(f"--refresh must be a positive number of seconds, got {refresh_s}")
    app = build_app(Source(tracking_uri, search_name, objectives), refresh_s=refresh_s, mlflow_url=mlflow_url)
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request (the page polls MLflow every refresh_s)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}/")
    app.run(host=host, port=port, debug=False)
