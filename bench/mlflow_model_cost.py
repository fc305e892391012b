"""What a complete MLflow Model per epoch would cost, against the checkpoint each epoch logs today (issue 18).

For each model (SMERF CNN, ResNet-18, ResNet-50; random weights, Adam state
populated) and ``--rounds`` rounds, in one run on a new SQLite + local-file
MLflow store, times two ways of logging one epoch's LoggedModel:

* **checkpoint** (what every epoch does): ``save_checkpoint`` (weights, Adam
  moments, config, dataset card) and ``log_model_artifacts`` of it;
* **+ MLflow Model** (what ``pareto --register`` adds to the front only):
  the above plus :func:`mg_tune.mlflow_model.save_mlflow_model` (pickled
  module, tensors-only package, MLmodel with signature and input example,
  requirements) and its upload into the same LoggedModel.

Prints seconds and MB per epoch for both and the ratio; the median over the
rounds. ``python bench/mlflow_model_cost.py --rounds 5``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from mg_tune.checkpoint import save_checkpoint
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data.card import DatasetCard
from mg_tune.mlflow_model import save_mlflow_model
from mg_tune.models import build_model

MODELS = {"smerf_cnn": 64, "resnet18": 224, "resnet50": 224}


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def one_epoch(client: MlflowClient, experiment: str, name: str, size: int, with_mlflow_model: bool, tmp: Path) -> tuple[float, float]:
    model = build_model(name, 20)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 3, size, size)).sum().backward()
    optimizer.step()
    config = TrainConfig(data=DataConfig(name="voc", image_size=size, root=str(tmp)), model=name)
    card = DatasetCard("voc2007", tuple(f"class{k}" for k in range(20)), True, size)
    logged = client.create_logged_model(experiment, name=f"{name}-epoch")
    started = time.perf_counter()
    folder = tmp / f"epoch-{time.perf_counter_ns()}"
    save_checkpoint(folder / "checkpoint.pt", model, optimizer, 1, {"f1": 0.5}, config.model_dump(mode="json"), card.to_json())
    client.log_model_artifacts(logged.model_id, str(folder))
    size_mb = folder_mb(folder)
    if with_mlflow_model:
        full = save_mlflow_model(model, config, card, tmp / f"model-{time.perf_counter_ns()}")
        client.log_model_artifacts(logged.model_id, str(full))
        size_mb += folder_mb(full)
    return time.perf_counter() - started, size_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        experiment = client.create_experiment("cost", artifact_location=(root / "artifacts").as_uri())
        print("| model | checkpoint s | + MLflow Model s | ratio | checkpoint MB | + MLflow Model MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, size in MODELS.items():
            one_epoch(client, experiment, name, size, True, root)  # warm-up: imports, first writes
            plain = [one_epoch(client, experiment, name, size, False, root) for _ in range(args.rounds)]
            full = [one_epoch(client, experiment, name, size, True, root) for _ in range(args.rounds)]
            p_s, f_s = statistics.median(t for t, _ in plain), statistics.median(t for t, _ in full)
            print(f"| {name} | {p_s:.3f} | {f_s:.3f} | {f_s / p_s:.2f}× | {plain[0][1]:.1f} | {full[0][1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
