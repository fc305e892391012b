"""A front is on the search's own objectives and constraints, read back from its logged spec, unless overridden.

The search ``wga`` ran with ``objectives: [worst_group_acc, epg]`` and ``constraints: ['epg <= 0.75']``.
Five one-epoch trials A..E with hand-chosen metrics (untrained but real checkpoints, so ``evaluate`` runs):

=====  ===============  =====  =====  =====
trial  worst_group_acc  epg    f1     iou
=====  ===============  =====  =====  =====
A      0.9              0.8    0.1    0.1     infeasible (epg > 0.75)
B      0.5              0.7    0.9    0.2
C      0.4              0.6    0.2    0.9
D      0.3              0.5    0.95   0.05
E      0.2              0.4    0.1    0.1
=====  ===============  =====  =====  =====

By hand: among the feasible B..E, B has the best worst_group_acc and epg, so the search's front is {B}.
On f1/epg/iou (same constraint) B, C and D are each best at something (epg, iou, f1) and E is
dominated by B: {B, C, D}. Without the constraint f1/epg/iou would be {A, B, C, D}, 4 checkpoints
where the search's front has 1: the confusion this module guards against.
"""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from mg_tune.checkpoint import save_checkpoint
from mg_tune.cli import app
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.dashboard import Source
from mg_tune.data import build_split
from mg_tune.data.card import dataset_card
from mg_tune.models import build_model
from mg_tune.pareto import Constraint, Objectives
from mg_tune.search.logged_spec import objectives_of, search_objectives
from mg_tune.tracking import TrialLogger, iter_logged_models, start_search
from mg_tune.train import EpochResult

SEARCH = "wga"
SPEC = "objectives: [worst_group_acc, epg]\nconstraints: ['epg <= 0.75']\n"
METRICS = {
    "A": {"worst_group_acc": 0.9, "epg": 0.8, "f1": 0.1, "iou": 0.1},
    "B": {"worst_group_acc": 0.5, "epg": 0.7, "f1": 0.9, "iou": 0.2},
    "C": {"worst_group_acc": 0.4, "epg": 0.6, "f1": 0.2, "iou": 0.9},
    "D": {"worst_group_acc": 0.3, "epg": 0.5, "f1": 0.95, "iou": 0.05},
    "E": {"worst_group_acc": 0.2, "epg": 0.4, "f1": 0.1, "iou": 0.1},
}
OWN_FRONT = {"B"}
F1_EPG_IOU_FRONT = {"B", "C", "D"}
OVERRIDE_TAG = "pareto.f1-max.epg-max.iou-max"
DATA = DataConfig(variant="spurious", train_size=8, val_size=8, heldout_size=8, test_size=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store) -> str:
    uri = new_mlflow_store()
    root = tmp_path_factory.mktemp("ckpt")
    config = TrainConfig(data=DATA, model="smerf_cnn", epochs=1, device="cpu")
    info = build_split(DATA, "val").info
    search = start_search(SEARCH, {"objectives": ["worst_group_acc", "epg"]}, SPEC, uri, resume=False)
    for trial, metrics in METRICS.items():
        torch.manual_seed(ord(trial))
        path = save_checkpoint(root / trial / "checkpoint.pt", build_model("smerf_cnn", info.num_classes), None, 1, metrics, config.model_dump(mode="json"), dataset_card(info, DATA).to_json())
        logger = TrialLogger(search, trial, {"loss": "energy", "lam": 1.0})
        logger.log_epoch(EpochResult(1, dict(metrics), path, None))
        logger.finish()
    return uri


