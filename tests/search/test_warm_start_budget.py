"""Warm start from an earlier search's front, and the search budget (issue 21).

The two real searches share one store: a budget-stopped search (through the CLI, so the printed
front is checked) is the earlier search the second one warm-starts from.
"""

import logging
import tempfile
from pathlib import Path

import cloudpickle
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.search.budget import TrialEpochBudget
from mg_tune.search.runner import build_searcher, build_tuner, run_search
from mg_tune.search.sampling import trial_params
from mg_tune.search.spec import SearchSpec
from mg_tune.search.warm_start import front_points, initial_points
from mg_tune.tracking import (
    FAILURE_TAG,
    ROLE_TAG,
    STOPPED_EARLY_TAG,
    SearchRun,
    TrialLogger,
    experiment_name,
    find_search_run,
    start_search,
)
from mg_tune.train import EpochResult

SPACE = {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 3.0], "l1": [0.01, 3.0]}}, "lr": {"loguniform": [3e-4, 3e-3]}}


def tiny(name, storage, trials, epochs, concurrency=2, **fields):
    """A real search of a few seconds per trial (as tests/search/test_search.py's)."""
    return {
        "name": name,
        "data": {"variant": "multilabel", "train_size": 64, "val_size": 32, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "mid2", "epochs": epochs, "batch_size": 32, "overlay_images": 0},
        "space": SPACE,
        "sampler": "tpe",
        "trials": trials,
        "concurrency": concurrency,
        "resources": {"cpu": 2 / concurrency},
        "storage_path": str(storage),
        **fields,
    }


# --------------------------------------------------------------------------- warm start: mapping a front into a space


def fake_search(uri, name, trials):
    """Search ``name`` in ``uri``: ``trials`` = [(trial id, params, [metrics of epoch 1, 2, ...])]."""
    search = start_search(name, {"trials": len(trials)}, "", uri, resume=False)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint.pt"
        checkpoint.write_bytes(b"weights")
        for trial, params, epochs in trials:
            logger = TrialLogger(search, trial, params)
            for epoch, metrics in enumerate(epochs, start=1):
                logger.log_epoch(EpochResult(epoch, metrics, checkpoint, None))
            logger.finish()


@pytest.fixture(scope="module")
def earlier(new_mlflow_store):
    uri = new_mlflow_store()
    fake_search(
        uri,
        "earlier",
        [
            ("a", {"loss": "energy", "lam": 0.05, "lr": 0.001}, [{"f1": 0.9, "epg": 0.2, "iou": 0.1}] * 2),  # both epochs on the front (a tie): one point
            ("b", {"loss": "l1", "lam": 5.0, "lr": 0.5}, [{"f1": 0.1, "epg": 0.9, "iou": 0.1}]),  # λ and lr outside this space: dropped
            ("c", {"loss": "rrr", "lam": 0.02, "lr": 0.002}, [{"f1": 0.1, "epg": 0.1, "iou": 0.9}]),  # loss not a choice: dropped, and its λ
            ("d", {"loss": "l1", "lam": 0.03, "lr": 0.0005}, [{"f1": 0.05, "epg": 0.05, "iou": 0.05}]),  # dominated
            ("e", {"loss": "l1", "lam": 0.3, "lr": 0.001, "dilation": 7}, [{"f1": 0.5, "epg": 0.5, "iou": 0.5}]),  # dilation not searched here
        ],
    )
    return uri


def test_warm_start_enqueues_the_earlier_front_within_this_space(earlier, caplog):
    spec = SearchSpec.model_validate({"name": "later", "sampler": "tpe", "trials": 8, "space": SPACE, "warm_start": "earlier"})
    with caplog.at_level(logging.WARNING, logger="mg_tune.search.warm_start"):
        points = front_points(spec, earlier)
    assert points == [
        {"loss": "energy", "lr": 0.001, "lam": 0.05},
        {"loss": "l1"},
        {"lr": 0.002},
        {"loss": "l1", "lr": 0.001, "lam": 0.3},
    ]
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == (
        "warm_start 'earlier': dropped 4 value(s) outside this spec's space, the sampler draws them: "
        "lr=0.5 (trial b), lam=5.0 (trial b), loss='rrr' (trial c), …"
    )
    # in Optuna's names, as OptunaSearch enqueues them: λ under its loss
    assert initial_points(spec, earlier)[0] == {"loss": "energy", "lr": 0.001, "lam_energy": 0.05}
    searcher = build_searcher(spec, points=initial_points(spec, earlier))
    assert trial_params(searcher.suggest("first")) == points[0]


def test_warm_start_uses_this_specs_objectives_and_constraints_and_at_most_trials_points(earlier, caplog):
    spec = SearchSpec.model_validate({"name": "later", "trials": 1, "space": SPACE, "warm_start": "earlier", "objectives": ["iou"], "constraints": ["f1 >= 0.2"]})
    with caplog.at_level(logging.WARNING, logger="mg_tune.search.warm_start"):
        assert front_points(spec, earlier) == [{"loss": "l1", "lr": 0.001, "lam": 0.3}]  # best iou with f1 >= 0.2: trial e
    assert not caplog.records
    two = SearchSpec.model_validate({"name": "later", "trials": 1, "space": SPACE, "warm_start": "earlier"})
    with caplog.at_level(logging.WARNING, logger="mg_tune.search.warm_start"):
        assert len(front_points(two, earlier)) == 1
    assert caplog.records[-1].getMessage().endswith("enqueued the first 1 of 4 front points (trials=1)")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"warm_start": "nope"}, "warm_start: no search named 'nope' in sqlite:///"),
        ({"warm_start": "earlier", "name": "earlier"}, "warm_start: 'earlier' is this search itself; name an earlier search"),
        ({"warm_start": "earlier", "objectives": ["f1", "map"]}, "warm_start: objective 'map' was not logged by search 'earlier'"),
    ],
)
def test_a_warm_start_search_that_cannot_be_used_is_one_line(earlier, fields, message):
    spec = SearchSpec.model_validate({"name": "later", "sampler": "tpe", "space": SPACE, **fields})
    with pytest.raises(ValueError) as info:
        initial_points(spec, earlier)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- budget: the stopper by hand


