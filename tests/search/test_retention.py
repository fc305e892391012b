"""Checkpoint storage (issue 22, item 0): optimizer state on the newest epoch only, half-precision weights, retention policies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from ray.tune.experiment import Trial

from mg_tune.checkpoint import join_resume, load_checkpoint, load_resumable, save_checkpoint, split_for_storage
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.search.retention import CheckpointRetention
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import (
    WEIGHTS_DELETED_TAG,
    TrialLogger,
    download_checkpoint,
    download_resume_checkpoint,
    iter_logged_models,
    start_search,
)
from mg_tune.train import EpochResult


def adam_checkpoint(path: Path, epoch: int, metrics: dict[str, float], seed: int = 0, dtype: str = "float32") -> Path:
    """A real checkpoint (and resume.pt) of a tiny model with Adam state (one step taken) and an integer buffer."""
    torch.manual_seed(seed * 100 + epoch)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return save_checkpoint(path, model, optimizer, epoch, metrics, {"seed": seed}, dtype=dtype)


def model_artifacts(uri: str, experiment_id: str, run_id: str) -> dict[int, set[str]]:
    """Epoch → the file names in that epoch's LoggedModel artifact folder (read from the store's files)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    found = {}
    for model in iter_logged_models(MlflowClient(uri), experiment_id, f"source_run_id = '{run_id}'"):
        repo = get_artifact_repository(model.artifact_location, tracking_uri=uri)
        found[int(model.tags["mg_tune.epoch"])] = {f.path for f in repo.list_artifacts()}
    return found


def test_split_and_join_by_hand():
    path = adam_checkpoint(Path("/tmp") / "mg-tune-split" / "c.pt", 1, {"f1": 0.5})
    assert load_checkpoint(path)["optimizer"] is None and (path.parent / "resume.pt").exists()
    state = load_resumable(path)
    stored, resume = split_for_storage(state, "float16")
    assert stored["optimizer"] is None and resume["optimizer"] is state["optimizer"]
    assert stored["model"]["0.weight"].dtype == torch.float16
    assert stored["model"]["1.num_batches_tracked"].dtype == torch.int64 and int(stored["model"]["1.num_batches_tracked"]) == 1
    assert torch.equal(stored["model"]["0.weight"], state["model"]["0.weight"].half())
    joined = join_resume(stored, resume)
    assert all(torch.equal(joined["model"][k], v) for k, v in state["model"].items())
    assert joined["optimizer"] == state["optimizer"]
    stored32, resume32 = split_for_storage(state, "float32")
    assert resume32["model"] is None  # float32 weights are already in the stored file
    assert all(torch.equal(join_resume(stored32, resume32)["model"][k], v) for k, v in state["model"].items())
    assert torch.tensor(0.1).to(torch.bfloat16).item() == 0.10009765625  # what bfloat16 keeps of 0.1 (8 bits of mantissa)


def test_optimizer_state_stays_on_the_newest_epoch_only(new_mlflow_store, tmp_path):
    uri = new_mlflow_store()
    search = start_search("opt", {"trials": 1}, "trials: 1\n", uri, resume=False)
    logger = TrialLogger(search, "t1", {"lr": 0.1})
    originals = {}
    for epoch in (1, 2, 3):
        path = adam_checkpoint(tmp_path / f"{epoch}" / "checkpoint.pt", epoch, {"f1": epoch / 10}, dtype="bfloat16")
        originals[epoch] = load_resumable(path)
        logger.log_epoch(EpochResult(epoch, {"f1": epoch / 10}, path, None))
        files = model_artifacts(uri, search.experiment_id, logger.run_id)
        assert files == {e: {"checkpoint.pt", "resume.pt"} if e == epoch else {"checkpoint.pt"} for e in range(1, epoch + 1)}
    for epoch in (1, 2, 3):
        stored = load_checkpoint(download_checkpoint(uri, logger.run_id, epoch, tmp_path / "dl" / str(epoch)))
        assert stored["optimizer"] is None and stored["model"]["0.weight"].dtype == torch.bfloat16
        assert stored["metrics"] == {"f1": epoch / 10}
    whole = load_resumable(download_resume_checkpoint(uri, logger.run_id, 3, tmp_path / "resume"))
    assert all(torch.equal(whole["model"][k], v) for k, v in originals[3]["model"].items())  # float32, as trained
    assert torch.equal(whole["optimizer"]["state"][0]["exp_avg"], originals[3]["optimizer"]["state"][0]["exp_avg"])
    # a restarted trial (new logger) drops the resume state of its older epochs once it logs a newer one
    again = TrialLogger(search, "t1", {"lr": 0.1})
    again.log_epoch(EpochResult(4, {"f1": 0.4}, adam_checkpoint(tmp_path / "4" / "checkpoint.pt", 4, {"f1": 0.4}), None))
    assert model_artifacts(uri, search.experiment_id, logger.run_id) == {1: {"checkpoint.pt"}, 2: {"checkpoint.pt"}, 3: {"checkpoint.pt"}, 4: {"checkpoint.pt", "resume.pt"}}
    again.finish("KILLED", reason="stopped")  # may be resumed: keeps its resume state
    assert model_artifacts(uri, search.experiment_id, logger.run_id)[4] == {"checkpoint.pt", "resume.pt"}
    TrialLogger(search, "t1", {"lr": 0.1}).finish("FINISHED")  # never runs again: nothing left to resume from
    assert model_artifacts(uri, search.experiment_id, logger.run_id)[4] == {"checkpoint.pt"}


