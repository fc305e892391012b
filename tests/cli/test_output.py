"""What the table-printing commands write when stdout is a pipe: whole ids, and the same rows as JSON and CSV.

The commands run as real subprocesses with stdout piped (not a terminal), as in
``mg-tune pareto --search s | grep …`` or ``$(mg-tune pareto …)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mg_tune.checkpoint import save_checkpoint
from mg_tune.output import QUIET_ENVIRONMENT
from mg_tune.tracking import TrialLogger, start_search
from mg_tune.train import EpochResult

MG_TUNE = str(Path(sys.executable).parent / "mg-tune")
SEARCH = "wide"
PARAMS = {"loss": "energy", "attribution": "bcos", "layer": "input", "lr": 0.001}
# (trial id as Ray writes it, λ) -> epoch -> objectives. Front: (98c9d1e2, 2) dominates its epoch 1;
# (a1b2c3d4, 1) has the best F1; (a1b2c3d4, 2) is dominated by both.
TRIALS = {
    ("98c9d1e2", 0.0125): {1: {"f1": 0.5, "epg": 0.4, "iou": 0.3}, 2: {"f1": 0.625, "epg": 0.5, "iou": 0.375}},
    ("a1b2c3d4", 0.5): {1: {"f1": 0.75, "epg": 0.25, "iou": 0.125}, 2: {"f1": 0.125, "epg": 0.125, "iou": 0.125}},
}
FRONT = [
    {"trial_id": "98c9d1e2", "epoch": 2, "params.loss": "energy", "params.lam": 0.0125, "params.attribution": "bcos", "params.layer": "input", "params.lr": 0.001, "f1": 0.625, "epg": 0.5, "iou": 0.375},
    {"trial_id": "a1b2c3d4", "epoch": 1, "params.loss": "energy", "params.lam": 0.5, "params.attribution": "bcos", "params.layer": "input", "params.lr": 0.001, "f1": 0.75, "epg": 0.25, "iou": 0.125},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store) -> str:
    """A search with the two trials of ``TRIALS`` logged as the search runner logs them."""
    uri = new_mlflow_store()
    root = tmp_path_factory.mktemp("ckpt")
    search = start_search(SEARCH, {"objectives": ["f1", "epg", "iou"]}, "objectives: [f1, epg, iou]\n", uri, resume=False)
    for (trial_id, lam), epochs in TRIALS.items():
        logger = TrialLogger(search, trial_id, {**PARAMS, "lam": lam})
        for epoch, metrics in epochs.items():
            path = save_checkpoint(root / trial_id / f"epoch={epoch:03d}" / "checkpoint.pt", torch.nn.Linear(2, 2), None, epoch, metrics, {})
            logger.log_epoch(EpochResult(epoch, dict(metrics), path, None))
        logger.finish()
    return uri


def run_piped(uri: str, *args: str) -> subprocess.CompletedProcess:
    """``mg-tune ARGS`` with stdout and stderr piped and no ``COLUMNS`` (rich then assumes 80 columns)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run([MG_TUNE, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # `mg-tune pareto` in a subprocess (imports torch and MLflow: ~10 s each)
def test_piped_table_prints_whole_trial_ids(store):
    done = run_piped(store, "pareto", "--search", SEARCH)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2
    assert "98c9d1e2" in rows[0] and "a1b2c3d4" in rows[1] and "…" not in done.stdout
    assert max(len(line) for line in rows) > 80  # wider than rich's default for a pipe: it used to cut the ids
    assert "hypervolume:" in done.stdout


@pytest.mark.slow  # `mg-tune pareto` in a subprocess (imports torch and MLflow: ~10 s each)
def test_json_and_csv_hold_the_table_rows_and_nothing_else(store):
    as_json = run_piped(store, "pareto", "--search", SEARCH, "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == FRONT
    assert "hypervolume:" in as_json.stderr  # the other lines leave stdout to the data
    as_csv = run_piped(store, "pareto", "--search", SEARCH, "--output", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows == [{k: str(v) for k, v in row.items()} for row in FRONT]


def test_unknown_output_format_is_one_line_exit_2(store):
    done = run_piped(store, "pareto", "--search", SEARCH, "--output", "yaml")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["error: --output 'yaml' is not a format; valid: table, json, csv"]


# --------------------------------------------------------------------------- the libraries' routine lines

TINY_SPEC = """\
name: quiet
data: {name: textbox, variant: multilabel, train_size: 32, val_size: 20, heldout_size: 20, test_size: 16}  # splits of 20: no small-split warning
fixed: {model: smerf_cnn, attribution: ixg, loss: energy, epochs: 1, batch_size: 16, overlay_images: 1}
space:
  lr: {loguniform: [3.0e-4, 3.0e-3]}
objectives: [f1, epg, iou]
sampler: random
trials: 2
concurrency: 1
resources: {cpu: 1, gpu: 0}
seed: 0
"""
ROUTINE = {
    "mlflow": "Creating initial MLflow database tables",  # a new SQLite store, every time
    "optuna": "A new study created in memory with name: quiet",  # every search without study_storage
    "ray": "Experiment state snapshotting has been triggered multiple times",  # when two trials end within 5 s
}


@pytest.mark.slow  # a search in a subprocess: starts Ray
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_search_keeps_routine_library_lines_off_the_console_unless_verbose(tmp_path, verbose):
    from mg_tune.front import search_pareto

    (tmp_path / "quiet.yaml").write_text(TINY_SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # as a user's shell: without what an in-process CLI test of this session set (quiet_libraries sets QUIET_ENVIRONMENT)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS", *QUIET_ENVIRONMENT)} | {"MLFLOW_TRACKING_URI": uri}
    args = [MG_TUNE, "search", "quiet.yaml", "--storage-path", str(tmp_path / "runs"), *(["--verbose"] if verbose else [])]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    if verbose:  # the deterministic ones come back (Ray's depends on timing)
        assert ROUTINE["mlflow"] in done.stderr and ROUTINE["optuna"] in done.stderr
    else:
        assert not [line for line in ROUTINE.values() if line in console], done.stderr
        assert done.stderr == ""
    front = search_pareto(uri, "quiet", ["f1", "epg", "iou"], [True] * 3, tag=False).front
    assert len(front) >= 1 and all(f"│ {trial_id} │" in done.stdout for trial_id in front["trial_id"])  # mg-tune's own table


PROBE = """
import logging, os, sys
from mg_tune.output import quiet_libraries
quiet_libraries()
if sys.argv[1] == "verbose":
    quiet_libraries(verbose=True)
import mlflow, optuna, ray  # their own logging set-up runs after mg-tune's, as in a search
logging.getLogger("mlflow.store.db.utils").info("routine: mlflow info")
logging.getLogger("mlflow.tracking").warning("kept: mlflow warning")
logging.getLogger("alembic.runtime.migration").info("routine: alembic info")
optuna.logging.get_logger("optuna.storages").info("routine: optuna info")
optuna.logging.get_logger("optuna.samplers").error("kept: optuna error")
token = logging.getLogger("ray._private.authentication.authentication_token_setup")
token.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
token.warning("kept: Token authentication is disabled for this Ray cluster. Anyone with network access can run code.")
logging.getLogger("ray.tune.execution.experiment_state").warning("kept: ray tune warning")
logging.getLogger("ray.tune.execution.tune_controller").error("Trial task failed for trial run_trial_1 (routine: the console prints it as one line)")
logging.getLogger("ray.tune.tune").error("Trials did not complete: [run_trial_1] (routine: the search's summary names them)")
logging.getLogger("ray.tune.execution.tune_controller").error("kept: another Ray Tune error")
import warnings
warnings.warn("Define-by-run function passed in the `space` argument took 1.3 seconds to run. routine: GPSampler's proposal")
warnings.warn("kept: a warning of the user's code")
print(os.environ.get("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"), os.environ.get("MLFLOW_LOGGING_LEVEL"))
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_quiet_drops_routine_lines_and_keeps_warnings_and_errors(mode):
    env = {k: v for k, v in os.environ.items() if k not in ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "MLFLOW_LOGGING_LEVEL")}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    kept = [line for line in done.stderr.splitlines() if "kept: " in line]
    assert len(kept) == 6, done.stderr  # warnings and errors always show
    routine = [line for line in done.stderr.splitlines() if "routine: " in line or "Token authentication is enabled" in line]
    if mode == "quiet":
        assert routine == [] and done.stdout.split() == ["0", "WARNING"]
    else:
        assert len(routine) == 6 and done.stdout.split() == ["None", "None"]  # alembic: MLflow's own default is WARNING


def test_table_titles_and_cells_print_literally(capsys):
    """User text in a table (a search name, a trial id) is never read as rich markup."""
    from mg_tune.output import Column, print_table

    print_table("Pareto front of search 'runs[bold]'", [Column("trial_id", "trial", is_id=True), Column("loss")], [{"trial_id": "t[red]1[/red]", "loss": "[x, y]"}])
    out = capsys.readouterr().out
    assert "Pareto front of search 'runs[bold]'" in out and "t[red]1[/red]" in out and "[x, y]" in out