def test_trial_epoch_budget_counts_distinct_results_from_mlflow_on(earlier):
    client = MlflowClient(earlier)
    experiment = client.get_experiment_by_name(experiment_name("earlier"))
    search = SearchRun(earlier, experiment.experiment_id, find_search_run(client, experiment.experiment_id).info.run_id, "earlier")
    stopper = TrialEpochBudget(search, trial_epochs=8)  # 6 checkpoints already in MLflow (a resumed search)
    assert not stopper.stop_all() and len(stopper.seen) == 6
    assert not stopper("a", {"epoch": 2})  # already counted
    assert not stopper("f", {"epoch": 1, "f1": 0.5})  # 7
    assert stopper("g", {"epoch": 1}) and stopper.stop_all()  # 8 = B: this trial stops, and all
    assert stopper("f", {"epoch": 2})  # any later result stops its trial too
    assert cloudpickle.loads(cloudpickle.dumps(stopper))._seen is None  # pickled without its count: re-read from MLflow


def test_the_tuner_gets_the_trial_epoch_stopper_and_rays_time_budget(tmp_path):
    spec = SearchSpec.model_validate({"name": "budgeted", "budget": {"trial_epochs": 4, "time_s": 60}, "storage_path": str(tmp_path)})
    tuner = build_tuner(spec, SearchRun(f"sqlite:///{tmp_path}/mlflow.db", "0", "parent", "budgeted"), resume=False)
    internal = tuner._local_tuner  # what Tuner.fit hands to Ray Tune
    assert internal._tune_config.time_budget_s == 60.0  # Ray's own TimeoutStopper (stop_all after T s)
    assert isinstance(internal._run_config.stop, TrialEpochBudget) and internal._run_config.stop.trial_epochs == 4
    unbudgeted = build_tuner(spec.model_copy(update={"budget": None}), SearchRun(f"sqlite:///{tmp_path}/mlflow.db", "0", "parent", "budgeted"), resume=False)
    assert unbudgeted._local_tuner._tune_config.time_budget_s is None and unbudgeted._local_tuner._run_config.stop is None


# --------------------------------------------------------------------------- real searches

BUDGET = 4
EPOCHS = 3
CONCURRENCY = 2


@pytest.fixture(scope="module")
def budget_search(tmp_path_factory, ray_local, new_mlflow_store):
    """6 trials of 3 epochs, 2 at a time, budget 4 trial-epochs: through the CLI."""
    root = tmp_path_factory.mktemp("budget")
    uri = new_mlflow_store()
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny("first", root / "runs", trials=6, epochs=EPOCHS, concurrency=CONCURRENCY, budget={"trial_epochs": BUDGET})))
    result = CliRunner().invoke(app, ["search", str(spec), "--tracking-uri", uri], catch_exceptions=False)
    return uri, root, result


def test_budget_stops_the_search_within_b_plus_c_minus_1_trial_epochs_and_prints_its_front(budget_search):
    uri, root, result = budget_search
    assert result.exit_code == 0, result.output
    assert "Pareto front of search 'first'" in result.output and "hypervolume:" in result.output
    table = checkpoint_table(uri, "first")
    # the bound guaranteed (mg_tune.search.budget): B <= recorded trial-epochs <= B + concurrency - 1
    assert BUDGET <= len(table) <= BUDGET + CONCURRENCY - 1, table[["trial_id", "epoch"]]
    assert not table.duplicated(["trial_id", "epoch"]).any()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("first"))
    runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert len(runs) < 6  # no trial launched past the budget
    # every run ended: done before the budget was spent, or stopped by it (the one whose epoch spent it at least)
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags[FAILURE_TAG] == "stopped when the search's budget (trial_epochs=4) was spent" for r in killed)
    assert not [r for r in runs if STOPPED_EARLY_TAG in r.data.tags]
    # the front is computed from every checkpoint, stopped trials' included
    front = search_pareto(uri, "first", ["f1", "epg", "iou"], [True] * 3, tag=False)
    assert len(front.table) == len(table) and len(front.front) >= 1


def test_warm_started_search_runs_the_earlier_front_first(budget_search):
    uri, root, _ = budget_search
    earlier = search_pareto(uri, "first", ["f1", "epg", "iou"], [True] * 3, tag=False).front
    expected = []
    for row in earlier.to_dict("records"):
        point = {k: str(row[f"params.{k}"]) for k in ("loss", "lam", "lr")}
        if point not in expected:
            expected.append(point)
    # another seed: with the earlier search's, the sampler's first random point would be the earlier search's first trial again
    raw = tiny("second", root / "runs", trials=len(expected) + 1, epochs=1, warm_start="first", seed=1)
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri)
    assert outcome.errors == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("second"))
    runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'", order_by=["attributes.start_time ASC"])
    params = [{k: r.data.params[k] for k in ("loss", "lam", "lr")} for r in runs]
    # trials + 1 trials: every front point of the earlier search (exact values), then one the sampler drew
    assert len(params) == len(expected) + 1
    warm = [p for p in params if p in expected]
    assert sorted(map(str, warm)) == sorted(map(str, expected))
