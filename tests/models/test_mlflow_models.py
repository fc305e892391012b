"""Pareto checkpoints as real MLflow Models (issue 18): MLflow's loaders, the registry, serving.

A real search's checkpoints (3 trials x 2 epochs, logged as the search runner does) in a
real SQLite store; ``mg-tune pareto --register`` through the CLI; then MLflow's own
``mlflow.pyfunc.load_model`` / ``mlflow.pytorch.load_model``, ``mg_tune.load_model`` on every
URI form, and ``mlflow models serve`` as a separate process answering HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch.nn.utils import prune
from typer.testing import CliRunner

import mg_tune
from mg_tune.cli import app
from mg_tune.config import TrainConfig
from mg_tune.data import build_split
from mg_tune.data.card import DatasetCard, dataset_card
from mg_tune.split_eval import attribution_target
from mg_tune.guidance.attribution import attribute
from mg_tune.mlflow_links import registered_model_link, run_link
from mg_tune.mlflow_model import save_mlflow_model
from mg_tune.model_registry import MLFLOW_MODEL_TAG, knee_index
from mg_tune.models import build_model
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.server import free_port
from mg_tune.tracking import download_checkpoint
from mg_tune.checkpoint import load_checkpoint

from helpers.searches import TINY, log_search

OBJECTIVES = ["f1", "epg", "iou"]
SEARCH = "mm"
CLASSES = ("A", "B", "Box1", "Box2")


def images(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


@pytest.fixture(scope="module")
def store(new_mlflow_store):
    """Three real trials (λ = 0, 1, 10) of 2 epochs in a new SQLite store."""
    uri = new_mlflow_store()
    log_search(uri, SEARCH)
    return uri


@pytest.fixture(scope="module")
def registered(store):
    """``mg-tune pareto --search mm --register mm-front`` run twice (the second must change nothing)."""
    runner = CliRunner()
    first = runner.invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store, "--register", "mm-front"])
    second = runner.invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store, "--register", "mm-front"])
    return first, second


def checkpoint_model(uri: str, trial_id: str, epoch: int, tmp_path: Path):
    """The checkpoint's own network, rebuilt by hand from its state_dict (the reference for every loader)."""
    row = checkpoint_table(uri, SEARCH).set_index(["trial_id", "epoch"]).loc[(trial_id, epoch)]
    state = load_checkpoint(download_checkpoint(uri, row["run_id"], epoch, tmp_path / f"{trial_id}-{epoch}.pt"))
    model = build_model("smerf_cnn", len(CLASSES))
    model.load_state_dict(state["model"])
    return model.eval(), TrainConfig.model_validate(state["config"])


def model_of(version) -> str:
    """The LoggedModel id a version was registered from (its source is the model's artifact location)."""
    return version.model_id or version.source.rstrip("/").split("/")[-2]


def version_row(uri: str, name: str, alias: str):
    version = MlflowClient(uri).get_model_version_by_alias(name, alias)
    return version, version.tags["trial_id"], int(version.tags["epoch"])


# --------------------------------------------------------------------------- the MLflow Model itself


def test_every_checkpoint_carries_its_dataset_card(store, tmp_path):
    row = checkpoint_table(store, SEARCH).iloc[0]
    state = load_checkpoint(download_checkpoint(store, row["run_id"], int(row["epoch"]), tmp_path / "c.pt"))
    assert state["dataset"] == {
        "name": "textbox_multilabel", "classes": list(CLASSES), "multilabel": True, "image_size": 64,
        "preprocessing": "RGB float32 in [0, 1], shape [N, 3, H, W]; resized to 64x64 (bilinear, antialiased); no mean/std normalisation",
    }
    assert DatasetCard.from_json(state["dataset"]) == dataset_card(build_split(TINY, "val").info, TINY)


