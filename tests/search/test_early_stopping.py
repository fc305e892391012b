"""Search efficiency: spec fields (scheduler, warm_start) and an end-to-end MO-ASHA search tracked in MLflow."""

import io
import math

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from rich.console import Console
from ray.tune.experiment import Trial

from helpers.searches import mo_asha_spec_dict

from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.search.callbacks import HYPERVOLUME_METRIC, HypervolumeTracker
from mg_tune.search.runner import build_scheduler, build_searcher, run_search
from mg_tune.search.sampling import warm_start_points
from mg_tune.search.spec import PAPER_LAMBDA_GRID, SearchSpec
from mg_tune.tracking import ROLE_TAG, STOPPED_EARLY_TAG, TRIAL_TAG, SearchRun, experiment_name, find_search_run

TWO_LOSSES = {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {}}}


def test_scheduler_shorthand_and_defaults():
    spec = SearchSpec.model_validate({"fixed": {"epochs": 6}, "scheduler": "mo_asha"})
    assert (spec.scheduler.grace_period, spec.scheduler.reduction_factor, spec.max_t) == (1, 3.0, 6)
    scheduler = build_scheduler(spec)
    assert list(scheduler.rungs) == [1, 3] and scheduler.metrics == ["f1", "epg", "iou"]
    searched = SearchSpec.model_validate({"space": {"epochs": {"int": [2, 9]}}, "scheduler": {"name": "mo_asha", "reduction_factor": 2}})
    assert searched.max_t == 9 and list(build_scheduler(searched).rungs) == [1, 2, 4, 8]
    assert build_scheduler(SearchSpec()) is None


def test_warm_start_enqueues_the_paper_grid_for_other_samplers():
    spec = SearchSpec.model_validate({"sampler": "tpe", "space": TWO_LOSSES, "trials": 8, "warm_start": "paper_grid"})
    points = warm_start_points(spec)
    assert len(points) == 6
    assert sorted(p["lam_energy"] for p in points if p["loss"] == "energy") == sorted(PAPER_LAMBDA_GRID["energy"])
    assert warm_start_points(spec.model_copy(update={"warm_start": "none"})) == []


EPOCHS = 3


@pytest.fixture(scope="module")
def mo_asha_search(tmp_path_factory, ray_local, new_mlflow_store):
    root = tmp_path_factory.mktemp("moasha")
    uri = new_mlflow_store()
    raw = mo_asha_spec_dict("moasha", root / "runs", epochs=EPOCHS)
    printed = io.StringIO()  # the console's event lines (mg_tune.search.console)
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri, live=False, console=Console(file=printed, width=200, soft_wrap=True))
    return uri, outcome, printed.getvalue()


def test_mo_asha_stops_trials_early_and_keeps_their_checkpoints(mo_asha_search):
    uri, outcome, printed = mo_asha_search
    assert outcome.trials == 6 and outcome.errors == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("moasha"))
    runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    table = checkpoint_table(uri, "moasha")
    epochs = table.groupby("trial_id")["epoch"].apply(sorted).to_dict()
    stopped = {r.data.tags[TRIAL_TAG]: int(r.data.tags[STOPPED_EARLY_TAG]) for r in runs if STOPPED_EARLY_TAG in r.data.tags}
    assert stopped, "MO-ASHA stopped no trial"
    for run in runs:
        trial = run.data.tags[TRIAL_TAG]
        last = stopped.get(trial, EPOCHS)
        assert last == 1 or trial not in stopped  # the only rung below max_t=3 is epoch 1 (η = 3)
        assert epochs[trial] == list(range(1, last + 1))  # every epoch it ran has its checkpoint, none more
        ended = "stopped early after 1 epoch" if trial in stopped else f"finished after {EPOCHS} epochs"
        assert [line.split(" ", 1)[1] for line in printed.splitlines() if f" trial {trial} " in line and "after" in line] == [f"trial {trial} {ended}"]
    # stopped trials' checkpoints are candidates for the front like any other
    result = search_pareto(uri, "moasha", ["f1", "epg"], [True, True], tag=False)
    assert len(result.table) == sum(len(v) for v in epochs.values())


