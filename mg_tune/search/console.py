"""What a running search prints: mg-tune's own console, a Ray Tune callback, instead of Ray's reporter.

Ray Tune's reporter prints what Ray knows (``train_loss``, ``iter``, a
40-row box of every reported key per finished trial, a TensorBoard hint);
with Ray's default output engine a ``progress_reporter`` given to Tune is
dropped, so the search runs Tune with ``verbose=0`` on its legacy output engine
(:func:`ray_reporter`: the default engine still prints a configuration box and a
TensorBoard hint at ``verbose=0``) and prints through this :class:`SearchConsole` instead (``mg-tune search --verbose`` gives Ray's
output back, and this console then prints its event lines alongside).

Two forms, chosen by whether stdout is a terminal:

* **live** (a terminal): a compact view redrawn in place (rich ``Live``): a
  header line (search, sampler, scheduler, trials done/running/paused/failed
  of N, trial-epochs spent of planned, elapsed, ETA), a table of the running
  and the last finished trials with their hyperparameters and objectives,
  the front's size and hypervolume, and one line per failed trial with its
  cause. The last view stays on screen when the search ends.
* **event lines** (a pipe, a file, ``mg-tune jobs logs``): one line per
  event, never redrawn: a trial started (with its hyperparameters), an epoch
  with its objectives (``front 4, hypervolume 0.0945`` appended when that
  epoch changed the front), a trial finished / stopped early / failed (with
  its cause) / retried.

Trial-epochs, the front and the hypervolume are the
:class:`~mg_tune.search.callbacks.HypervolumeTracker`'s (the same points it
logs as metric ``hypervolume``), so a repeated epoch of a restarted trial is
neither printed nor counted twice. ETA is the remaining planned
trial-epochs (``trials × max_t``, or the budget's) at this driver's rate so
far, capped by the time budget; with early stopping the search usually ends
before it.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mg_tune.mlflow_links import where_to_look
from mg_tune.search.callbacks import HypervolumeTracker
from mg_tune.search.failures import trial_error_cause
from mg_tune.search.sampling import trial_params
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import SearchRun

__all__ = ["SearchConsole", "TrialLine", "format_duration", "format_value", "next_steps", "ray_reporter", "start_lines"]

RECENT = 6
"""Finished trials the live table keeps below the running ones."""

FAILURES_SHOWN = 5
"""Failure lines the live view keeps (the newest)."""


def format_value(value: Any) -> str:
    """Three significant digits for numbers (``0.000335``, ``0.68``), the text itself otherwise; ``-`` for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class TrialLine:
    """What the console knows of one trial: its hyperparameters, state, newest epoch and objectives, failure cause."""

    trial_id: str
    params: dict[str, Any]
    state: str = "running"  # running | finished | stopped | failed | paused
    epoch: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    cause: str | None = None
    ended: float = 0.0


