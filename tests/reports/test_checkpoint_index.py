"""A search's checkpoint index (issue 22, item 4): the driver's compact table of every checkpoint, trusted only when complete.

The table read from a complete index must be the table read from the
LoggedModels, column for column and row for row; anything that may change
the checkpoints clears the completeness tag, and every index that is not
complete (running, crashed, resumed, unreadable) falls back to the LoggedModels.
"""

from __future__ import annotations

import math
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
from mlflow import MlflowClient
from ray.tune.experiment import Trial

from mg_tune.checkpoint_table import checkpoint_table, read_search
from mg_tune.front import PARETO_TAG, mark_pareto, search_pareto
from mg_tune.search.callbacks import HypervolumeTracker, StartingTable
from mg_tune.search.checkpoint_index import RESULT_KEY, CheckpointIndexWriter
from mg_tune.search.retention import CheckpointRetention
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import (
    INDEX_TAG,
    TrialLogger,
    count_requests,
    epoch_metrics,
    find_search_run,
    iter_logged_models,
    start_search,
    updating_index_metrics,
    write_index,
)
from mg_tune.train import EpochResult

# (trial, loss, epoch, f1, epg, reported): objectives f1, epg (both max), constraint f1 >= 0.3
POINTS = [
    ("a", "energy", 1, 0.50, 0.20, True),
    ("a", "energy", 2, 0.60, 0.30, True),  # dominates a1, c1, e1
    ("b", "l1", 1, 0.70, 0.10, True),
    ("c", "energy", 1, 0.55, 0.25, True),
    ("d", "l1", 1, 0.65, 0.05, True),
    ("d", "l1", 2, 0.66, 0.06, False),  # logged, never reported (the trial died in between): the index re-reads d
    ("e", "l1", 1, 0.58, 0.28, True),
    ("h", "energy", 1, math.nan, 0.01, True),  # f1 NaN: logged on the run only
    ("h", "energy", 2, 0.35, math.inf, True),  # +inf: SQL stores it as the largest double, readers restore inf
]


def checkpoint_file(folder: Path) -> Path:
    """A stand-in checkpoint file (the index never reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(b"weights")
    return folder / "checkpoint.pt"


def run_search_by_hand(uri: str, tmp_path: Path, name: str, keep: str = "front") -> tuple[object, CheckpointIndexWriter]:
    """Log POINTS through real TrialLoggers and feed the driver's callbacks as Ray Tune would; end the experiment."""
    search = start_search(name, {"trials": 6}, "trials: 6\n", uri, resume=False)
    spec = SearchSpec.model_validate({"name": name, "objectives": ["f1", "epg"], "constraints": ["f1 >= 0.3"], "checkpoints": {"keep": keep}})
    index = CheckpointIndexWriter(search, interval_s=0.0)
    retention = CheckpointRetention(spec, search, index)
    callbacks = [index, retention]
    for callback in callbacks:
        callback.setup()
    trials = {}
    for trial_id, loss, epoch, f1, epg, reported in POINTS:
        metrics = {"f1": f1, "epg": epg, "loss": 0.1 * epoch}
        logger = TrialLogger(search, trial_id, {"loss": loss, "lam": 0.5})
        record = logger.log_epoch(EpochResult(epoch, metrics, checkpoint_file(tmp_path / name / trial_id / str(epoch)), None))
        trials[trial_id] = Trial("__fake", trial_id=trial_id, config={"loss": loss}, stub=True)
        if reported:
            for callback in callbacks:
                callback.on_trial_result(0, [], trials[trial_id], {**metrics, "epoch": epoch, RESULT_KEY: record})
    for trial in trials.values():
        for callback in callbacks:
            callback.on_trial_complete(0, [], trial)
    for callback in callbacks:
        callback.on_experiment_end([])
    return search, index


def parent_tags(uri: str, search) -> dict[str, str]:
    return MlflowClient(uri).get_run(search.run_id).data.tags


