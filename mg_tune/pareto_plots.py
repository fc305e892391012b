"""Figures of a search's checkpoints: pairwise Pareto plots, the 3-D view, hypervolume over trial-epochs, the PNG.

Tables in, figures out: what the Pareto report (:func:`mg_tune.front.report_html`)
and the dashboard draw. A table is a :func:`mg_tune.front.checkpoint_table` with
its bool ``pareto`` column (:func:`mg_tune.front.mark_pareto`); a curve is a
:func:`mg_tune.front.hypervolume_curve`.

One description, two renderers. The interactive figures are plotly; the report's
static ``pareto.png`` is drawn by matplotlib. Both read one :class:`PairwisePlot`
(objective pairs, axis titles, title, size, and the two groups of checkpoints with
their colour and marker size, computed once from the table), so the PNG cannot
drift from the HTML.

Decision: not plotly's own static export. Kaleido 1.x (PyPI: ``kaleido`` with
``choreographer``, ``logistro``, ``simplejson``) drives a Chrome or Chromium that
pip does not install: offline it needs the system's Chromium (Debian's
``/usr/bin/chromium`` here, installed by ``make install`` for the browser tests
only), and the cluster's head, where a search's driver writes the PNG, has none
(``cluster/cluster.yaml``); kaleido's own fallback downloads Chrome. It is also
slower and less reliable. Measured on this 2-core machine (kaleido 1.5.1, Debian
Chromium 156; a 400-checkpoint, 3-objective table; 5 PNGs each, interleaved; min /
median / max seconds per PNG): at a load of about 9, matplotlib 0.43 / 0.56 / 0.59,
kaleido 5.1 / 5.6 / 7.2 (it starts a browser per figure); at a load of about 20,
matplotlib 1.1 / 1.8 / 2.1, kaleido 6.6 / 7.8 / 8.5. And 2 of about 20 kaleido calls
failed (``JavascriptError: kaleido_scopes is not defined``; one was its process's first).
So matplotlib stays, for this one figure.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MarkerGroup", "PairwisePlot", "hypervolume_figure", "import_in_background", "pairwise_plot", "pareto_3d_figure", "pareto_figure", "pareto_png"]


def import_in_background() -> threading.Thread:
    """Import plotly and matplotlib in a background thread, so the plots at a search's end do not import them.

    A search's driver mostly waits on ``Tuner.fit``; rendering the front's
    plots afterwards paid ~1 s of first imports (matplotlib.figure with its
    projections, plotly.graph_objects) on the search's critical path
    (bench/search_overhead.py). Python's per-module import locks make a
    later import in the main thread wait for this one, never run it twice.
    Not a daemon: a process that ends early still finishes the import
    (matplotlib may be writing its font cache the first time).
    """

    def load() -> None:
        import matplotlib.figure  # noqa: F401
        import plotly.graph_objects  # noqa: F401
        import plotly.subplots  # noqa: F401

    thread = threading.Thread(target=load, name="mg-tune-plot-imports")
    thread.start()
    return thread


@dataclass(frozen=True)
class MarkerGroup:
    """Checkpoints drawn alike: the non-dominated ones or the rest."""

    name: str
    rows: pd.DataFrame
    rgba: tuple[int, int, int, float]
    size: int
    """Marker diameter in pixels on a pairwise plot (the 3-D view: ``size_3d``)."""
    size_3d: int

    @property
    def plotly_color(self) -> str:
        return "rgba({}, {}, {}, {})".format(*self.rgba)

    @property
    def matplotlib_color(self) -> tuple[float, float, float, float]:
        r, g, b, a = self.rgba
        return (r / 255, g / 255, b / 255, a)


@dataclass(frozen=True)
class PairwisePlot:
    """Everything the pairwise Pareto plot shows, computed once: :func:`pareto_figure` (plotly) and :func:`pareto_png` (matplotlib) draw it."""

    pairs: list[tuple[str, str]]
    labels: dict[str, str]
    """Axis title of each column plotted: the objective and its direction (``f1 (max)``)."""
    groups: tuple[MarkerGroup, MarkerGroup]
    """The checkpoints off the front, then the front (drawn on top)."""
    title: str
    width: int
    height: int


def pairwise_plot(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]) -> PairwisePlot:
    """The description of the pairwise plot of ``table``: one panel per objective pair (a single objective against ``epoch``)."""
    objectives = list(objectives)
    pairs = [("epoch", objectives[0])] if len(objectives) == 1 else list(itertools.combinations(objectives, 2))
    direction = {name: "max" if up else "min" for name, up in zip(objectives, maximize)}
    labels = {name: f"{name} ({direction[name]})" if name in direction else name for pair in pairs for name in pair}
    on = table["pareto"].astype(bool) if "pareto" in table else pd.Series(False, index=table.index)
    groups = (
        MarkerGroup("checkpoints", table[~on], (120, 120, 120, 0.45), size=6, size_3d=3),
        MarkerGroup("Pareto front", table[on], (220, 20, 60, 1.0), size=10, size_3d=6),  # crimson
    )
    title = f"Pareto front: {int(on.sum())} of {len(table)} checkpoints"
    return PairwisePlot(pairs, labels, groups, title, width=max(460, 420 * len(pairs)), height=420)


def _markers(go_class: Any, group: MarkerGroup, axes: Sequence[str], size: int, **options: Any) -> Any:
    """A plotly scatter (2-D or 3-D by ``go_class``) of ``group`` on ``axes``, with the checkpoint hover text."""
    coordinates = {coord: group.rows[name] for coord, name in zip("xyz", axes)}
    marker = {"color": group.plotly_color, "size": size, "line": {"width": 0.5, "color": "white"}}
    return go_class(**coordinates, mode="markers", name=group.name, marker=marker, **_hover(group.rows, axes), **options)


def pareto_figure(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]):
    """Plotly figure of :func:`pairwise_plot`: one scatter per objective pair (F1–EPG, F1–IoU, EPG–IoU, ...), front in red.

    ``table`` needs the objective columns, ``trial_id``, ``epoch`` and a bool
    ``pareto`` column (as in :attr:`ParetoResult.table`). Hovering a point
    shows its trial, epoch and values.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    plot = pairwise_plot(table, objectives, maximize)
    fig = make_subplots(rows=1, cols=len(plot.pairs), horizontal_spacing=0.08)
    for col, (x, y) in enumerate(plot.pairs, start=1):
        for group in plot.groups:
            fig.add_trace(_markers(go.Scatter, group, (x, y), group.size, legendgroup=group.name, showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text=plot.labels[x], row=1, col=col)
        fig.update_yaxes(title_text=plot.labels[y], row=1, col=col)
    fig.update_layout(title=plot.title, template="plotly_white", height=plot.height, width=plot.width)
    return fig


def _hover(part: pd.DataFrame, axes: Sequence[str]) -> dict[str, Any]:
    """A checkpoint marker's hover text: its trial, epoch and value on each axis (plotly's x, y, z, in order)."""
    values = "".join(f"<br>{name}: %{{{coord}:.4f}}" for name, coord in zip(axes, "xyz"))
    return {
        "customdata": np.stack([part["trial_id"].astype(str), part["epoch"].astype(str)], axis=1) if len(part) else None,
        "hovertemplate": f"trial %{{customdata[0]}}<br>epoch %{{customdata[1]}}{values}<extra></extra>",
    }


def pareto_3d_figure(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]):
    """Plotly 3-D scatter of the first three objectives, front in red (``None`` for fewer than three).

    Same ``table`` columns, groups, colours and hover text as :func:`pareto_figure`.
    """
    import plotly.graph_objects as go

    if len(objectives) < 3:
        return None
    axes = list(objectives[:3])
    plot = pairwise_plot(table, axes, maximize[:3])
    fig = go.Figure([_markers(go.Scatter3d, group, axes, group.size_3d) for group in plot.groups])
    titles = {f"{coord}axis_title": plot.labels[name] for coord, name in zip("xyz", axes)}
    fig.update_layout(title="3-D view", template="plotly_white", height=520, scene=titles)
    return fig


