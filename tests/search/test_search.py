"""End to end: a real local Ray search, tracked in a real MLflow store, Pareto from MLflow.

The finished search read here is conftest's ``finished_search`` (the Pareto explorer's tests read it too).
"""

import os
import signal
import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml
from mlflow import MlflowClient

from conftest import wait_for
from helpers.searches import FINISHED_SEARCH, OBJECTIVES, brute_force_front, spec_dict

from mg_tune.checkpoint import load_checkpoint
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.search.split_sizes import SMALL_SPLITS_TAG
from mg_tune.tracking import FAILURE_TAG, ROLE_TAG, TRIAL_TAG, download_checkpoint, experiment_name, find_search_run


def test_every_trial_epoch_has_metrics_and_a_loadable_checkpoint(finished_search, tmp_path):
    uri, outcome = finished_search
    assert outcome.trials == 6 and outcome.errors == 0
    table = checkpoint_table(uri, FINISHED_SEARCH)
    assert len(table) == 12
    assert sorted(table.groupby("trial_id")["epoch"].apply(sorted).tolist()) == [[1, 2]] * 6
    assert table[OBJECTIVES].notna().all().all()
    row = table.iloc[0]
    path = download_checkpoint(uri, row["run_id"], int(row["epoch"]), tmp_path / "ckpt")
    state = load_checkpoint(path)
    assert state["epoch"] == row["epoch"]
    assert state["metrics"]["epg"] == pytest.approx(row["epg"])
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(FINISHED_SEARCH))
    trials = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert len({r.data.tags[TRIAL_TAG] for r in trials}) == 6
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.tags.get("mg_tune.node_id") for r in trials)
    # four trials really ran (and logged) at the same time
    events = sorted([(r.info.start_time, 1) for r in trials] + [(r.info.end_time, -1) for r in trials])
    assert max(np.cumsum([step for _, step in events])) == 4


def test_pareto_from_mlflow_is_exactly_the_non_dominated_set(finished_search):
    uri, outcome = finished_search
    result = search_pareto(uri, FINISHED_SEARCH, OBJECTIVES, [True] * 3, tag=False)
    points = result.table[OBJECTIVES].to_numpy(dtype=float)
    expected = {(result.table.trial_id[i], result.table.epoch[i]) for i in brute_force_front(points)}
    assert {(t, e) for t, e in zip(result.front.trial_id, result.front.epoch)} == expected
    assert outcome.pareto.plot_path is not None and outcome.pareto.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert 0 < result.hypervolume <= 1


def test_the_driver_tags_the_search_with_its_too_small_heldout_split(finished_search):
    """16 held-out images are fewer than max(20, 4 classes); 32 validation images are enough."""
    uri, outcome = finished_search
    tags = MlflowClient(uri).get_run(outcome.search_run.run_id).data.tags
    assert tags[SMALL_SPLITS_TAG] == (
        "textbox/multilabel: the heldout split has 16 images, fewer than the 20 (max(20, 4 classes)) "
        "wanted for choosing the IoU threshold; expect noisy choices"
    )


def _trial_runs(uri, name):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def _held(uri, name, exclude, count):
    """``count`` or more RUNNING trial runs of ``name`` (ids not in ``exclude``) with an epoch logged, i.e. held at the gate; else None."""
    runs = [r for r in _trial_runs(uri, name) if r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) >= 1 and r.data.tags[TRIAL_TAG] not in exclude]
    return runs if len(runs) >= count else None


