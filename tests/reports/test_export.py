"""Export and test evaluation against a real MLflow SQLite store and a real S3 API (moto's server); no mocks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.filesize import pick_unit_and_suffix
from torch.utils.data import DataLoader
from typer.testing import CliRunner

import mg_tune
from mg_tune.checkpoint import load_checkpoint
from mg_tune.cli import app
from mg_tune.config import REAL_ONLY_FIELDS, TEXTBOX_ONLY_FIELDS, DataConfig, TrainConfig
from mg_tune.data import build_split
from mg_tune import output
from mg_tune.checkpoint_eval import TEST_METRICS_HINT, evaluate_pareto
from mg_tune.split_eval import evaluate_checkpoint, evaluate_split
from mg_tune.data.card import DatasetCard
from mg_tune.dashboard._app import registry_lines
from mg_tune.data.voc import VOC_CLASSES
from mg_tune.export import EXPORT_FILES, export_checkpoint
from mg_tune.mlflow_model import PACKAGE_DIR, save_mlflow_model
from mg_tune.front import checkpoint_table, search_pareto
from mg_tune.tracking import TrialLogger, download_checkpoint, start_search
from mg_tune.train import train
from helpers.data_formats import S, write_voc

OBJECTIVES = ["f1", "epg", "iou"]
TINY = DataConfig(variant="multilabel", train_size=48, val_size=24, heldout_size=16, test_size=16)
SEARCH = "tiny"
original_progress_console = output.progress_console


class NotWeights:
    """A pickled object that is not weights: ``torch.load(weights_only=True)`` must refuse it."""


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory, new_mlflow_store):
    """Two real trials (λ = 0 and 1) of 2 epochs, logged like the search runner does; returns (uri, logged metrics)."""
    uri = new_mlflow_store()
    search = start_search(SEARCH, {"trials": 2}, "trials: 2\n", uri, resume=False)
    logged = {}
    for trial_id, lam in (("t0", 0.0), ("t1", 1.0)):
        config = TrainConfig(data=TINY, model="smerf_cnn", lam=lam, epochs=2, batch_size=16, device="cpu", overlay_images=2)
        logger = TrialLogger(search, trial_id, {"lam": lam, "loss": config.loss})
        result = train(config, callback=logger.log_epoch)
        logger.finish()
        logged.update({(trial_id, e.epoch): e.metrics for e in result.history})
    return uri, logged


def validation_metrics(model, config: TrainConfig) -> dict[str, float]:
    """The training loop's validation: IoU threshold from the held-out split, metrics on the val split."""
    val, heldout = build_split(config.data, "val"), build_split(config.data, "heldout")
    common = dict(model=model, method=config.attribution, layer=config.layer, multilabel=val.info.multilabel, group_names=val.info.group_names, smerf=val.info.smerf)
    threshold = evaluate_split(loader=DataLoader(heldout, batch_size=config.eval_batch_size), **common).best_iou_threshold()
    return evaluate_split(loader=DataLoader(val, batch_size=config.eval_batch_size), iou_threshold=threshold, **common).metrics


def checkpoint_weights(uri: str, trial_id: str, epoch: int, tmp_path) -> dict[str, torch.Tensor]:
    run_id = checkpoint_table(uri, SEARCH).set_index(["trial_id", "epoch"]).loc[(trial_id, epoch), "run_id"]
    return load_checkpoint(download_checkpoint(uri, run_id, epoch, tmp_path / f"{trial_id}-{epoch}.pt"))["model"]


