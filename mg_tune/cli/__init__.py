"""The ``mg-tune`` command line (typer).

Every user error is one line on stderr naming the file/field/value at fault
and exit code 2; nothing is written before the input has been validated.

One module per group of commands; this package only assembles them into
:data:`app` (the console script ``mg-tune = "mg_tune.cli:app"``):

==================  ==========================================================
``_search``         ``search``, ``pareto``, ``evaluate``, ``export``, ``dashboard``
``_data``           ``data check``: the real data sets on disk
``_server``         ``server``: the cluster's MLflow tracking server
``_jobs``           ``submit``, ``jobs list|logs|stop``: searches as Ray jobs
``_common``         what the command modules share (the console, the tracking URI of ``--tracking-uri``)
==================  ==========================================================
"""

from __future__ import annotations

import os

import typer

from mg_tune.cli import _data, _jobs, _search, _server
from mg_tune.output import quiet_libraries

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per download is noise in a CLI

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-objective hyperparameter search for model guidance.")


@app.callback()
def _quiet() -> None:
    """Multi-objective hyperparameter search for model guidance."""
    quiet_libraries()  # every command: Ray's, MLflow's and Optuna's routine lines stay off the console


for command in (_search.search, _search.pareto, _search.evaluate, _search.export, _search.dashboard):
    app.command()(command)
# `mg-tune data ...` (issue 6): checks of the real data sets on disk.
app.add_typer(_data.data_app, name="data")
# `mg-tune server` (issue 7): the cluster's MLflow tracking server.
app.command()(_server.server)
# `mg-tune submit` and `mg-tune jobs ...` (issue 19): searches as Ray jobs on a cluster, see mg_tune/jobs/.
app.command()(_jobs.submit)
app.add_typer(_jobs.jobs_app, name="jobs")


def main() -> None:  # pragma: no cover - console entry
    app()