def test_resume_after_killing_the_driver_runs_no_trial_twice(tmp_path, gate):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec_path = tmp_path / "spec.yaml"
    study = f"sqlite:///{tmp_path}/optuna.db"
    spec_path.write_text(yaml.safe_dump({**spec_dict("resumable", tmp_path / "runs", trials=6, epochs=3), "study_storage": study}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}  # with the session's $MG_TUNE_GATE_DIR: the driver's trials obey `gate`
    cli = [sys.executable, "-m", "mg_tune.cli", "search", str(spec_path)]
    MlflowClient(uri).search_experiments()  # create the store now: polling it below must not race the driver's schema migration
    gate.close()  # every trial is held after each epoch until released: the kill below finds 2 trials finished and 1+ mid-run
    driver = subprocess.Popen(cli, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = wait_for(lambda: _held(uri, "resumable", set(), 2), "the first two trials held after epoch 1")
    for run in first:
        gate.open(run.data.tags[TRIAL_TAG])
    first_ids = {r.data.tags[TRIAL_TAG] for r in first}
    wait_for(lambda: sum(r.info.status == "FINISHED" for r in _trial_runs(uri, "resumable")) == 2 and _held(uri, "resumable", first_ids, 1),
             "the first two trials finished and a third held after epoch 1")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    gate.open()
    killed = _trial_runs(uri, "resumable")
    finished_before = {r.data.tags[TRIAL_TAG]: r.info.end_time for r in killed if r.info.status == "FINISHED"}
    assert len(finished_before) >= 2, "the search did not get going"
    running_at_kill = {r.data.tags[TRIAL_TAG] for r in killed if r.info.status == "RUNNING"}
    done = subprocess.run([*cli, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _trial_runs(uri, "resumable")
    ids = [r.data.tags[TRIAL_TAG] for r in runs if r.info.status == "FINISHED"]
    assert len(ids) == len(set(ids)) == 6, done.stdout[-3000:] + done.stderr[-3000:]
    # a trial started after Ray's last snapshot of the experiment is unknown to the resumed driver (which
    # samples a new one instead): its run is marked KILLED with the reason, never left RUNNING
    assert all(r.info.status == "KILLED" and r.data.tags.get(FAILURE_TAG) for r in runs if r.info.status != "FINISHED")
    table = checkpoint_table(uri, "resumable")
    table = table[table["status"] == "FINISHED"]
    assert len(table) == 18 and not table.duplicated(["trial_id", "epoch"]).any()
    # trials finished before the kill were not started again: their runs were never reopened
    assert {r.data.tags[TRIAL_TAG]: r.info.end_time for r in runs if r.data.tags[TRIAL_TAG] in finished_before} == finished_before
    assert "Pareto front of search 'resumable'" in done.stdout
    # one parent run, finished; no child left RUNNING: every trial running at the kill was resumed to FINISHED
    # or, if it never restarted, marked KILLED with the reason (mg_tune.tracking.mark_orphans)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("resumable"))
    parents = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == len(client.search_runs([experiment.experiment_id], "")) - 1
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert all(r.info.status == "FINISHED" or r.data.tags.get(FAILURE_TAG) for r in children)
    assert running_at_kill <= {r.data.tags[TRIAL_TAG] for r in children}
    # the Optuna study (an RDB here, so it is observable) holds every finished trial with its values, and
    # a trial lost with the driver is FAIL, not RUNNING forever
    trials = optuna.load_study(study_name="resumable", storage=study).trials
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 6 and all(len(t.values) == 3 for t in completed)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    # the hypervolume count continues across the kill (from MLflow): steps only increase, ending at every trial-epoch stored
    parent = find_search_run(client, client.get_experiment_by_name(experiment_name("resumable")).experiment_id)
    history = sorted((m.timestamp, m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "hypervolume"))
    steps, values = [h[1] for h in history], [h[2] for h in history]
    assert steps == sorted(set(steps)) and steps[-1] == len(checkpoint_table(uri, "resumable"))
    assert values == sorted(values)


def test_the_driver_never_joins_a_cluster_it_was_not_told_about(monkeypatch):
    """Ray's own default (address=None) joins the newest `ray start` cluster of the machine, dead or not."""
    from mg_tune.search.runner import ray_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == "local"
    assert ray_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")  # what `ray job submit` sets for the job's driver
    assert ray_address(None) == "127.0.0.1:6390"
    assert ray_address("10.0.0.5:6379") == "10.0.0.5:6379"