def test_parent_run_logs_hypervolume_after_every_trial_epoch(mo_asha_search):
    uri, outcome, _ = mo_asha_search
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("moasha"))
    parent = find_search_run(client, experiment.experiment_id)
    history = sorted(client.get_metric_history(parent.info.run_id, HYPERVOLUME_METRIC), key=lambda m: m.step)
    total = len(checkpoint_table(uri, "moasha"))
    assert [m.step for m in history] == list(range(1, total + 1))
    values = np.array([m.value for m in history])
    assert np.all(np.diff(values) >= 0) and 0 < values[-1] <= 1
    # the last value is the hypervolume of the whole search's front, as the Pareto report computes it
    assert values[-1] == pytest.approx(outcome.pareto.hypervolume)


def test_resumed_tracker_continues_the_count_from_mlflow(mo_asha_search):
    """A resumed search rebuilds its points from MLflow: the next trial-epoch is logged at step total + 1."""
    uri, outcome, _ = mo_asha_search
    spec = SearchSpec.model_validate({"objectives": ["f1", "epg"]})
    tracker = HypervolumeTracker(spec, outcome.search_run)
    tracker.setup()
    total = len(checkpoint_table(uri, "moasha"))
    assert len(tracker.points) == total and tracker.hypervolume() == pytest.approx(outcome.pareto.hypervolume)
    trial = Trial("__fake", trial_id="resumed", stub=True)
    tracker.on_trial_result(0, [], trial, {"epoch": 1, "f1": 1.0, "epg": 1.0})
    tracker.on_trial_result(0, [], trial, {"epoch": 1, "f1": 1.0, "epg": 1.0})  # a repeated epoch is not counted twice
    client = MlflowClient(uri)
    history = client.get_metric_history(outcome.search_run.run_id, HYPERVOLUME_METRIC)
    assert max(m.step for m in history) == total + 1
    assert [m.value for m in history if m.step == total + 1] == [1.0]


def test_tracker_hypervolume_by_hand():
    """f1 max, iou min, constraint epg >= 0.5; bounds (0, 1): points (f1, 1 - iou) dominate boxes from 0."""
    spec = SearchSpec.model_validate({"objectives": ["f1", {"name": "iou", "direction": "min"}], "constraints": ["epg >= 0.5"]})
    tracker = HypervolumeTracker(spec, SearchRun("sqlite:///unused.db", "0", "by-hand", "by-hand"))  # never logs here
    assert tracker.metrics == ["f1", "iou", "epg"]
    tracker.points = {
        ("a", 1): [0.5, 0.5, 0.9],  # box 0.5 x 0.5
        ("b", 1): [0.8, 0.8, 0.9],  # box 0.8 x 0.2, overlaps a's: union 0.25 + 0.3 x 0.2 = 0.31
        ("c", 1): [1.0, 0.0, 0.1],  # infeasible (epg < 0.5): would cover everything
        ("d", 1): [math.nan, 0.0, 0.9],  # NaN: adds nothing
    }
    assert tracker.hypervolume() == pytest.approx(0.31)


def test_warm_started_nsga2_suggests_the_grid_first():
    spec = SearchSpec.model_validate({"sampler": "nsga2", "space": TWO_LOSSES, "trials": 8, "warm_start": "paper_grid", "seed": 3})
    searcher = build_searcher(spec)
    suggested = [searcher.suggest(f"t{i}") for i in range(8)]
    grid = {(p["loss"], p["lam"]) for p in spec.grid_points()}
    as_points = [(c["loss"], c[f"lam_{c['loss']}"]) for c in suggested]
    assert set(as_points[:6]) == grid and len(set(as_points[:6])) == 6
    assert not set(as_points[6:]) & grid  # then NSGA-II samples


def test_callbacks_pickled_before_the_search_run_rename_resume():
    """A search stopped by an earlier mg-tune pickled its callbacks and budget with ``search``: ``--resume`` reads them."""
    import pickle

    from mg_tune.search.budget import TrialEpochBudget
    from mg_tune.search.callbacks import StoppedTrialFinisher
    from mg_tune.search.retention import CheckpointRetention

    run = SearchRun("sqlite:///old.db", "1", "abc", "old-search")
    for cls, extra in ((StoppedTrialFinisher, {}), (TrialEpochBudget, {"trial_epochs": 5, "_seen": None}),
                       (CheckpointRetention, {"spec": SearchSpec()})):
        old = cls.__new__(cls)
        old.__dict__.update({"search": run, **extra})  # the attributes as the old class pickled them
        restored = pickle.loads(pickle.dumps(old))
        assert restored.search_run == run and not hasattr(restored, "search")
    assert restored.index is None
