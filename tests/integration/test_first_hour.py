"""Issue 20's walk-through, as a user runs it: a VOC 2007 copy without segmentation masks, through the CLI.

data check SPEC → search → pareto → evaluate → export → load, all as subprocesses
with their output piped (as into a file), on the official VOC layout of
tests/helpers/data_formats.py. Each of the issue's eight problems is checked where the
user met it; the per-point tests (test_split_sizes, test_iou_threshold, test_output,
test_datasets, test_export) cover the details.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from helpers.data_formats import write_voc

MG_TUNE = str(Path(sys.executable).parent / "mg-tune")
ROUTINE = ("Creating initial MLflow database tables", "Experiment state snapshotting", "A new study created in memory")


def mg_tune(*args: str, cwd: Path, uri: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS")} | {"MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([MG_TUNE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_voc_walk_through_shows_none_of_the_eight_problems(tmp_path):
    root = write_voc(tmp_path / "data")
    for masks in ("SegmentationClass", "SegmentationObject"):  # a VOC copy without segmentation masks
        shutil.rmtree(root / "VOC2007" / masks)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {
        "name": "voc-first-hour",
        "data": {"name": "voc", "root": str(root), "image_size": 32, "options": {"val_split": "official", "heldout_fraction": 0.34}},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "loss": "energy", "epochs": 2, "batch_size": 4, "eval_batch_size": 4, "overlay_images": 1},
        "space": {"lam": {"loguniform_by_loss": {"energy": [1e-3, 1e-1]}}},
        "objectives": ["f1", "epg", "iou"],
        "sampler": "random", "trials": 2, "concurrency": 2, "resources": {"cpu": 1},
    }
    (tmp_path / "voc.yaml").write_text(yaml.safe_dump(spec))

    # (3) data check validates what the search will load, with the spec's options
    checked = json.loads(mg_tune("data", "check", "voc.yaml", "--output", "json", cwd=tmp_path, uri=uri).stdout)
    rows = {r["split"]: r for r in checked}
    assert (rows["train"]["images"], rows["train"]["difficult"], rows["train"]["with_segmentation"]) == (3, 1, 0)

    # (1) a metric VOC without masks cannot measure is refused with one line
    refused = dict(spec, objectives=["f1", "seg_epg"])
    (tmp_path / "seg.yaml").write_text(yaml.safe_dump(refused))
    bad = mg_tune("search", "seg.yaml", cwd=tmp_path, uri=uri, ok=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "seg_epg" in bad.stderr

    # the search: (5) none of Ray's / MLflow's / Optuna's routine lines; (2) the small splits said once, with sizes
    searched = mg_tune("search", "voc.yaml", "--storage-path", str(tmp_path / "runs"), cwd=tmp_path, uri=uri)
    console = searched.stdout + searched.stderr
    assert not [line for line in ROUTINE if line in console]
    assert console.count("the heldout split has 1 image") == 1 and console.count("the val split has 2 images") == 1
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mg-tune/voc-first-hour")
    parent = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mg_tune.role") == "search")
    assert "heldout" in parent.data.tags["mg_tune.small_splits"]
    trials = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mg_tune.role") == "trial"]
    logged = set().union(*(r.data.metrics for r in trials))
    assert {"f1", "epg", "iou"} <= logged and not logged & {"seg_epg", "x_seg_epg", "safl", "pafl"}  # (1) absent, never 0.0

    # (4) piped tables print whole trial ids; (7) evaluate says where its test metrics are, at which epoch
    trial_ids = {r.data.tags["mg_tune.trial_id"] for r in trials}
    front = mg_tune("pareto", "--search", "voc-first-hour", cwd=tmp_path, uri=uri).stdout
    assert any(t in front for t in trial_ids) and "…" not in front
    evaluated = mg_tune("evaluate", "--search", "voc-first-hour", "--output", "json", cwd=tmp_path, uri=uri)
    table = json.loads(evaluated.stdout)
    assert {row["trial_id"] for row in table} <= trial_ids and "logged at step=epoch" in evaluated.stderr
    best = table[0]
    run_id = next(r.info.run_id for r in trials if r.data.tags["mg_tune.trial_id"] == best["trial_id"])
    history = {m.step: m.value for m in client.get_metric_history(run_id, "test_f1")}
    assert history[best["epoch"]] == pytest.approx(best["test_f1"])

    # (6) the export describes itself: no TextBox fields, VOC's classes in output order, the preprocessing
    target = tmp_path / "exported"
    mg_tune("export", "--search", "voc-first-hour", "--trial", best["trial_id"], "--epoch", str(best["epoch"]), "--to", str(target), cwd=tmp_path, uri=uri)
    config = json.loads((target / "config.json").read_text())
    assert not {"train_size", "val_size", "heldout_size", "test_size"} & set(config["data"])
    card = json.loads((target / "dataset.json").read_text())
    assert card["classes"][:3] == ["aeroplane", "bicycle", "bird"] and card["image_size"] == 32
    card_text = (target / "MODEL_CARD.md").read_text()
    assert "| 0 | aeroplane |\n| 1 | bicycle |\n| 2 | bird |" in card_text and "resized to 32x32" in card_text
    import mg_tune as package
    import torch

    assert package.load_model(str(target))(torch.zeros(1, 3, 32, 32)).shape == (1, 20)

    # (8) a listed id without files: the error names the ImageSets list and its line
    listing = root / "VOC2007" / "ImageSets" / "Main" / "val.txt"
    listing.write_text(listing.read_text() + "000009\n")
    missing = mg_tune("data", "check", "voc.yaml", cwd=tmp_path, uri=uri, ok=False)
    assert missing.returncode == 2 and f"listed in {listing} line 4" in missing.stderr
