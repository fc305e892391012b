"""Seconds per training step, guided vs. plain (issue 4, item 10).

For each model family (SMERF small CNN, ResNet-18) at 64 px and each
attribution method at the ``input`` and ``mid2`` layers, this times one
optimiser step of the real trainer:

* guided: ``GuidedTrainer.step`` with ``lam > 0`` — forward through
  ``attribute(..., create_graph=True)``, class loss on its logits (B-cos: a
  separate plain forward), λ·energy, double backward, Adam step;
* plain: ``GuidedTrainer.step`` of the *same architecture* with ``lam = 0`` —
  ``model(images)``, class loss, backward, Adam step.

Both trainers are built from a :class:`~mg_tune.config.TrainConfig` (tiny
data sizes; the data set is never iterated) and stepped on one fixed
synthetic batch (``torch.manual_seed``, random images, one random box mask
per image), so the benchmark times exactly the code a training run executes,
without data loading. IntGrad runs on the ``x_`` (X-DNN) variant and B-cos on
the ``bcos_`` variant; each row's plain step uses that row's architecture.

Timing: ``--warmup`` steps per trainer are discarded, then ``--repeats``
rounds each run ``--steps`` guided and ``--steps`` plain steps, alternating
one guided and one plain step (which goes first alternates too), so drift
from other load on the machine hits both alike. Reported: the median over
rounds of wall-clock ms per step for each, the median of the per-round
ratios guided/plain, and the same ratio from process CPU time (less
sensitive to time-slicing on a shared machine; with ``--threads 1`` it is
the step's compute time).

    python bench/guided_step.py --json bench-results.json
    python bench/guided_step.py --profile resnet18:ixg:input   # torch.profiler table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.models import LAYERS as ALL_LAYERS
from mg_tune.train import GuidedTrainer

FAMILIES = {
    # family -> the model each method runs on (its plain step uses the same model)
    "smerf": {"ixg": "smerf_cnn", "gradcam": "smerf_cnn", "intgrad": "x_smerf_cnn", "bcos": "bcos_cnn"},
    "resnet18": {"ixg": "resnet18", "gradcam": "resnet18", "intgrad": "x_resnet18", "bcos": "bcos_resnet18"},
}
METHODS = ("ixg", "gradcam", "intgrad", "bcos")
LAYERS = ("input", "mid2")
IMAGE_SIZE = 64


def make_trainer(model: str, method: str, layer: str, lam: float, args: argparse.Namespace) -> GuidedTrainer:
    """A real trainer; only its model, optimiser and ``step`` are used."""
    data = DataConfig(train_size=1, val_size=1, heldout_size=1, test_size=1)
    config = TrainConfig(
        data=data,
        model=model,
        attribution=method,
        layer=layer,
        loss="energy",
        lam=lam,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
    )
    trainer = GuidedTrainer(config)
    trainer.model.train()
    return trainer


def make_batch(num_classes: int, batch_size: int, seed: int) -> dict:
    """Synthetic images, one-hot labels and one box mask per image (for its label class)."""
    g = torch.Generator().manual_seed(seed)
    labels_idx = torch.randint(num_classes, (batch_size,), generator=g)
    masks = torch.zeros(batch_size, num_classes, IMAGE_SIZE, IMAGE_SIZE)
    for n, k in enumerate(labels_idx.tolist()):
        w, h = (int(v) for v in torch.randint(12, 33, (2,), generator=g))
        x0 = int(torch.randint(IMAGE_SIZE - w + 1, (1,), generator=g))
        y0 = int(torch.randint(IMAGE_SIZE - h + 1, (1,), generator=g))
        masks[n, k, y0 : y0 + h, x0 : x0 + w] = 1.0
    return {
        "image": torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        "labels": torch.nn.functional.one_hot(labels_idx, num_classes).float(),
        "masks": masks,
        "seg_masks": masks.clone(),
        "has_mask": torch.ones(batch_size, dtype=torch.bool),
    }


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(trainer: GuidedTrainer, batch: dict, generator: torch.Generator) -> tuple[float, float]:
    """(wall, process CPU) seconds of one ``trainer.step``."""
    _sync(trainer.device)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.step(batch, generator)  # returns .item()s: synchronises on CUDA too
    _sync(trainer.device)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_row(guided: GuidedTrainer, plain: GuidedTrainer, batch: dict, args: argparse.Namespace) -> dict:
    """Interleaved timing: each round alternates ``steps`` guided and plain steps."""
    g = torch.Generator().manual_seed(args.seed)
    for trainer in (guided, plain):
        for _ in range(args.warmup):
            trainer.step(batch, g)
    rounds = {"guided": [], "plain": []}  # per round: (mean wall, mean cpu) seconds per step
    for r in range(args.repeats):
        acc = {"guided": [0.0, 0.0], "plain": [0.0, 0.0]}
        for s in range(args.steps):
            order = ("guided", "plain") if (r + s) % 2 == 0 else ("plain", "guided")
            for name in order:
                wall, cpu = timed_step(guided if name == "guided" else plain, batch, g)
                acc[name][0] += wall / args.steps
                acc[name][1] += cpu / args.steps
        for name in rounds:
            rounds[name].append(tuple(acc[name]))
    gw, gc = zip(*rounds["guided"])
    pw, pc = zip(*rounds["plain"])
    return {
        "plain_ms": 1000 * statistics.median(pw),
        "guided_ms": 1000 * statistics.median(gw),
        "ratio": statistics.median(a / b for a, b in zip(gw, pw)),
        "plain_cpu_ms": 1000 * statistics.median(pc),
        "guided_cpu_ms": 1000 * statistics.median(gc),
        "cpu_ratio": statistics.median(a / b for a, b in zip(gc, pc)),
        "rounds_wall_ms": {k: [1000 * w for w, _ in v] for k, v in rounds.items()},
        "rounds_cpu_ms": {k: [1000 * c for _, c in v] for k, v in rounds.items()},
    }


def profile(spec: str, args: argparse.Namespace) -> None:
    """Print torch.profiler tables for a few guided steps of ``model:method:layer``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    model, method, layer = spec.split(":")
    trainer = make_trainer(model, method, layer, args.lam, args)
    plain = make_trainer(model, method, layer, 0.0, args)
    batch = make_batch(trainer.info.num_classes, args.batch_size, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    for name, tr in (("guided", trainer), ("plain", plain)):
        for _ in range(args.warmup):
            tr.step(batch, g)
        with torch_profile(activities=activities) as prof:
            for _ in range(args.steps):
                with record_function(f"{name}_step"):
                    tr.step(batch, g)
        print(f"\n=== {name} step: {model} {method} {layer}, batch {args.batch_size}, {args.steps} steps ===")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(ALL_LAYERS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="timed steps per trainer and round (mean per step)")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the median over rounds is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing, per trainer")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--lam", type=float, default=1.0, help="λ of the guided step (value does not affect cost)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--profile", metavar="MODEL:METHOD:LAYER", default=None, help="profile instead of benchmarking")
    p.add_argument("--profile-rows", type=int, default=25)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.profile:
        profile(args.profile, args)
        return 0

    console = Console()
    table = Table(title=f"Seconds per training step, 64 px, batch {args.batch_size}, {args.device}, {args.threads} threads")
    for col in ("model", "method", "layer", "plain ms", "guided ms", "ratio", "CPU ratio"):
        table.add_column(col, justify="left" if col in ("model", "method", "layer") else "right")
    rows = []
    plain_trainers: dict[str, GuidedTrainer] = {}
    start = time.perf_counter()
    for family in args.families:
        for method in args.methods:
            model = FAMILIES[family][method]
            for layer in args.layers:
                guided = make_trainer(model, method, layer, args.lam, args)
                if model not in plain_trainers:
                    plain_trainers[model] = make_trainer(model, method, layer, 0.0, args)
                plain = plain_trainers[model]
                batch = make_batch(guided.info.num_classes, args.batch_size, args.seed)
                result = {"family": family, "model": model, "method": method, "layer": layer}
                result.update(bench_row(guided, plain, batch, args))
                rows.append(result)
                table.add_row(model, method, layer, f"{result['plain_ms']:.1f}", f"{result['guided_ms']:.1f}", f"{result['ratio']:.2f}×", f"{result['cpu_ratio']:.2f}×")
                console.print(f"[dim]{model} {method} {layer}: {result['ratio']:.2f}× ({time.perf_counter() - start:.0f} s)[/dim]")
                del guided
    console.print(table)

    if args.json is not None:
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "device": args.device,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "image_size": IMAGE_SIZE,
            "wall_s": time.perf_counter() - start,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