def test_the_table_from_the_index_is_the_table_from_the_logged_models(new_mlflow_store, tmp_path):
    uri = new_mlflow_store()
    search, index = run_search_by_hand(uri, tmp_path, "same")
    assert parent_tags(uri, search)[INDEX_TAG] == f"complete:{len(POINTS)}"
    assert read_search(uri, "same").from_index and not read_search(uri, "same", use_index=False).from_index
    fast, full = checkpoint_table(uri, "same"), checkpoint_table(uri, "same", use_index=False)
    pd.testing.assert_frame_equal(fast, full, check_exact=True)
    assert list(fast.columns) == [
        "run_id", "trial_id", "epoch", "model_id", "status", "checkpoint_uri", "created", "weights_deleted", "params.lam", "params.loss", "epg", "f1", "loss"
    ]
    # by hand
    rows = {(r.trial_id, r.epoch): r for r in fast.itertuples()}
    assert len(rows) == len(POINTS) and rows[("a", 2)].f1 == 0.60 and rows[("a", 2)].epg == 0.30 and rows[("d", 2)].f1 == 0.66
    assert math.isnan(rows[("h", 1)].f1) and rows[("h", 2)].epg == math.inf and rows[("a", 1)].loss == 0.1
    assert fast["params.lam"].tolist() == [0.5] * len(POINTS)
    # retention (keep: front) deleted exactly the dominated weights, and the index says so
    assert {k for k, r in rows.items() if r.weights_deleted} == {("a", 1), ("c", 1), ("e", 1), ("d", 1)}
    tagged = {(m.tags["mg_tune.trial_id"], int(m.tags["mg_tune.epoch"])) for m in iter_logged_models(MlflowClient(uri), search.experiment_id) if "mg_tune.weights_deleted" in m.tags}
    assert tagged == {k for k, r in rows.items() if r.weights_deleted}
    model = MlflowClient(uri).get_logged_model(rows[("b", 1)].model_id)
    assert rows[("b", 1)].checkpoint_uri == f"{model.artifact_location}/checkpoint.pt" and rows[("b", 1)].created == model.creation_timestamp
    # the front read through the index is the front of the full read
    front = search_pareto(uri, "same", ["f1", "epg"], [True, True], tag=False, constraints=["f1 >= 0.3"]).front
    assert sorted(front["model_id"]) == sorted(mark_pareto(full, ["f1", "epg"], [True, True], ["f1 >= 0.3"]).front["model_id"])
    assert sorted(zip(front["trial_id"], front["epoch"])) == [("a", 2), ("b", 1), ("h", 2)]


def test_a_complete_index_is_a_handful_of_requests(new_mlflow_store, tmp_path):
    uri = new_mlflow_store()
    run_search_by_hand(uri, tmp_path, "count")
    with count_requests() as fast:
        checkpoint_table(uri, "count")
    with count_requests() as full:
        checkpoint_table(uri, "count", use_index=False)
    assert dict(fast.calls) == {"get_experiment_by_name": 1, "search_runs": 2}  # + one artifact download (files here)
    assert full.calls["search_logged_models"] == 1 and "search_logged_models" not in fast.calls


def test_resume_and_retention_clear_the_completeness_tag(new_mlflow_store, tmp_path):
    uri = new_mlflow_store()
    search, _ = run_search_by_hand(uri, tmp_path, "resume")
    assert INDEX_TAG in parent_tags(uri, search)
    start_search("resume", {"trials": 6}, "trials: 6\n", uri, resume=True)
    assert INDEX_TAG not in parent_tags(uri, search) and not read_search(uri, "resume").from_index
    write_index(uri, search.run_id, [], complete=True)
    assert read_search(uri, "resume").from_index
    spec = SearchSpec.model_validate({"name": "resume", "objectives": ["f1", "epg"], "checkpoints": {"keep": "front"}})
    CheckpointRetention(spec, search).setup()  # a driver whose retention may delete weights: not complete any more
    assert INDEX_TAG not in parent_tags(uri, search)


