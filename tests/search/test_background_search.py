"""A real search on a VOC copy whose val split starts with background images (hard negatives) finishes.

Before: with the first `overlay_images` val images all background images, every trial failed in the overlay (``ValueError: need at least one array to concatenate``).
"""

from __future__ import annotations

import math

import yaml

from mg_tune.front import checkpoint_table
from mg_tune.search.runner import run_search
from mg_tune.search.spec import SearchSpec

from helpers.data_formats import S, VOC_BACKGROUNDS, VOC_SETS, write_voc_backgrounds


def test_a_search_whose_val_split_starts_with_background_images_finishes(tmp_path, ray_local, new_mlflow_store):
    root = write_voc_backgrounds(tmp_path, VOC_BACKGROUNDS + VOC_SETS["val"])
    uri = new_mlflow_store()
    raw = {
        "name": "backgrounds",
        "data": {"name": "voc", "root": str(root), "image_size": S, "options": {"heldout_fraction": 0.34, "split_seed": 0}},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "mid2", "loss": "energy", "epochs": 1, "batch_size": 2, "overlay_images": 2},
        "space": {"lam": {"loguniform_by_loss": {"energy": [0.1, 1.0]}}},
        "sampler": "random", "trials": 2, "concurrency": 2, "resources": {"cpu": 1}, "seed": 0,
        "storage_path": str(tmp_path / "runs"),
    }
    outcome = run_search(SearchSpec.model_validate(raw), yaml.safe_dump(raw), uri)
    assert (outcome.trials, outcome.errors) == (2, 0)
    table = checkpoint_table(uri, "backgrounds")
    assert len(table) == 2 and set(table["status"]) == {"FINISHED"}
    assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in table["epg"]) and len(outcome.pareto.front) >= 1
