"""What the command modules share: the console that tables and messages go to, the tracking URI of ``--tracking-uri``."""

from __future__ import annotations

from mg_tune.output import fail, stdout_console

__all__ = ["console", "tracking_uri_option"]

console = stdout_console()


def tracking_uri_option(value: str | None, check: bool = True) -> str:
    """The tracking URI a command uses: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``.

    Its password, if any, leaves it here (:func:`mg_tune.tracking.move_credentials`),
    so messages and links show the URI as it is kept. Then (``check``) the store
    must answer (:func:`mg_tune.tracking.check_tracking_uri`: one request, at most
    :data:`~mg_tune.tracking.REACHABILITY_TIMEOUT_S` seconds), so an unreachable
    server is one line within seconds, not MLflow's minutes of retries and a
    traceback. Either failure is one line, exit 2.
    """
    from mg_tune.tracking import check_tracking_uri, default_tracking_uri, move_credentials

    try:
        uri = move_credentials(value or default_tracking_uri(), "tracking URI")
        if check:
            check_tracking_uri(uri)
        return uri
    except ValueError as exc:
        fail(str(exc))
