"""The papers' findings, measured on the embedded TextBox data (issue 11); results in docs/findings.md.

One subcommand per finding. Each builds a :class:`~mg_tune.search.spec.SearchSpec`
(data + fixed values) and trains its points, one after the other, through
:func:`mg_tune.train.train` — the same ``TrainConfig`` a ``mg-tune search``
trial gets, without Ray or MLflow, so a finding takes minutes on two shared
cores. As in the main paper, guided models are **fine-tuned from a model
trained without guidance** (cached under ``runs/findings/``), and every model
is scored on the test split (IoU threshold from the held-out split). Each
subcommand prints its table and writes ``docs/findings/<finding>.json`` and a
PNG plot::

    python bench/findings.py a            # Energy vs L1: EPG at equal F1
    python bench/findings.py b            # 1 / 10 / 100 % annotations
    python bench/findings.py c            # dilated boxes
    python bench/findings.py d            # guided step time, input vs mid2
    python bench/findings.py e            # worst-group accuracy vs CRAYON
    python bench/findings.py f            # Energy* vs Energy, small vs large boxes
    python bench/findings.py smerf        # SMERF: PAFL / SAFL with and without guidance
    python bench/findings.py original     # only the Original spurious model (textbox_crayon.yaml)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from mg_tune.checkpoint import load_checkpoint
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import build_split
from mg_tune.evaluation import attribution_target, evaluate_checkpoint, evaluate_split, ground_truth_pairs
from mg_tune.guidance import metrics as M
from mg_tune.guidance.attribution import attribute
from mg_tune.guidance.pruning import load_state
from mg_tune.models import build_model
from mg_tune.search.spec import SearchSpec, load_spec
from mg_tune.train import train

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "findings"
OUT = ROOT / "docs" / "findings"
console = Console()

MULTILABEL = {"variant": "multilabel", "train_size": 600, "val_size": 150, "heldout_size": 100, "test_size": 300}
SPURIOUS = {"variant": "spurious", "train_size": 1000, "val_size": 200, "heldout_size": 100, "test_size": 500, "options": {"spurious_rate": 0.95}}
COMMON = {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "batch_size": 32, "overlay_images": 0}
FINETUNE_EPOCHS = 3


# -- running a spec's points ---------------------------------------------------------
def base_model(data: dict[str, Any], epochs: int, name: str, seed: int = 0) -> str:
    """The model trained without guidance that guided runs fine-tune (cached)."""
    folder = RUNS / name
    checkpoint = folder / f"epoch={epochs:03d}" / "checkpoint.pt"
    if not checkpoint.is_file():
        config = TrainConfig(data=DataConfig(**data), epochs=epochs, lam=0.0, seed=seed, **COMMON)
        console.print(f"training the unguided base model {name} ({epochs} epochs)")
        train(config, checkpoint_dir=folder)
    return str(checkpoint)


def run_points(finding: str, spec: SearchSpec, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train every point (fixed values, then the point) and return its test metrics; cached per point."""
    rows = []
    for point in points:
        config = spec.train_config(point)
        digest = hashlib.sha1(config.model_dump_json().encode()).hexdigest()[:8]  # the whole config: no stale cache
        key = re.sub(r"[^A-Za-z0-9=._-]+", "_", "-".join(f"{k}={v}" for k, v in sorted(point.items())))
        folder = RUNS / finding / f"{key}-{digest}"
        checkpoint = folder / f"epoch={config.epochs:03d}" / "checkpoint.pt"
        if not checkpoint.is_file():
            console.print(f"[{finding}] {key}")
            train(config, checkpoint_dir=folder)
        rows.append({**point, "checkpoint": str(checkpoint), **evaluate_checkpoint(str(checkpoint), split="test")})
    return rows


def spec_for(data: dict[str, Any], **fixed: Any) -> SearchSpec:
    return SearchSpec.model_validate({"data": data, "fixed": {**COMMON, **fixed}})


