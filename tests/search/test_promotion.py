"""MO-ASHA with ``type: promotion`` in a real search: trials pause at a rung and resume from MLflow.

The defining property of promotion (ASHA's Algorithm 2), checked from what MLflow
recorded: with η = 3 no trial trains past the rung before three trials have reached it
(stopping waves the first ones through), a paused trial resumes from its newest epoch
(every epoch is logged exactly once), and the trials still paused when the searcher is
done end as stopped, with their last values told to Optuna.
"""

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from helpers.searches import mo_asha_spec_dict

from mg_tune.front import checkpoint_table
from mg_tune.search.runner import run_search
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import ROLE_TAG, STOPPED_EARLY_TAG, TRIAL_TAG, experiment_name

EPOCHS, TRIALS = 3, 6

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def promotion_search(tmp_path_factory, ray_local, new_mlflow_store):
    root = tmp_path_factory.mktemp("promotion")
    uri = new_mlflow_store()
    raw = mo_asha_spec_dict("promotion", root / "runs", epochs=EPOCHS, trials=TRIALS, type="promotion")
    raw |= {"seed": 1, "study_storage": f"sqlite:///{root / 'optuna.db'}"}
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri)
    return uri, outcome, raw


def trial_runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name("promotion"))
    return client, client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def test_every_trial_ends_finished_with_each_epoch_logged_once(promotion_search):
    uri, outcome, _ = promotion_search
    assert outcome.trials == TRIALS and outcome.errors == 0
    client, runs = trial_runs(uri)
    assert len(runs) == TRIALS and all(r.info.status == "FINISHED" for r in runs)
    table = checkpoint_table(uri, "promotion")
    for run in runs:
        trial = run.data.tags[TRIAL_TAG]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "f1")]
        last = int(run.data.tags.get(STOPPED_EARLY_TAG, EPOCHS))
        assert sorted(steps) == list(range(1, last + 1))  # a resumed trial continued: no epoch twice, none missing
        assert sorted(table.loc[table.trial_id == trial, "epoch"]) == list(range(1, last + 1))
        assert last in (1, EPOCHS)  # the only rung below max_t = 3 is epoch 1 (η = 3)
    stopped = [r for r in runs if STOPPED_EARLY_TAG in r.data.tags]
    assert stopped and len(stopped) < TRIALS
    assert len(table) == len(stopped) + EPOCHS * (TRIALS - len(stopped)) < TRIALS * EPOCHS


def test_no_trial_goes_past_the_rung_before_three_trials_reached_it(promotion_search):
    uri, _, _ = promotion_search
    client, runs = trial_runs(uri)
    first_epoch = sorted(m.timestamp for r in runs for m in client.get_metric_history(r.info.run_id, "f1") if m.step == 1)
    second_epochs = [m.timestamp for r in runs for m in client.get_metric_history(r.info.run_id, "f1") if m.step == 2]
    assert second_epochs, "no trial was promoted"
    assert min(second_epochs) >= first_epoch[2]  # the third arrival at rung 1 came first


def test_trials_ended_while_paused_are_told_to_optuna_with_their_last_values(promotion_search):
    uri, _, raw = promotion_search
    _, runs = trial_runs(uri)
    study = optuna.load_study(study_name="promotion", storage=raw["study_storage"])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    told = sorted(tuple(round(v, 6) for v in t.values) for t in study.trials)
    last = sorted((round(r.data.metrics["f1"], 6), round(r.data.metrics["epg"], 6)) for r in runs)  # a run's metrics are its last epoch's
    assert told == last