def test_pickle_flavor_keeps_mg_tunes_class_and_pruning_mask_behind_mlflows_opt_in(tmp_path, monkeypatch):
    """pytorch flavor: serialization_format='pickle' (not pt2's GraphModule); the pyfunc needs no unpickling."""
    model = build_model("smerf_cnn", 4).eval()
    _, last = model.head[:-1], model.head[-1]
    mask = torch.ones_like(last.weight)
    mask[:, :5] = 0
    prune.custom_from_mask(last, "weight", mask)
    config = TrainConfig(data=TINY, model="smerf_cnn", attribution="ixg", layer="mid2")
    folder = save_mlflow_model(model, config, DatasetCard("textbox_multilabel", CLASSES, True, 64), tmp_path / "m")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a deployment that bans pickles: MLflow refuses
    with pytest.raises(MlflowException, match="pickle"):
        mlflow.pytorch.load_model(str(folder))
    assert mlflow.pyfunc.load_model(str(folder)).predict(images(1)).shape == (1, 4)  # the pyfunc reads tensors only
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    loaded = mlflow.pytorch.load_model(str(folder))
    assert type(loaded) is type(model) and torch.equal(loaded.head[-1].weight_mask, mask)
    assert float(loaded.head[-1].weight[:, :5].detach().abs().sum()) == 0.0
    x = torch.tensor(images(2))
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # the loaded module still computes mg-tune's attributions at an inner layer
    targets = torch.tensor([0, 3])
    ours = attribute(model, x, targets, "ixg", "mid2", size=(64, 64)).maps
    theirs = attribute(loaded, x, targets, "ixg", "mid2", size=(64, 64)).maps
    assert torch.allclose(theirs, ours, atol=1e-6)


def test_mlmodel_has_both_flavors_a_signature_an_example_and_locked_requirements(tmp_path):
    config = TrainConfig(data=TINY, model="smerf_cnn")
    folder = save_mlflow_model(build_model("smerf_cnn", 4), config, DatasetCard("textbox_multilabel", CLASSES, True, 64), tmp_path / "m")
    info = mlflow.models.get_model_info(str(folder))
    assert set(info.flavors) == {"pytorch", "python_function"}
    assert info.flavors["python_function"]["loader_module"] == "mg_tune.mlflow_model"
    assert "model.pth" in os.listdir(folder / "data")  # pickle, deliberately not model.pt2
    assert info.signature.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 3, -1, -1)}}]
    assert info.signature.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 4)}}]
    assert {p.name: p.default for p in info.signature.params} == {"output": "probabilities", "target_class": -1, "method": "ixg", "layer": "input"}
    assert info.metadata["mg_tune"]["classes"] == list(CLASSES)
    assert json.loads((folder / "input_example.json").read_text())  # the example MLflow validated the model against
    lock = {line.split("==")[0]: line for line in (Path(__file__).resolve().parents[2] / "requirements.lock").read_text().splitlines() if "==" in line}
    required = (folder / "requirements.txt").read_text().split()
    assert {"torch", "torchvision", "mlflow"} <= {r.split("==")[0] for r in required}
    assert all(r == lock[r.split("==")[0]] for r in required if r.split("==")[0] in lock)


# --------------------------------------------------------------------------- pareto --register


def test_pareto_register_makes_one_version_per_front_checkpoint_with_tags_and_aliases(store, registered):
    first, second = registered
    assert first.exit_code == 0, first.output
    client = MlflowClient(store)
    front = search_pareto(store, SEARCH, OBJECTIVES, [True] * 3, tag=False).front
    versions = client.search_model_versions("name = 'mm-front'")
    assert len(versions) == len(front) and second.exit_code == 0  # the rerun duplicated nothing
    assert {model_of(v) for v in versions} == set(front["model_id"])
    for version in versions:
        row = front.set_index("model_id").loc[model_of(version)]
        assert version.tags["pareto"] == "true" and version.tags["search"] == SEARCH
        assert (version.tags["trial_id"], int(version.tags["epoch"])) == (row["trial_id"], row["epoch"])
        assert {o: float(version.tags[o]) for o in OBJECTIVES} == pytest.approx({o: row[o] for o in OBJECTIVES}, rel=1e-5)
        assert float(version.tags["param.lam"]) == row["params.lam"]
    for objective in OBJECTIVES:
        _, trial, epoch = version_row(store, "mm-front", f"best-{objective}")
        best = front.sort_values("created", kind="stable").iloc[int(np.argmax(front.sort_values("created", kind="stable")[objective].to_numpy()))]
        assert (trial, epoch) == (best["trial_id"], best["epoch"])
    _, trial, epoch = version_row(store, "mm-front", "knee")
    ordered = front.sort_values("created", kind="stable").reset_index(drop=True)
    knee = ordered.iloc[knee_index(ordered[OBJECTIVES].to_numpy(dtype=float), [True] * 3)]
    assert (trial, epoch) == (knee["trial_id"], knee["epoch"])
    assert "best-epg" in first.output and "models:/mm-front@knee" in first.output
    assert registered_model_link("http://127.0.0.1:5000", "mm-front") in first.output