def test_a_trial_resumed_from_mlflow_continues_exactly(new_mlflow_store, tmp_path):
    """Train 2 epochs; resume a second run from epoch 1's stored checkpoint + resume.pt (bfloat16 weights stored): same epoch 2."""
    from mg_tune.config import TrainConfig
    from mg_tune.train import train

    uri = new_mlflow_store()
    search = start_search("exact", {"trials": 1}, "trials: 1\n", uri, resume=False)
    config = TrainConfig.model_validate(
        {"data": {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16},
         "model": "smerf_cnn", "loss": "energy", "lam": 1.0, "epochs": 2, "batch_size": 16, "overlay_images": 0, "seed": 3}
    )
    whole = train(config, checkpoint_dir=tmp_path / "whole")
    logger = TrialLogger(search, "t1", {})
    train(config.model_copy(update={"epochs": 1}), callback=logger.log_epoch, checkpoint_dir=tmp_path / "first", checkpoint_dtype="bfloat16")
    start = download_resume_checkpoint(uri, logger.run_id, 1, tmp_path / "from-mlflow")
    resumed = train(config, checkpoint_dir=tmp_path / "resumed", resume_from=start)
    logger.log_epoch(resumed.history[-1])
    with pytest.raises(FileNotFoundError, match="epoch 1 has no resume.pt: only a trial's newest epoch keeps"):
        download_resume_checkpoint(uri, logger.run_id, 1, tmp_path / "old")
    a, b = (load_checkpoint(r.history[-1].checkpoint)["model"] for r in (whole, resumed))
    assert resumed.history[-1].epoch == 2 and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1].metrics == whole.history[-1].metrics


# --------------------------------------------------------------------------- retention policies

# (trial, loss, epoch, f1, epg): objectives f1, epg (both max), constraint f1 >= 0.3
POINTS = [
    ("a", "energy", 1, 0.50, 0.20),
    ("a", "energy", 2, 0.60, 0.30),  # dominates a1 and c1 (same group) and e1 (other group)
    ("b", "l1", 1, 0.70, 0.10),  # the best f1: on the front
    ("c", "energy", 1, 0.55, 0.25),  # dominated by a2
    ("d", "l1", 1, 0.65, 0.05),  # dominated by b1 (same group)
    ("e", "l1", 1, 0.58, 0.28),  # dominated by a2 only (another group)
    ("f", "energy", 1, 0.20, 0.90),  # infeasible (f1 < 0.3): dominates g1 but may not delete it
    ("g", "energy", 1, 0.10, 0.80),  # infeasible, dominated by f1 only
    ("h", "energy", 1, math.nan, 0.01),  # no f1: never dominated, kept
]


