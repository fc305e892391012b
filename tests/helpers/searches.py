"""Tiny searches: the spec of a real Ray search of a few seconds per trial, trials trained and logged as the search
runner logs them (no Ray), and the front by brute force to check a computed one against."""

import numpy as np

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.tracking import TrialLogger, readable_trial_name, start_search
from mg_tune.train import train

OBJECTIVES = ["f1", "epg", "iou"]
FINISHED_SEARCH = "e2e"
"""The name of conftest's ``finished_search``: :func:`spec_dict` with 6 trials x 2 epochs, 4 at a time."""
TINY = DataConfig(variant="multilabel", train_size=32, val_size=16, heldout_size=16, test_size=16)
"""The data of :func:`log_search`'s trials."""


def spec_dict(name, storage, trials=6, epochs=2, concurrency=2):
    """A real search of a few seconds per trial on small TextBox sets: NSGA-II over loss, λ and learning rate."""
    return {
        "name": name,
        "data": {"variant": "multilabel", "train_size": 64, "val_size": 32, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "mid2", "epochs": epochs, "batch_size": 32, "overlay_images": 2},
        "space": {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 3.0], "l1": [0.01, 3.0]}}, "lr": {"loguniform": [3e-4, 3e-3]}},
        "sampler": "nsga2",
        "trials": trials,
        "concurrency": concurrency,
        "resources": {"cpu": 2 / concurrency},
        "storage_path": str(storage),
    }


def mo_asha_spec_dict(name, storage, epochs=3, trials=6, **scheduler):
    """A TPE search of 6 small trials over loss and λ (F1 / EPG) under ``scheduler: mo_asha`` (grace 1, η = 3, then ``scheduler``)."""
    return {
        "name": name,
        "data": {"variant": "spurious", "train_size": 64, "val_size": 32, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "mid2", "epochs": epochs, "batch_size": 32, "overlay_images": 0},
        "space": {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [1e-3, 10.0], "l1": [1e-3, 10.0]}}},
        "objectives": ["f1", "epg"],
        "sampler": "tpe",
        "trials": trials,
        "concurrency": 2,
        "resources": {"cpu": 1},
        "scheduler": {"name": "mo_asha", "grace_period": 1, "reduction_factor": 3, **scheduler},
        "storage_path": str(storage),
    }


def brute_force_front(points):
    """Indices of the rows of ``points`` no other row dominates (every objective maximised)."""
    keep = []
    for i, p in enumerate(points):
        dominated = any(np.all(q >= p) and np.any(q > p) for j, q in enumerate(points) if j != i)
        if not dominated:
            keep.append(i)
    return keep


def log_search(uri: str, name: str, lams=(0.0, 1.0, 10.0)) -> None:
    """Real trials (one per λ) of 2 epochs, logged and named as the search runner does (trial ids ``<name>_0000k``)."""
    search = start_search(name, {"trials": len(lams)}, f"trials: {len(lams)}\n", uri, resume=False)
    for number, lam in enumerate(lams):
        config = TrainConfig(data=TINY, model="smerf_cnn", lam=lam, epochs=2, batch_size=16, device="cpu", overlay_images=1, seed=number)
        trial_id = f"{name}_0000{number}"
        logger = TrialLogger(search, trial_id, {"lam": lam, "loss": config.loss}, run_name=readable_trial_name(config, trial_id))
        train(config, callback=logger.log_epoch)
        logger.finish()