def show(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for row in rows:
        table.add_row(*(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)


def save(finding: str, payload: dict[str, Any], figure: Figure | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{finding}.json").write_text(json.dumps(payload, indent=1, default=str))
    if figure is not None:
        figure.savefig(OUT / f"{finding}.png", dpi=110, bbox_inches="tight")
    console.print(f"wrote {OUT / finding}.json" + (f" and {finding}.png" if figure is not None else ""))


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


# -- (a) Energy vs L1 --------------------------------------------------------------------
LAMBDAS = {"energy": [0.1, 0.3, 1.0, 3.0, 10.0], "l1": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]}


def finding_a(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.1 / Fig. 5: Energy keeps F1 and raises EPG more than L1 at equal F1."""
    init = base_model(MULTILABEL, 8, "base-multilabel")
    spec = spec_for(MULTILABEL, init_checkpoint=init, epochs=FINETUNE_EPOCHS)
    points = [{"loss": "energy", "lam": 0.0}] + [{"loss": loss, "lam": lam} for loss, lams in LAMBDAS.items() for lam in lams]
    rows = run_points("a", spec, points)
    show("(a) Energy vs L1, fine-tuned 3 epochs from the unguided model (test split)", rows, ["loss", "lam", "f1", "epg", "iou"])
    base = rows[0]
    summary = {}
    for loss in LAMBDAS:
        kept = [r for r in rows[1:] if r["loss"] == loss and r["f1"] >= base["f1"] - args.f1_tolerance]
        best = max(kept, key=lambda r: r["epg"]) if kept else None
        summary[loss] = {"max_epg_at_equal_f1": best["epg"] if best else None, "lam": best["lam"] if best else None, "f1": best["f1"] if best else None}
    console.print(f"baseline F1 {base['f1']:.3f} EPG {base['epg']:.3f}; best EPG with F1 >= baseline - {args.f1_tolerance}: {summary}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for loss, marker in (("energy", "o"), ("l1", "s")):
        pts = sorted(((r["f1"], r["epg"], r["lam"]) for r in rows[1:] if r["loss"] == loss), key=lambda p: p[2])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=loss)
        for f1, epg, lam in pts:
            ax.annotate(f"λ={lam:g}", (f1, epg), fontsize=7)
    ax.scatter([base["f1"]], [base["epg"]], c="k", marker="*", s=120, label="unguided", zorder=3)
    ax.set(xlabel="test F1", ylabel="test EPG", title="(a) EPG vs F1: Energy vs L1")
    ax.legend()
    save("a", {"rows": rows, "summary": summary, "f1_tolerance": args.f1_tolerance}, fig)


# -- (b) limited annotations --------------------------------------------------------------
def finding_b(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.4 / Fig. 9: 1 % and 10 % of the boxes recover most of the 100 % effect."""
    init = base_model(MULTILABEL, 8, "base-multilabel")
    spec = spec_for(MULTILABEL, init_checkpoint=init, epochs=FINETUNE_EPOCHS, loss="energy", lam=args.lam)
    fractions = [0.0, 0.01, 0.1, 1.0]
    points = [{"annotation_fraction": f, "seed": s} for f in fractions for s in args.seeds]
    rows = run_points("b", spec, points)
    show(f"(b) Energy λ={args.lam}, share of annotated training images (test split)", rows, ["annotation_fraction", "seed", "f1", "epg", "iou"])
    mean = {f: {m: _mean([r for r in rows if r["annotation_fraction"] == f], m) for m in ("f1", "epg", "iou")} for f in fractions}
    gain = mean[1.0]["epg"] - mean[0.0]["epg"]
    recovered = {f: (mean[f]["epg"] - mean[0.0]["epg"]) / gain if gain else None for f in fractions}
    console.print(f"mean over seeds: {mean}\nshare of the 100 % EPG gain recovered: {recovered}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    xs = [f * 100 for f in fractions[1:]]
    for metric in ("epg", "iou", "f1"):
        ax.plot(xs, [mean[f][metric] for f in fractions[1:]], marker="o", label=metric)
        ax.axhline(mean[0.0][metric], ls=":", c=ax.lines[-1].get_color())
    ax.set(xscale="log", xlabel="annotated training images (%)", ylabel="test metric", title="(b) limited annotations (dotted: unguided)")
    ax.legend()
    save("b", {"rows": rows, "mean": mean, "recovered": recovered, "lam": args.lam}, fig)


# -- (c) dilated boxes --------------------------------------------------------------------
def evaluate_on(checkpoint: str, data: DataConfig, split: str = "test", attribution: str | None = None, layer: str | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on ``split`` of ``data`` (e.g. the undilated boxes), optionally with another attribution/layer."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(state["config"])
    dataset, heldout = build_split(data, split), build_split(data, "heldout")
    model = build_model(config.model, dataset.info.num_classes)
    load_state(model, state["model"])
    common = dict(model=model, method=attribution or config.attribution, layer=layer or config.layer, multilabel=dataset.info.multilabel, group_names=dataset.info.group_names)
    threshold = evaluate_split(loader=DataLoader(heldout, batch_size=128), **common).best_iou_threshold()
    return evaluate_split(loader=DataLoader(dataset, batch_size=128), iou_threshold=threshold, **common).metrics


def finding_c(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.4 / Fig. 10, reproducibility Fig. 5: dilated boxes hurt Energy less than L1."""
    init = base_model(MULTILABEL, 8, "base-multilabel")
    undilated = DataConfig(**MULTILABEL)
    dilations = [0.0, 25.0, 50.0]
    rows = []
    spec = spec_for(MULTILABEL, init_checkpoint=init, epochs=FINETUNE_EPOCHS)
    lams = {"energy": args.lam, "l1": args.l1_lam}  # each loss at its best λ of (a) with F1 kept
    for loss, lam in lams.items():
        for row in run_points("c", spec, [{"loss": loss, "lam": lam, "dilation": d} for d in dilations]):
            rows.append({**row, **{f"{k}_true_box": v for k, v in evaluate_on(row["checkpoint"], undilated).items() if k in ("epg", "iou", "f1")}})
    show(f"(c) trained on dilated boxes, λ={lams}; EPG/IoU against the undilated boxes (test split)", rows, ["loss", "dilation", "f1", "epg_true_box", "iou_true_box"])
    drop = {
        loss: {d: next(r for r in rows if r["loss"] == loss and r["dilation"] == 0.0)["epg_true_box"] - next(r for r in rows if r["loss"] == loss and r["dilation"] == d)["epg_true_box"] for d in dilations}
        for loss in ("energy", "l1")
    }
    console.print(f"EPG lost against the true boxes, relative to undilated training: {drop}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for loss, marker in (("energy", "o"), ("l1", "s")):
        ax.plot(dilations, [next(r for r in rows if r["loss"] == loss and r["dilation"] == d)["epg_true_box"] for d in dilations], marker=marker, label=loss)
    ax.set(xlabel="box dilation during training (%)", ylabel="test EPG (undilated boxes)", title="(c) dilated boxes")
    ax.legend()
    save("c", {"rows": rows, "epg_drop": drop, "lam": lams}, fig)


# -- (d) cost per step -----------------------------------------------------------------------
def finding_d(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.2: guidance at mid2 is cheaper per step than at the input (bench/guided_step.py)."""
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "d-guided-step.json"
    command = [sys.executable, str(ROOT / "bench" / "guided_step.py"), "--families", "smerf", "--methods", "ixg", "gradcam", "--layers", "input", "mid2", "--threads", "1", "--json", str(out)]
    subprocess.run(command, check=True)
    rows = json.loads(out.read_text())["rows"]
    by = {(r["model"], r["method"], r["layer"]): r for r in rows}
    ratios = []
    for (model, method, layer), r in by.items():
        if layer == "input" and (model, method, "mid2") in by:
            mid = by[(model, method, "mid2")]
            ratios.append({
                "model": model, "method": method, "guided_ms_input": r["guided_ms"], "guided_ms_mid2": mid["guided_ms"],
                "input_over_mid2": r["guided_ms"] / mid["guided_ms"], "cpu_input_over_mid2": r["guided_cpu_ms"] / mid["guided_cpu_ms"],
            })
    show("(d) guided step time, input vs mid2 (batch 32, 64 px, 1 thread)", ratios, ["model", "method", "guided_ms_input", "guided_ms_mid2", "input_over_mid2", "cpu_input_over_mid2"])
    save("d", {"ratios": ratios, "command": " ".join(command[1:])})


# -- (e) worst-group accuracy vs CRAYON ---------------------------------------------------------
def finding_e(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.5 and CRAYON Table I on spurious TextBox: guidance vs unguided vs CRAYON."""
    original = base_model(SPURIOUS, 10, "textbox-original")
    annotated = {**SPURIOUS, "annotation_fraction": args.fraction}
    epochs = 4
    spec = spec_for(annotated, init_checkpoint=original, epochs=epochs)
    crayon = {"loss": "crayon_attention", "loss_params": {"alpha": 1e-3, "beta": 1e-3}}  # ≈ 1/(H·W): eqs. 1-2 sum over 64x64 pixels
    methods = {
        "unguided (more epochs)": {"lam": 0.0},
        "energy λ=1": {"loss": "energy", "lam": 1.0},
        "l1 λ=1": {"loss": "l1", "lam": 1.0},
        **{f"CRAYON-Attention λ={lam:g}": {**crayon, "lam": lam} for lam in args.crayon_lams},
        **{f"CRAYON-Pruning {p:.0%}": {"prune_fraction": p, "prune_finetune_epochs": epochs} for p in args.prune_fractions},
        **{f"CRAYON-Pruning {p:.0%}+Attention λ={lam:g}": {**crayon, "lam": lam, "prune_fraction": p} for p in args.prune_fractions[1:2] for lam in args.crayon_lams[-1:]},
    }
    rows = []
    for seed in args.seeds:
        for name, point in methods.items():
            (row,) = run_points("e", spec, [{**point, "seed": seed}])
            rows.append({"method": name, **row})
    original_metrics = evaluate_checkpoint(original, split="test")
    rows.insert(0, {"method": "Original (unguided, 10 epochs)", "seed": 0, **original_metrics})
    show(f"(e) spurious TextBox, {args.fraction:.0%} annotated, fine-tuned {epochs} epochs from the Original model (test split)", rows, ["method", "seed", "worst_group_acc", "mean_group_acc", "accuracy", "epg"])
    means = {name: {m: _mean([r for r in rows if r["method"] == name], m) for m in ("worst_group_acc", "mean_group_acc", "accuracy", "epg")} for name in dict.fromkeys(r["method"] for r in rows)}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    names = list(means)
    ax.barh(names, [means[n]["worst_group_acc"] for n in names], label="worst-group")
    ax.scatter([means[n]["accuracy"] for n in names], names, c="k", marker="|", s=200, label="overall", zorder=3)
    ax.set(xlabel="test accuracy", xlim=(0, 1), title="(e) spurious TextBox: worst-group (bars) and overall (|) accuracy")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    save("e", {"rows": rows, "means": means, "fraction": args.fraction, "prune_fractions": args.prune_fractions, "crayon_lams": args.crayon_lams}, fig)


# -- (f) Energy* vs Energy --------------------------------------------------------------------------
@torch.no_grad()
def epg_by_class(checkpoint: str, split: str = "test") -> dict[str, float]:
    """Mean EPG per class of the multi-label TextBox (Box2 4x4 px, Box1 10x10, letters 15x21)."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(state["config"])
    dataset = build_split(config.data, split)
    model = build_model(config.model, dataset.info.num_classes)
    load_state(model, state["model"])
    model.eval()
    sums = torch.zeros(dataset.info.num_classes)
    counts = torch.zeros(dataset.info.num_classes)
    for batch in DataLoader(dataset, batch_size=128):
        rows, classes = ground_truth_pairs(batch["labels"], True)
        with torch.enable_grad():
            maps = attribute(model, batch["image"][rows], classes, config.attribution, config.layer, size=(64, 64), target=attribution_target(True)).maps
        scores = M.epg(maps.detach(), batch["masks"][rows, classes])
        sums.index_add_(0, classes, scores)
        counts.index_add_(0, classes, torch.ones_like(scores))
    return {name: float(sums[k] / counts[k]) for k, name in enumerate(dataset.info.class_names)}


def finding_f(args: argparse.Namespace) -> None:
    """Reproducibility study Sec. 4.2 / Fig. 6: Energy* (α = 0.5) vs Energy on small and large boxes."""
    init = base_model(MULTILABEL, 8, "base-multilabel")
    spec = spec_for(MULTILABEL, init_checkpoint=init, epochs=FINETUNE_EPOCHS, lam=args.lam)
    points = [{"loss": loss, "seed": s} for loss in ("energy", "energy_star") for s in args.seeds]
    rows = [{**r, **{f"epg_{k}": v for k, v in epg_by_class(r["checkpoint"]).items()}} for r in run_points("f", spec, points)]
    columns = ["epg_Box2", "epg_Box1", "epg_A", "epg_B"]
    show(f"(f) Energy vs Energy* (α=0.5), λ={args.lam}; EPG per class: Box2 16 px² … letters 315 px² (test split)", rows, ["loss", "seed", "f1", "epg", *columns])
    means = {loss: {m: _mean([r for r in rows if r["loss"] == loss], m) for m in ("f1", "epg", *columns)} for loss in ("energy", "energy_star")}
    base = {"f1": evaluate_checkpoint(init, split="test")["f1"], **{f"epg_{k}": v for k, v in epg_by_class(init).items()}}
    console.print(f"means: {means}\nunguided: {base}")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    xs = range(len(columns))
    for i, (name, values) in enumerate((("unguided", base), ("energy", means["energy"]), ("energy*", means["energy_star"]))):
        ax.bar([x + 0.27 * (i - 1) for x in xs], [values[c] for c in columns], width=0.27, label=name)
    ax.set_xticks(list(xs), ["Box2\n16 px²", "Box1\n100 px²", "A\n315 px²", "B\n315 px²"])
    ax.set(ylabel="test EPG", title="(f) EPG per box size: Energy vs Energy*")
    ax.legend()
    save("f", {"rows": rows, "means": means, "unguided": base, "lam": args.lam}, fig)


# -- SMERF: attribution focus with and without guidance ---------------------------------------------
PAIRS = [("ixg", "input"), ("gradcam", "final")]


def finding_smerf(args: argparse.Namespace) -> None:
    """SMERF Fig. 6-8 with the shipped specs' settings: PAFL / SAFL of each attribution, unguided vs guided.

    The unguided model (``--smerf-epochs``) is scored with every attribution; each
    guided model fine-tunes it for 3 epochs with Energy into the objects to focus.
    """
    rows = []
    for setting in args.settings:
        spec, _ = load_spec(ROOT / "search_spaces" / f"smerf_{setting}.yaml")
        data = spec.data.model_copy(update={"train_size": 2000, "val_size": 100, "heldout_size": 50, "test_size": 300})
        fixed = {**spec.fixed, "batch_size": 32, "overlay_images": 0, "attribution": "ixg", "layer": "input"}
        base_spec = spec.model_copy(update={"data": data, "fixed": {**fixed, "epochs": args.smerf_epochs, "lam": 0.0}})
        (base,) = run_points(f"smerf-{setting}", base_spec, [{"annotation_fraction": 0.0}])
        tuned = spec.model_copy(update={"data": data, "fixed": {**fixed, "init_checkpoint": base["checkpoint"], "epochs": 3, "lam": args.lam}})
        for attribution, layer in PAIRS:
            rows.append({"setting": setting, "attribution": attribution, "layer": layer, "guided": False, **evaluate_on(base["checkpoint"], data, attribution=attribution, layer=layer)})
            (row,) = run_points(f"smerf-{setting}", tuned, [{"annotation_fraction": 1.0, "attribution": attribution, "layer": layer}])
            rows.append({"setting": setting, "guided": True, **row})
    show(f"SMERF settings: unguided ({args.smerf_epochs} epochs) vs + 3 epochs Energy λ={args.lam} into the objects to focus (test split)", rows, ["setting", "attribution", "layer", "guided", "accuracy", "pafl", "safl"])
    fig = Figure(figsize=(4.5 * len(args.settings), 3.8))
    axes = fig.subplots(1, len(args.settings), sharey=True, squeeze=False)[0]
    for ax, setting in zip(axes, args.settings):
        mine = [r for r in rows if r["setting"] == setting]
        labels = [f"{r['attribution']}@{r['layer']}\n{'guided' if r['guided'] else 'unguided'}" for r in mine]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], [r["pafl"] for r in mine], width=0.4, label="PAFL (focus)")
        ax.bar([x + 0.2 for x in xs], [r["safl"] for r in mine], width=0.4, label="SAFL (avoid)")
        ax.axhline(0.5, c="k", ls=":")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_title(setting)
    axes[0].set_ylabel("test attribution focus level")
    axes[0].legend(fontsize=7)
    save("smerf", {"rows": rows, "epochs": args.smerf_epochs, "lam": args.lam}, fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("finding", choices=["a", "b", "c", "d", "e", "f", "smerf", "original"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lam", type=float, default=1.0, help="λ of Energy (b, c, f) and L1 (c)")
    p.add_argument("--settings", nargs="+", default=["simple_fr", "complex_cr2"], help="(smerf): SMERF settings")
    p.add_argument("--smerf-epochs", type=int, default=8, help="(smerf): epochs of the unguided model")
    p.add_argument("--l1-lam", type=float, default=30.0, help="λ of L1 (c)")
    p.add_argument("--f1-tolerance", type=float, default=0.02, help="(a): 'equal F1' = within this of the unguided F1")
    p.add_argument("--fraction", type=float, default=0.1, help="(e): annotated share of the training images")
    p.add_argument("--prune-fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="(e): CRAYON-Pruning shares of neurons")
    p.add_argument("--crayon-lams", type=float, nargs="+", default=[1.0, 10.0], help="(e): λ of CRAYON-Attention (α = β = 1e-3)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.finding == "original":
        console.print(base_model(SPURIOUS, 10, "textbox-original"))
    else:
        globals()[f"finding_{args.finding}"](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
