"""MLflow tracking against a real SQLite store: searches, trials, epochs, restarts, failures, secrets."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from PIL import Image

from mg_tune.checkpoint import load_checkpoint, save_checkpoint
from mg_tune.tracking import (
    EPOCH_TAG,
    FAILURE_TAG,
    ROLE_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    RetryPolicy,
    TrialLogger,
    count_requests,
    default_tracking_uri,
    download_checkpoint,
    finish_search,
    iter_logged_models,
    logged_models_in_slices,
    log_search_metrics,
    mark_orphans,
    redact_uri,
    start_search,
)
from mg_tune.train import EpochResult

SPEC = {"name": "t", "tracking": {"uri": "postgresql://u:secret@h/db"}, "space": {"lam": [0.1, 1.0]}, "long": "x" * 7000}
SPEC_TEXT = "name: t\ntracking:\n  uri: postgresql://u:secret@h/db\n"


def fake_epoch(root: Path, trial: str, epoch: int, metrics: dict[str, float], overlay: bool = True) -> EpochResult:
    """A real checkpoint (tiny nn.Linear, weights seeded by trial and epoch) and overlay PNG."""
    torch.manual_seed(hash((trial, epoch)) % 2**31)
    model = torch.nn.Linear(3, 2)
    folder = root / trial / f"epoch={epoch:03d}"
    ckpt = save_checkpoint(folder / "checkpoint.pt", model, None, epoch, metrics, {"trial": trial})
    png = None
    if overlay:
        png = folder / "overlay.png"
        Image.new("RGB", (4, 4), (epoch * 40, 0, 0)).save(png)
    return EpochResult(epoch, dict(metrics), ckpt, png)


@pytest.fixture(scope="module")
def uri(new_mlflow_store) -> str:
    return new_mlflow_store()


@pytest.fixture(scope="module")
def search(uri):
    return start_search("unit", SPEC, SPEC_TEXT, uri, resume=False)


def test_redact_uri_hides_passwords_and_keys():
    assert redact_uri("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert "secret" not in redact_uri("postgresql+psycopg2://admin:secret@10.0.0.1:5432/mlflow")
    assert redact_uri("https://ghp_abcdef@github.com/x") == "https://***@github.com/x"
    assert redact_uri("postgresql+psycopg://mlflow@10.0.0.1:5432/mlflow") == "postgresql+psycopg://mlflow@10.0.0.1:5432/mlflow"  # a user name, not a token
    assert redact_uri("s3://bucket/p?endpoint=h&aws_secret_access_key=zz") == "s3://bucket/p?endpoint=h&aws_secret_access_key=***"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_default_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def test_start_search_logs_spec_without_secrets_and_refuses_reuse(uri, search, tmp_path):
    client = MlflowClient(uri)
    run = client.get_run(search.run_id)
    assert client.get_experiment(search.experiment_id).name == "mg-tune/unit"
    assert run.data.tags[SEARCH_TAG] == "unit" and run.data.tags[ROLE_TAG] == "search"
    assert run.data.params["space.lam"] == "[0.1, 1.0]"
    assert run.data.params["tracking.uri"] == "postgresql://u:***@h/db"
    assert len(run.data.params["long"]) == 6000  # MLflow's param value limit
    spec_file = Path(client.download_artifacts(search.run_id, "spec.yaml", str(tmp_path)))
    assert "secret" not in spec_file.read_text() and "u:***@h" in spec_file.read_text()
    assert not any("secret" in v for v in run.data.params.values())

    with pytest.raises(ValueError, match="search unit exists; use --resume or another --name"):
        start_search("unit", SPEC, SPEC_TEXT, uri, resume=False)
    finish_search(search, "FAILED")
    assert client.get_run(search.run_id).info.status == "FAILED"
    again = start_search("unit", SPEC, SPEC_TEXT, uri, resume=True)
    assert again == search
    assert client.get_run(search.run_id).info.status == "RUNNING"


def test_trial_logs_metrics_checkpoints_and_overlays(uri, search, tmp_path):
    logger = TrialLogger(search, "trial_a", {"lam": 0.5, "model": {"name": "smerf_cnn"}})
    logger.set_tags({"mg_tune.node_id": "n1", "storage": "s3://b/p?secret_key=zz"})
    results = [fake_epoch(tmp_path, "trial_a", e, {"f1": 0.1 * e, "epg": 0.2 * e, "iou": math.nan if e == 2 else 0.05}) for e in (1, 2, 3)]
    for r in results:
        logger.log_epoch(r)
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.data.tags[TRIAL_TAG] == "trial_a" and run.data.tags["mlflow.parentRunId"] == search.run_id
    assert run.data.params == {"lam": "0.5", "model.name": "smerf_cnn"}
    assert run.data.tags["mg_tune.node_id"] == "n1" and run.data.tags["storage"] == "s3://b/p?secret_key=***"
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "f1")] == [(e, 0.1 * e) for e in (1, 2, 3)]
    assert [m.value for m in client.get_metric_history(logger.run_id, "epoch")] == [1, 2, 3]
    assert math.isnan(client.get_metric_history(logger.run_id, "iou")[1].value)
    assert [a.path for a in client.list_artifacts(logger.run_id, "overlays")] == [f"overlays/epoch={e:03d}.png" for e in (1, 2, 3)]
    assert logger.logged_epochs() == {1, 2, 3}

    models = list(iter_logged_models(client, search.experiment_id, f"source_run_id = '{logger.run_id}'"))
    assert sorted(int(m.tags[EPOCH_TAG]) for m in models) == [1, 2, 3]
    for model in models:  # each epoch's metrics sit on the model that holds its checkpoint
        epoch = int(model.tags[EPOCH_TAG])
        linked = {m.key: m.value for m in model.metrics}
        assert linked == {"f1": 0.1 * epoch, "epg": 0.2 * epoch, "epoch": epoch, **({} if epoch == 2 else {"iou": 0.05})}

    for r in results:
        path = download_checkpoint(uri, logger.run_id, r.epoch, tmp_path / "dl" / str(r.epoch))
        got, want = load_checkpoint(path), load_checkpoint(r.checkpoint)
        assert got["epoch"] == r.epoch and all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    with pytest.raises(FileNotFoundError):
        download_checkpoint(uri, logger.run_id, 9, tmp_path / "dl" / "9")
    logger.finish()
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_restarted_trial_relogs_without_duplicates(uri, search, tmp_path):
    first = TrialLogger(search, "trial_r", {"lam": 1.0})
    for e in (1, 2):
        first.log_epoch(fake_epoch(tmp_path, "trial_r", e, {"f1": 0.3 + e / 10}))
    client = MlflowClient(uri)
    # crash in the middle of epoch 3: the model exists but never became READY
    client.create_logged_model(
        search.experiment_id, name="trial_r-epoch-003", source_run_id=first.run_id,
        tags={TRIAL_TAG: "trial_r", EPOCH_TAG: "3", SEARCH_TAG: search.name},
    )
    mark_orphans(search, "driver restarted")

    second = TrialLogger(search, "trial_r", {"lam": 1.0})
    assert second.run_id == first.run_id
    assert client.get_run(second.run_id).info.status == "RUNNING"
    assert second.logged_epochs() == {1, 2}
    for e in (1, 2, 3):
        second.log_epoch(fake_epoch(tmp_path, "trial_r2", e, {"f1": 0.9}))  # re-run: first write wins for 1, 2
    assert second.logged_epochs() == {1, 2, 3}
    history = client.get_metric_history(second.run_id, "f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.4), (2, 0.5), (3, 0.9)]
    models = list(iter_logged_models(client, search.experiment_id, f"source_run_id = '{second.run_id}'"))
    assert len(models) == 3 and all(m.status == "READY" for m in models)
    second.finish()


def test_lost_response_is_retried_without_duplicates(uri, search, tmp_path):
    """The server stored log_batch but the reply was lost: the retry re-sends identical rows."""
    sleeps: list[float] = []
    logger = TrialLogger(search, "trial_flaky", {}, retry=RetryPolicy(attempts=4, initial=0.01, sleep=sleeps.append))
    real = logger.client.log_batch
    failures = iter([True, True])

    def flaky(*args, **kwargs):
        real(*args, **kwargs)
        if next(failures, False):
            raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)

    logger.client.log_batch = flaky
    logger.log_epoch(fake_epoch(tmp_path, "trial_flaky", 1, {"f1": 0.7}))
    assert len(sleeps) == 2
    assert [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(logger.run_id, "f1")] == [(1, 0.7)]
    assert logger.logged_epochs() == {1}
    logger.finish()


def test_retry_policy_is_bounded_and_skips_permanent_errors():
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, initial=1.0, maximum=1.5, sleep=sleeps.append)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        policy.call(down)
    assert len(calls) == 3 and len(sleeps) == 2 and all(s <= 1.5 for s in sleeps)

    def bad():
        calls.append(1)
        raise MlflowException("no", error_code=INVALID_PARAMETER_VALUE)

    calls.clear()
    with pytest.raises(MlflowException):
        policy.call(bad)
    assert len(calls) == 1


def test_failed_trial_and_orphans(uri, search, tmp_path):
    client = MlflowClient(uri)
    failed = TrialLogger(search, "trial_f", {"lam": 10.0})
    failed.log_epoch(fake_epoch(tmp_path, "trial_f", 1, {"f1": 0.2}))
    failed.finish("FAILED", reason="DivergedError: loss is nan at epoch 2")
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_TAG] == "DivergedError: loss is nan at epoch 2"

    left = [TrialLogger(search, f"trial_o{i}", {}) for i in range(2)]
    assert mark_orphans(search, "worker lost") == 2
    for logger in left:
        run = client.get_run(logger.run_id)
        assert run.info.status == "KILLED" and run.data.tags[FAILURE_TAG] == "worker lost"
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert mark_orphans(search, "again") == 0

    # a stopped trial resumed (--resume) that then finishes is no longer a failure: the stop's reason goes
    resumed = TrialLogger(search, "trial_o0", {})
    assert client.get_run(resumed.run_id).data.tags[FAILURE_TAG] == "worker lost"
    resumed.log_epoch(fake_epoch(tmp_path, "trial_o0", 1, {"f1": 0.3}))
    resumed.finish("FINISHED")
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and FAILURE_TAG not in run.data.tags


def test_resume_of_a_search_that_never_ran_refuses_and_creates_nothing(uri):
    client = MlflowClient(uri)
    with pytest.raises(ValueError, match=r"^--resume: search typo never ran in .* \(no experiment 'mg-tune/typo' with a search run\)"):
        start_search("typo", SPEC, SPEC_TEXT, uri, resume=True)
    assert client.get_experiment_by_name("mg-tune/typo") is None


def test_concurrent_trials_from_threads(uri, search, tmp_path):
    errors = []

    def trial(name: str) -> None:
        try:
            logger = TrialLogger(search, name, {"name": name})
            for e in (1, 2, 3):
                logger.log_epoch(fake_epoch(tmp_path, name, e, {"f1": e / 10}))
            logger.finish()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=trial, args=(f"trial_c{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    client = MlflowClient(uri)
    for i in range(2):
        logger = TrialLogger(search, f"trial_c{i}", {"name": f"trial_c{i}"})
        assert logger.logged_epochs() == {1, 2, 3}
        assert [m.step for m in client.get_metric_history(logger.run_id, "f1")] == [1, 2, 3]


def test_search_metrics_and_request_counting(uri, search):
    log_search_metrics(search, {"hypervolume": 0.25}, step=4)
    log_search_metrics(search, {"hypervolume": 0.5}, step=8)
    client = MlflowClient(uri)
    with count_requests() as counter:
        history = client.get_metric_history(search.run_id, "hypervolume")
    assert [(m.step, m.value) for m in history] == [(4, 0.25), (8, 0.5)]
    assert counter.store == 1 and counter.calls["get_metric_history"] == 1


def test_time_slices_read_every_logged_model_exactly_once(new_mlflow_store):
    client = MlflowClient(new_mlflow_store())
    experiment_id = client.create_experiment("slices")
    run_id = client.create_run(experiment_id).info.run_id
    models = [client.create_logged_model(experiment_id, name=f"m{i}", source_run_id=run_id) for i in range(7)]
    stamps = sorted(m.creation_timestamp for m in models)
    cuts = [stamps[2], stamps[2], stamps[5]]  # a cut equal to a model's time puts it in the later slice; repeated cuts collapse
    read = logged_models_in_slices(client, experiment_id, cuts, workers=3)
    assert sorted(m.model_id for m in read) == sorted(m.model_id for m in models)
    assert len(read) == 7
    with count_requests() as counter:
        logged_models_in_slices(client, experiment_id, cuts, workers=3)
    assert counter.calls["search_logged_models"] == 3  # one page per slice