def test_mg_tune_load_model_takes_every_uri_form(store, registered, tmp_path):
    client = MlflowClient(store)
    knee, trial, epoch = version_row(store, "mm-front", "knee")
    reference, _ = checkpoint_model(store, trial, epoch, tmp_path)
    table = checkpoint_table(store, SEARCH)
    other = table[~table.model_id.isin({model_of(v) for v in client.search_model_versions("name = 'mm-front'")})].iloc[0]
    other_model = client.get_logged_model(other["model_id"])
    assert MLFLOW_MODEL_TAG not in other_model.tags  # not on the front: only its checkpoint.pt
    x = torch.tensor(images())
    for uri in ("models:/mm-front@knee", f"models:/mm-front/{knee.version}", f"models:/{model_of(knee)}"):
        assert torch.allclose(mg_tune.load_model(uri, tracking_uri=store)(x), reference(x), atol=1e-6), uri
    # an epoch that is not on the front: a LoggedModel holding only its checkpoint, by id and by run + name
    plain, _ = checkpoint_model(store, other["trial_id"], int(other["epoch"]), tmp_path)
    for uri in (f"models:/{other['model_id']}", f"runs:/{other['run_id']}/{other_model.name}"):
        assert torch.allclose(mg_tune.load_model(uri, tracking_uri=store)(x), plain(x), atol=1e-6), uri
    with pytest.raises(ValueError, match="models:/mm-front@nope"):
        mg_tune.load_model("models:/mm-front@nope", tracking_uri=store)


def test_a_changed_front_moves_aliases_and_tags_versions_that_left(store, registered, tmp_path):
    """Registering the F1-only front: versions of checkpoints that left it say pareto=false; nothing is duplicated."""
    client = MlflowClient(store)
    before = {v.version: model_of(v) for v in client.search_model_versions("name = 'mm-front'")}
    f1_front = search_pareto(store, SEARCH, ["f1"], [True], tag=False).front
    out = CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store, "--register", "mm-front", "--objectives", "f1"])
    assert out.exit_code == 0, out.output
    after = {v.version: v for v in client.search_model_versions("name = 'mm-front'")}
    assert len(after) == len(before | {m: m for m in set(f1_front["model_id"]) - set(before.values())})
    for version in after.values():
        assert version.tags["pareto"] == ("true" if model_of(version) in set(f1_front["model_id"]) else "false")
    best = client.get_model_version_by_alias("mm-front", "best-f1")
    assert model_of(best) in set(f1_front["model_id"])
    # back to the three objectives: the aliases and tags follow
    CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", store, "--register", "mm-front"])
    front = search_pareto(store, SEARCH, OBJECTIVES, [True] * 3, tag=False).front
    tags = {model_of(v): v.tags["pareto"] for v in client.search_model_versions("name = 'mm-front'")}
    assert {m for m, t in tags.items() if t == "true"} == set(front["model_id"])


# --------------------------------------------------------------------------- MLflow's loaders and mg-tune's


