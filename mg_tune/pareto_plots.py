"""Figures of a search's checkpoints: pairwise Pareto plots, the 3-D view, hypervolume over trial-epochs, the PNG.

Tables in, figures out (plotly; the PNG with matplotlib): what the Pareto
report (:func:`mg_tune.front.report_html`) and the dashboard draw.
A table is a :func:`mg_tune.front.checkpoint_table` with its bool
``pareto`` column (:func:`mg_tune.front.mark_pareto`); a curve is a
:func:`mg_tune.front.hypervolume_curve`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["hypervolume_figure", "pareto_3d_figure", "pareto_figure", "pareto_png"]


def _pairs(objectives: Sequence[str]) -> list[tuple[str, str]]:
    """Objective pairs to plot; a single objective is plotted against ``epoch``."""
    if len(objectives) == 1:
        return [("epoch", objectives[0])]
    return list(itertools.combinations(objectives, 2))


def _label(name: str, objectives: Sequence[str], maximize: Sequence[bool]) -> str:
    if name not in objectives:
        return name
    return f"{name} ({'max' if maximize[list(objectives).index(name)] else 'min'})"


def pareto_figure(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]):
    """Plotly figure: one scatter per objective pair (F1–EPG, F1–IoU, EPG–IoU, ...), front in red.

    ``table`` needs the objective columns, ``trial_id``, ``epoch`` and a bool
    ``pareto`` column (as in :attr:`ParetoResult.table`). Hovering a point
    shows its trial, epoch and values.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = _pairs(objectives)
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)
    on = _on_front(table)
    for col, (x, y) in enumerate(pairs, start=1):
        for mask, name, color, size in ((~on, "checkpoints", "rgba(120,120,120,0.45)", 6), (on, "Pareto front", "crimson", 10)):
            part = table[mask]
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part[y],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker={"color": color, "size": size, "line": {"width": 0.5, "color": "white"}},
                    **_hover(part, (x, y)),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=_label(x, objectives, maximize), row=1, col=col)
        fig.update_yaxes(title_text=_label(y, objectives, maximize), row=1, col=col)
    n_front = int(on.sum())
    fig.update_layout(
        title=f"Pareto front: {n_front} of {len(table)} checkpoints",
        template="plotly_white",
        height=420,
        width=max(460, 420 * len(pairs)),
    )
    return fig


def _hover(part: pd.DataFrame, axes: Sequence[str]) -> dict[str, Any]:
    """A checkpoint marker's hover text: its trial, epoch and value on each axis (plotly's x, y, z, in order)."""
    values = "".join(f"<br>{name}: %{{{coord}:.4f}}" for name, coord in zip(axes, "xyz"))
    return {
        "customdata": np.stack([part["trial_id"].astype(str), part["epoch"].astype(str)], axis=1) if len(part) else None,
        "hovertemplate": f"trial %{{customdata[0]}}<br>epoch %{{customdata[1]}}{values}<extra></extra>",
    }


def _on_front(table: pd.DataFrame) -> pd.Series:
    """The ``pareto`` column as booleans (all False when the table has none)."""
    return table["pareto"].astype(bool) if "pareto" in table else pd.Series(False, index=table.index)


def pareto_3d_figure(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]):
    """Plotly 3-D scatter of the first three objectives, front in red (``None`` for fewer than three).

    Same ``table`` columns and hover text as :func:`pareto_figure`.
    """
    import plotly.graph_objects as go

    if len(objectives) < 3:
        return None
    x, y, z = objectives[:3]
    on = _on_front(table)
    fig = go.Figure()
    for mask, name, color, size in ((~on, "checkpoints", "rgba(120,120,120,0.45)", 3), (on, "Pareto front", "crimson", 6)):
        part = table[mask]
        fig.add_trace(
            go.Scatter3d(
                x=part[x],
                y=part[y],
                z=part[z],
                mode="markers",
                name=name,
                marker={"color": color, "size": size},
                **_hover(part, (x, y, z)),
            )
        )
    fig.update_layout(
        title="3-D view",
        template="plotly_white",
        height=520,
        scene={"xaxis_title": _label(x, objectives, maximize), "yaxis_title": _label(y, objectives, maximize), "zaxis_title": _label(z, objectives, maximize)},
    )
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
    """The same pairwise plot as :func:`pareto_figure`, as a PNG (matplotlib, no display needed)."""
    from matplotlib.figure import Figure

    pairs = _pairs(objectives)
    fig = Figure(figsize=(4.2 * len(pairs), 4.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    on = table["pareto"].astype(bool).to_numpy() if "pareto" in table else np.zeros(len(table), bool)
    for ax, (x, y) in zip(axes, pairs):
        ax.scatter(table[x][~on], table[y][~on], s=12, c="0.55", alpha=0.5, label="checkpoints", linewidths=0)
        ax.scatter(table[x][on], table[y][on], s=30, c="crimson", label="Pareto front", edgecolors="white", linewidths=0.5)
        ax.set_xlabel(_label(x, objectives, maximize))
        ax.set_ylabel(_label(y, objectives, maximize))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"Pareto front: {int(on.sum())} of {len(table)} checkpoints")
    path = Path(path)
    fig.savefig(path)
    return path
