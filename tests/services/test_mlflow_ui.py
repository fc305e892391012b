"""The front in MLflow's own UI (issues 18, 30): Debian's chromium on the tracking server's pages, at 1400x900.

A real search (3 trials x 2 epochs) logged to the session's MLflow server (PostgreSQL,
artifacts in S3), its front registered with ``mg-tune pareto --register``, then the pages
a user reaches from the links mg-tune prints: the registered model (versions, tags,
aliases), the experiment's Models tab (the front marked by its registered versions), the
front link (the front's trial runs flat, with their objectives, no click) and the parent
run's page (the Pareto plot one click away), all in the model-training view.
Screenshots go to ``$MG_TUNE_SCREENSHOT_DIR`` when set (README's images come from there).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.mlflow_links import PARETO_HTML, PARETO_PNG, artifact_link, front_link, models_link, registered_model_link, run_link, runs_link
from mg_tune.front import search_pareto
from mg_tune.tracking import experiment_name
from mg_tune.tracking.search_run import find_search_run

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


WIDTH, HEIGHT = 1400, 900


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    yield page
    page.close()


def keep(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=path)
    if os.environ.get("MG_TUNE_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["MG_TUNE_SCREENSHOT_DIR"]) / name)


def test_the_printed_links_are_the_pages_below(registered_front):
    uri, experiment_id, _, output = registered_front
    parent = find_search_run(MlflowClient(uri), experiment_id).info.run_id
    plot = artifact_link(uri, experiment_id, parent, PARETO_HTML)
    for link in (runs_link(uri, experiment_id), front_link(uri, experiment_id), models_link(uri, experiment_id), registered_model_link(uri, NAME), plot):
        assert link in output and "workflowType=machine_learning" in link
    assert f"Pareto plot:   {plot}\n" in output  # the plot's MLflow page, never a path on the machine that computed it


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
    marked = {name for row in rows.values() for name in row.split() if re.fullmatch(r"t0[0-2]-e0[12]-energy-lam[0-9p]+-input", name) and NAME in row}
    assert marked == set(names)
    assert sum(NAME in row for row in rows.values()) == len(front)
    column = page.locator(".ag-header-cell", has_text="Model name").bounding_box()
    for name in names:  # trial and epoch lead the name, and the whole name fits its column at 1400 px
        shown = page.get_by_text(name, exact=True).bounding_box()
        assert column["x"] <= shown["x"] and shown["x"] + shown["width"] <= column["x"] + column["width"]
    assert "Agent versions" not in page.inner_text("body")  # the model-training view, not GenAI's
    keep(page, tmp_path, "mlflow-models-tab.png")


def test_front_link_shows_the_trials_and_objectives_and_the_parent_run_the_plot_in_one_click(registered_front, page, tmp_path):
    uri, experiment_id, front, _ = registered_front
    client = MlflowClient(uri)
    trials = {client.get_run(r).info.run_name: client.get_run(r).data.metrics for r in set(front["run_id"])}
    page.goto(front_link(uri, experiment_id))
    page.get_by_text(next(iter(trials)), exact=True).wait_for(timeout=60_000)
    # no click: every front trial is a row of its own (no collapsed parent row), its objectives in columns within 1400 px
    rows = {}
    for index in range(len(trials) + 1):  # ag-grid splits a row into its pinned and scrolling parts, joined by row-index
        parts = page.locator(f".ag-row[row-index='{index}']")
        rows[index] = "\n".join(parts.nth(k).inner_text() for k in range(parts.count()))
    assert rows.pop(len(trials)) == "" and len(rows) == len(trials)
    shown = {next(name for name in trials if name in row): row for row in rows.values()}
    assert set(shown) == set(trials) and "ui" not in {line for row in rows.values() for line in row.splitlines()}
    for name, metrics in trials.items():  # each run's last epoch, as MLflow holds it
        assert all(repr(metrics[objective]) in shown[name].splitlines() for objective in OBJECTIVES)
    table = page.locator(".ag-root-wrapper").bounding_box()  # the grid's visible part (the assistant's panel takes the right)
    for objective in OBJECTIVES:  # each objective's header and first value start inside it, its name readable
        column = f"[col-id='metrics.`{objective}`']"
        label = page.locator(f".ag-header-cell{column}").get_by_text(objective, exact=True).bounding_box()
        value = page.locator(f".ag-row[row-index='0'] .ag-cell{column}").bounding_box()
        assert table["x"] < label["x"] and label["x"] + label["width"] < table["x"] + table["width"] <= WIDTH
        assert table["x"] < value["x"] < table["x"] + table["width"] - 50
    f1 = [trials[next(n for n in trials if n in row)]["f1"] for _, row in sorted(rows.items())]
    assert f1 == sorted(f1, reverse=True)  # best first
    assert page.locator("input[placeholder*='metrics.rmse']").input_value() == "tags.pareto = 'true'"
    keep(page, tmp_path, "mlflow-front.png")

    # the parent run: its description links the report and the plot, each opens its file in one click
    parent = find_search_run(client, experiment_id).info.run_id
    page.goto(run_link(uri, experiment_id, parent))
    href = page.get_by_role("link", name=PARETO_HTML, exact=True).get_attribute("href", timeout=60_000)
    assert href == artifact_link("", experiment_id, parent, PARETO_HTML).removeprefix("/")  # relative: any host serving the UI
    with page.context.expect_page() as opened:
        page.get_by_role("link", name=PARETO_PNG, exact=True).click()
    plot = opened.value
    plot.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    plot.get_by_text(f"Path: mlflow-artifacts:/{experiment_id}/{parent}/artifacts/{PARETO_PNG}").wait_for(timeout=60_000)
    image = plot.locator("img[src^='blob:']").first
    image.wait_for(timeout=60_000)
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0  # the PNG itself, shown
    keep(plot, tmp_path, "mlflow-pareto-plot.png")
    plot.close()