def run_policy(uri: str, tmp_path: Path, keep: str, finish: str = "abcdefgh") -> tuple[CheckpointRetention, object]:
    """Log POINTS through real TrialLoggers, feed them to a CheckpointRetention as Ray Tune would, end the trials in ``finish``."""
    search = start_search(keep, {"trials": 8}, "trials: 8\n", uri, resume=False)
    spec = SearchSpec.model_validate({"name": keep, "objectives": ["f1", "epg"], "constraints": ["f1 >= 0.3"], "checkpoints": {"keep": keep}})
    retention = CheckpointRetention(spec, search)
    retention.setup()
    trials = {}
    for trial_id, loss, epoch, f1, epg in POINTS:
        metrics = {"epg": epg} if math.isnan(f1) else {"f1": f1, "epg": epg}
        logger = TrialLogger(search, trial_id, {"loss": loss})
        logger.log_epoch(EpochResult(epoch, metrics, adam_checkpoint(tmp_path / keep / trial_id / f"{epoch}.pt", epoch, metrics), None))
        trials[trial_id] = Trial("__fake", trial_id=trial_id, config={"loss": loss}, stub=True)
        retention.on_trial_result(0, [], trials[trial_id], {**metrics, "epoch": epoch})
    for trial_id in finish:
        retention.on_trial_complete(0, [], trials[trial_id])
    return retention, search


def deleted(uri: str, name: str) -> set[str]:
    table = checkpoint_table(uri, name)
    return {f"{t}{e}" for t, e, d in zip(table["trial_id"], table["epoch"], table["weights_deleted"]) if d}


@pytest.mark.parametrize(
    ("keep", "expected"),
    [("all", set()), ("front", {"a1", "c1", "d1", "e1"}), ("front_per_group", {"a1", "c1", "d1"})],
)
def test_policies_delete_exactly_the_dominated_weights(new_mlflow_store, tmp_path, keep, expected):
    uri = new_mlflow_store()
    run_policy(uri, tmp_path, keep)
    assert deleted(uri, keep) == expected
    table = checkpoint_table(uri, keep)
    assert len(table) == len(POINTS) and table["epg"].notna().all()  # every point's metrics stay
    front = search_pareto(uri, keep, ["f1", "epg"], [True, True], tag=False, constraints=["f1 >= 0.3"]).front
    assert sorted(front["trial_id"] + front["epoch"].astype(str)) == ["a2", "b1"]
    for row in table.itertuples():
        key = f"{row.trial_id}{row.epoch}"
        if key in expected:
            with pytest.raises(FileNotFoundError, match=r"deleted by the search's retention policy: dominated by trial (a epoch 2|b epoch 1)"):
                download_checkpoint(uri, row.run_id, row.epoch, tmp_path / "dl" / key)
            assert model_artifacts(uri, _experiment(uri, keep), row.run_id)[row.epoch] == set()
        else:
            assert load_checkpoint(download_checkpoint(uri, row.run_id, row.epoch, tmp_path / "dl" / key))["epoch"] == row.epoch


def _experiment(uri: str, name: str) -> str:
    return MlflowClient(uri).get_experiment_by_name(f"mg-tune/{name}").experiment_id


def test_the_newest_epoch_of_a_running_trial_is_kept_until_it_ends(new_mlflow_store, tmp_path):
    """c1 and d1 are their trials' newest epochs: kept while c and d may run (a restart resumes from them), deleted when they end."""
    uri = new_mlflow_store()
    retention, search = run_policy(uri, tmp_path, "front", finish="abefgh")
    assert deleted(uri, "front") == {"a1", "e1"}
    assert set(retention.dominator) == {("c", 1), ("d", 1)}
    # a resumed driver re-reads MLflow and treats every trial as possibly running: nothing more is deleted yet
    spec = retention.spec
    resumed = CheckpointRetention(spec, search)
    resumed.setup()
    assert resumed.deleted == {("a", 1), ("e", 1)} and set(resumed.dominator) == {("c", 1), ("d", 1)}
    resumed.on_trial_complete(0, [], Trial("__fake", trial_id="c", config={"loss": "energy"}, stub=True))
    assert deleted(uri, "front") == {"a1", "e1", "c1"}
    tags = {m.tags["mg_tune.trial_id"]: m.tags.get(WEIGHTS_DELETED_TAG) for m in iter_logged_models(MlflowClient(uri), search.experiment_id)}
    assert tags["c"] == "dominated by trial a epoch 2 on f1, epg (checkpoints.keep: front)"
    assert tags["b"] is None


# --------------------------------------------------------------------------- a real search under each policy