def test_directory_export_reloads_with_the_logged_validation_metrics(tiny_search, tmp_path, monkeypatch):
    uri, logged = tiny_search
    monkeypatch.chdir(tmp_path)
    written = export_checkpoint(uri, SEARCH, "t1", 2, "models/t1-e2")
    package = tmp_path / "models" / "t1-e2"
    assert written == str(package)
    assert sorted(p.name for p in package.iterdir()) == sorted(EXPORT_FILES)
    assert sorted(p.name for p in package.parent.iterdir()) == ["t1-e2"]  # no staging leftovers

    weights = torch.load(package / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    stored = json.loads((package / "config.json").read_text())
    assert not set(REAL_ONLY_FIELDS) & set(stored["data"])  # TextBox reads no root, image_size, ...
    config = TrainConfig.model_validate(stored)
    assert config.lam == 1.0 and config.data == TINY
    record = json.loads((package / "metrics.json").read_text())
    assert (record["search"], record["trial_id"], record["epoch"]) == (SEARCH, "t1", 2)
    expected = {k: v for k, v in logged[("t1", 2)].items() if not k.startswith("train_")}
    assert record["validation"] == pytest.approx(expected, abs=1e-6)
    card = (package / "MODEL_CARD.md").read_text()
    assert "trial `t1`, epoch 2" in card and f'mg_tune.load_model("{written}")' in card and "| lam | 1.0 |" in card

    model = mg_tune.load_model(written)
    assert not model.training
    assert validation_metrics(model, config) == pytest.approx(record["validation"], abs=1e-6)

    # the card's "Load" example runs as written, and gives what the card's outputs table says
    scope = run_card_block(card, "## Load")
    classes = json.loads((package / "dataset.json").read_text())["classes"]
    assert scope["model"].classes == tuple(classes) and f"| {len(classes) - 1} | {classes[-1]} |" in card
    assert "multi-label. The loaded model's `model(x)` returns **logits**" in card and "one sigmoid probability per class" in card
    assert scope["probabilities"].shape == (2, len(classes)) and scope["logits"].shape == (2, len(classes))
    resized = torch.nn.functional.interpolate(scope["images"], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(scope["logits"], model(resized), atol=1e-6)
    assert torch.allclose(scope["probabilities"], torch.sigmoid(scope["logits"]), atol=1e-6)  # TextBox multilabel: σ per class

    with pytest.raises(ValueError, match=r"holds an earlier export \(of this checkpoint\); add --force to replace it"):
        export_checkpoint(uri, SEARCH, "t1", 2, "models/t1-e2")
    assert export_checkpoint(uri, SEARCH, "t1", 2, "models/t1-e2", force=True) == written  # same checkpoint again: replaced
    with pytest.raises(ValueError, match=r"holds an earlier export \(of model m-"):
        export_checkpoint(uri, SEARCH, "t0", 2, "models/t1-e2")
    export_checkpoint(uri, SEARCH, "t0", 2, "models/t1-e2", force=True)
    assert (json.loads((package / "metrics.json").read_text())["trial_id"], sorted(p.name for p in package.iterdir())) == ("t0", sorted(EXPORT_FILES))


def test_s3_export_writes_every_file_and_loads_back(tiny_search, s3_endpoint, s3_bucket, tmp_path, monkeypatch):
    uri, _ = tiny_search
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    target = f"s3://{s3_bucket}/models/t0-e1"
    assert export_checkpoint(uri, SEARCH, "t0", 1, target) == target
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"models/t0-e1/{name}" for name in EXPORT_FILES}

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    model = mg_tune.load_model(target, s3_endpoint_url=s3_endpoint)
    expected = checkpoint_weights(uri, "t0", 1, tmp_path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())

    s3.put_object(Bucket=s3_bucket, Key="other/readme.txt", Body=b"not a model")
    with pytest.raises(ValueError, match="not empty"):
        export_checkpoint(uri, SEARCH, "t0", 1, f"s3://{s3_bucket}/other", s3_endpoint_url=s3_endpoint)
    with pytest.raises(ValueError, match="NoSuchBucket"):
        export_checkpoint(uri, SEARCH, "t0", 1, "s3://no-such-bucket/x", s3_endpoint_url=s3_endpoint)
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]} == keys | {"other/readme.txt"}


