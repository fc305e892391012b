"""The papers' findings, produced by mg-tune searches and read back from MLflow (issues 11, 17); docs/findings.md.

Every finding is one or more ``mg-tune search`` specs in ``search_spaces/findings/``
(``sampler: grid``; seeds are a searched ``choice``). For each spec this script

1. resolves its ``init_checkpoint`` (a path relative to the repository root,
   written by an earlier base-model spec) and runs ``mg-tune search`` on it
   (subprocess: the CLI users run), all searches sharing one MLflow store
   ``runs/findings/mlflow.db``; a search already FINISHED there is not rerun;
2. reads the search's checkpoints back from MLflow
   (:func:`mg_tune.front.checkpoint_table`), downloads the final
   epoch's checkpoint of every trial and scores it on the **test split** of the
   spec's data as given (undilated boxes, every image annotated; the IoU
   threshold is chosen on the held-out split);
3. prints mean ± 95 % t-interval over the seeds (``bench/stats.py``) of every
   configuration as a markdown table and writes ``docs/findings/<finding>.json``
   and a plot.

As in the main paper, guided models are fine-tuned from a model trained without
guidance (``base_*.yaml``, ``*_original.yaml``, ``smerf_*_base.yaml``; one model,
seed 0, copied to ``runs/findings/<name>.pt``), so the seeds vary the
fine-tuning (shuffling, drawn classes) and differences come from the guidance::

    python bench/findings.py all      # a, c, b, f, e, e_budget, smerf (d is a timing benchmark, below)
    python bench/findings.py a        # Energy vs L1: EPG at equal F1
    python bench/findings.py b        # 1 / 10 / 100 % annotations
    python bench/findings.py c        # dilated boxes, textured backgrounds
    python bench/findings.py d        # guided step time, input vs mid2 (bench/guided_step.py)
    python bench/findings.py e        # worst-group accuracy: guidance vs unguided vs CRAYON-Attention
    python bench/findings.py e_budget # (e) at the first run's budget (1,000 images, 10 + 4 epochs), 3 seeds
    python bench/findings.py f        # Energy* vs Energy, small vs large boxes
    python bench/findings.py smerf    # SMERF: PAFL / SAFL with and without guidance
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure
from mlflow import MlflowClient
from torch.utils.data import DataLoader

from mg_tune.checkpoint import load_checkpoint
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import build_split
from mg_tune.split_eval import attribution_target, evaluate_split, ground_truth_pairs
from mg_tune.guidance import metrics as M
from mg_tune.guidance.attribution import attribute
from mg_tune.guidance.pruning import load_state
from mg_tune.models import build_model
from mg_tune.front import checkpoint_table
from mg_tune.search.spec import load_spec
from mg_tune.tracking import download_checkpoint, experiment_name, find_search_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import fmt_ci, mean_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "search_spaces" / "findings"
RUNS = ROOT / "runs" / "findings"
OUT = ROOT / "docs" / "findings"
URI = f"sqlite:///{RUNS / 'mlflow.db'}"
MG_TUNE = Path(sys.executable).parent / "mg-tune"


# -- running specs and reading them back ------------------------------------------------
def _finished(name: str) -> bool:
    client = MlflowClient(URI)
    experiment = client.get_experiment_by_name(experiment_name(name))
    run = find_search_run(client, experiment.experiment_id) if experiment else None
    return run is not None and run.info.status == "FINISHED"


def search(stem: str) -> list[dict[str, Any]]:
    """Run ``search_spaces/findings/<stem>.yaml`` (unless finished) and return one row per trial:
    the trial's params, its final validation metrics (``val_*``), test metrics and the local checkpoint."""
    raw = yaml.safe_load((SPECS / f"{stem}.yaml").read_text())
    if raw.get("fixed", {}).get("init_checkpoint"):
        raw["fixed"]["init_checkpoint"] = str(ROOT / raw["fixed"]["init_checkpoint"])
    name = raw["name"]
    RUNS.mkdir(parents=True, exist_ok=True)
    resolved = RUNS / "specs" / f"{stem}.yaml"
    resolved.parent.mkdir(exist_ok=True)
    resolved.write_text(yaml.safe_dump(raw, sort_keys=False))
    while subprocess.run(["pgrep", "-f", f"mg-tune search {resolved}"], capture_output=True).returncode == 0:
        time.sleep(15)  # an earlier run of this script is still running the search: wait for it
    if not _finished(name):
        command = [str(MG_TUNE), "search", str(resolved), "--tracking-uri", URI, "--storage-path", str(RUNS / "ray"), "--address", "local"]
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    spec, _ = load_spec(resolved)
    table = checkpoint_table(URI, name)
    final = table.loc[table.groupby("trial_id")["epoch"].idxmax()]
    rows = []
    for record in final.to_dict("records"):
        params = {k.removeprefix("params."): v for k, v in record.items() if k.startswith("params.")}
        checkpoint = RUNS / "checkpoints" / name / f"{record['trial_id']}.pt"
        if not checkpoint.is_file():
            download_checkpoint(URI, record["run_id"], int(record["epoch"]), checkpoint)
        cached = checkpoint.with_suffix(".test.json")
        if not cached.is_file():
            cached.write_text(json.dumps(evaluate_on(str(checkpoint), spec.data)))
        val = {f"val_{m}": record[m] for m in ("f1", "epg", "iou", "accuracy", "worst_group_acc", "pafl", "safl") if m in record}
        rows.append({"search": name, "trial_id": record["trial_id"], "checkpoint": str(checkpoint), **params, **val, **json.loads(cached.read_text())})
    return sorted(rows, key=lambda r: r["trial_id"])


