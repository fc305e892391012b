"""Progress bars of long work: drawn on stderr's terminal (a recording rich console stands in for it), nothing in a pipe.

``mg-tune pareto`` runs on a real SQLite store: its bars count the LoggedModels read and the tag
requests sent; ``data check`` counts the images it decodes. In a pipe the commands print exactly
what they printed before bars existed.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mg_tune import output
from mg_tune.checkpoint import save_checkpoint
from mg_tune.cli import app
from mg_tune.output import NO_PROGRESS, ProgressBars
from mg_tune.tracking import TrialLogger, start_search
from mg_tune.train import EpochResult

from helpers.data_formats import write_voc

WIDTH = 100
original_progress_console = output.progress_console


def recording_console() -> Console:
    """A terminal as rich sees one (colours, cursor moves) that keeps what it was sent."""
    return Console(file=io.StringIO(), force_terminal=True, record=True, width=WIDTH)


@pytest.fixture
def terminal(monkeypatch) -> Console:
    """stderr is a terminal for :func:`mg_tune.output.progress_bars`: its bars go to the returned recording console."""
    console = recording_console()
    monkeypatch.setattr(output, "progress_console", lambda: console)
    return console


def bar_lines(console: Console, description: str) -> list[str]:
    """Every rendering of the bar of ``description`` that reached ``console`` (rich redraws it in place)."""
    text = console.export_text(clear=False).replace(description, "\n" + description)
    return [line.strip() for line in text.splitlines() if line.startswith(description)]


def test_a_task_draws_a_transient_bar_with_its_count_on_a_terminal():
    console = recording_console()
    with ProgressBars(console).task("evaluating 3 checkpoints", 3) as advance:
        for _ in range(3):
            advance(1)
    assert bar_lines(console, "evaluating 3 checkpoints")[-1].split()[-2] == "3/3"  # then the time left, 0:00:00
    assert console.file.getvalue().endswith("\x1b[2K")  # transient: the last line is erased when the task ends


def test_an_unknown_total_counts_up_and_ends_at_what_was_done():
    console = recording_console()
    with ProgressBars(console).task("reading pages") as advance:
        advance(1000)
        advance(234)
    assert bar_lines(console, "reading pages")[-1].split()[-2] == "1234/1234"


def test_bytes_show_sizes_and_advance_from_many_threads():
    console = recording_console()
    with ProgressBars(console).task("uploading to s3://b/p", 4 * 250_000, unit="bytes") as advance:
        threads = [threading.Thread(target=lambda: [advance(1000) for _ in range(250)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert "1.0/1.0 MB" in bar_lines(console, "uploading to s3://b/p")[-1]


def test_track_yields_every_item_and_counts_them():
    console = recording_console()
    assert list(ProgressBars(console).track(range(7), "decoding train images")) == list(range(7))
    assert "7/7" in bar_lines(console, "decoding train images")[-1]


def test_no_console_draws_nothing(capsys):
    with NO_PROGRESS.task("anything", 2) as advance:
        advance(2)
    assert list(NO_PROGRESS.track([1, 2], "anything")) == [1, 2]
    assert capsys.readouterr() == ("", "")


PROBE = "from mg_tune.output import progress_console; print(progress_console() is not None)"


def probe(stderr, **env: str) -> str:
    """Whether a fresh process with ``stderr`` (and ``env``) would draw bars."""
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")} | env
    return subprocess.run([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=stderr, text=True, env=environ, timeout=60, check=True).stdout.strip()


def test_bars_are_drawn_on_a_real_terminal_only():
    primary, secondary = pty.openpty()
    try:
        assert probe(secondary, TERM="xterm") == "True"
        assert probe(secondary, TERM="dumb") == "False"  # rich: not interactive
        assert probe(secondary, TERM="xterm", TTY_INTERACTIVE="0") == "False"
    finally:
        os.close(primary)
        os.close(secondary)
    assert probe(subprocess.PIPE) == "False"
    assert probe(subprocess.PIPE, FORCE_COLOR="1") == "False"  # a coloured CI log is still a log: rich alone would call it a terminal


# --------------------------------------------------------------------------- commands

SEARCH = "bars"
# trial -> epoch -> objectives; front: (t0, 2) and (t1, 1), hypervolume 0.625·0.5 + (0.75 − 0.625)·0.25 = 0.34375;
# three trial runs, six checkpoints
TRIALS = {
    "t0": {1: {"f1": 0.5, "epg": 0.4}, 2: {"f1": 0.625, "epg": 0.5}},
    "t1": {1: {"f1": 0.75, "epg": 0.25}, 2: {"f1": 0.125, "epg": 0.125}},
    "t2": {1: {"f1": 0.25, "epg": 0.25}, 2: {"f1": 0.5, "epg": 0.125}},
}


def small_search(uri: str, root) -> None:
    """``TRIALS`` logged as the search runner logs them (no Ray): a LoggedModel per epoch."""
    search = start_search(SEARCH, {"objectives": ["f1", "epg"]}, "objectives: [f1, epg]\n", uri, resume=False)
    for trial_id, epochs in TRIALS.items():
        logger = TrialLogger(search, trial_id, {"lam": 1.0})
        for epoch, metrics in epochs.items():
            path = save_checkpoint(root / trial_id / f"epoch={epoch:03d}" / "checkpoint.pt", torch.nn.Linear(2, 2), None, epoch, metrics, {})
            logger.log_epoch(EpochResult(epoch, dict(metrics), path, None))
        logger.finish()


def test_pareto_draws_its_bars_on_a_terminal_and_prints_the_same_lines_as_in_a_pipe(tmp_path, new_mlflow_store, terminal, monkeypatch):
    uri = new_mlflow_store()
    small_search(uri, tmp_path)
    args = ["pareto", "--search", SEARCH, "--tracking-uri", uri, "--output", "csv"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == ["trial_id,epoch,params.lam,f1,epg", "t0,2,1.0,0.625,0.5", "t1,1,1.0,0.75,0.25"]
    assert shown.stderr.splitlines()[:2] == ["front on f1 (max), epg (max)", "hypervolume: 0.3438"]
    read = bar_lines(terminal, f"reading the checkpoints of search {SEARCH!r} from MLflow")
    assert read[-1].split()[-2] == "6/6"  # six LoggedModels in one page; the total known once read
    tagged = bar_lines(terminal, "tagging the front (2 checkpoints) in MLflow")
    assert tagged[-1].split()[-2] == "4/4"  # two trial runs and two LoggedModels tagged: one request each

    monkeypatch.setattr(output, "progress_console", original_progress_console)  # CliRunner's stderr: no terminal
    piped = CliRunner().invoke(app, args)
    assert (piped.exit_code, piped.stdout, piped.stderr) == (0, shown.stdout, shown.stderr)  # nothing extra, nothing less

    again = recording_console()
    monkeypatch.setattr(output, "progress_console", lambda: again)
    assert CliRunner().invoke(app, args).stdout == shown.stdout
    assert bar_lines(again, "tagging the front (2 checkpoints) in MLflow")[-1].split()[-2] == "0/0"  # the tags are right: no request


def test_data_check_counts_the_images_it_decodes_on_a_terminal_and_prints_the_same_lines(tmp_path, terminal, monkeypatch):
    root = write_voc(tmp_path)
    shown = CliRunner().invoke(app, ["data", "check", "voc", "--root", str(root), "--output", "json"])
    assert shown.exit_code == 0, shown.output
    images = {row["split"]: row["images"] for row in json.loads(shown.stdout)}
    assert images == {"train": 3, "val": 2, "heldout": 1, "test": 2}  # VOC_SETS; one val image held out
    for split, count in images.items():
        assert bar_lines(terminal, f"decoding {split} images")[-1].split()[-2] == f"{count}/{count}"
    monkeypatch.setattr(output, "progress_console", original_progress_console)  # CliRunner's stderr: no terminal
    piped = CliRunner().invoke(app, ["data", "check", "voc", "--root", str(root), "--output", "json"])
    assert (piped.exit_code, piped.stdout, piped.stderr) == (0, shown.stdout, shown.stderr)
