"""What a search prints (issue 30): mg-tune's console, in its event-line form (pipes, job logs) and its live view.

The event lines are checked against a real search (conftest's ``finished_search``, whose console went to a file)
and what MLflow holds for it; the live view is rendered to a rich ``Console(record=True)`` of fixed width from
hooks driven by hand over a real MLflow store, with hand-computed numbers; the demo (``make demo``'s spec)
is run as a user runs it, in a pipe, and its lines counted.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import cloudpickle
from ray.exceptions import RayTaskError
from rich.console import Console

from helpers.searches import FINISHED_SEARCH, OBJECTIVES, spec_dict

from mg_tune.data.errors import DatasetError
from mg_tune.front import checkpoint_table
from mg_tune.search.callbacks import HypervolumeTracker
from mg_tune.search.console import SearchConsole, format_value, next_steps
from mg_tune.search.failures import error_cause, failure_summary
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import start_search

REPO = Path(__file__).resolve().parents[2]
EVENT = re.compile(r"^\d\d:\d\d:\d\d (.*)$")
EPOCH_LINE = re.compile(r"^trial (\S+) epoch (\d+)/(\d+): (.*?)(?:  → front: (\d+) checkpoints? · hypervolume ([0-9.]+))?$")


def events(text: str) -> list[str]:
    """The event lines of a console's output, without their time of day."""
    return [m.group(1) for line in text.splitlines() if (m := EVENT.match(line))]


def test_every_trial_epoch_is_printed_once_with_the_objectives_mlflow_holds(finished_search, finished_search_console):
    uri, outcome = finished_search
    lines = events(finished_search_console.read_text())
    epochs = [m for line in lines if (m := EPOCH_LINE.match(line))]
    table = checkpoint_table(uri, FINISHED_SEARCH)
    printed = [(m.group(1), int(m.group(2))) for m in epochs]
    assert sorted(printed) == sorted(zip(table["trial_id"], table["epoch"].astype(int))) and len(set(printed)) == len(printed) == 12
    logged = table.set_index(["trial_id", "epoch"])
    for m in epochs:
        row = logged.loc[(m.group(1), int(m.group(2)))]
        assert m.group(3) == "2"
        assert m.group(4) == " ".join(f"{o}={format_value(float(row[o]))}" for o in OBJECTIVES)
    trials = set(table["trial_id"])
    assert sorted(line.split()[1] for line in lines if " started: " in line) == sorted(trials)
    assert sorted(line.split()[1] for line in lines if line.endswith("finished after 2 epochs")) == sorted(trials)
    last_front = [m for m in epochs if m.group(5)][-1]  # the front never changes after the last line that says it did
    assert int(last_front.group(5)) == len(outcome.pareto.front)
    assert last_front.group(6) == f"{outcome.pareto.hypervolume:.4f}"
    assert not any("Trial status" in line or "TensorBoard" in line for line in finished_search_console.read_text().splitlines())


def trial(trial_id: str, status: str, tmp_path: Path, error: Exception | None = None, **config) -> SimpleNamespace:
    """What the console reads of a Ray Tune trial; a failed one's pickled error lies where Ray writes it."""
    pickled = None
    if error is not None:
        pickled = tmp_path / f"{trial_id}.pkl"
        pickled.write_bytes(cloudpickle.dumps(error))
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, num_failures=1, pickled_error_file=str(pickled) if pickled else None, error_file=None)


def started_search(tmp_path, name: str):
    """A search of 6 trials started in a new SQLite store, and its hypervolume tracker set up: (spec, search run, tracker)."""
    spec = SearchSpec.model_validate(spec_dict(name, tmp_path / "runs"))
    search_run = start_search(name, spec.model_dump(mode="json"), "trials: 6\n", f"sqlite:///{tmp_path}/mlflow.db", resume=False)
    tracker = HypervolumeTracker(spec, search_run)
    tracker.setup()
    return spec, search_run, tracker