def base(stem: str, dest: str) -> list[dict[str, Any]]:
    """A one-trial base-model spec; its final checkpoint copied to ``runs/findings/<dest>.pt``."""
    (row,) = search(stem)
    shutil.copyfile(row["checkpoint"], RUNS / f"{dest}.pt")
    return [row]


def evaluate_on(checkpoint: str, data: DataConfig, split: str = "test", attribution: str | None = None, layer: str | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on ``split`` of ``data`` (IoU threshold from its held-out split), optionally with another attribution/layer."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(state["config"])
    dataset, heldout = build_split(data, split), build_split(data, "heldout")
    model = build_model(config.model, dataset.info.num_classes)
    load_state(model, state["model"])
    common = dict(model=model, method=attribution or config.attribution, layer=layer or config.layer, multilabel=dataset.info.multilabel, group_names=dataset.info.group_names, smerf=dataset.info.smerf)
    threshold = evaluate_split(loader=DataLoader(heldout, batch_size=128), **common).best_iou_threshold()
    return evaluate_split(loader=DataLoader(dataset, batch_size=128), iou_threshold=threshold, **common).metrics


# -- tables ----------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], by: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """Mean ± 95 % t-interval of ``metrics`` over the rows (seeds) of each ``by`` group, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        entry = {**dict(zip(by, key)), "seeds": len(members)}
        for m in metrics:
            mean, half = mean_ci([float(r[m]) for r in members])
            entry[m], entry[f"{m}_ci"] = mean, half
        out.append(entry)
    return out


def markdown(title: str, summary: list[dict[str, Any]], by: list[str], metrics: list[str]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(by + ["seeds"] + metrics) + " |", "|" + "---|" * (len(by) + 1 + len(metrics))]
    for e in summary:
        cells = [f"{e[k]:g}" if isinstance(e[k], float) else str(e[k]) for k in by] + [str(e["seeds"])]
        cells += [f"{e[m]:.3f} ± {e[m + '_ci']:.3f}" if e["seeds"] > 1 else f"{e[m]:.3f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def save(finding: str, payload: dict[str, Any], figure: Figure | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{finding}.json").write_text(json.dumps(payload, indent=1, default=str))
    if figure is not None:
        figure.savefig(OUT / f"{finding}.png", dpi=110, bbox_inches="tight")
    print(f"wrote {OUT / finding}.json" + (" and .png" if figure is not None else ""), flush=True)


def errorbar(ax, summary: list[dict[str, Any]], x: str, y: str, **kwargs: Any) -> None:
    ax.errorbar([e[x] for e in summary], [e[y] for e in summary], xerr=[e.get(f"{x}_ci", 0) for e in summary], yerr=[e[f"{y}_ci"] for e in summary], capsize=3, **kwargs)


def multilabel_reference() -> list[dict[str, Any]]:
    base("base_multilabel", "base-multilabel")
    return [{**r, "loss": "none", "lam": 0.0} for r in search("unguided_multilabel")]


def energy_full() -> list[dict[str, Any]]:
    """The Energy λ = 5e-2 trials of (a): all images annotated; (b)'s 100 % and (f)'s Energy."""
    return [r for r in search("a_energy_vs_l1") if r["loss"] == "energy" and r["lam"] == 5e-2]


# -- (a) Energy vs L1 --------------------------------------------------------------------------
def finding_a(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.1 / Fig. 5: Energy raises EPG more than L1 at equal F1."""
    rows = multilabel_reference() + search("a_energy_vs_l1")
    metrics = ["f1", "epg", "iou"]
    order = {"none": 0, "energy": 1, "l1": 2}
    summary = sorted(summarize(rows, ["loss", "lam"], metrics), key=lambda e: (order[e["loss"]], e["lam"]))
    table = markdown("(a) test F1 / EPG / IoU, mean ± 95 % CI over 3 seeds", summary, ["loss", "lam"], metrics)
    reference = summary[0]
    best = {}
    for loss in ("energy", "l1"):
        kept = [e for e in summary if e["loss"] == loss and e["f1"] >= reference["f1"] - args.f1_tolerance]
        best[loss] = max(kept, key=lambda e: e["epg"]) if kept else None
    print(f"best EPG with mean F1 >= unguided - {args.f1_tolerance}: {json.dumps(best, default=str)}")
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for loss, marker in (("energy", "o"), ("l1", "s")):
        mine = [e for e in summary if e["loss"] == loss]
        errorbar(ax, mine, "f1", "epg", marker=marker, label=loss)
        for e in mine:
            ax.annotate(f"λ={e['lam']:g}", (e["f1"], e["epg"]), fontsize=7)
    errorbar(ax, [reference], "f1", "epg", marker="*", c="k", ms=12, ls="", label="unguided")
    ax.set(xlabel="test F1", ylabel="test EPG", title="(a) Energy vs L1 (mean ± 95 % CI, 3 seeds)")
    ax.legend()
    save("a", {"rows": rows, "summary": summary, "best_at_equal_f1": best, "f1_tolerance": args.f1_tolerance, "table": table}, fig)


# -- (b) limited annotations ---------------------------------------------------------------------
def finding_b(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.4 / Fig. 9: 1 % and 10 % of the boxes recover most of the 100 % effect."""
    rows = [{**r, "annotation_fraction": 0.0} for r in multilabel_reference()] + search("b_limited")
    rows += [{**r, "annotation_fraction": 1.0} for r in energy_full()]
    metrics = ["f1", "epg", "iou"]
    summary = sorted(summarize(rows, ["annotation_fraction"], metrics), key=lambda e: e["annotation_fraction"])
    table = markdown("(b) Energy λ = 5e-2 (sum over the annotated images of a batch), test split", summary, ["annotation_fraction"], metrics)
    by = {e["annotation_fraction"]: e for e in summary}
    gain = by[1.0]["epg"] - by[0.0]["epg"]
    recovered = {f: (e["epg"] - by[0.0]["epg"]) / gain if gain else None for f, e in by.items()}
    print(f"share of the 100 % EPG gain recovered: {recovered}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    guided = [e for e in summary if e["annotation_fraction"] > 0]
    for metric in metrics:
        ax.errorbar([e["annotation_fraction"] * 100 for e in guided], [e[metric] for e in guided], yerr=[e[f"{metric}_ci"] for e in guided], marker="o", capsize=3, label=metric)
        ax.axhline(by[0.0][metric], ls=":", c=ax.lines[-1].get_color())
    ax.set(xscale="log", xlabel="annotated training images (%)", ylabel="test metric", title="(b) limited annotations (dotted: unguided)")
    ax.legend()
    save("b", {"rows": rows, "summary": summary, "recovered": recovered, "table": table}, fig)


# -- (c) dilated boxes on textures ----------------------------------------------------------------
def finding_c(args: argparse.Namespace) -> None:
    """Main paper Fig. 10, reproducibility Fig. 5: dilated boxes hurt Energy less than L1 (textured TextBox)."""
    base("base_textured", "base-textured")
    rows = search("c_dilated_textured")
    metrics = ["f1", "epg", "iou"]
    summary = sorted(summarize(rows, ["loss", "dilation"], metrics), key=lambda e: (e["loss"], e["dilation"]))
    table = markdown("(c) trained on dilated boxes, scored against the undilated test boxes (textured backgrounds)", summary, ["loss", "dilation"], metrics)
    drop = {}
    dilations = sorted({r["dilation"] for r in rows})
    for loss in ("energy", "l1"):
        per_seed = {d: {r["seed"]: r["epg"] for r in rows if r["loss"] == loss and r["dilation"] == d} for d in dilations}
        drop[loss] = {d: mean_ci([per_seed[0.0][s] - per_seed[d][s] for s in per_seed[d]]) for d in dilations[1:]}
    print(f"EPG lost against the true boxes vs undilated training (mean, CI half-width; paired by seed): {drop}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for loss, marker in (("energy", "o"), ("l1", "s")):
        mine = [e for e in summary if e["loss"] == loss]
        ax.errorbar([e["dilation"] for e in mine], [e["epg"] for e in mine], yerr=[e["epg_ci"] for e in mine], marker=marker, capsize=3, label=loss)
    ax.set(xlabel="box dilation during training (% of the box size per side)", ylabel="test EPG (undilated boxes)", title="(c) dilated boxes, textured TextBox")
    ax.legend()
    save("c", {"rows": rows, "summary": summary, "epg_drop_paired": drop, "table": table}, fig)


# -- (d) cost per step ----------------------------------------------------------------------------
def finding_d(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.2: guidance at mid2 is cheaper per step than at the input (a timing benchmark, not a search)."""
    out = OUT / "d-guided-step.json"
    OUT.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "bench" / "guided_step.py"), "--families", "smerf", "--methods", "ixg", "gradcam", "--layers", "input", "mid2", "--threads", "1", "--json", str(out)]
    subprocess.run(command, check=True)
    rows = json.loads(out.read_text())["rows"]
    # mean ± 95 % t-interval over the timing rounds (round r of the input row vs round r of the mid2 row)
    summary = []
    for method in ("ixg", "gradcam"):
        by_layer = {r["layer"]: r["rounds_wall_ms"]["guided[none]"] for r in rows if r["method"] == method and r["lever"] == "none"}
        summary.append({"method": method, "seeds": len(by_layer["input"]),
                        **dict(zip(("input_ms", "input_ms_ci"), mean_ci(by_layer["input"]))),
                        **dict(zip(("mid2_ms", "mid2_ms_ci"), mean_ci(by_layer["mid2"]))),
                        **dict(zip(("input_over_mid2", "input_over_mid2_ci"), mean_ci([a / b for a, b in zip(by_layer["input"], by_layer["mid2"])])))})
    table = markdown("(d) guided ms per step, smerf_cnn, batch 32, 64 px, 1 thread (rounds as seeds)", summary, ["method"], ["input_ms", "mid2_ms", "input_over_mid2"])
    save("d", {"command": " ".join(command[1:]), "rows": rows, "summary": summary, "table": table})


# -- (e) worst-group accuracy ------------------------------------------------------------------
def worst_group(key: str, original: tuple[str, str, str], methods: list[tuple[str, str]], title: str) -> None:
    """One worst-group comparison: the Original (``(stem, dest, label)``), then each ``(stem, label)`` fine-tuned from it."""
    stem, dest, label = original
    rows = [{**r, "method": label} for r in base(stem, dest)]
    for method_stem, method_label in methods:
        rows += [{**r, "method": method_label} for r in search(method_stem)]
    metrics = ["worst_group_acc", "mean_group_acc", "accuracy", "epg"]
    summary = summarize(rows, ["method"], metrics)
    table = markdown(title, summary, ["method"], metrics)
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    names = [e["method"] for e in summary]
    ax.barh(names, [e["worst_group_acc"] for e in summary], xerr=[0 if e["seeds"] < 2 else e["worst_group_acc_ci"] for e in summary], capsize=3, label="worst-group")
    ax.scatter([e["accuracy"] for e in summary], names, c="k", marker="|", s=200, label="overall", zorder=3)
    ax.set(xlabel="test accuracy", xlim=(0, 1), title=f"({key}) worst-group (bars, 95 % CI) and overall (|) accuracy")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    save(key, {"rows": rows, "summary": summary, "table": table}, fig)


def finding_e(args: argparse.Namespace) -> None:
    """Main paper Sec. 5.5 and CRAYON Table I on the spurious TextBox: guidance vs unguided vs CRAYON-Attention."""
    worst_group(
        "e",
        ("e_original", "e-original", "Original (unguided, 6 epochs)"),
        [("e_unguided", "unguided, 3 more epochs"), ("e_guidance", "Energy, λ = 0.3"), ("e_crayon", "CRAYON-Attention, λ = 1 (mean)")],
        "(e) spurious TextBox, 10 % annotated, fine-tuned 3 epochs from the Original (test split)",
    )


def finding_e_budget(args: argparse.Namespace) -> None:
    """(e) at the budget of the first, one-seed run (1,000 images, a 10-epoch Original, 4 epochs on 100 annotated images), 3 seeds."""
    worst_group(
        "e_budget",
        ("e_budget_original", "e-budget-original", "Original (unguided, 10 epochs, 1,000 images)"),
        [("e_budget_unguided", "unguided, 4 more epochs"), ("e_budget_guidance", "Energy, λ = 0.3"), ("e_budget_crayon", "CRAYON-Attention, λ = 1 (mean)")],
        "(e) at the earlier budget: spurious TextBox, 1,000 images, 10 % annotated, fine-tuned 4 epochs from the Original (test split)",
    )


# -- (f) Energy* vs Energy --------------------------------------------------------------------------
@torch.no_grad()
def epg_by_class(checkpoint: str, data: DataConfig, split: str = "test") -> dict[str, float]:
    """Mean EPG per class of the multi-label TextBox (Box2 4x4 px, Box1 10x10, letters 15x21)."""
    config = TrainConfig.model_validate(load_checkpoint(checkpoint)["config"])
    dataset = build_split(data, split)
    model = build_model(config.model, dataset.info.num_classes)
    load_state(model, load_checkpoint(checkpoint)["model"])
    model.eval()
    sums, counts = torch.zeros(dataset.info.num_classes), torch.zeros(dataset.info.num_classes)
    for batch in DataLoader(dataset, batch_size=128):
        rows, classes = ground_truth_pairs(batch["labels"], True)
        with torch.enable_grad():
            maps = attribute(model, batch["image"][rows], classes, config.attribution, config.layer, size=(64, 64), target=attribution_target(True)).maps
        scores = M.epg(maps.detach(), batch["masks"][rows, classes])
        sums.index_add_(0, classes, scores)
        counts.index_add_(0, classes, torch.ones_like(scores))
    return {f"epg_{name}": float(sums[k] / counts[k]) for k, name in enumerate(dataset.info.class_names)}


def finding_f(args: argparse.Namespace) -> None:
    """Reproducibility study Sec. 4.2 / Fig. 6: Energy* (α = 0.5) vs Energy on small and large boxes."""
    data = load_spec(SPECS / "f_energy_star.yaml")[0].data
    rows = [{**r, **epg_by_class(r["checkpoint"], data)} for r in multilabel_reference() + energy_full() + [{**r, "loss": "energy_star"} for r in search("f_energy_star")]]
    columns = ["f1", "epg", "epg_Box2", "epg_Box1", "epg_A", "epg_B"]
    summary = summarize(rows, ["loss"], columns)
    table = markdown("(f) Energy vs Energy* (α = 0.5), λ = 5e-2; EPG per class: Box2 16 px² … letters 315 px² (test split)", summary, ["loss"], columns)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    xs = range(4)
    for i, e in enumerate(summary):
        ax.bar([x + 0.27 * (i - 1) for x in xs], [e[c] for c in columns[2:]], yerr=[e[f"{c}_ci"] for c in columns[2:]], capsize=2, width=0.27, label=e["loss"])
    ax.set_xticks(list(xs), ["Box2\n16 px²", "Box1\n100 px²", "A\n315 px²", "B\n315 px²"])
    ax.set(ylabel="test EPG", title="(f) EPG per box size (mean ± 95 % CI)")
    ax.legend()
    save("f", {"rows": rows, "summary": summary, "table": table}, fig)


# -- SMERF ----------------------------------------------------------------------------------------
def finding_smerf(args: argparse.Namespace) -> None:
    """SMERF Fig. 6-8: PAFL / SAFL of IxG@input and Grad-CAM@final unguided; IxG@input after Energy guidance (3 seeds)."""
    rows = []
    for setting in ("simple_fr", "complex_cr2"):
        (unguided,) = base(f"smerf_{setting}_base", f"smerf-{setting}-base")
        data = load_spec(SPECS / f"smerf_{setting}_base.yaml")[0].data
        for attribution, layer in (("ixg", "input"), ("gradcam", "final")):
            metrics = unguided if attribution == "ixg" else evaluate_on(unguided["checkpoint"], data, attribution=attribution, layer=layer)
            rows.append({**{k: metrics[k] for k in ("accuracy", "pafl", "safl")}, "setting": setting, "model": f"unguided, {attribution}@{layer}", "seed": 0})
        rows += [{**r, "setting": setting, "model": "guided (Energy), ixg@input"} for r in search(f"smerf_{setting}_guided")]
    metrics = ["accuracy", "pafl", "safl"]
    summary = summarize(rows, ["setting", "model"], metrics)
    table = markdown("SMERF: unguided (6 epochs, one model) vs + 3 epochs of Energy λ = 1e-2 into the objects to focus (test split)", summary, ["setting", "model"], metrics)
    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, setting in zip(axes, ("simple_fr", "complex_cr2")):
        mine = [e for e in summary if e["setting"] == setting]
        xs = range(len(mine))
        for shift, metric, label in ((-0.2, "pafl", "PAFL (focus)"), (0.2, "safl", "SAFL (avoid)")):
            ax.bar([x + shift for x in xs], [e[metric] for e in mine], yerr=[0 if e["seeds"] < 2 else e[f"{metric}_ci"] for e in mine], capsize=2, width=0.4, label=label)
        ax.axhline(0.5, c="k", ls=":")
        ax.set_xticks(list(xs), [e["model"].replace(", ", "\n") for e in mine], fontsize=7)
        ax.set_title(setting)
    axes[0].set_ylabel("test attribution focus level")
    axes[0].legend(fontsize=7)
    save("smerf", {"rows": rows, "summary": summary, "table": table}, fig)


ORDER = ["a", "c", "b", "f", "e", "e_budget", "smerf"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("finding", choices=ORDER + ["d", "all"])
    p.add_argument("--f1-tolerance", type=float, default=0.02, help="(a): 'equal F1' = mean F1 within this of the unguided mean")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for finding in ORDER if args.finding == "all" else [args.finding]:
        globals()[f"finding_{finding}"](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