def hypervolume_figure(curve: pd.DataFrame):
    """Plotly step plot of :func:`hypervolume_curve`: normalised hypervolume against trial-epochs."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=curve["trial_epochs"],
            y=curve["hypervolume"],
            mode="lines+markers",
            line={"shape": "hv", "color": "steelblue"},
            marker={"size": 4},
            customdata=np.stack([curve["trial_id"].astype(str), curve["epoch"].astype(str)], axis=1) if len(curve) else None,
            hovertemplate="after %{x} trial-epochs<br>last: trial %{customdata[0]}, epoch %{customdata[1]}<br>hypervolume %{y:.4f}<extra></extra>",
            name="hypervolume",
        )
    )
    fig.update_layout(
        title="Normalised hypervolume over trial-epochs",
        template="plotly_white",
        height=320,
        xaxis_title="trial-epochs",
        yaxis_title="hypervolume",
        yaxis_rangemode="tozero",
    )
    return fig


def pareto_png(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool], path: str | Path) -> Path:
    """:func:`pareto_figure`'s plot as a PNG, drawn by matplotlib from the same :func:`pairwise_plot` (no display needed)."""
    from matplotlib.figure import Figure

    plot = pairwise_plot(table, objectives, maximize)
    dpi = 100
    fig = Figure(figsize=(plot.width / dpi, plot.height / dpi), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(plot.pairs), squeeze=False)[0]
    for ax, (x, y) in zip(axes, plot.pairs):
        for group in plot.groups:
            area = (group.size * 72 / dpi) ** 2  # matplotlib sizes a marker by its area in points²
            ax.scatter(group.rows[x], group.rows[y], s=area, c=[group.matplotlib_color], label=group.name, edgecolors="white", linewidths=0.5)
        ax.set_xlabel(plot.labels[x])
        ax.set_ylabel(plot.labels[y])
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(plot.title)
    path = Path(path)
    fig.savefig(path)
    return path