def test_a_restarting_driver_reads_mlflow_once_for_all_its_callbacks(new_mlflow_store, tmp_path):
    """The index writer, the hypervolume tracker and retention share one StartingTable: one read of the LoggedModels, not three."""
    uri = new_mlflow_store()
    search, finished = run_search_by_hand(uri, tmp_path, "shared")
    spec = SearchSpec.model_validate({"name": "shared", "objectives": ["f1", "epg"], "constraints": ["f1 >= 0.3"], "checkpoints": {"keep": "front"}})
    shared = StartingTable(search)
    index = CheckpointIndexWriter(search, starting_table=shared)
    callbacks = [index, HypervolumeTracker(spec, search, shared), CheckpointRetention(spec, search, index, shared)]
    with count_requests() as once:
        for callback in callbacks:
            callback.setup()
    with count_requests() as alone:
        CheckpointRetention(spec, search).setup()
    assert once.calls["delete_tag"] == 1 and INDEX_TAG not in parent_tags(uri, search)  # the read cleared the completeness tag first
    assert {k: n for k, n in once.calls.items() if k != "delete_tag"} == dict(alone.calls) and alone.calls["search_logged_models"] == 1
    assert index.records.keys() == finished.records.keys() and len(callbacks[1].points) == len(POINTS)
    # Ray's experiment state pickles the callbacks together: still one table between them, not its rows
    restored = cloudpickle.loads(cloudpickle.dumps(callbacks))
    assert restored[0].starting_table is restored[1].starting_table is restored[2].starting_table
    assert restored[0].starting_table._table is None and shared._table is not None
    # a callback pickled before the shared read existed gets its own
    old = CheckpointRetention.__new__(CheckpointRetention)
    old.__setstate__({k: v for k, v in callbacks[2].__dict__.items() if k != "starting_table"})
    assert old.starting_table.search_run == search and old.starting_table is not shared


def test_an_incomplete_or_broken_index_falls_back_to_the_logged_models(new_mlflow_store, tmp_path):
    uri = new_mlflow_store()
    search, index = run_search_by_hand(uri, tmp_path, "broken")
    full = checkpoint_table(uri, "broken", use_index=False)
    client = MlflowClient(uri)
    records = list(index.records.values())
    # a crashed driver: the index written while running, never tagged complete
    client.delete_tag(search.run_id, INDEX_TAG)
    write_index(uri, search.run_id, records[:3])
    assert not read_search(uri, "broken").from_index
    pd.testing.assert_frame_equal(checkpoint_table(uri, "broken"), full)
    # a tag that does not match the file's rows
    client.set_tag(search.run_id, INDEX_TAG, f"complete:{len(records)}")
    assert not read_search(uri, "broken").from_index
    # a complete tag without its file
    other = start_search("nofile", {}, "x: 1\n", uri, resume=False)
    client.set_tag(other.run_id, INDEX_TAG, "complete:0")
    assert not read_search(uri, "nofile").from_index
    # a tag that is not "complete:<rows>"
    client.set_tag(search.run_id, INDEX_TAG, "writing")
    assert not read_search(uri, "broken").from_index


def test_the_index_is_written_a_bounded_number_of_times(new_mlflow_store, tmp_path):
    """Throttled by growth: the bytes written while running stay a few times the final index, not one upload per epoch."""
    uri = new_mlflow_store()
    search = start_search("throttle", {}, "x: 1\n", uri, resume=False)
    index = CheckpointIndexWriter(search, interval_s=0.0, growth=0.5)
    index.setup()
    trial = Trial("__fake", trial_id="t", config={}, stub=True)
    logger = TrialLogger(search, "t", {})
    uploads = []
    for epoch in range(1, 61):
        record = logger.log_epoch(EpochResult(epoch, {"f1": epoch / 100}, None, None))
        before = index.written_rows
        index.on_trial_result(0, [], trial, {"epoch": epoch, RESULT_KEY: record})
        if index.written_rows != before:
            uploads.append(index.written_rows)
    assert uploads == [1, 2, 3, 5, 8, 12, 18, 27, 41]  # each upload at least 1.5 times the last
    final_rows = len(index.records)
    index.on_experiment_end([])
    assert sum(uploads) <= 3 * final_rows and parent_tags(uri, search)[INDEX_TAG] == f"complete:{final_rows}"
    assert checkpoint_table(uri, "throttle")["f1"].tolist() == [e / 100 for e in range(1, 61)]