def test_cli_s3_export_shows_the_bytes_uploaded_on_a_terminal_and_nothing_in_a_pipe(tiny_search, s3_endpoint, s3_bucket, monkeypatch):
    uri, _ = tiny_search
    terminal = Console(file=io.StringIO(), force_terminal=True, record=True, width=120)
    monkeypatch.setattr(output, "progress_console", lambda: terminal)
    lines = {}
    for case in ("terminal", "pipe"):
        target = f"s3://{s3_bucket}/{case}/t1-e1"
        done = CliRunner().invoke(app, ["export", "--search", SEARCH, "--trial", "t1", "--epoch", "1", "--to", target, "--s3-endpoint-url", s3_endpoint, "--tracking-uri", uri])
        assert done.exit_code == 0, done.output
        assert (done.stdout, done.stderr) == (f'exported to {target}\nload it with: mg_tune.load_model("{target}")\n', "")
        lines[case] = done.stdout.replace(case, "…")
        monkeypatch.setattr(output, "progress_console", original_progress_console)  # CliRunner's stderr: no terminal
    assert lines["terminal"] == lines["pipe"]
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="terminal/")["Contents"]
    size = sum(o["Size"] for o in listed)  # what S3 holds: every byte the bar counted
    unit, suffix = pick_unit_and_suffix(size, ["bytes", "kB", "MB", "GB"], 1000)
    shown = terminal.export_text().split(f"uploading to s3://{s3_bucket}/terminal/t1-e1")
    assert len(listed) == len(EXPORT_FILES) and f"{size / unit:,.1f}/{size / unit:,.1f} {suffix}" in shown[-1]


def run_card_block(card: str, section: str) -> dict:
    """Execute the first ```python block after heading ``section`` of a MODEL_CARD.md; return its variables."""
    code = card.split(section, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, f"MODEL_CARD.md {section}", "exec"), scope)
    return scope


def test_registry_export_creates_a_version_with_the_alias(tiny_search, tmp_path, monkeypatch):
    uri, _ = tiny_search
    export_checkpoint(uri, SEARCH, "t0", 2, tmp_path / "pkg", register="tiny-guided", alias="champion")
    # the card's MLflow example runs as written: the pyfunc, mg_tune.load_model and the pytorch flavor agree on outputs and classes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    scope = run_card_block((tmp_path / "pkg" / "MODEL_CARD.md").read_text(), "## From MLflow")
    model = scope["model"]
    assert model.classes == tuple(json.loads((tmp_path / "pkg" / "dataset.json").read_text())["classes"])
    assert np.abs(scope["probabilities"] - model.probabilities(torch.tensor(scope["images"])).numpy()).max() <= 1e-6
    assert scope["maps"].shape == (2, 64, 64)
    flavor = mlflow.pytorch.load_model("models:/tiny-guided@champion")
    assert flavor.classes == model.classes and torch.allclose(flavor.probabilities(torch.tensor(scope["images"])), model.probabilities(torch.tensor(scope["images"])))
    with pytest.raises(MlflowException, match=r"params.target_class 9 is not a class index: -1 \(each image's top class\) or one of 0 "):
        scope["pyfunc"].predict(scope["images"], params={"output": "attributions", "target_class": 9})
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("tiny-guided", "champion")
    model_id = json.loads((tmp_path / "pkg" / "metrics.json").read_text())["model_id"]
    logged = client.get_logged_model(model_id)
    assert (version.source, version.run_id) == (logged.artifact_location, logged.source_run_id)
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "tiny-guided", "version": version.version}]
    # the dashboard's registry hint names the registered version that holds the checkpoint, and each line loads it
    hint = registry_lines(uri, SEARCH, model_id)
    assert hint.splitlines() == [
        f"# registered as tiny-guided v{version.version} (aliases: champion)",
        'mlflow.pyfunc.load_model("models:/tiny-guided@champion")',
        f'mlflow.pyfunc.load_model("models:/tiny-guided/{version.version}")',
        f'mg_tune.load_model("models:/tiny-guided/{version.version}")',
    ]
    for line in hint.splitlines()[1:]:
        assert eval(line, {"mlflow": mlflow, "mg_tune": mg_tune}) is not None, line
    export_checkpoint(uri, SEARCH, "t1", 2, tmp_path / "pkg2", register="tiny-guided")
    assert len(client.search_model_versions("name = 'tiny-guided'")) == 2
    assert client.get_model_version_by_alias("tiny-guided", "champion").version == version.version