class SearchConsole(tune.Callback):
    """Prints a search's progress (module docstring) on ``console`` (default: stdout); ``live=None`` picks the live view exactly when it is a terminal.

    Ray pickles the run config, callbacks included, into the experiment
    state: the console (a terminal handle) is left out and made again on
    unpickling, for ``--resume``.
    """

    def __init__(
        self, spec: SearchSpec, search_run: SearchRun, tracker: HypervolumeTracker, total: int, live: bool | None = None, console: Console | None = None
    ) -> None:
        self.spec = spec
        self.search_run = search_run
        self.tracker = tracker
        self.total = total
        self.live_wanted = live
        self._reset(console)

    def _reset(self, console: Console | None = None) -> None:
        self.console = console or Console(soft_wrap=True, highlight=False)
        self.trials: dict[str, TrialLine] = {}
        self.counts: dict[str, int] = {}
        self.failures: list[tuple[str, str]] = []  # (trial id, cause), in the order they happened
        self.front: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self.spent_here = 0
        self.live: Live | None = None
        self._drawn = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {key: self.__dict__[key] for key in ("spec", "search_run", "tracker", "total", "live_wanted")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # --- what is shown -------------------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        """The objectives, then the constraints' metrics (the tracker's order)."""
        return self.tracker.metrics

    def planned_trial_epochs(self) -> int:
        """``trials × max_t``, or the budget's trial-epochs when smaller."""
        planned = self.total * self.spec.max_t
        budget = self.spec.budget
        return min(planned, budget.trial_epochs) if budget is not None and budget.trial_epochs is not None else planned

    def eta(self) -> float | None:
        """Seconds left: remaining planned trial-epochs at this driver's rate, capped by the time budget; None before the first epoch."""
        elapsed = time.monotonic() - self.started
        budget = self.spec.budget
        left_by_time = budget.time_s - elapsed if budget is not None and budget.time_s is not None else math.inf
        if not self.spent_here:
            return None if math.isinf(left_by_time) else max(0.0, left_by_time)
        left = max(0, self.planned_trial_epochs() - len(self.tracker.points)) * elapsed / self.spent_here
        return max(0.0, min(left, left_by_time))

    def header(self) -> str:
        """One line: search, sampler, scheduler, trials by state of N, trial-epochs, elapsed, ETA."""
        c = self.counts
        scheduler = self.spec.scheduler.name if self.spec.scheduler is not None else "fifo"  # Tune's default: every trial to its end
        eta = self.eta()
        return (
            f"{self.spec.name} · {self.spec.sampler} · {scheduler} · trials {c.get('done', 0)}/{self.total} done, {c.get('running', 0)} running, "
            f"{c.get('paused', 0)} paused, {c.get('failed', 0)} failed · {len(self.tracker.points)}/{self.planned_trial_epochs()} trial-epochs · "
            f"{format_duration(time.monotonic() - self.started)} · ETA {'-' if eta is None else format_duration(eta)}"
        )

    def front_line(self) -> str:
        """``front: 4 checkpoints · hypervolume 0.0945`` (the tracker's numbers)."""
        if not self.tracker.points:
            return "front: no checkpoint yet"
        value = self.tracker.logged if self.tracker.logged is not None else self.tracker.hypervolume()
        return f"front: {len(self.front)} checkpoint{'' if len(self.front) == 1 else 's'} · hypervolume {value:.4f}"

    def planned_epochs(self, line: TrialLine) -> int:
        """The epochs a trial trains unless stopped: its sampled ``epochs``, else the spec's fixed ones (else ``max_t``)."""
        return int(line.params.get("epochs", self.spec.fixed.get("epochs", self.spec.max_t)))

    def params_text(self, params: dict[str, Any]) -> str:
        return " ".join(f"{k}={format_value(v)}" for k, v in params.items())

    def values_text(self, values: dict[str, float]) -> str:
        return " ".join(f"{m}={format_value(values.get(m))}" for m in self.metrics)

    def table(self) -> Table:
        """The running trials, then the :data:`RECENT` last ended ones: hyperparameters, state, epoch, objectives."""
        running = [t for t in self.trials.values() if t.state in ("running", "paused")]
        ended = sorted((t for t in self.trials.values() if t.state not in ("running", "paused")), key=lambda t: t.ended)[-RECENT:]
        names = list(dict.fromkeys(k for t in self.trials.values() for k in t.params))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for header in ("trial", "state", *names, "epoch", *self.metrics):
            table.add_column(header, justify="left" if header in ("trial", "state") else "right", no_wrap=True)
        for t in running + ended:
            epoch = "-" if t.epoch is None else f"{t.epoch}/{self.planned_epochs(t)}"
            table.add_row(t.trial_id, t.state, *(format_value(t.params.get(n)) for n in names), epoch, *(format_value(t.values.get(m)) for m in self.metrics))
        return table

    def view(self) -> Group:
        """The live view: header, trials table, front line, the newest failures with their causes."""
        parts: list[Any] = [Text(self.header(), style="bold"), self.table(), Text(self.front_line())]
        parts += [Text(f"✗ trial {trial_id} failed: {cause}", style="red") for trial_id, cause in self.failures[-FAILURES_SHOWN:]]
        if len(self.failures) > FAILURES_SHOWN:
            parts.append(Text(f"  ({len(self.failures) - FAILURES_SHOWN} earlier failures not shown)"))
        return Group(*parts)

    # --- output ------------------------------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        """One event: a line in the event-lines form, a redraw in the live form."""
        if self.live is not None:
            self._redraw()
        else:
            self.console.print(f"{datetime.now():%H:%M:%S} {text}", markup=False)

    def _redraw(self) -> None:
        if self.live is not None:
            self.live.update(self.view(), refresh=True)
            self._drawn = time.monotonic()

    def _count(self, trials: list) -> None:
        """Trials by Tune's state; a running trial that Tune paused or resumed shows it (an ended one stays ended:
        Tune calls ``on_trial_complete`` while the trial is still RUNNING)."""
        states = [str(t.status) for t in trials]
        for t, state in zip(trials, states):
            line = self.trials.get(t.trial_id)
            if line is not None and line.state in ("running", "paused") and state in ("RUNNING", "PAUSED"):
                line.state = state.lower()
        self.counts = {
            "done": states.count("TERMINATED"), "running": states.count("RUNNING"),
            "paused": states.count("PAUSED"), "failed": states.count("ERROR"),
        }

    def _trial(self, trial: Any) -> TrialLine:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = TrialLine(trial.trial_id, trial_params(dict(trial.config or {})))
        return self.trials[trial.trial_id]

    def close(self) -> None:
        """Stop redrawing (the last view stays on screen); safe to call twice."""
        if self.live is not None:
            self._redraw()
            self.live.stop()
            self.live = None

    # --- Ray Tune callback hooks -----------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        """Print the links (the UI can be opened while the search runs), then start the live view on a terminal."""
        self.started = time.monotonic()
        for line in start_lines(self.search_run.tracking_uri, self.spec.name):
            self.console.print(line, markup=False)
        self.front = set(self.tracker.front())
        live = self.console.is_terminal if self.live_wanted is None else self.live_wanted
        if live:
            self.live = Live(self.view(), console=self.console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Once a second at most, redraw the live view (elapsed time, ETA)."""
        if self.live is not None and time.monotonic() - self._drawn >= 1.0:
            self._count(trials)
            self._redraw()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._trial(trial)
        line.state = "running"
        self._count(trials)
        self._event(f"trial {trial.trial_id} started: {self.params_text(line.params)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return
        line = self._trial(trial)
        epoch = int(result["epoch"])
        if line.epoch is not None and epoch <= line.epoch:  # a restarted trial repeating an epoch already shown
            return
        line.epoch, line.values = epoch, {m: float(result.get(m, math.nan)) for m in self.metrics}
        self.spent_here += 1
        self._count(trials)
        front = set(self.tracker.front())
        changed = front != self.front
        self.front = front
        suffix = f"  → {self.front_line()}" if changed else ""
        self._event(f"trial {trial.trial_id} epoch {epoch}/{self.planned_epochs(line)}: {self.values_text(line.values)}{suffix}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._trial(trial)
        stopped = line.epoch is not None and line.epoch < self.planned_epochs(line)
        line.state, line.ended = ("stopped" if stopped else "finished"), time.monotonic()
        self._count(trials)
        epochs = "no epoch" if line.epoch is None else f"{line.epoch} epoch{'s' if line.epoch != 1 else ''}"
        self._event(f"trial {trial.trial_id} {'stopped early' if stopped else 'finished'} after {epochs}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cause = trial_error_cause(trial)
        self._count(trials)
        self._event(f"trial {trial.trial_id} failed, retry {trial.num_failures} of {self.spec.max_failures}: {cause}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._trial(trial)
        line.state, line.ended, line.cause = "failed", time.monotonic(), trial_error_cause(trial)
        self.failures.append((trial.trial_id, line.cause))
        self._count(trials)
        self._event(f"trial {trial.trial_id} FAILED: {line.cause}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._count(trials)
        self.close()


NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


@contextmanager
def ray_reporter(verbose: bool) -> Iterator[None]:
    """Ray Tune's own console output while the Tuner runs: off unless ``verbose`` (mg-tune's :class:`SearchConsole` prints instead).

    ``verbose=0`` alone does not silence Ray's default output engine: it still prints the
    experiment's configuration box, "View detailed results here" and a TensorBoard hint
    (``ray/tune/experimental/output.py``, ``experiment_started``). With ``RAY_AIR_NEW_OUTPUT=0``
    Tune takes its legacy engine, which at ``verbose=0`` prints nothing. Set only where the
    user has not set it, and only while the Tuner runs. Ray's "Resume experiment with:
    Tuner.restore(path=…, trainable=...)" after a stop is dropped even when ``verbose``:
    mg-tune resumes with ``--resume``, which the CLI prints.
    """
    hint = _NoTunerRestoreHint()
    logging.getLogger("ray.tune.tune").addFilter(hint)
    quiet = not verbose and NEW_OUTPUT_ENV not in os.environ
    if quiet:
        os.environ[NEW_OUTPUT_ENV] = "0"
    try:
        yield
    finally:
        logging.getLogger("ray.tune.tune").removeFilter(hint)
        if quiet:
            os.environ.pop(NEW_OUTPUT_ENV, None)


class _NoTunerRestoreHint(logging.Filter):
    """Drops Ray Tune's "Resume experiment with: Tuner.restore(...)" line (see :func:`ray_reporter`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


def start_lines(tracking_uri: str, search_name: str) -> list[str]:
    """The links printed when a search starts: the MLflow UI (command, runs, front, models) and the dashboard command."""
    return [*where_to_look(tracking_uri, search_name), f"dashboard:     mg-tune dashboard --search {shlex.quote(search_name)} --tracking-uri {shlex.quote(tracking_uri)}"]


def next_steps(search_name: str, tracking_uri: str, knee: tuple[str, int] | None) -> list[str]:
    """The commands to run after a search, ready to paste: register the front, test it, export the knee, explore it.

    ``knee`` is the front's knee checkpoint (trial id, epoch). No ``--objectives``: ``pareto``,
    ``evaluate`` and the dashboard default to the search's own objectives and constraints.
    """
    where = f"--search {shlex.quote(search_name)} --tracking-uri {shlex.quote(tracking_uri)}"
    lines = [
        "next:",
        f"  mg-tune pareto {where} --register {shlex.quote(search_name)}   # register the front (aliases best-<objective>, knee)",
        f"  mg-tune evaluate {where}   # the front on the test split, logged to MLflow",
    ]
    if knee is not None:
        lines.append(f"  mg-tune export {where} --trial {knee[0]} --epoch {knee[1]} --to {shlex.quote(search_name + '-knee')}   # the knee checkpoint as a model package")
    lines.append(f"  mg-tune dashboard {where}   # explore the front in a browser")
    return lines