def test_the_live_view_and_the_event_lines_of_a_search_driven_by_hand(tmp_path):
    spec, search_run, tracker = started_search(tmp_path, "view")
    printed = io.StringIO()
    console = SearchConsole(spec, search_run, tracker, total=6, live=False, console=Console(file=printed, width=300, soft_wrap=True))
    bad_image = DatasetError("/data/VOC2007/JPEGImages/000310.jpg", "not a readable image")
    a = trial("a0001", "RUNNING", tmp_path, loss="energy", lam_energy=0.01, lr=0.001)
    b = trial("b0002", "RUNNING", tmp_path, loss="l1", lam_l1=0.5, lr=0.002)
    c = trial("c0003", "RUNNING", tmp_path, error=bad_image, loss="l1", lam_l1=2.0, lr=0.003)
    everyone = [a, b, c]

    def result(t, epoch, f1, epg, iou):
        values = {"epoch": epoch, "f1": f1, "epg": epg, "iou": iou}
        for callback in (tracker, console):  # the Tuner's order: the tracker first
            callback.on_trial_result(0, everyone, t, values)

    console.setup()
    console.on_trial_start(0, everyone, a)
    result(a, 1, 0.5, 0.2, 0.1)
    result(a, 2, 0.6, 0.3, 0.2)
    console.on_trial_complete(0, everyone, a)  # as Tune calls it: the trial still RUNNING
    a.status = "TERMINATED"
    console.on_trial_start(0, everyone, b)
    b.status = "PAUSED"
    result(b, 1, 0.7, 0.1, 0.1)
    result(b, 1, 0.7, 0.1, 0.1)  # a restarted trial repeating its epoch: neither printed nor counted again
    b.status = "RUNNING"
    console.on_trial_start(0, everyone, c)
    console.on_trial_recover(0, everyone, c)
    c.status = "ERROR"
    console.on_trial_error(0, everyone, c)

    cause = "DatasetError: /data/VOC2007/JPEGImages/000310.jpg: not a readable image"
    assert str(bad_image) == "/data/VOC2007/JPEGImages/000310.jpg: not a readable image"
    # front after A2: {A2}; after B1: {A2, B1}. HV = 0.6*0.3*0.2 + 0.7*0.1*0.1 - 0.6*0.1*0.1 = 0.036 + 0.007 - 0.006
    assert events(printed.getvalue()) == [
        "trial a0001 started: loss=energy lam=0.01 lr=0.001",
        "trial a0001 epoch 1/2: f1=0.5 epg=0.2 iou=0.1  → front: 1 checkpoint · hypervolume 0.0100",
        "trial a0001 epoch 2/2: f1=0.6 epg=0.3 iou=0.2  → front: 1 checkpoint · hypervolume 0.0360",
        "trial a0001 finished after 2 epochs",
        "trial b0002 started: loss=l1 lam=0.5 lr=0.002",
        "trial b0002 epoch 1/2: f1=0.7 epg=0.1 iou=0.1  → front: 2 checkpoints · hypervolume 0.0370",
        "trial c0003 started: loss=l1 lam=2 lr=0.003",
        f"trial c0003 failed, retry 1 of {spec.max_failures}: {cause}",
        f"trial c0003 FAILED: {cause}",
    ]
    links = [line for line in printed.getvalue().splitlines() if not EVENT.match(line)]
    assert links[0].startswith("MLflow UI:     mlflow ui --backend-store-uri " + search_run.tracking_uri) and links[-1] == f"dashboard:     mg-tune dashboard --search view --tracking-uri {search_run.tracking_uri}"

    recorded = Console(record=True, width=140, file=io.StringIO())
    recorded.print(console.view())
    view = [line.rstrip() for line in recorded.export_text().splitlines()]
    assert view[0].startswith("view · nsga2 · fifo · trials 1/6 done, 1 running, 0 paused, 1 failed · 3/12 trial-epochs · ")
    assert view[1].split() == ["trial", "state", "loss", "lam", "lr", "epoch", "f1", "epg", "iou"]
    assert [line.split() for line in view[2:5]] == [
        ["b0002", "running", "l1", "0.5", "0.002", "1/2", "0.7", "0.1", "0.1"],
        ["a0001", "finished", "energy", "0.01", "0.001", "2/2", "0.6", "0.3", "0.2"],
        ["c0003", "failed", "l1", "2", "0.003", "-", "-", "-", "-"],
    ]
    assert view[5:] == ["front: 2 checkpoints · hypervolume 0.0370", f"✗ trial c0003 failed: {cause}"]
    assert tracker.logged == pytest.approx(0.037)


