"""Everything the ``mg-tune`` commands print: tables (rich, JSON or CSV), message lines, error lines.

Every table-printing command builds a list of :class:`Column` and a list of row
dicts and hands them to :func:`print_table`; it prints them in one of
:data:`OUTPUT_FORMATS`:

* ``table``: a rich table. On a terminal rich fits it to the terminal's width and
  folds an id column onto a second line rather than cutting it; when stdout is
  not a terminal (a pipe, a file, ``$(...)``) the table gets the width it needs,
  so no cell is ever cut to ``98c9…`` (rich would assume 80 columns).
* ``json``: one JSON array on stdout, one object per row with the columns' keys
  and raw values (numbers unrounded, NaN as ``null``).
* ``csv``: a header line of the columns' keys, then one line per row.

With ``json``/``csv`` the commands' other lines (hypervolume, hints) go to stderr,
so stdout holds the data alone.

Long work (decoding a data set's images, reading 10⁴ checkpoints from MLflow, evaluating
a front, uploading an export) shows :class:`ProgressBars`: transient rich bars on stderr
when stderr is a terminal, nothing at all in a pipe or a job log (:func:`progress_bars`).
The library functions take a ``progress`` argument that defaults to :data:`NO_PROGRESS`.

The libraries under mg-tune chat on the same console: :func:`quiet_libraries` keeps
their routine lines out of it (every command starts with it; ``search --verbose``
lets them through), never their warnings and errors.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

OUTPUT_FORMATS = ("table", "json", "csv")
"""Values of ``--output``."""

OUTPUT_HELP = "table (rich; never cut when piped), json (one array of row objects) or csv; json/csv print only the rows on stdout"

_UNLIMITED = 100_000
"""Width a table is measured in when stdout is not a terminal (wider than any table)."""


def output_option() -> Any:
    """The ``--output`` option every table-printing command takes (a fresh ``typer.Option`` per command)."""
    return typer.Option("table", "--output", help=OUTPUT_HELP)


def stdout_console() -> Console:
    """A console on the current ``sys.stdout`` (typer's test runner swaps it, so never cache one)."""
    return Console(soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one error line on stderr, ``message`` literally (``[x, y, w, h]`` is no rich markup), and exit with ``code`` (2: bad input)."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warning(text: str) -> None:
    """Print one warning line on stderr (``warning: text``, the text literally); the command goes on."""
    Console(stderr=True, soft_wrap=True).print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Python warnings raised inside print afterwards as ``warning: text`` lines, each text once.

    Not as Python shows them (``file.py:123: UserWarning: text`` and the source line): a
    warning of mg-tune's (a split without boxes, a checkpoint without weights) is for the user.
    """
    with warnings.catch_warnings(record=True) as caught:
        yield
    for text in dict.fromkeys(str(w.message) for w in caught):
        warning(text)


def check_output_format(value: str) -> str:
    """``value`` if it is one of :data:`OUTPUT_FORMATS`; otherwise one error line and exit 2."""
    if value not in OUTPUT_FORMATS:
        fail(f"--output {value!r} is not a format; valid: {', '.join(OUTPUT_FORMATS)}")
    return value


def message(text: str, output: str = "table") -> None:
    """A plain line (no markup, never wrapped): on stdout for tables, on stderr when stdout holds JSON/CSV."""
    console = stdout_console() if output == "table" else Console(stderr=True, soft_wrap=True)
    console.print(text, highlight=False, markup=False)


Advance = Callable[[float], None]
"""``advance(n)``: ``n`` more units of a task done (items, or bytes)."""

T = TypeVar("T")


class ProgressBars:
    """Progress of a command's long work: transient rich bars on ``console``, or nothing when it is None.

    A task is ``with bars.task(description, total) as advance: ... advance(n)``; its bar
    shows ``done/total`` (``unit="bytes"``: sizes and speed). ``total=None`` means not known
    up front (pages of an MLflow search): the bar counts ``done/?`` and, once the task
    ends, reads ``done/done``. Bars are transient (erased when their task ends) and
    ``advance`` may be called from any thread (boto3's transfer threads, concurrent
    page reads): rich's ``Progress`` holds a lock.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    @property
    def shown(self) -> bool:
        return self.console is not None

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "items") -> Iterator[Advance]:
        """One task's bar while the ``with`` block runs; yields its ``advance``."""
        if self.console is None:
            yield _ignore
            return
        count = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
        columns = [TextColumn("{task.description}", markup=False), BarColumn(), *count, TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=True) as bars:
            task = bars.add_task(description, total=total)
            yield lambda n=1: bars.advance(task, n)
            if total is None:
                bars.update(task, total=bars.tasks[0].completed)  # its one task: the count it ended at

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """``items``, one by one, advancing a bar of ``total`` items (``len(items)`` by default).

        An item counts once the consumer is done with it: when it asks for the next one, or
        stops asking (``zip`` with a shorter iterable never asks again after its last item).
        """
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.task(description, total) as advance:
            for item in items:
                try:
                    yield item
                finally:
                    advance(1)


def _ignore(n: float = 1) -> None:
    """The ``advance`` of a task nobody sees."""


NO_PROGRESS = ProgressBars(None)
"""No bars: the default of every library function that takes ``progress``."""


def progress_console() -> Console | None:
    """The console progress bars draw on: stderr when it is an interactive terminal, else None (a pipe gets nothing extra).

    Never stdout: the commands print tables, JSON or CSV there. Interactive as rich judges
    it (not ``TERM=dumb``, not ``TTY_INTERACTIVE=0``) *and* a real TTY: ``FORCE_COLOR``, which
    CI sets for coloured job logs, makes rich treat a pipe as a terminal, and a log must
    not fill with redrawn bars.
    """
    console = Console(stderr=True)
    isatty = getattr(sys.stderr, "isatty", None)
    return console if console.is_interactive and isatty is not None and isatty() else None


def progress_bars() -> ProgressBars:
    """A command's :class:`ProgressBars`: on stderr's terminal, or none at all in a pipe."""
    return ProgressBars(progress_console())


@dataclass(frozen=True)
class Column:
    """One column: ``key`` names it in JSON/CSV and in the row dicts, ``header`` in the rich table.

    ``format`` renders a value for the rich table only (JSON and CSV get the raw
    value); ``is_id`` marks identifiers, which fold instead of being cut.
    """

    key: str
    header: str | None = None
    format: Callable[[Any], str] = str
    justify: str = "right"
    is_id: bool = False


def fixed(digits: int) -> Callable[[Any], str]:
    """A formatter with ``digits`` decimals (``-`` for a missing value)."""
    return lambda v: "-" if _missing(v) else f"{float(v):.{digits}f}"


def short(value: Any) -> str:
    """Three significant digits for numbers, the text itself otherwise (hyperparameters such as ``loss``)."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A JSON-able Python value: numpy scalars unwrapped, NaN as None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def rich_table(title: str | None, columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> Table:
    """The rich table of ``rows``; id columns fold rather than cut.

    Title, headers and cells are :class:`rich.text.Text`: shown literally, never read as markup
    (a trial id or search name ``[a]`` stays ``[a]``).
    """
    table = Table(title=Text(title) if title is not None else None)
    for c in columns:
        table.add_column(Text(c.header or c.key), justify=c.justify, overflow="fold" if c.is_id else "ellipsis")
    for row in rows:
        table.add_row(*(Text(c.format(row[c.key])) for c in columns))
    return table


def print_rich(renderable: Any) -> None:
    """Print a rich renderable on stdout; when stdout is not a terminal, as wide as it needs to be."""
    console = stdout_console()
    if not console.is_terminal:
        needed = console.measure(renderable, options=console.options.update_width(_UNLIMITED)).maximum
        console = Console(soft_wrap=True, width=max(needed, console.width))
    console.print(renderable)


def print_table(title: str | None, columns: list[Column], rows: Iterable[Mapping[str, Any]], output: str = "table") -> None:
    """Print ``rows`` (dicts holding every column's key) as a rich table, JSON array or CSV on stdout."""
    rows = list(rows)
    if output == "json":
        sys.stdout.write(json.dumps([{c.key: _plain(r[c.key]) for c in columns} for r in rows], indent=2) + "\n")
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for r in rows:
            writer.writerow(["" if _plain(r[c.key]) is None else _plain(r[c.key]) for c in columns])
    else:
        print_rich(rich_table(title, columns, rows))
    sys.stdout.flush()


QUIET_LOGGERS: tuple[str, ...] = ("mlflow", "alembic", "optuna")
"""Loggers whose INFO lines are routine (MLflow's "Creating initial MLflow database tables...",
alembic's migrations, Optuna's "A new study created in memory"): quiet, they show WARNING and above."""

QUIET_ENVIRONMENT: dict[str, str] = {
    # Ray Tune's "Experiment state snapshotting has been triggered multiple times ..." warning: mg-tune
    # snapshots on purpose every 2 s (TUNE_GLOBAL_CHECKPOINT_S=2, so that
    # --resume loses nothing); 0 turns that one warning off (ray/tune/execution/experiment_state.py).
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # MLflow sets its loggers' level from this when it is imported (mlflow.utils.logging_utils).
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
"""Environment variables set while quiet (only where the user has not set them)."""

QUIET_MESSAGES: dict[str, tuple[str, ...]] = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled for this Ray cluster",),
    "ray.tune.execution.tune_controller": ("Trial task failed for trial",),
    "ray.tune.tune": ("Trials did not complete",),
}
"""Routine lines libraries log at WARNING level, by logger: dropped while quiet. Ray prints the token
line whenever ``RAY_AUTH_MODE`` is unset and a token exists, i.e. on every search that starts its own Ray.
Ray Tune logs every failed trial's traceback (40+ lines) and the list of failed trials at ERROR level:
the search console prints each failure as one line with its cause instead
(:mod:`mg_tune.search.console`), and the traceback stays in the trial's ``error.txt``."""

QUIET_WARNINGS: tuple[str, ...] = ("Define-by-run function passed in the `space` argument took",)
"""Starts of routine Python warnings (``warnings.warn``): dropped while quiet. Ray Tune's OptunaSearch warns
when the define-by-run call takes over a second, and with ``sampler: gp`` it does by design: Optuna's
GPSampler fits its Gaussian processes and optimises log-EHVI inside that call, at every proposal."""


class _RoutineFilter(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_quiet_state: dict[str, object] = {"env": [], "filters": [], "warnings": []}


def quiet_libraries(verbose: bool = False) -> None:
    """Keep Ray's, MLflow's and Optuna's routine lines off the console, or (``verbose``) let them through again.

    Quiet: the :data:`QUIET_LOGGERS` show WARNING and above, the
    :data:`QUIET_ENVIRONMENT` variables are set where unset (they reach the Ray
    processes this one starts), and the :data:`QUIET_MESSAGES` and
    :data:`QUIET_WARNINGS` are dropped. Their other warnings and errors still
    show. Verbose undoes exactly that: the loggers go back to INFO, the
    variables mg-tune set are removed, the warnings show again.
    """
    import re
    import warnings

    import optuna

    level = logging.INFO if verbose else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(level)  # optuna resets its logger's level when it first configures it
    for key in _quiet_state["env"]:
        os.environ.pop(key, None)
    for logger_name, routine in _quiet_state["filters"]:
        logging.getLogger(logger_name).removeFilter(routine)
    warnings.filters[:] = [f for f in warnings.filters if f not in _quiet_state["warnings"]]
    _quiet_state["env"], _quiet_state["filters"], _quiet_state["warnings"] = [], [], []
    if verbose:
        return
    for key, value in QUIET_ENVIRONMENT.items():
        if key not in os.environ:
            os.environ[key] = value
            _quiet_state["env"].append(key)
    for logger_name, prefixes in QUIET_MESSAGES.items():
        routine = _RoutineFilter(prefixes)
        logging.getLogger(logger_name).addFilter(routine)
        _quiet_state["filters"].append((logger_name, routine))
    for prefix in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(prefix))
        _quiet_state["warnings"].append(warnings.filters[0])
