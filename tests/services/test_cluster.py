"""A search on a real multi-node Ray cluster, tracked by a real MLflow server (PostgreSQL + S3 artifacts).

Everything runs as separate processes on 127.0.0.1, as on a cluster head:
``ray start --head`` plus a second ``ray start`` node, ``mlflow server``
(started by :mod:`mg_tune.server`) with its backend store in a fresh
PostgreSQL database and its artifacts in a moto S3 bucket, and the
``mg-tune search --address`` driver. Ray Tune's own state goes to S3 too
(``storage_path: s3://...``) and the Optuna study to a second PostgreSQL
database (``study_storage``).
"""

import os
import subprocess
import sys
import time

import boto3
import numpy as np
import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient

import mg_tune
from mg_tune.export import export_checkpoint
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.server import free_port
from mg_tune.checkpoint import load_checkpoint
from mg_tune.tracking import ROLE_TAG, download_checkpoint, experiment_name

from helpers.ray_nodes import RayNode, wait_for_nodes
from helpers.searches import brute_force_front, spec_dict

SEARCH = "on-cluster"
@pytest.fixture(scope="module")
def cluster_env(s3_endpoint, s3_credentials):
    """Environment of every cluster process: no Ray token auth (test cluster), dummy AWS credentials."""
    env = {**os.environ, **s3_credentials, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, cluster_env):
    """A head and a worker node (1 CPU each) as separate ``ray start`` processes; yields the address."""
    logs = tmp_path_factory.mktemp("ray-cluster")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"], cluster_env, logs / "head.log")
    nodes = [head]
    try:
        time.sleep(3)
        nodes.append(RayNode([f"--address={address}"], cluster_env, logs / "worker.log"))
        wait_for_nodes(address, 2, cluster_env)
        yield address
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture(scope="module")
def cluster_search(tmp_path_factory, ray_cluster, cluster_env, mlflow_server, s3_endpoint, postgres_database):
    """Run ``mg-tune search --address`` (4 trials x 2 epochs, 2 concurrent, 1 CPU each) on the cluster."""
    uri, bucket = mlflow_server
    work = tmp_path_factory.mktemp("cluster-search")
    endpoint = s3_endpoint.removeprefix("http://")
    raw = spec_dict(SEARCH, f"s3://{bucket}/ray?endpoint_override={endpoint}&scheme=http", trials=4, epochs=2, concurrency=2)
    raw["resources"] = {"cpu": 1}
    raw["reuse_actors"] = False  # each trial gets its own actor, so the 2 concurrent ones need both nodes
    raw["study_storage"] = postgres_database()
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "mg_tune.cli", "search", str(spec_path), "--address", ray_cluster, "--tracking-uri", uri],
        env=cluster_env, cwd=work, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return uri, bucket, raw, done.stdout


def trial_runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(SEARCH))
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def test_trials_ran_on_more_than_one_node(cluster_search):
    uri, *_ = cluster_search
    runs = trial_runs(uri)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["mg_tune.node_id"] for r in runs}) == 2


def list_keys(endpoint: str, bucket: str, prefix: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def test_every_checkpoint_is_in_the_s3_bucket(cluster_search, s3_endpoint):
    uri, bucket, *_ = cluster_search
    table = checkpoint_table(uri, SEARCH)
    assert len(table) == 8 and not table.duplicated(["trial_id", "epoch"]).any()
    assert np.isfinite(table[["f1", "epg", "iou"]].to_numpy()).all()
    keys = list_keys(s3_endpoint, bucket, "mlartifacts/")
    experiment_id = MlflowClient(uri).get_experiment_by_name(experiment_name(SEARCH)).experiment_id
    expected = {f"mlartifacts/{experiment_id}/models/{model_id}/artifacts/checkpoint.pt" for model_id in table.model_id}
    assert expected <= keys
    assert not [k for k in keys if k.endswith("resume.pt")]  # optimizer state deleted through the server as each trial finished
    assert len({k for k in keys if "/overlays/epoch=" in k}) == 8  # one attribution overlay per (trial, epoch)


def test_ray_tune_state_lives_in_s3(cluster_search, s3_endpoint):
    _, bucket, *_ = cluster_search
    keys = list_keys(s3_endpoint, bucket, f"ray/{SEARCH}/")
    assert any("experiment_state" in k for k in keys), sorted(keys)[:10]
    assert not [k for k in keys if k.endswith(".pt")]  # no weights: every epoch is in MLflow (the same bucket); Ray keeps only its state


def test_optuna_study_in_postgres_has_every_trial(cluster_search):
    uri, _, raw, _ = cluster_search
    study = optuna.load_study(study_name=SEARCH, storage=raw["study_storage"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    last = checkpoint_table(uri, SEARCH).query("epoch == 2")
    expected = sorted(tuple(round(v, 6) for v in row) for row in last[["f1", "epg", "iou"]].to_numpy())
    assert sorted(tuple(round(v, 6) for v in t.values) for t in complete) == expected


def test_pareto_through_the_server_is_the_non_dominated_set(cluster_search):
    uri, *_ = cluster_search
    result = search_pareto(uri, SEARCH, ["f1", "epg", "iou"], [True] * 3)
    expected = {(result.table.trial_id[i], result.table.epoch[i]) for i in brute_force_front(result.table[["f1", "epg", "iou"]].to_numpy())}
    assert set(zip(result.front.trial_id, result.front.epoch)) == expected
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment_name(SEARCH)).experiment_id
    assert {r.info.run_id for r in client.search_runs([experiment_id], "tags.pareto = 'true'")} == set(result.front.run_id)


def test_export_to_s3_reloads_the_checkpoint(cluster_search, s3_endpoint, s3_credentials, monkeypatch, tmp_path):
    uri, bucket, *_ = cluster_search
    for key, value in s3_credentials.items():
        monkeypatch.setenv(key, value)
    row = checkpoint_table(uri, SEARCH).iloc[-1]
    written = export_checkpoint(uri, SEARCH, row.trial_id, int(row.epoch), f"s3://{bucket}/exports/best", s3_endpoint_url=s3_endpoint)
    exported = mg_tune.load_model(written, s3_endpoint_url=s3_endpoint)
    original = load_checkpoint(download_checkpoint(uri, row.run_id, int(row.epoch), tmp_path / "ckpt"))["model"]
    assert all(torch.equal(exported.state_dict()[k], v) for k, v in original.items())
    names = {k.rsplit("/", 1)[-1] for k in list_keys(s3_endpoint, bucket, "exports/best/")}
    assert {"model.pt", "config.json", "metrics.json", "MODEL_CARD.md"} <= names
