"""The Pareto explorer in a real browser (Playwright + Debian's Chromium) on a real search tracked in MLflow."""

from __future__ import annotations

import math
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from typer.testing import CliRunner

from mg_tune.checkpoint import save_checkpoint
from mg_tune.cli import app
from mg_tune.front import checkpoint_table
from mg_tune.tracking import SearchRun, TrialLogger, clear_index_tag, experiment_name, find_search_run, iter_logged_models
from mg_tune.train import EpochResult

from helpers.searches import FINISHED_SEARCH

pytestmark = pytest.mark.slow

SEARCH = FINISHED_SEARCH
OBJECTIVES = ["f1", "epg", "iou"]


def brute_force_front(points: np.ndarray) -> set[int]:
    finite = [i for i, p in enumerate(points) if not np.isnan(p).any()]
    return {i for i in finite if not any(np.all(points[j] >= points[i]) and np.any(points[j] > points[i]) for j in finite)}


@pytest.fixture(scope="module")
def search(finished_search, tmp_path_factory):
    """A copy of the store of conftest's ``finished_search`` (6 trials x 2 epochs): the live-refresh test logs a checkpoint
    into it, and the session's search stays as it finished for its other readers. Its runs' artifacts stay where the
    search logged them (the experiment names that folder); the new checkpoint's files land there too, under ids only
    the copy knows."""
    uri, outcome = finished_search
    assert outcome.trials == 6 and outcome.errors == 0
    copy = tmp_path_factory.mktemp("explorer") / "mlflow.db"
    shutil.copyfile(uri.removeprefix("sqlite:///"), copy)
    return f"sqlite:///{copy}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(search, tmp_path_factory):
    """``mg-tune dashboard`` in a subprocess, re-reading MLflow every second; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "dashboard.log"
    cmd = [sys.executable, "-m", "mg_tune.cli", "dashboard", "--search", SEARCH, "--tracking-uri", search, "--port", str(port), "--refresh", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the dashboard did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(server)
    page.wait_for_function("(document.getElementById('count-checkpoints')?.innerText ?? '') !== ''")
    page.wait_for_function(f"() => {_GRAPHS_DRAWN}")
    yield page
    page.close()


# every graph has drawn the figure of the callback (an empty dcc.Graph has no traces)
_GRAPHS_DRAWN = "['pairs', 'scatter3d', 'hypervolume'].every(id => document.querySelector(`#${id} .js-plotly-plot`)?._fullData?.length > 0)"


def _count(page, element: str) -> int:
    return int(page.inner_text(f"#{element}"))


def _traces(page, graph: str) -> list[dict]:
    """Name and number of points of every trace of a dcc.Graph, from plotly's own (decoded) data on the page."""
    return page.evaluate(
        f"() => document.querySelector('#{graph} .js-plotly-plot')._fullData.map(t => ({{name: t.name, n: (t.x || []).length}}))"
    )


