"""The IoU threshold: chosen per checkpoint on its held-out split (the paper's protocol), pooled over many
checkpoints (``mg-tune evaluate --iou-threshold pooled``) or fixed for a whole search (``iou_threshold``).

Hand-computed curves for the pooling rule; real training on the VOC fixture (written in VOC's own format
by ``tests/helpers/data_formats.py``) and a real MLflow store for the trainer and ``mg-tune evaluate``.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.checkpoint_eval import TEST_METRICS_HINT, evaluate_pareto
from mg_tune.split_eval import IOU_THRESHOLDS, CheckpointEvaluator, SplitEvaluation, evaluate_checkpoint, pooled_iou_threshold
from mg_tune.front import checkpoint_table
from mg_tune.search.spec import SpecError, load_spec
from mg_tune.tracking import TrialLogger, download_checkpoint, start_search
from mg_tune.train import train
from helpers.data_formats import S, write_voc

SEARCH = "voc-iou"


def heldout(maps: int, sums: dict[float, float]) -> SplitEvaluation:
    """A held-out evaluation over ``maps`` maps whose IoU sums are ``sums`` at the thresholds named (0 elsewhere)."""
    curve = torch.tensor([sums.get(t, 0.0) for t in IOU_THRESHOLDS], dtype=torch.float64)
    return SplitEvaluation({}, IOU_THRESHOLDS, curve, maps)


def test_pooled_threshold_is_the_best_of_the_curve_over_all_checkpoint_map_pairs():
    # checkpoint A: 1 map, IoU 0.8 at 0.05, 0.2 at 0.65 -> its own best is 0.05
    # checkpoint B: 3 maps, IoU sums 0.6 at 0.05 (mean 0.2), 1.5 at 0.65 (mean 0.5) -> its own best is 0.65
    a, b = heldout(1, {0.05: 0.8, 0.65: 0.2}), heldout(3, {0.05: 0.6, 0.65: 1.5})
    assert (a.best_iou_threshold(), b.best_iou_threshold()) == (0.05, 0.65)
    # pooled over the 4 (checkpoint, map) pairs: 0.05 -> (0.8 + 0.6) / 4 = 0.35, 0.65 -> (0.2 + 1.5) / 4 = 0.425
    assert pooled_iou_threshold([a, b]) == 0.65
    # (the mean of the two checkpoints' curves would pick 0.05: (0.8 + 0.2) / 2 = 0.5 > (0.2 + 0.5) / 2 = 0.35)
    assert pooled_iou_threshold([a, a, a, a, b]) == 0.05  # 0.05: 3.8 / 7 = 0.543 > 0.65: 2.3 / 7 = 0.329
    tie = heldout(2, {0.3: 1.0, 0.7: 1.0})
    assert pooled_iou_threshold([tie, heldout(1, {})]) == 0.3  # ties go to the smallest threshold, as per checkpoint
    with pytest.raises(ValueError, match="at least one"):
        pooled_iou_threshold([])
    with pytest.raises(ValueError, match="different IoU thresholds"):
        pooled_iou_threshold([a, SplitEvaluation({}, (0.3,), torch.ones(1, dtype=torch.float64), 1)])


def test_a_fixed_threshold_is_validated_fixed_only_and_reaches_the_trial_config(tmp_path):
    for value in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"iou_threshold\n.*must lie strictly between 0 and 1"):
            TrainConfig(iou_threshold=value)
    spec = tmp_path / "spec.yaml"
    spec.write_text("fixed: {iou_threshold: 1.5}\n")
    with pytest.raises(SpecError) as bad:
        load_spec(spec)
    assert str(bad.value) == (
        f"{spec}: fixed.iou_threshold: must lie strictly between 0 and 1 (a share of the map's maximum); "
        "leave it out to choose it per epoch on the held-out split (got 1.5)"
    )
    spec.write_text("space: {iou_threshold: {uniform: [0.1, 0.5]}}\n")
    with pytest.raises(SpecError, match="space.iou_threshold: not a searchable hyperparameter"):
        load_spec(spec)
    spec.write_text("fixed: {iou_threshold: 0.33}\nspace: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n")
    assert load_spec(spec)[0].train_config({"lr": 1e-3}).iou_threshold == 0.33
    assert TrainConfig().iou_threshold is None  # the paper's protocol by default


@pytest.fixture(scope="module")
def voc_data(tmp_path_factory) -> DataConfig:
    """The VOC fixture; its held-out split is one image of val.txt, its val split the other two."""
    return DataConfig(name="voc", root=str(write_voc(tmp_path_factory.mktemp("voc"))), image_size=S)


def voc_config(data: DataConfig, **fixed) -> TrainConfig:
    return TrainConfig(data=data, model="smerf_cnn", loss="energy", lam=1.0, epochs=2, batch_size=4, overlay_images=0, device="cpu", **fixed)


def test_a_fixed_threshold_is_used_verbatim_for_every_epoch(voc_data, tmp_path):
    config = voc_config(voc_data, iou_threshold=0.33)  # not on the candidate grid: never snapped to it
    result = train(config, checkpoint_dir=tmp_path / "fixed")
    for epoch in result.history:
        assert epoch.metrics["iou_threshold"] == 0.33
        evaluator = CheckpointEvaluator(str(epoch.checkpoint))
        assert evaluator.iou_threshold() == 0.33  # no held-out evaluation decides it
        assert epoch.metrics["iou"] == pytest.approx(evaluator.split("val", 0.33).metrics["iou"], abs=1e-6)
        assert evaluate_checkpoint(str(epoch.checkpoint), "val")["iou_threshold"] == 0.33  # mg-tune evaluate uses it too


@pytest.fixture(scope="module")
def voc_search(voc_data, new_mlflow_store):
    """Two trials of 2 epochs on the VOC fixture (the paper's per-epoch threshold), logged as the search runner does."""
    uri = new_mlflow_store()
    search = start_search(SEARCH, {"trials": 2}, "trials: 2\n", uri, resume=False)
    for trial_id, lam in (("t0", 0.0), ("t1", 1.0)):
        logger = TrialLogger(search, trial_id, {"lam": lam})
        train(voc_config(voc_data).model_copy(update={"lam": lam}), callback=logger.log_epoch)
        logger.finish()
    return uri


def test_evaluate_pooled_uses_one_threshold_chosen_on_the_pooled_heldout_evaluations(voc_search, tmp_path):
    uri = voc_search
    table = evaluate_pareto(uri, SEARCH, ["f1", "epg", "iou"], [True] * 3, pareto_only=False, iou_threshold="pooled")
    assert len(table) == 4
    paths = {
        (row["trial_id"], row["epoch"]): str(download_checkpoint(uri, row["run_id"], int(row["epoch"]), tmp_path / f"{row['trial_id']}-{row['epoch']}.pt"))
        for row in checkpoint_table(uri, SEARCH).to_dict("records")
    }
    evaluations = [CheckpointEvaluator(p).split("heldout") for p in paths.values()]
    expected = IOU_THRESHOLDS[int(torch.argmax(sum(e.iou_sums for e in evaluations)))]  # the summed curve, by hand
    assert pooled_iou_threshold(evaluations) == expected
    assert set(table["test_iou_threshold"]) == {expected}
    for row in table.to_dict("records"):
        again = evaluate_checkpoint(paths[(row["trial_id"], row["epoch"])], "test", iou_threshold=expected)
        assert row["test_iou"] == pytest.approx(again["iou"], abs=1e-9) and row["test_f1"] == pytest.approx(again["f1"], abs=1e-9)

    own = evaluate_pareto(uri, SEARCH, ["f1", "epg", "iou"], [True] * 3, pareto_only=False)  # default: each checkpoint's own
    for row in own.to_dict("records"):
        path = paths[(row["trial_id"], row["epoch"])]
        assert row["test_iou_threshold"] == CheckpointEvaluator(path).split("heldout").best_iou_threshold()


def test_cli_evaluate_takes_the_mode_and_says_where_the_test_metrics_are(voc_search):
    runner = CliRunner()
    common = ["evaluate", "--search", SEARCH, "--tracking-uri", voc_search, "--all"]
    pooled = runner.invoke(app, [*common, "--iou-threshold", "pooled", "--output", "json"])
    assert pooled.exit_code == 0, pooled.output
    rows = json.loads(pooled.stdout)
    assert len(rows) == 4 and len({r["test_iou_threshold"] for r in rows}) == 1
    assert pooled.stderr.strip().splitlines() == [TEST_METRICS_HINT]  # hints stay off stdout with --output json
    table = runner.invoke(app, common)
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert lines[-1] == TEST_METRICS_HINT and lines[-2].startswith("└")  # the line right after the table
    assert "┃ epoch ┃" in lines[2]  # the table names the epoch of each row
    assert "step=epoch on each trial run" in TEST_METRICS_HINT and "LoggedModel of that epoch" in TEST_METRICS_HINT
    bad = runner.invoke(app, [*common, "--iou-threshold", "median"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [
        "error: IoU threshold mode 'median' is not one of: checkpoint (each checkpoint's own, as in training: its fixed iou_threshold, "
        "else the best on its held-out split); pooled (one for all evaluated checkpoints, the best on their pooled held-out evaluations)"
    ]
