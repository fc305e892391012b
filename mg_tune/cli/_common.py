"""What the command modules share: the console that tables and messages go to, the tracking URI of ``--tracking-uri``."""

from __future__ import annotations

from mg_tune.output import fail, stdout_console

__all__ = ["console", "tracking_uri_option"]

console = stdout_console()


def tracking_uri_option(value: str | None) -> str:
    """The tracking URI a command uses: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``.

    Its password, if any, leaves it here (:func:`mg_tune.tracking.move_credentials`),
    so messages and links show the URI as it is kept; one that cannot be
    moved fails in one line (exit 2).
    """
    from mg_tune.tracking import default_tracking_uri, move_credentials

    try:
        return move_credentials(value or default_tracking_uri(), "tracking URI")
    except ValueError as exc:
        fail(str(exc))