def _mlflow_counts(uri: str) -> tuple[int, int]:
    """READY checkpoints of the search and those tagged pareto=true, straight from MLflow's LoggedModels."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(SEARCH))
    models = [m for m in iter_logged_models(client, experiment.experiment_id) if m.status == LoggedModelStatus.READY]
    return len(models), sum((m.tags or {}).get("pareto") == "true" for m in models)


def test_counts_on_the_page_equal_mlflow(page, search):
    total, front = _mlflow_counts(search)
    assert total == 12 and 1 <= front < total  # 6 trials x 2 epochs
    assert (_count(page, "count-checkpoints"), _count(page, "count-pareto")) == (total, front)
    pairs = _traces(page, "pairs")
    assert len(pairs) == 6  # 3 objective pairs x (checkpoints, Pareto front)
    assert [(t["name"], t["n"]) for t in pairs[:2]] == [("checkpoints", total - front), ("Pareto front", front)]
    assert [t["n"] for t in _traces(page, "scatter3d")] == [total - front, front]
    assert [t["n"] for t in _traces(page, "hypervolume")] == [total]


def _pareto_point_pixels(page) -> list[dict]:
    """Page coordinates of every point of the first pairwise plot (F1 vs EPG), with its trace and customdata."""
    return page.evaluate(
        """() => {
        const gd = document.querySelector('#pairs .js-plotly-plot');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
        const out = [];
        gd._fullData.slice(0, 2).forEach((t, k) => Array.from(t.x).forEach((x, i) => {
            if (!Number.isFinite(x) || !Number.isFinite(t.y[i])) return;
            out.push({pareto: k === 1, px: box.left + xa._offset + xa.l2p(x), py: box.top + ya._offset + ya.l2p(t.y[i]),
                      trial: t.customdata[i][0], epoch: Number(t.customdata[i][1])});
        }));
        return out;
    }"""
    )


def test_clicking_a_pareto_point_shows_its_metrics_overlay_and_export_command(page, search, tmp_path):
    points = _pareto_point_pixels(page)
    # a front point no other point sits within 8 px of, so the click is unambiguous
    target = next(
        p for p in points if p["pareto"] and all(math.dist((p["px"], p["py"]), (q["px"], q["py"])) > 8 for q in points if q is not p)
    )
    page.mouse.move(target["px"], target["py"])
    page.mouse.click(target["px"], target["py"])
    trial, epoch = target["trial"], target["epoch"]
    page.wait_for_selector("#selected-title")
    assert page.inner_text("#selected-title") == f"trial {trial}, epoch {epoch}"

    row = checkpoint_table(search, SEARCH).set_index(["trial_id", "epoch"]).loc[(trial, epoch)]
    shown = dict(line.split("\t") for line in page.inner_text("#metrics-validation table").splitlines())
    for metric in OBJECTIVES:
        assert float(shown[metric]) == pytest.approx(row[metric], rel=1e-3)

    page.wait_for_function("() => { const img = document.getElementById('overlay'); return img.complete && img.naturalWidth > 0; }")
    served = page.request.get(page.evaluate("document.getElementById('overlay').src")).body()
    logged = Path(MlflowClient(search).download_artifacts(row["run_id"], f"overlays/epoch={epoch:03d}.png", str(tmp_path))).read_bytes()
    assert served == logged and served[:4] == b"\x89PNG"

    experiment = MlflowClient(search).get_experiment_by_name(experiment_name(SEARCH)).experiment_id
    assert page.get_attribute("#mlflow-link", "href") == f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{row['run_id']}?workflowType=machine_learning"

    command = page.inner_text("#export-command").strip()
    assert command == f"mg-tune export --search {SEARCH} --trial {trial} --epoch {epoch} --to exported/{SEARCH}-{trial}-epoch{epoch} --tracking-uri {search}"
    done = subprocess.run([sys.executable, "-m", "mg_tune.cli", *shlex.split(command)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "exported" / f"{SEARCH}-{trial}-epoch{epoch}" / "model.pt").exists()
    registry = page.inner_text("#registry-uri")
    assert f'mg_tune.load_model("models:/{row["model_id"]}")' in registry and f"--register {SEARCH}" in registry
    page.screenshot(path=tmp_path / "selected.png", full_page=True)
    assert (tmp_path / "selected.png").read_bytes()[:4] == b"\x89PNG"


def test_a_filter_changes_the_counts(page, search, tmp_path):
    table = checkpoint_table(search, SEARCH)
    energy = table[table["params.loss"] == "energy"].reset_index(drop=True)
    assert 0 < len(energy) < len(table)
    page.click("#filter-loss input[value='l1']")
    page.wait_for_function(f"document.getElementById('count-checkpoints').innerText === '{len(energy)}'")
    assert _count(page, "count-pareto") == len(brute_force_front(energy[OBJECTIVES].to_numpy(float)))
    pairs = "document.querySelector('#pairs .js-plotly-plot')._fullData"
    page.wait_for_function(f"{pairs}[0].x.length + {pairs}[1].x.length === {len(energy)}")  # the plot is redrawn with the filtered points
    page.screenshot(path=tmp_path / "filtered.png", full_page=True)
    assert (tmp_path / "filtered.png").stat().st_size > 10_000


def test_cli_errors_are_one_line(search):
    bad = CliRunner().invoke(app, ["dashboard", "--search", "nope", "--tracking-uri", search])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [f"error: no search named 'nope' in {search}"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(app, ["dashboard", "--search", SEARCH, "--tracking-uri", search, "--port", str(port)])
    assert busy.exit_code == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in busy.output


def test_live_refresh_shows_a_new_checkpoint(page, search, tmp_path):
    """A checkpoint logged while the page is open appears without reloading (the page re-reads MLflow every second)."""
    before = _count(page, "count-checkpoints")
    client = MlflowClient(search)
    experiment = client.get_experiment_by_name(experiment_name(SEARCH)).experiment_id
    parent = find_search_run(client, experiment)
    clear_index_tag(client, parent)  # the shared search has finished; a search that still logs has no complete checkpoint index
    logger = TrialLogger(SearchRun(search, experiment, parent.info.run_id, SEARCH), "late", {"loss": "energy", "lr": 1e-3})
    best = {"f1": 0.999, "epg": 0.999, "iou": 0.999}  # dominates every checkpoint of the search
    checkpoint = save_checkpoint(tmp_path / "checkpoint.pt", torch.nn.Linear(2, 2), None, 1, best, {})
    logger.log_epoch(EpochResult(1, best, checkpoint, None))
    logger.finish()
    page.wait_for_function(f"document.getElementById('count-checkpoints').innerText === '{before + 1}'", timeout=60_000)
    page.wait_for_function("document.getElementById('count-pareto').innerText === '1'", timeout=60_000)