def test_the_live_form_redraws_instead_of_printing_event_lines(tmp_path):
    spec, search_run, tracker = started_search(tmp_path, "live")
    terminal = Console(file=io.StringIO(), width=140, force_terminal=True)
    console = SearchConsole(spec, search_run, tracker, total=6, console=terminal)
    a = trial("a0001", "RUNNING", tmp_path, loss="energy", lam_energy=0.01, lr=0.001)
    console.setup()
    assert console.live is not None  # live=None on a terminal: the live view
    console.on_trial_start(0, [a], a)
    console.on_experiment_end([a])
    output = terminal.file.getvalue()
    assert console.live is None and "live · nsga2" in output and "a0001" in output
    assert not any(EVENT.match(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)) for line in output.splitlines())


def test_the_next_commands_name_the_search_store_and_knee_ready_to_paste():
    lines = next_steps("my search", "sqlite:///runs/mlflow.db", ("ab12cd34", 3))
    assert lines[0] == "next:"
    where = "--search 'my search' --tracking-uri sqlite:///runs/mlflow.db"
    assert lines[1].startswith(f"  mg-tune pareto {where} --register 'my search'   # ")
    assert lines[2].startswith(f"  mg-tune evaluate {where}   # ")
    assert lines[3].startswith(f"  mg-tune export {where} --trial ab12cd34 --epoch 3 --to 'my search-knee'   # ")
    assert lines[4].startswith(f"  mg-tune dashboard {where}   # ")
    assert not any("export" in line for line in next_steps("demo", "sqlite:///m.db", None))  # an empty front has no knee


def test_a_failure_is_its_cause_under_rays_wrapping_and_the_summary_counts_causes():
    wrapped = RayTaskError("run_trial", "Traceback (most recent call last): ...", DatasetError("/d/000310.jpg", "not a readable image")).as_instanceof_cause()
    assert error_cause(wrapped) == "DatasetError: /d/000310.jpg: not a readable image"
    assert error_cause(None) == "unknown error (Ray kept no exception)"
    causes = {"t1": "A: x", "t2": "A: x", "t3": "B: y", "t4": "C: z", "t5": "D: w"}
    assert failure_summary(causes, 8) == "5 of 8 trials failed: A: x (2); B: y (1); C: z (1); and 1 other cause"


@pytest.mark.slow
def test_the_demo_prints_under_60_lines_and_its_summary_under_40(tmp_path):
    """``make demo`` as a user runs it, in a pipe (a job log's form): mg-tune's event lines, none of Ray's reporter."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "mg_tune.cli", "search", str(REPO / "search_spaces" / "quickstart.yaml"), "--name", "demo", "--storage-path", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) < 60, "\n".join(lines)
    summary = done.stdout.splitlines()
    start = next(i for i, line in enumerate(summary) if line.startswith("Pareto front of search 'demo'"))
    assert len(summary) - start < 40
    assert sum(bool(EPOCH_LINE.match(line)) for line in events(done.stdout)) == 18  # 6 trials x 3 epochs, one line each
    for noise in ("Trial status", "TensorBoard", "SearchGenerator", "Traceback", "View detailed results"):
        assert noise not in done.stdout + done.stderr
    assert summary[-1].startswith("  mg-tune dashboard --search demo --tracking-uri ")
