"""The front in MLflow's own UI (issue 18): Debian's chromium on the tracking server's pages.

A real search (3 trials x 2 epochs) logged to the session's MLflow server (PostgreSQL,
artifacts in S3), its front registered with ``mg-tune pareto --register``, then the pages
a user reaches from the links mg-tune prints: the registered model (versions, tags,
aliases), the experiment's Models tab (the front marked by its registered versions) and
its Runs tab filtered to ``tags.pareto = 'true'``, all in the model-training view.
Screenshots go to ``$MG_TUNE_SCREENSHOT_DIR`` when set (README's image comes from there).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.mlflow_links import FRONT_FILTER, models_link, registered_model_link, runs_link
from mg_tune.front import search_pareto
from mg_tune.tracking import experiment_name

from helpers.searches import OBJECTIVES, log_search

SEARCH = "ui"
NAME = "ui-front"


@pytest.fixture(scope="module")
def registered_front(mlflow_server):
    uri, _ = mlflow_server
    log_search(uri, SEARCH)
    out = CliRunner().invoke(app, ["pareto", "--search", SEARCH, "--tracking-uri", uri, "--register", NAME])
    assert out.exit_code == 0, out.output
    front = search_pareto(uri, SEARCH, OBJECTIVES, [True] * 3, tag=False).front
    experiment_id = MlflowClient(uri).get_experiment_by_name(experiment_name(SEARCH)).experiment_id
    return uri, experiment_id, front, out.output


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    yield page
    page.close()


def keep(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=path)
    if os.environ.get("MG_TUNE_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["MG_TUNE_SCREENSHOT_DIR"]) / name)


def test_the_printed_links_are_the_pages_below(registered_front):
    uri, experiment_id, _, output = registered_front
    for link in (runs_link(uri, experiment_id), runs_link(uri, experiment_id, FRONT_FILTER), models_link(uri, experiment_id), registered_model_link(uri, NAME)):
        assert link in output and "workflowType=machine_learning" in link


def test_registered_model_page_lists_the_front_with_tags_and_aliases(registered_front, page, tmp_path):
    uri, _, front, _ = registered_front
    page.goto(registered_model_link(uri, NAME))
    page.get_by_text(f"Version {len(front)}", exact=True).wait_for(timeout=60_000)
    text = page.inner_text("body").replace("\N{NO-BREAK SPACE}", " ")
    assert f"Version {len(front) + 1}" not in text and all(f"Version {k}" in text for k in range(1, len(front) + 1))
    for alias in ("best-f1", "best-epg", "best-iou", "knee"):
        assert f"@ {alias}" in text
    versions = MlflowClient(uri).search_model_versions(f"name = '{NAME}'")
    for version in versions:  # every version's trial and objectives are shown as its tags
        assert version.tags["trial_id"] in text and version.tags["epg"] in text
    assert text.count("pareto\n: true") == len(front)
    keep(page, tmp_path, "mlflow-registered-front.png")


def test_models_tab_marks_exactly_the_front_by_its_registered_version(registered_front, page, tmp_path):
    uri, experiment_id, front, _ = registered_front
    client = MlflowClient(uri)
    page.goto(models_link(uri, experiment_id))
    names = {client.get_logged_model(m).name: m for m in front["model_id"]}
    page.get_by_text(next(iter(names)), exact=True).wait_for(timeout=60_000)
    rows = {}
    for index in range(6):  # ag-grid splits a row into its pinned and scrolling parts, joined by row-index
        parts = page.locator(f".ag-row[row-index='{index}']")
        rows[index] = " ".join(parts.nth(k).inner_text() for k in range(parts.count()))
    marked = {name for row in rows.values() for name in row.split() if name.endswith(tuple(f"epoch{e}" for e in (1, 2))) and NAME in row}
    assert marked == set(names)
    assert sum(NAME in row for row in rows.values()) == len(front)
    assert "Agent versions" not in page.inner_text("body")  # the model-training view, not GenAI's
    keep(page, tmp_path, "mlflow-models-tab.png")


def test_runs_tab_opens_in_model_training_filtered_to_the_front(registered_front, page, tmp_path):
    uri, experiment_id, front, _ = registered_front
    page.goto(runs_link(uri, experiment_id, FRONT_FILTER))
    page.get_by_text(SEARCH, exact=True).first.wait_for(timeout=60_000)
    search_box = page.locator("input[placeholder*='metrics.rmse']")
    assert search_box.input_value() == "tags.pareto = 'true'"
    text = page.inner_text("body")
    assert "Agent versions" not in text and "Runs" in text
    keep(page, tmp_path, "mlflow-runs-front.png")
