"""``mg-tune evaluate`` on a test split of background images only: no test EPG/IoU (``-``, null), one warning line why."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.tracking import TrialLogger, start_search
from mg_tune.train import train

from helpers.data_formats import S, VOC_BACKGROUNDS, VOC_SETS, write_voc_backgrounds


def test_evaluate_on_a_test_split_without_boxes_reports_no_epg_or_iou_and_says_why(tmp_path, new_mlflow_store):
    root = write_voc_backgrounds(tmp_path, VOC_SETS["val"])
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_BACKGROUNDS))
    data = DataConfig(name="voc", root=str(root), image_size=S, options={"heldout_fraction": 0.34, "split_seed": 0})
    uri = new_mlflow_store()
    search = start_search("negatives", {"trials": 1}, "trials: 1\n", uri, resume=False)
    logger = TrialLogger(search, "t0", {"lam": 1.0})
    train(TrainConfig(data=data, model="smerf_cnn", lam=1.0, epochs=1, batch_size=2, overlay_images=0, device="cpu"), callback=logger.log_epoch)
    logger.finish()

    result = CliRunner().invoke(app, ["evaluate", "--search", "negatives", "--tracking-uri", uri, "--output", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["test_epg"] is None and row["test_iou"] is None and 0.0 <= row["test_f1"] <= 1.0 and row["epg"] is not None
    said = "warning: the test split has no image with a box of its class (3 images): EPG and IoU are not measured on it (absent, not 0)"
    assert result.stderr.splitlines().count(said) == 1 and "UserWarning" not in result.stderr
    table = CliRunner().invoke(app, ["evaluate", "--search", "negatives", "--tracking-uri", uri])
    line = next(line for line in table.stdout.splitlines() if "│" in line and " 1 │" in line)
    assert line.count(" - ") == 2  # test epg, test iou shown as '-', never 0.000