def tagged(uri: str, key: str) -> tuple[set[str], set[str]]:
    """Trial ids whose LoggedModel, and whose trial run, carry ``key=true``."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"mg-tune/{SEARCH}")
    runs = client.search_runs([experiment.experiment_id], "tags.`mg_tune.role` = 'trial'")
    trial_of = {r.info.run_id: r.data.tags["mg_tune.trial_id"] for r in runs}
    models = {trial_of[m.source_run_id] for m in iter_logged_models(client, experiment.experiment_id) if (m.tags or {}).get(key) == "true"}
    return models, {trial_of[r.info.run_id] for r in runs if r.data.tags.get(key) == "true"}


def parent_tags(uri: str) -> dict[str, str]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"mg-tune/{SEARCH}")
    return client.search_runs([experiment.experiment_id], "tags.`mg_tune.role` = 'search'")[0].data.tags


def test_the_search_objectives_are_read_back_from_its_logged_spec(store):
    assert search_objectives(store, SEARCH) == Objectives(("worst_group_acc", "epg"), (True, True), (Constraint("epg", "<=", 0.75),))
    assert objectives_of({"trials": 2}) == Objectives(("f1", "epg", "iou"), (True, True, True))  # the spec's defaults
    assert objectives_of({"objectives": [{"name": "iou", "direction": "min"}]}).label == "iou:min"
    with pytest.raises(ValueError, match="objective 'acc' is not a metric"):
        objectives_of({"objectives": ["acc"]})
    with pytest.raises(ValueError, match="no search named 'nope'"):
        search_objectives(store, "nope")


def test_objectives_given_on_the_command_line_parse_with_directions():
    assert Objectives.parse("f1, epg:max ,iou:min").label == "f1:max,epg:max,iou:min"
    for bad, why in (("f1,,epg", "''"), ("f1:up", "'f1:up'"), ("f1,f1", "given twice")):
        with pytest.raises(ValueError, match=why):
            Objectives.parse(bad)


def test_pareto_defaults_to_the_search_objectives_and_constraints(store):
    result = CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store, "--output", "json"])
    assert result.exit_code == 0, result.output
    assert {row["trial_id"] for row in json.loads(result.stdout)} == OWN_FRONT
    assert "front on worst_group_acc (max), epg (max); constraints: epg <= 0.75" in result.stderr
    assert tagged(store, "pareto") == (OWN_FRONT, OWN_FRONT)
    tags = parent_tags(store)
    assert tags["pareto_objectives"] == "worst_group_acc:max,epg:max" and tags["pareto_constraints"] == "epg <= 0.75"


def test_a_front_on_other_objectives_is_tagged_apart_and_leaves_the_search_front(store):
    CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store])
    result = CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--objectives", "f1,epg,iou", "--tracking-uri", store, "--output", "json"])
    assert result.exit_code == 0, result.output
    assert {row["trial_id"] for row in json.loads(result.stdout)} == F1_EPG_IOU_FRONT
    assert f"not the search's own objectives: tagged {OVERRIDE_TAG}=true" in result.stderr
    assert "searchFilter=tags.%60pareto.f1-max.epg-max.iou-max%60+%3D+%27true%27" in result.stderr  # the UI link to this front
    assert tagged(store, OVERRIDE_TAG) == (F1_EPG_IOU_FRONT, F1_EPG_IOU_FRONT)
    assert tagged(store, "pareto") == (OWN_FRONT, OWN_FRONT)  # untouched
    tags = parent_tags(store)
    assert tags["pareto_objectives"] == "worst_group_acc:max,epg:max"
    assert tags["pareto_objectives.f1-max.epg-max.iou-max"] == "f1:max,epg:max,iou:max"


def test_evaluate_tests_the_search_own_front(store):
    result = CliRunner().invoke(app, ["evaluate", "--search", SEARCH, "--tracking-uri", store, "--output", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["trial_id"] == "B" and (row["worst_group_acc"], row["epg"]) == (0.5, 0.7)
    assert 0.0 <= row["test_worst_group_acc"] <= 1.0 and "front on worst_group_acc (max), epg (max); constraints: epg <= 0.75" in result.stderr


def test_the_explorer_shows_the_search_objectives_unless_given_others(store):
    own = Source(store, SEARCH).current
    assert (own.objectives, own.maximize, own.constraints) == (["worst_group_acc", "epg"], [True, True], ["epg <= 0.75"])
    assert set(own.select().front["trial_id"]) == OWN_FRONT
    other = Source(store, SEARCH, "f1,epg,iou").current
    assert set(other.select().front["trial_id"]) == F1_EPG_IOU_FRONT