def expected_deletions(table, keep: str) -> set[str]:
    """Brute force: rows strictly dominated on (f1, epg, iou) by another row (of the same loss for front_per_group)."""
    out = set()
    rows = table.to_dict("records")
    for p in rows:
        for q in rows:
            same = keep == "front" or q["params.loss"] == p["params.loss"]
            better = [q[m] >= p[m] for m in ("f1", "epg", "iou")]
            if same and all(better) and any(q[m] > p[m] for m in ("f1", "epg", "iou")):
                out.add(f"{p['trial_id']}{p['epoch']}")
    return out


@pytest.mark.slow
def test_a_search_under_a_policy_keeps_its_front_evaluate_export_and_resume(tmp_path, ray_local, keep="front_per_group", dtype="bfloat16"):
    """One real search (the policies' logic is tested above for all three against a real store)."""
    import yaml
    from typer.testing import CliRunner

    import mg_tune
    from mg_tune.cli import app
    from mg_tune.checkpoint_eval import evaluate_pareto
    from mg_tune.export import export_checkpoint
    from mg_tune.search.runner import run_search

    raw = {
        "name": keep.replace("_", "-"),
        "data": {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "epochs": 2, "batch_size": 16, "overlay_images": 1},
        "space": {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 1.0], "l1": [0.01, 1.0]}}},
        "sampler": "random", "trials": 4, "concurrency": 2, "resources": {"cpu": 1}, "seed": 1,
        "storage_path": str(tmp_path / "runs"), "checkpoints": {"keep": keep, "dtype": dtype},
    }
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = SearchSpec.model_validate(raw)
    outcome = run_search(spec, yaml.safe_dump(raw), uri)
    name = spec.name
    table = checkpoint_table(uri, name)
    assert outcome.errors == 0 and len(table) == 8
    assert deleted(uri, name) == expected_deletions(table, keep) != set()
    front = outcome.pareto.front
    assert not front["weights_deleted"].any()
    for row in front.itertuples():
        state = load_checkpoint(download_checkpoint(uri, row.run_id, row.epoch, tmp_path / "front" / row.model_id))
        assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {getattr(torch, dtype)} and state["optimizer"] is None
    evaluated = evaluate_pareto(uri, name, ["f1", "epg", "iou"], [True] * 3)
    assert sorted(zip(evaluated["trial_id"], evaluated["epoch"])) == sorted(zip(front["trial_id"], front["epoch"]))
    with pytest.warns(UserWarning, match=f"{len(deleted(uri, name))} of 8 checkpoints have no weights"):
        assert len(evaluate_pareto(uri, name, ["f1", "epg", "iou"], [True] * 3, pareto_only=False)) == 8 - len(deleted(uri, name))
    best = front.iloc[0]
    written = export_checkpoint(uri, name, best.trial_id, int(best.epoch), tmp_path / "best")
    card = json.loads((Path(written) / "dataset.json").read_text())
    logits = mg_tune.load_model(written)(torch.zeros(1, 3, card["image_size"], card["image_size"]))
    assert logits.shape == (1, len(card["classes"]))
    gone = table[table["weights_deleted"]].iloc[0]
    refused = CliRunner().invoke(app, ["export", "--search", name, "--trial", gone.trial_id, "--epoch", str(gone.epoch), "--to", str(tmp_path / "gone"), "--tracking-uri", uri])
    assert refused.exit_code == 2 and not (tmp_path / "gone").exists()
    assert refused.output.strip().splitlines() == [
        f"error: trial {gone.trial_id!r} epoch {gone.epoch} of search {name!r} has no weights: the search's checkpoints.keep policy deleted them "
        f"({MlflowClient(uri).get_logged_model(gone.model_id).tags[WEIGHTS_DELETED_TAG]}); its metrics stay in MLflow"
    ]
    assert not list((tmp_path / "mlartifacts").rglob("resume.pt"))  # every trial finished: no optimizer state is kept
    resumed = run_search(spec, yaml.safe_dump(raw), uri, resume=True)  # Ray restores the retention callback from its state
    assert resumed.errors == 0 and checkpoint_table(uri, name)[["trial_id", "epoch", "weights_deleted"]].equals(table[["trial_id", "epoch", "weights_deleted"]])
    assert sorted(resumed.pareto.front["model_id"]) == sorted(front["model_id"])
