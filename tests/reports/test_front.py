"""Pareto front from MLflow alone: table completeness, exact values, dominance, tags, plots, request bound."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from mg_tune.checkpoint import load_checkpoint, save_checkpoint
from mg_tune.pareto import normalized_hypervolume
from mg_tune.front import checkpoint_table, count_requests, hypervolume_curve, search_pareto
from mg_tune.tracking import TrialLogger, download_checkpoint, iter_logged_models, start_search
from mg_tune.train import EpochResult

OBJECTIVES = ["f1", "epg", "iou"]


def seeded_linear(trial: str, epoch: int) -> torch.nn.Linear:
    """A Linear(3, 2) whose weights depend only on (trial, epoch): a private generator, safe across threads."""
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, generator=torch.Generator().manual_seed(1000 * int(trial[1:]) + epoch)))
    return layer


def fake_epoch(root: Path, trial: str, epoch: int, metrics: dict[str, float]) -> EpochResult:
    ckpt = save_checkpoint(root / trial / f"epoch={epoch:03d}" / "checkpoint.pt", seeded_linear(trial, epoch), None, epoch, metrics, {"trial": trial})
    return EpochResult(epoch, dict(metrics), ckpt, None)


def expected_metrics() -> dict[tuple[str, int], dict[str, float]]:
    """6 trials x 3 epochs (p3 fails after 2), values on a 0.05 grid so that ties and duplicates occur."""
    rng = np.random.default_rng(7)
    values = {}
    for t in range(6):
        for e in (1, 2, 3):
            if (t, e) == (3, 3):
                continue
            f1, epg, iou = (np.round(rng.uniform(0.1, 0.9, 3) * 20) / 20).tolist()
            values[(f"p{t}", e)] = {"f1": f1, "epg": epg, "iou": iou, "loss": rng.uniform()}
    values[("p5", 3)] = dict(values[("p4", 3)])  # a duplicate point
    values[("p4", 2)].update(f1=0.99, epg=0.99, iou=math.nan)  # NaN: never on the front
    values[("p1", 3)].update(f1=0.95, epg=0.95, iou=0.05)  # best F1 and EPG, worst IoU
    return values


@pytest.fixture(scope="module")
def filled(tmp_path_factory, new_mlflow_store):
    uri = new_mlflow_store()
    root = tmp_path_factory.mktemp("ckpt")
    search = start_search("pf", {"objectives": OBJECTIVES}, "objectives: [f1, epg, iou]\n", uri, resume=False)
    values = expected_metrics()

    def run_trial(t: int, epochs=(1, 2, 3)) -> TrialLogger:
        logger = TrialLogger(search, f"p{t}", {"lam": 10.0**-t, "loss": "energy"})
        for e in epochs:
            if (f"p{t}", e) in values:
                logger.log_epoch(fake_epoch(root, f"p{t}", e, values[(f"p{t}", e)]))
        return logger

    errors = []

    def threaded(t: int) -> None:
        try:
            run_trial(t).finish()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=threaded, args=(t,)) for t in (0, 1)]  # two trials logging concurrently
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    run_trial(2, epochs=(1, 2))  # crashes after epoch 2 ...
    run_trial(2).finish()  # ... and is restarted: re-logs 1-2, then 3
    run_trial(3).finish("FAILED", reason="DivergedError: loss nan at epoch 3")
    run_trial(4).finish()
    run_trial(5)  # still running
    return uri, search, values


def test_every_checkpoint_once_with_exact_values(filled):
    uri, _, values = filled
    table = checkpoint_table(uri, "pf")
    assert len(table) == len(values) == 17
    assert not table.duplicated(["trial_id", "epoch"]).any()
    for row in table.itertuples():
        want = values[(row.trial_id, row.epoch)]
        for key, value in want.items():
            got = getattr(row, key)
            assert (math.isnan(value) and math.isnan(got)) or got == value, (row.trial_id, row.epoch, key)
    status = dict(zip(table.trial_id, table.status))
    assert status == {"p0": "FINISHED", "p1": "FINISHED", "p2": "FINISHED", "p3": "FAILED", "p4": "FINISHED", "p5": "RUNNING"}
    assert table["params.lam"].dtype == float and set(table["params.loss"]) == {"energy"}
    assert list(table.columns[:6]) == ["run_id", "trial_id", "epoch", "model_id", "status", "checkpoint_uri"]


def test_front_equals_brute_force_dominance(filled):
    uri, _, _ = filled
    result = search_pareto(uri, "pf", OBJECTIVES, [True, True, True], tag=False)
    pts = result.table[OBJECTIVES].to_numpy(float)
    brute = set()
    for i, p in enumerate(pts):
        if np.isnan(p).any():
            continue
        dominated = any(np.all(q >= p) and np.any(q > p) for q in pts if not np.isnan(q).any())
        if not dominated:
            brute.add((result.table.trial_id[i], int(result.table.epoch[i])))
    assert set(zip(result.front.trial_id, result.front.epoch)) == brute
    assert ("p1", 3) in brute and ("p4", 2) not in brute
    assert result.table["pareto"].sum() == len(result.front)
    finite = pts[~np.isnan(pts).any(axis=1)]
    assert result.hypervolume == pytest.approx(normalized_hypervolume(finite, [(0, 1)] * 3, [True] * 3))

    constrained = search_pareto(uri, "pf", OBJECTIVES, [True, True, True], tag=False, constraints=["iou >= 0.3", "f1 <= 0.9"])
    ok = (result.table.iou >= 0.3) & (result.table.f1 <= 0.9)
    sub = pts[ok.to_numpy()]
    want = {
        (result.table.trial_id[i], int(result.table.epoch[i]))
        for i in np.flatnonzero(ok.to_numpy())
        if not any(np.all(q >= pts[i]) and np.any(q > pts[i]) for q in sub)
    }
    assert set(zip(constrained.front.trial_id, constrained.front.epoch)) == want and ("p1", 3) not in want
    assert constrained.table.feasible.tolist() == ok.tolist() and constrained.constraints == ["iou >= 0.3", "f1 <= 0.9"]

    mixed = search_pareto(uri, "pf", ["f1", "loss"], [True, False], tag=False)
    mp = mixed.table[["f1", "loss"]].to_numpy(float)
    mixed_brute = {i for i, p in enumerate(mp) if not any(q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1]) for q in mp)}
    assert set(mixed.table.index[mixed.table.pareto]) == mixed_brute


def test_tags_hypervolume_and_plots_written_back(filled, tmp_path):
    uri, search, _ = filled
    client = MlflowClient(uri)
    result = search_pareto(uri, "pf", OBJECTIVES, [True, True, True])
    front = {(r.run_id, r.epoch) for r in result.front.itertuples()}
    for run_id, group in result.table.groupby("run_id"):
        tags = client.get_run(run_id).data.tags
        epochs = sorted(e for (r, e) in front if r == run_id)
        if epochs:
            assert tags["pareto"] == "true" and tags["pareto_epochs"] == ",".join(map(str, epochs))
        else:
            assert "pareto" not in tags and "pareto_epochs" not in tags
    tagged = {m.model_id for m in iter_logged_models(client, search.experiment_id) if (m.tags or {}).get("pareto") == "true"}
    assert tagged == set(result.front.model_id)

    parent = client.get_run(search.run_id)
    assert parent.data.metrics["pareto_hypervolume"] == pytest.approx(result.hypervolume)
    assert client.get_metric_history(search.run_id, "pareto_hypervolume")[-1].step == 16  # finite points
    assert parent.data.tags["pareto_objectives"] == "f1:max,epg:max,iou:max"
    assert {"pareto.html", "pareto.png"} <= {a.path for a in client.list_artifacts(search.run_id)}  # at the root: one click from the run
    html = Path(client.download_artifacts(search.run_id, "pareto.html", str(tmp_path))).read_text()
    png = Path(client.download_artifacts(search.run_id, "pareto.png", str(tmp_path))).read_bytes()
    assert "plotly" in html and "<script src=" not in html and len(html) > 1_000_000  # self-contained
    assert html.count("Plotly.newPlot") == 3 and "3-D view" in html and "hypervolume over trial-epochs" in html
    assert "scatter3d" in html and f"{len(result.table)} checkpoints, {len(result.front)} on the Pareto front" in html
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    view = json.loads(client.get_experiment(search.experiment_id).tags["mlflow.sharedViewState.mg-tune-front"])  # what the front link opens
    assert view == {
        "searchFilter": "tags.pareto = 'true'", "orderByKey": "metrics.`f1`", "orderByAsc": False,
        "selectedColumns": ["tags.`pareto_epochs`", "metrics.`f1`", "metrics.`epg`", "metrics.`iou`"],
    }
    description = parent.data.tags["mlflow.note.content"]  # the parent run's Overview links both files, relative to the UI's host
    for name in ("pareto.html", "pareto.png"):
        assert f"[{name}](#/experiments/{search.experiment_id}/runs/{search.run_id}/artifactPath/{name}?workflowType=machine_learning)" in description

    # a different front: stale tags disappear, new ones appear; a description the user wrote stays
    client.set_tag(search.run_id, "mlflow.note.content", "my notes")
    other = search_pareto(uri, "pf", OBJECTIVES, [False, False, False])
    assert client.get_run(search.run_id).data.tags["mlflow.note.content"] == "my notes"
    assert json.loads(client.get_experiment(search.experiment_id).tags["mlflow.sharedViewState.mg-tune-front"])["orderByAsc"] is True  # f1 minimised: smallest first
    other_runs = set(other.front.run_id)
    for run_id in result.table.run_id.unique():
        assert (client.get_run(run_id).data.tags.get("pareto") == "true") == (run_id in other_runs)
    tagged = {m.model_id for m in iter_logged_models(client, search.experiment_id) if (m.tags or {}).get("pareto") == "true"}
    assert tagged == set(other.front.model_id)


def test_hypervolume_curve_over_trial_epochs(filled):
    uri, _, _ = filled
    result = search_pareto(uri, "pf", OBJECTIVES, [True, True, True], tag=False, constraints=["f1 <= 0.9"])
    curve = hypervolume_curve(result)
    ordered = result.table.sort_values(["created", "trial_id", "epoch"], kind="stable")
    assert curve["trial_epochs"].tolist() == list(range(1, len(result.table) + 1))
    assert list(zip(curve.trial_id, curve.epoch)) == list(zip(ordered.trial_id, ordered.epoch))
    for k in range(1, len(ordered) + 1):  # brute force: HV of every feasible finite point stored so far
        first = ordered.iloc[:k]
        pts = first[OBJECTIVES].to_numpy(float)[first.feasible.to_numpy() & ~np.isnan(first[OBJECTIVES].to_numpy(float)).any(axis=1)]
        assert curve.hypervolume[k - 1] == pytest.approx(normalized_hypervolume(pts, [(0, 1)] * 3, [True] * 3))
    assert curve.hypervolume.iloc[-1] == pytest.approx(result.hypervolume) and curve.hypervolume.is_monotonic_increasing


def test_every_checkpoint_downloads_and_loads(filled, tmp_path):
    uri, _, values = filled
    table = checkpoint_table(uri, "pf")
    for row in table.itertuples():
        state = load_checkpoint(download_checkpoint(uri, row.run_id, row.epoch, tmp_path / row.model_id))
        assert state["epoch"] == row.epoch and state["metrics"]["f1"] == values[(row.trial_id, row.epoch)]["f1"]
        assert torch.equal(state["model"]["weight"], seeded_linear(row.trial_id, row.epoch).weight.detach())


def test_reading_a_search_is_a_bounded_number_of_requests(filled):
    uri, _, _ = filled
    with count_requests() as counter:
        checkpoint_table(uri, "pf")
    # experiment, trial runs (1 page), logged models (1 page), parent run
    assert counter.store <= 4, counter.calls
    assert counter.calls["search_logged_models"] == 1 and "get_metric_history" not in counter.calls


def test_errors_are_clear(filled):
    uri, _, _ = filled
    with pytest.raises(ValueError, match="no search named 'nope'"):
        checkpoint_table(uri, "nope")
    with pytest.raises(ValueError, match="objective 'map' was not logged"):
        search_pareto(uri, "pf", ["f1", "map"], [True, True], tag=False)
    with pytest.raises(ValueError, match="constraint on 'map'"):
        search_pareto(uri, "pf", ["f1"], [True], tag=False, constraints=["map >= 0.5"])
    with pytest.raises(ValueError, match="must look like"):
        search_pareto(uri, "pf", ["f1"], [True], tag=False, constraints=["f1 > 0.5"])
    with pytest.raises(ValueError, match="one maximize flag per objective"):
        search_pareto(uri, "pf", ["f1", "epg"], [True], tag=False)


def test_the_plotting_libraries_are_imported_in_the_background():
    """run_search starts this before Tuner.fit: afterwards the front's plots find matplotlib and plotly imported."""
    code = (
        "import sys; from mg_tune.pareto_plots import import_in_background\n"
        "assert 'matplotlib.figure' not in sys.modules and 'plotly.graph_objects' not in sys.modules\n"
        "thread = import_in_background(); assert not thread.daemon; thread.join()\n"
        "print(sorted(m for m in ('matplotlib.figure', 'plotly.graph_objects', 'plotly.subplots') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['matplotlib.figure', 'plotly.graph_objects', 'plotly.subplots']"
