"""Credentials out of URIs (mg_tune.tracking.credentials): a password a user typed leaves the URI at the
boundary for the mechanism its library reads, and nothing mg-tune keeps or pickles holds it."""

from __future__ import annotations

import os
import stat

import cloudpickle
import pytest

from mg_tune.search.spec import SearchSpec
from mg_tune.search.spec_credentials import move_spec_credentials
from mg_tune.tracking import SearchRun, credentials, move_credentials, password_file

PASSWORD = "Pw-in-URI-0815"


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    """A process without credentials of its own: no MLflow/AWS variables, a home with no ~/.pgpass, no password file yet."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(credentials, "_PASSFILE", None)


def test_an_http_password_moves_to_mlflows_environment_variables():
    assert move_credentials(f"http://admin:{PASSWORD}@127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin" and os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    assert move_credentials("https://me:p%40ss%3Aword@mlflow.example/prefix") == "https://mlflow.example/prefix"  # percent-decoded
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "me" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss:word"


def test_postgresql_passwords_go_to_a_private_password_file_keyed_by_host_port_database_user(tmp_path):
    (tmp_path / "home" / ".pgpass").write_text("old.example:5432:*:me:from-home\n")
    tracking = move_credentials(f"postgresql+psycopg://mlflow:{PASSWORD}@db.example:5433/mlflow?sslmode=require", "tracking_uri")
    study = move_credentials("postgresql://optuna:other%3Apw@db.example/optuna", "study_storage")
    assert tracking == "postgresql+psycopg://mlflow@db.example:5433/mlflow?sslmode=require"
    assert study == "postgresql://optuna@db.example/optuna"
    path = password_file()
    assert os.environ["PGPASSFILE"] == str(path) and path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # two URIs, two passwords, one file (one PGPASSWORD could not do this); ':' escaped; ~/.pgpass still read after ours
    assert path.read_text().splitlines() == [
        "db.example:*:optuna:optuna:other\\:pw",
        f"db.example:5433:mlflow:mlflow:{PASSWORD}",
        "old.example:5432:*:me:from-home",
    ]
    assert "PGPASSWORD" not in os.environ


def test_a_uri_without_a_secret_is_unchanged_and_moving_is_idempotent():
    for uri in ("http://127.0.0.1:5000", "sqlite:////tmp/mlflow.db", "postgresql://postgres@127.0.0.1:5432/db", "/data/runs", "s3://b/p?endpoint_override=h:9000&scheme=http", "not a uri"):
        assert move_credentials(uri) == uri
    stripped = move_credentials(f"http://admin:{PASSWORD}@h:5000")
    assert move_credentials(stripped) == stripped
    assert password_file() is None and "PGPASSFILE" not in os.environ


def test_s3_keys_in_the_query_move_to_the_aws_credential_chain():
    uri = f"s3://bucket/ray?endpoint_override=127.0.0.1:9000&access_key=AKIA1&secret_key={PASSWORD}&scheme=http"
    assert move_credentials(uri) == "s3://bucket/ray?endpoint_override=127.0.0.1:9000&scheme=http"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIA1" and os.environ["AWS_SECRET_ACCESS_KEY"] == PASSWORD


def test_a_mysql_password_is_refused_without_showing_it():
    with pytest.raises(ValueError) as error:
        move_credentials(f"mysql+pymysql://root:{PASSWORD}@127.0.0.1/mlflow", "tracking_uri")
    assert str(error.value).startswith("tracking_uri mysql+pymysql://root@127.0.0.1/mlflow: ") and PASSWORD not in str(error.value)


def test_the_spec_its_text_and_what_ray_pickles_hold_no_password(tmp_path):
    from mg_tune.search.budget import TrialEpochBudget
    from mg_tune.search.callbacks import HypervolumeTracker, StoppedTrialFinisher
    from mg_tune.search.runner import build_searcher

    text = (
        f"name: s\ntracking_uri: http://admin:{PASSWORD}@127.0.0.1:5000\n"
        f"study_storage: 'postgresql://optuna:{PASSWORD}@127.0.0.1:5432/optuna'\n"
        f"storage_path: s3://b/ray?secret_key={PASSWORD}&access_key=A\n"
        "space: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n"
    )
    import yaml

    spec, stripped_text = move_spec_credentials(SearchSpec.model_validate(yaml.safe_load(text)), text)
    assert (spec.tracking_uri, spec.study_storage, spec.storage_path) == ("http://127.0.0.1:5000", "postgresql://optuna@127.0.0.1:5432/optuna", "s3://b/ray")
    assert PASSWORD not in stripped_text and "study_storage: 'postgresql://optuna@127.0.0.1:5432/optuna'" in stripped_text
    search = SearchRun(spec.tracking_uri, "1", "r" * 32, "s")
    pickled = cloudpickle.dumps([spec, search, build_searcher(spec), HypervolumeTracker(spec, search), StoppedTrialFinisher(search), TrialEpochBudget(search, 4)])
    assert PASSWORD.encode() not in pickled


def test_a_password_is_refused_for_a_ray_started_elsewhere_before_anything_is_written(tmp_path, monkeypatch):
    from mg_tune.search.runner import run_search

    import ray

    monkeypatch.chdir(tmp_path)
    spec = SearchSpec(name="elsewhere", trials=1, study_storage=f"postgresql://optuna:{PASSWORD}@127.0.0.1:1/optuna")
    # which Ray the message names depends on whether this process already holds one (earlier tests of the session may)
    for initialized, where in ((False, "the Ray at 10.0.0.5:6379"), (True, "the Ray this process started already")):
        monkeypatch.setattr(ray, "is_initialized", lambda: initialized)
        with pytest.raises(ValueError) as error:
            run_search(spec, "", f"sqlite:///{tmp_path}/mlflow.db", address="10.0.0.5:6379")
        assert f"{where} would not see it" in str(error.value) and PASSWORD not in str(error.value)
        assert not (tmp_path / "mlflow.db").exists()
