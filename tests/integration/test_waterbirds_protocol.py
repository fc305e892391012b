"""The Waterbirds-100 protocol (main paper Sec. 5.5) on the spurious TextBox data, conventional and reversed.

The shipped specs are run as real searches (Ray + MLflow) at test scale: a
handful of box-annotated training images vs. none (the unguided baseline),
then every checkpoint is evaluated on the balanced test split and reports
worst-group and overall accuracy, as the paper's Table 1.
"""

from pathlib import Path

import pytest
import torch
import yaml

from mg_tune.data.textbox import SpuriousTextBox, build_textbox
from mg_tune.checkpoint_eval import evaluate_pareto
from mg_tune.front import checkpoint_table
from mg_tune.search.runner import run_search
from mg_tune.search.spec import SearchSpec, load_spec

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def test_reversed_spurious_textbox_labels_the_background_and_masks_outside_the_patch():
    conventional = build_textbox("spurious", "train", 64)
    reversed_ = build_textbox("spurious", "train", 64, reversed=True)
    assert reversed_.info.class_names == ("land", "water") and conventional.info.class_names == ("A", "B")
    agree = 0
    for i in range(64):
        sample, scene = reversed_[i], reversed_.scene(i)
        label = int(sample["labels"].argmax())
        letter, background = divmod(int(sample["group"]), 2)
        assert label == background  # the label is the background colour
        agree += letter == label
        x0, y0, x1, y1 = scene.objects[0].box
        expected = torch.ones(64, 64)
        expected[y0:y1, x0:x1] = 0
        assert torch.equal(sample["masks"][label], expected) and torch.equal(sample["seg_masks"][label], expected)
        assert sample["masks"][1 - label].sum() == 0
    assert agree >= 56  # the letter is the shortcut: equal to the label on ~95 % of the training images
    test = build_textbox("spurious", "test", 400, reversed=True)
    assert sorted({int(test[i]["group"]) for i in range(400)}) == [0, 1, 2, 3]


def _scaled_down(path, storage):
    """The shipped spec at test scale: 200 training images, 10 of them (5 %) annotated, 2 epochs, one seed."""
    spec, _ = load_spec(path)
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["data"].update(train_size=200, val_size=40, heldout_size=20, test_size=80)
    raw["fixed"].update(epochs=2, batch_size=32, overlay_images=0)
    raw["space"] = {"annotation_fraction": {"choice": [0.0, 0.05]}}
    raw["concurrency"] = 2
    raw["storage_path"] = str(storage)
    return SearchSpec.model_validate(raw), raw


@pytest.fixture(scope="module")
def protocol(tmp_path_factory, ray_local, new_mlflow_store):
    root = tmp_path_factory.mktemp("protocol")
    uri = new_mlflow_store()
    tables = {}
    for setting in ("", "_reversed"):
        spec, raw = _scaled_down(SPACES / f"textbox_waterbirds_protocol{setting}.yaml", root / "runs")
        outcome = run_search(spec, yaml.safe_dump(raw), uri)
        assert outcome.trials == 2 and outcome.errors == 0
        test = evaluate_pareto(uri, spec.name, spec.metric_names, [True, True], split="test", pareto_only=False)
        params = checkpoint_table(uri, spec.name).rename(columns={"params.annotation_fraction": "annotation_fraction"})
        params = params[["trial_id", "epoch", "annotation_fraction", "train_loc_loss"]]
        tables[setting or "_conventional"] = test.merge(params, on=["trial_id", "epoch"])
    return tables


@pytest.mark.parametrize("setting", ["_conventional", "_reversed"])
def test_protocol_reports_worst_group_and_overall_test_accuracy(protocol, setting):
    table = protocol[setting]
    assert len(table) == 4  # 2 trials (baseline, 5 % boxes) x 2 epochs
    assert sorted(table["annotation_fraction"].astype(float).unique()) == [0.0, 0.05]
    baseline = table[table["annotation_fraction"].astype(float) == 0.0]
    guided = table[table["annotation_fraction"].astype(float) > 0.0]
    assert (baseline["train_loc_loss"] == 0).all() and (guided["train_loc_loss"] != 0).all()
    for row in table.to_dict("records"):
        assert 0.0 <= row["test_worst_group_acc"] <= row["test_mean_group_acc"] <= 1.0
        groups = [row[f"test_group_acc/{name}"] for name in SpuriousTextBox.info.group_names]
        assert row["test_worst_group_acc"] == min(groups)  # all four letter/background groups are on the test split
        assert 0.0 <= row["test_accuracy"] <= 1.0
    assert not baseline["test_epg"].reset_index(drop=True).equals(guided["test_epg"].reset_index(drop=True))