def test_load_model_refuses_pickled_objects_and_reads_raw_checkpoints(tiny_search, tmp_path):
    uri, _ = tiny_search
    evil = tmp_path / "evil.pt"
    torch.save(NotWeights(), evil)
    with pytest.raises(ValueError, match=r"evil\.pt is not a weights file.*NotWeights"):
        mg_tune.load_model(evil)
    package = tmp_path / "pkg"
    export_checkpoint(uri, SEARCH, "t1", 1, package)
    torch.save({"layer": NotWeights()}, package / "model.pt")
    with pytest.raises(ValueError, match=r"pkg/model\.pt is not a weights file"):
        mg_tune.load_model(package)
    with pytest.raises(ValueError, match="does not exist"):
        mg_tune.load_model(tmp_path / "missing")
    weights = (package / "model.pt").read_bytes()
    (package / "model.pt").write_bytes(weights[: len(weights) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"^\S*pkg/model\.pt is a truncated or corrupt PyTorch file \(PytorchStreamReader failed reading zip archive[^\n]*\)$"):
        mg_tune.load_model(package)
    (package / "config.json").write_bytes(b"\x00\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"pkg/config\.json: not UTF-8 text \(byte 0xff at offset 1\)$"):
        mg_tune.load_model(package)

    raw = tmp_path / "t1-1.pt"
    expected = checkpoint_weights(uri, "t1", 1, tmp_path)
    download_checkpoint(uri, checkpoint_table(uri, SEARCH).query("trial_id == 't1' and epoch == 1")["run_id"].item(), 1, raw)
    model = mg_tune.load_model(raw)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_export_refuses_escaping_or_foreign_targets_and_unknown_checkpoints(tiny_search, tmp_path, monkeypatch):
    uri, _ = tiny_search
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    monkeypatch.chdir(work)
    (work / "link").symlink_to(outside)
    (work / "notes").mkdir()
    (work / "notes" / "todo.txt").write_text("mine")
    refusals = {
        "../escape": "contains '..'",
        "link/pkg": "through a symlink, outside the current directory",
        str(work / "link"): "is a symlink",
        "notes": "not empty and holds no export",  # --force or not: other files are never replaced
        "ftp://host/x": "only local directories and s3://",
    }
    for target, message in refusals.items():
        with pytest.raises(ValueError, match=message):
            export_checkpoint(uri, SEARCH, "t0", 1, target)
    with pytest.raises(ValueError, match="not empty and holds no export"):
        export_checkpoint(uri, SEARCH, "t0", 1, "notes", force=True)
    export_checkpoint(uri, SEARCH, "t0", 1, "pkg")
    (work / "pkg" / "model.pt").unlink()
    (work / "pkg" / "model.pt").symlink_to(outside / "model.pt")
    with pytest.raises(ValueError, match="not a regular file"):
        export_checkpoint(uri, SEARCH, "t0", 1, "pkg")

    for args, message in (
        (("nope", "t0", 1), "no search named 'nope'"),
        ((SEARCH, "t9", 1), "has no trial 't9'"),
        ((SEARCH, "t0", 7), r"no checkpoint of epoch 7; logged epochs: \[1, 2\]"),
    ):
        with pytest.raises(ValueError, match=message):
            export_checkpoint(uri, *args, "fresh")
    assert sorted(p.name for p in work.iterdir()) == ["link", "notes", "pkg"]
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_evaluate_pareto_logs_test_metrics_readable_from_mlflow(tiny_search, tmp_path):
    uri, _ = tiny_search
    table = evaluate_pareto(uri, SEARCH, OBJECTIVES, [True] * 3)
    front = search_pareto(uri, SEARCH, OBJECTIVES, [True] * 3, tag=False).front
    assert sorted(zip(table["trial_id"], table["epoch"])) == sorted(zip(front["trial_id"], front["epoch"]))
    client = MlflowClient(uri)
    stored = checkpoint_table(uri, SEARCH).set_index("model_id")
    for row in table.to_dict("records"):
        checkpoint = download_checkpoint(uri, row["run_id"], row["epoch"], tmp_path / f"{row['model_id']}.pt")
        expected = {f"test_{k}": v for k, v in evaluate_checkpoint(str(checkpoint), "test").items()}
        assert {k: row[k] for k in expected} == pytest.approx(expected, abs=1e-9)
        history = {m.step: m.value for m in client.get_metric_history(row["run_id"], "test_f1")}
        assert history[row["epoch"]] == pytest.approx(expected["test_f1"])
        linked = {m.key: m.value for m in client.get_logged_model(row["model_id"]).metrics if m.step == row["epoch"]}
        assert {k: linked[k] for k in expected} == pytest.approx(expected)
        assert {k: stored.loc[row["model_id"], k] for k in expected} == pytest.approx(expected)

    best = table.iloc[0]
    export_checkpoint(uri, SEARCH, best["trial_id"], int(best["epoch"]), tmp_path / "best")
    record = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert record["test"] == pytest.approx({k.removeprefix("test_"): best[k] for k in table.columns if k.startswith("test_")})


def test_cli_evaluate_counts_its_checkpoints_on_a_terminal_and_prints_the_same_lines_in_a_pipe(tiny_search, monkeypatch):
    uri, _ = tiny_search
    terminal = Console(file=io.StringIO(), force_terminal=True, record=True, width=120)
    monkeypatch.setattr(output, "progress_console", lambda: terminal)
    args = ["evaluate", "--search", SEARCH, "--objectives", "f1", "--tracking-uri", uri, "--output", "json"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    evaluated = len(json.loads(shown.stdout))
    text = terminal.export_text()
    for description, count in [
        (f"reading the checkpoints of search {SEARCH!r} from MLflow", 4),  # 2 trials x 2 epochs
        (f"downloading {evaluated} checkpoint{'s' if evaluated > 1 else ''}", evaluated),
        (f"evaluating {evaluated} checkpoint{'s' if evaluated > 1 else ''} on the test split", evaluated),
    ]:
        assert f"{count}/{count}" in text.split(description)[-1].split("\n")[0], description  # the bar's last drawing
    monkeypatch.setattr(output, "progress_console", original_progress_console)  # CliRunner's stderr: no terminal
    piped = CliRunner().invoke(app, args)
    assert (piped.exit_code, piped.stdout, piped.stderr) == (0, shown.stdout, shown.stderr)
    assert shown.stderr.splitlines() == ["front on f1 (max) (--objectives: not the search's own)", TEST_METRICS_HINT]


def test_cli_export_and_evaluate(tiny_search, tmp_path):
    uri, _ = tiny_search
    runner = CliRunner()
    ok = runner.invoke(app, ["export", "--search", SEARCH, "--trial", "t1", "--epoch", "1", "--to", str(tmp_path / "cli"), "--tracking-uri", uri])
    assert ok.exit_code == 0, ok.output
    assert f'mg_tune.load_model("{tmp_path / "cli"}")' in ok.output
    bad = runner.invoke(app, ["export", "--search", SEARCH, "--trial", "zz", "--epoch", "1", "--to", str(tmp_path / "x"), "--tracking-uri", uri])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [f"error: search '{SEARCH}' has no trial 'zz'"]
    alias = runner.invoke(app, ["export", "--search", SEARCH, "--trial", "t1", "--epoch", "1", "--to", str(tmp_path / "y"), "--alias", "a", "--tracking-uri", uri])
    assert alias.exit_code == 2 and "needs a registered model name" in alias.output and not (tmp_path / "y").exists()
    evaluated = runner.invoke(app, ["evaluate", "--search", SEARCH, "--objectives", "f1", "--tracking-uri", uri])
    assert evaluated.exit_code == 0, evaluated.output
    assert "Test metrics of the Pareto checkpoints of search 'tiny'" in evaluated.output and "test f1" in evaluated.output
    as_json = runner.invoke(app, ["evaluate", "--search", SEARCH, "--objectives", "f1", "--tracking-uri", uri, "--output", "json"])
    assert as_json.exit_code == 0, as_json.output
    table = evaluate_pareto(uri, SEARCH, ["f1"], [True])
    expected = [{k: row[k] for k in ("trial_id", "epoch", "f1", "test_f1", "test_map", "test_iou_threshold")} for row in table.to_dict("records")]
    assert json.loads(as_json.stdout) == expected
    missing = runner.invoke(app, ["evaluate", "--search", "nope", "--tracking-uri", uri])
    assert missing.exit_code == 2 and "no search named 'nope'" in missing.output


@pytest.fixture(scope="module")
def voc_search(tmp_path_factory, new_mlflow_store):
    """One trial of one epoch on the VOC fixture (VOC's own files), with a fixed IoU threshold; returns (uri, config)."""
    root = write_voc(tmp_path_factory.mktemp("voc"))
    uri = new_mlflow_store()
    search = start_search("voc", {"trials": 1}, "trials: 1\n", uri, resume=False)
    config = TrainConfig(
        data=DataConfig(name="voc", root=str(root), image_size=S), model="smerf_cnn", lam=1.0, epochs=1, batch_size=4,
        overlay_images=0, device="cpu", iou_threshold=0.3,
    )
    logger = TrialLogger(search, "v0", {"lam": 1.0})
    train(config, callback=logger.log_epoch)
    logger.finish()
    return uri, config


def test_a_voc_export_describes_itself_with_the_fields_that_apply_to_voc(voc_search, tmp_path):
    uri, config = voc_search
    package = Path(export_checkpoint(uri, "voc", "v0", 1, tmp_path / "voc"))
    written = json.loads((package / "config.json").read_text())
    assert not set(TEXTBOX_ONLY_FIELDS) & set(written["data"])  # no train_size, val_size, heldout_size, test_size
    assert (written["data"]["name"], written["data"]["root"], written["data"]["image_size"]) == ("voc", config.data.root, S)
    assert written == config.package_json() and TrainConfig.model_validate(written).package_json() == written  # reads back

    dataset = json.loads((package / "dataset.json").read_text())
    assert dataset["classes"] == list(VOC_CLASSES) and dataset["multilabel"] is True
    card = (package / "MODEL_CARD.md").read_text()
    assert "\n".join(f"| {k} | {name} |" for k, name in enumerate(VOC_CLASSES)) in card  # outputs named in order
    assert f"Input: {DatasetCard.from_json(dataset).preprocessing}." in card and "resized to 64x64" in card and "no mean/std normalisation" in card
    assert "IoU uses the search's fixed threshold (`iou_threshold`)." in card

    model = mg_tune.load_model(package)  # the trimmed config rebuilds the model
    expected = load_checkpoint(download_checkpoint(uri, checkpoint_table(uri, "voc")["run_id"].item(), 1, tmp_path / "v0.pt"))["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    folder = save_mlflow_model(model, config, DatasetCard.from_json(dataset), tmp_path / "mlflow-model")  # the MLflow Model: same owner
    assert json.loads((folder / PACKAGE_DIR / "config.json").read_text()) == written