def test_pyfunc_from_the_registry_predicts_what_the_checkpoint_predicts(store, registered, tmp_path, monkeypatch):
    _, trial, epoch = version_row(store, "mm-front", "best-epg")
    reference, config = checkpoint_model(store, trial, epoch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # not mlflow.set_tracking_uri: it would outlive the test
    pyfunc = mlflow.pyfunc.load_model("models:/mm-front@best-epg")
    x = images()
    expected = torch.sigmoid(reference(torch.tensor(x))).detach().numpy()
    assert np.abs(pyfunc.predict(x) - expected).max() <= 1e-6
    # images as they come (any size): resized to the training size as the loaders do
    big = images(size=96)
    resized = torch.nn.functional.interpolate(torch.tensor(big), size=(64, 64), mode="bilinear", antialias=True)
    assert np.abs(pyfunc.predict(big) - torch.sigmoid(reference(resized)).detach().numpy()).max() <= 1e-6
    maps = pyfunc.predict(x, params={"output": "attributions", "target_class": 2})
    want = attribute(reference, torch.tensor(x), torch.full((3,), 2), config.attribution, config.layer, size=(64, 64), target=attribution_target(True)).maps
    assert maps.shape == (3, 64, 64) and np.abs(maps - want.detach().numpy()).max() <= 1e-5


def test_mlflow_pytorch_load_model_from_the_registry_is_mg_tunes_model(store, registered, tmp_path, monkeypatch):
    _, trial, epoch = version_row(store, "mm-front", "knee")
    reference, _ = checkpoint_model(store, trial, epoch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # not mlflow.set_tracking_uri: it would outlive the test
    loaded = mlflow.pytorch.load_model("models:/mm-front@knee")
    assert type(loaded).__name__ == "StagedModel" and loaded.family == "standard"
    x = torch.tensor(images())
    assert torch.allclose(loaded(x), reference(x), atol=1e-6)


@pytest.mark.slow  # starts `mlflow models serve`
def test_mlflow_models_serve_answers_http_with_the_in_process_predictions(store, registered, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # not mlflow.set_tracking_uri: it would outlive the test
    pyfunc = mlflow.pyfunc.load_model("models:/mm-front@knee")
    x = images(2)
    port = free_port()
    venv_bin = Path(sys.executable).parent  # as in an activated environment: the server runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    mlflow_cli = str(venv_bin / "mlflow")
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", "models:/mm-front@knee", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": x.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert np.abs(np.array(answer.json()["predictions"]) - pyfunc.predict(x)).max() <= 1e-6
        maps = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": x.tolist(), "params": {"output": "attributions", "target_class": 1}}, timeout=60)
        assert maps.status_code == 200, maps.text
        expected = pyfunc.predict(x, params={"output": "attributions", "target_class": 1})
        assert np.abs(np.array(maps.json()["predictions"]) - expected).max() <= 1e-5
        wrong = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": x.tolist(), "params": {"output": "attributions", "target_class": 7}}, timeout=60)
        assert wrong.status_code == 400 and "params.target_class 7 is not a class index: -1 (each image's top class) or one of 0 A, 1 B" in wrong.json()["message"], wrong.text
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
        server.wait(timeout=60)


# --------------------------------------------------------------------------- export --register, names, links


def test_export_register_is_loadable_by_mlflow_and_its_card_names_outputs_and_input(store, registered, tmp_path, monkeypatch):
    """The issue's first report: a version registered by ``export --register`` had no MLmodel."""
    table = checkpoint_table(store, SEARCH)
    row = table.iloc[-1]
    out = CliRunner().invoke(app, ["export", "--search", SEARCH, "--trial", row["trial_id"], "--epoch", str(int(row["epoch"])), "--to", str(tmp_path / "pkg"),
                                   "--tracking-uri", store, "--register", "mm-best", "--alias", "champion"])
    assert out.exit_code == 0, out.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # not mlflow.set_tracking_uri: it would outlive the test
    pyfunc = mlflow.pyfunc.load_model("models:/mm-best@champion")
    reference, _ = checkpoint_model(store, row["trial_id"], int(row["epoch"]), tmp_path)
    x = images()
    assert np.abs(pyfunc.predict(x) - torch.sigmoid(reference(torch.tensor(x))).detach().numpy()).max() <= 1e-6
    assert json.loads((tmp_path / "pkg" / "dataset.json").read_text())["classes"] == list(CLASSES)
    card = (tmp_path / "pkg" / "MODEL_CARD.md").read_text()
    assert "| 0 | A |" in card and "| 3 | Box2 |" in card and "resized to 64x64" in card
    assert 'mlflow.pyfunc.load_model("models:/mm-best@champion")' in card and 'mlflow models serve -m "models:/mm-best@champion"' in card
    # the card's MLflow snippet runs as pasted (its imports, its example images)
    snippet = card.split("## From MLflow")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace["probabilities"].shape == (2, len(CLASSES)) and namespace["maps"].shape[0] == 2
    assert isinstance(namespace["model"], torch.nn.Module)
    # the package loads without the data set: the card gives the number of classes
    assert torch.allclose(mg_tune.load_model(tmp_path / "pkg")(torch.tensor(x)), reference(torch.tensor(x)), atol=1e-6)


def test_runs_and_models_have_readable_names_and_the_experiment_opens_in_model_training(store):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(f"mg-tune/{SEARCH}")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    table = checkpoint_table(store, SEARCH)
    names = {client.get_run(r).info.run_name for r in table.run_id}
    assert names == {"t00 energy λ=0 input", "t01 energy λ=1 input", "t02 energy λ=10 input"}  # trial first: MLflow cuts long names at the end
    model = client.get_logged_model(table.set_index(["trial_id", "epoch"]).loc[("mm_00001", 2), "model_id"])
    assert model.name == "t01-e02-energy-lam1-input"
    assert run_link("http://h:5000", "7", "r1") == "http://h:5000/#/experiments/7/runs/r1?workflowType=machine_learning"