def test_pareto_tags_and_evaluated_metrics_through_the_index(new_mlflow_store, tmp_path):
    """search_pareto(tag=True) tags the same models either way; metrics linked later (mg-tune evaluate) keep the index complete and equal."""
    uri = new_mlflow_store()
    search, _ = run_search_by_hand(uri, tmp_path, "tags")
    client = MlflowClient(uri)
    stale = checkpoint_table(uri, "tags").query("trial_id == 'c'")["model_id"].iloc[0]
    client.set_logged_model_tags(stale, {PARETO_TAG: "true"})  # a front of an earlier read
    result = search_pareto(uri, "tags", ["f1", "epg"], [True, True], constraints=["f1 >= 0.3"])
    tagged = {m.model_id for m in iter_logged_models(client, search.experiment_id) if m.tags.get(PARETO_TAG) == "true"}
    assert tagged == set(result.front["model_id"]) and stale not in tagged
    table = checkpoint_table(uri, "tags")
    parent = find_search_run(client, search.experiment_id)
    with updating_index_metrics(uri, parent) as add:
        assert INDEX_TAG not in client.get_run(search.run_id).data.tags
        for row in table.head(3).itertuples():
            values = {"test_f1": row.epoch / 7, "test_iou": math.nan}
            client.log_batch(row.run_id, metrics=epoch_metrics(row.run_id, row.model_id, row.epoch, values, 1))
            add(row.run_id, row.epoch, values)
    assert read_search(uri, "tags").from_index
    pd.testing.assert_frame_equal(checkpoint_table(uri, "tags"), checkpoint_table(uri, "tags", use_index=False), check_exact=True)
    assert checkpoint_table(uri, "tags")["test_f1"].notna().sum() == 3 and "test_iou" not in checkpoint_table(uri, "tags")


@pytest.mark.slow
def test_through_a_server_the_index_costs_a_few_requests(new_mlflow_store, tmp_path):
    from mg_tune.server import MlflowServer, ServerConfig, free_port

    store = new_mlflow_store()
    server = MlflowServer(ServerConfig(store, (tmp_path / "artifacts").as_uri(), port=free_port(), workers=1)).start()
    try:
        run_search_by_hand(server.uri, tmp_path, "server")
        with count_requests() as fast:
            fast_table = checkpoint_table(server.uri, "server")
        with count_requests() as full:
            full_table = checkpoint_table(server.uri, "server", use_index=False)
    finally:
        server.stop()
    pd.testing.assert_frame_equal(fast_table, full_table, check_exact=True)
    assert fast.http <= 6 and "search_logged_models" not in fast.calls  # experiment, parent, trial runs, index: list + download
    assert full.calls["search_logged_models"] >= 1


@pytest.mark.slow
def test_a_real_search_writes_a_complete_index(tmp_path, ray_local):
    """A real search under ``keep: front``: the index is complete and gives the full read's table; --resume clears and rewrites it."""
    import yaml

    from mg_tune.search.runner import run_search

    raw = {
        "name": "indexed",
        "data": {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "epochs": 2, "batch_size": 16, "overlay_images": 0},
        "space": {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 1.0], "l1": [0.01, 1.0]}}},
        "sampler": "random", "trials": 3, "concurrency": 2, "resources": {"cpu": 1}, "seed": 2,
        "storage_path": str(tmp_path / "runs"), "checkpoints": {"keep": "front"},
    }
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = SearchSpec.model_validate(raw)
    outcome = run_search(spec, yaml.safe_dump(raw), uri)
    assert outcome.errors == 0
    tags = MlflowClient(uri).get_run(outcome.search_run.run_id).data.tags
    assert tags[INDEX_TAG] == "complete:6" and read_search(uri, "indexed").from_index
    fast, full = checkpoint_table(uri, "indexed"), checkpoint_table(uri, "indexed", use_index=False)
    pd.testing.assert_frame_equal(fast, full, check_exact=True)
    assert len(fast) == 6 and fast["weights_deleted"].any() and not outcome.pareto.front["weights_deleted"].any()
    deleted = {m.model_id for m in iter_logged_models(MlflowClient(uri), outcome.search_run.experiment_id) if "mg_tune.weights_deleted" in m.tags}
    assert deleted == set(fast.loc[fast["weights_deleted"], "model_id"])
    resumed = run_search(spec, yaml.safe_dump(raw), uri, resume=True)
    assert resumed.errors == 0 and MlflowClient(uri).get_run(outcome.search_run.run_id).data.tags[INDEX_TAG] == "complete:6"
    pd.testing.assert_frame_equal(checkpoint_table(uri, "indexed"), checkpoint_table(uri, "indexed", use_index=False), check_exact=True)
