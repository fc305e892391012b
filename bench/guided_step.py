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

The authors' way (issue 22, item 3): for IxG and Grad-CAM every row also
times a **baseline** step written as the authors' ``train.py`` does it
(sukrutrao/Model-Guidance: ``model_activators.ResNetModelActivator``,
``attribution_methods.*Attributor`` in batch mode, ``losses.EnergyPointingGameBBMultipleLoss``),
on a fresh mg-tune model of the same architecture and initialisation: the
image tensor itself ``requires_grad`` (so the final backward also computes
its gradient), one forward of the whole model keeping the feature at the
layer, ``torch.autograd.grad(torch.unbind(y_k), feature, create_graph=True)``,
the map (IxG: Σ_c U·∂y/∂U; Grad-CAM: ReLU(Σ_c mean_hw(∂y/∂U)·U)) resized to
the image when the layer is not ``input``, an energy loss per image built from
its boxes in a Python loop and **summed** over the images (images without
boxes skipped, but their maps still computed), BatchNorm in train mode,
``loss.backward()`` over everything, Adam on all parameters. The class loss is
the same as the trainer's (cross-entropy for single-label data, BCE with
logits for multi-label data, as the authors' VOC/COCO code) so that the rows
compare guidance, not classification losses. It is timed in the same
interleaved rounds as the mg-tune steps and reported as ``mg/base`` (median
of the per-round ratios mg-tune guided / baseline).

Levers (``--levers``): each adds an mg-tune guided and plain trainer pair to
the same rounds, so every lever row is compared with the same baseline steps.
``none``: the trainer as shipped; ``channels_last``: model and images in
``torch.channels_last``; ``bf16``: ``TrainConfig(amp=True)`` (bfloat16
autocast on CPU); ``channels_last+bf16``: both. ``--annotated F`` keeps the
box of only the first ⌈F·batch⌉ images (``has_mask`` False for the rest):
with ``--annotated 0`` the trainer skips the attribution pass (a plain step)
while the authors' code still computes every map.

    python bench/guided_step.py --json bench-results.json
    python bench/guided_step.py --methods ixg gradcam --levers none channels_last bf16
    python bench/guided_step.py --profile resnet18:ixg:input   # torch.profiler tables (guided, plain, baseline)
"""

from __future__ import annotations

import argparse
import json
import math
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
from mg_tune.models import build_model
from mg_tune.models.staged import layer_index
from mg_tune.train import GuidedTrainer

FAMILIES = {
    # family -> the model each method runs on (its plain step uses the same model)
    "smerf": {"ixg": "smerf_cnn", "gradcam": "smerf_cnn", "intgrad": "x_smerf_cnn", "bcos": "bcos_cnn"},
    "resnet18": {"ixg": "resnet18", "gradcam": "resnet18", "intgrad": "x_resnet18", "bcos": "bcos_resnet18"},
}
METHODS = ("ixg", "gradcam", "intgrad", "bcos")
LAYERS = ("input", "mid2")
IMAGE_SIZE = 64
BASELINE_METHODS = ("ixg", "gradcam")  # the authors' code has IxG, GradCam and B-cos; IntGrad is mg-tune's
LEVERS = ("none", "channels_last", "bf16", "channels_last+bf16")


def make_trainer(model: str, method: str, layer: str, lam: float, args: argparse.Namespace, lever: str = "none") -> GuidedTrainer:
    """A real trainer; only its model, optimiser and ``step`` are used. ``lever``: see the module docstring."""
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
        amp="bf16" in lever.split("+"),
    )
    trainer = GuidedTrainer(config)
    if "channels_last" in lever.split("+"):
        trainer.model.to(memory_format=torch.channels_last)
    trainer.model.train()
    return trainer


def lever_batch(batch: dict, lever: str) -> dict:
    """The batch a lever's trainers step on (channels-last images for ``channels_last``)."""
    if "channels_last" not in lever.split("+"):
        return batch
    return {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}


class AuthorsStep:
    """One training step written the authors' way (module docstring), on mg-tune's model of the same name.

    The energy loss of image n with boxes B_n and map A_n (authors' ``losses.py``):
    1 − Σ_{p ∈ ∪B_n} A_n⁺(p) / Σ_p A_n⁺(p) (1 − numerator when the denominator is
    below 1e-7), summed over the images that have boxes.
    """

    def __init__(self, model: str, method: str, layer: str, lam: float, num_classes: int, multilabel: bool, args: argparse.Namespace) -> None:
        if method not in BASELINE_METHODS:
            raise ValueError(f"no authors' baseline for {method!r}")
        torch.manual_seed(args.seed)  # the same initialisation as the trainers' models
        self.device = torch.device(args.device)
        self.model = build_model(model, num_classes).to(self.device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.method, self.depth, self.lam, self.multilabel = method, layer_index(layer), lam, multilabel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, feature at the layer) from one pass over the whole model (``ResNetModelActivator``)."""
        h = self.model.prepare(x)
        feature = x if self.depth == 0 else None
        for i, stage in enumerate(self.model.stages, start=1):
            h = stage(h)
            if i == self.depth:
                feature = h
        return self.model.head(h), feature

    def attributions(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, maps ``[N, H, W]`` of ``classes`` at the image's size), differentiable (batch-mode attributors)."""
        logits, feature = self.forward(x)
        target_outputs = torch.gather(logits, 1, classes.unsqueeze(-1))
        grads = torch.autograd.grad(torch.unbind(target_outputs), feature, create_graph=True, retain_graph=True)[0]
        if self.method == "gradcam":
            attributions = torch.nn.functional.relu((grads.mean(dim=(2, 3), keepdim=True) * feature).sum(dim=1, keepdim=True))
        else:
            attributions = (grads * feature).sum(dim=1, keepdim=True)
        if self.depth > 0:  # captum's LayerAttribution.interpolate to the image size
            attributions = torch.nn.functional.interpolate(attributions, size=tuple(x.shape[-2:]), mode="bilinear")
        return logits, attributions.squeeze(1)

    def step(self, batch: dict, generator: torch.Generator) -> float:
        self.optimizer.zero_grad()
        x = batch["image"].clone()
        x.requires_grad = True  # train_X.requires_grad = True, before moving it to the device
        x = x.to(self.device)
        labels = batch["labels"].to(self.device)
        classes = (labels / labels.sum(dim=1, keepdim=True)).multinomial(1, generator=generator if self.device.type == "cpu" else None).squeeze(1)
        logits, attributions = self.attributions(x, classes)
        if self.multilabel:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels.argmax(1))
        localization = 0
        for n in range(len(x)):
            boxes = batch["boxes"][n]
            if boxes is None:
                continue
            chosen = [box[1:] for box in boxes if box[0] == classes[n]]  # utils.filter_bbs
            localization += self._energy(attributions[n], chosen)
        loss = loss + self.lam * localization
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @staticmethod
    def _energy(attributions: torch.Tensor, boxes: list) -> torch.Tensor:
        positive = attributions.clamp(min=0)
        mask = torch.zeros_like(positive, dtype=torch.long)
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = 1
        num = positive[torch.where(mask == 1)].sum()
        den = positive.sum()
        if den < 1e-7:
            return 1 - num
        return 1 - num / den


def make_batch(num_classes: int, batch_size: int, seed: int, annotated: float = 1.0, image_size: int = IMAGE_SIZE) -> dict:
    """Synthetic images, one-hot labels and one box mask per image (for its label class).

    ``boxes`` holds the same boxes as the authors' data set returns them (a list
    ``[(class, x0, y0, x1, y1)]`` per image, None for an image without
    annotation); only the first ⌈annotated·batch⌉ images keep theirs.
    """
    g = torch.Generator().manual_seed(seed)
    labels_idx = torch.randint(num_classes, (batch_size,), generator=g)
    masks = torch.zeros(batch_size, num_classes, image_size, image_size)
    boxes: list = []
    low, high = max(1, image_size * 12 // 64), max(2, image_size * 33 // 64)  # 12..32 px at 64 px
    for n, k in enumerate(labels_idx.tolist()):
        w, h = (int(v) for v in torch.randint(low, high, (2,), generator=g))
        x0 = int(torch.randint(image_size - w + 1, (1,), generator=g))
        y0 = int(torch.randint(image_size - h + 1, (1,), generator=g))
        masks[n, k, y0 : y0 + h, x0 : x0 + w] = 1.0
        boxes.append([(k, x0, y0, x0 + w, y0 + h)])
    keep = math.ceil(annotated * batch_size)
    has_mask = torch.arange(batch_size) < keep
    return {
        "boxes": [b if n < keep else None for n, b in enumerate(boxes)],
        "image": torch.rand(batch_size, 3, image_size, image_size, generator=g),
        "labels": torch.nn.functional.one_hot(labels_idx, num_classes).float(),
        "masks": masks,
        "seg_masks": masks.clone(),
        "has_mask": has_mask,
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


def timed_step(step, device: torch.device, generator: torch.Generator) -> tuple[float, float]:
    """(wall, process CPU) seconds of one ``step(generator)``."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    step(generator)  # returns .item()s: synchronises on CUDA too
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(steppers: dict, device: torch.device, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """Per stepper and round: (mean wall, mean CPU) seconds per step.

    Each round runs ``args.steps`` steps of every stepper, one of each in turn;
    the order rotates from step to step, so drift from other load on the
    machine hits all of them alike.
    """
    g = torch.Generator().manual_seed(args.seed)
    names = list(steppers)
    for name in names:
        for _ in range(args.warmup):
            steppers[name](g)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(args.repeats):
        acc = {name: [0.0, 0.0] for name in names}
        for s in range(args.steps):
            shift = (r * args.steps + s) % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = timed_step(steppers[name], device, g)
                acc[name][0] += wall / args.steps
                acc[name][1] += cpu / args.steps
        for name in names:
            rounds[name].append(tuple(acc[name]))
    return rounds


def _ratio(rounds: dict, a: str, b: str, which: int) -> float:
    return statistics.median(x[which] / y[which] for x, y in zip(rounds[a], rounds[b]))


def summarise(rounds: dict, lever: str) -> dict:
    """One row's numbers for ``lever``: ms per step (median over rounds) and per-round ratios."""
    guided, plain = f"guided[{lever}]", f"plain[{lever}]"
    med = lambda name, which: 1000 * statistics.median(x[which] for x in rounds[name])  # noqa: E731
    row = {
        "lever": lever,
        "plain_ms": med(plain, 0),
        "guided_ms": med(guided, 0),
        "ratio": _ratio(rounds, guided, plain, 0),
        "plain_cpu_ms": med(plain, 1),
        "guided_cpu_ms": med(guided, 1),
        "cpu_ratio": _ratio(rounds, guided, plain, 1),
        "baseline_ms": None,
        "baseline_cpu_ms": None,
        "vs_baseline": None,
        "vs_baseline_cpu": None,
        "rounds_wall_ms": {k: [1000 * w for w, _ in rounds[k]] for k in (guided, plain)},
        "rounds_cpu_ms": {k: [1000 * c for _, c in rounds[k]] for k in (guided, plain)},
    }
    if "baseline" in rounds:
        row.update(
            baseline_ms=med("baseline", 0),
            baseline_cpu_ms=med("baseline", 1),
            vs_baseline=_ratio(rounds, guided, "baseline", 0),
            vs_baseline_cpu=_ratio(rounds, guided, "baseline", 1),
        )
        row["rounds_wall_ms"]["baseline"] = [1000 * w for w, _ in rounds["baseline"]]
        row["rounds_cpu_ms"]["baseline"] = [1000 * c for _, c in rounds["baseline"]]
    return row


def build_steppers(family: str, method: str, layer: str, args: argparse.Namespace, plain_cache: dict) -> tuple[dict, GuidedTrainer]:
    """Named step functions of one row: ``guided[lever]``/``plain[lever]`` per lever, and ``baseline``.

    Plain trainers depend only on (model, lever) and are shared between rows.
    """
    model = FAMILIES[family][method]
    steppers: dict = {}
    first = None
    for lever in args.levers:
        guided = make_trainer(model, method, layer, args.lam, args, lever)
        first = first or guided
        key = (model, lever)
        if key not in plain_cache:
            plain_cache[key] = make_trainer(model, method, layer, 0.0, args, lever)
        batch = lever_batch(make_batch(guided.info.num_classes, args.batch_size, args.seed, args.annotated), lever)
        steppers[f"guided[{lever}]"] = lambda g, t=guided, b=batch: t.step(b, g)
        steppers[f"plain[{lever}]"] = lambda g, t=plain_cache[key], b=batch: t.step(b, g)
    if args.baseline and method in BASELINE_METHODS:
        base = AuthorsStep(model, method, layer, args.lam, first.info.num_classes, first.info.multilabel, args)
        batch = make_batch(first.info.num_classes, args.batch_size, args.seed, args.annotated)
        steppers["baseline"] = lambda g, t=base, b=batch: t.step(b, g)
    return steppers, first


def profile(spec: str, args: argparse.Namespace) -> None:
    """Print torch.profiler tables for a few steps of each stepper of ``model:method:layer``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    model, method, layer = spec.split(":")
    family = next((f for f, m in FAMILIES.items() if m.get(method) == model), None)
    if family is None:
        raise SystemExit(f"--profile: {model!r} is not the model of {method!r} in any family ({FAMILIES})")
    steppers, trainer = build_steppers(family, method, layer, args, {})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    g = torch.Generator().manual_seed(args.seed)
    for name, step in steppers.items():
        for _ in range(args.warmup):
            step(g)
        with torch_profile(activities=activities) as prof:
            for _ in range(args.steps):
                with record_function(f"{name}_step"):
                    step(g)
        print(f"\n=== {name} step: {model} {method} {layer}, batch {args.batch_size}, {args.steps} steps ===")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))


def amp_metrics(args: argparse.Namespace) -> dict:
    """Train one configuration per ``--amp-metrics`` model with and without bf16 autocast; validation metrics per epoch.

    The lever "bf16 autocast on CPU" is only worth taking where it keeps the
    metrics: this trains the same seed, data and λ twice (``TrainConfig(amp=False)``
    and ``amp=True``) through :func:`mg_tune.train.train` and prints F1, EPG and
    IoU of every epoch side by side.
    """
    from mg_tune.train import train

    out: dict = {}
    for spec in args.amp_metrics:
        model, method, layer, epochs, train_size = spec.split(":")
        for amp in (False, True):
            config = TrainConfig(
                data=DataConfig(train_size=int(train_size), val_size=128, heldout_size=64, test_size=1),
                model=model, attribution=method, layer=layer, loss="energy", lam=args.lam, epochs=int(epochs),
                batch_size=args.batch_size, device=args.device, seed=args.seed, amp=amp, overlay_images=0,
            )
            start = time.perf_counter()
            history = train(config).history
            key = f"{spec}:{'bf16' if amp else 'fp32'}"
            out[key] = {"seconds": time.perf_counter() - start, "epochs": [{k: h.metrics.get(k) for k in ("f1", "epg", "iou", "accuracy", "train_loc_loss")} for h in history]}
            for e, m in enumerate(out[key]["epochs"], start=1):
                print(f"{key} epoch {e}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if v is not None), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(ALL_LAYERS))
    p.add_argument("--levers", nargs="+", default=["none"], choices=list(LEVERS), help="mg-tune trainer variants timed side by side")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the authors' baseline step")
    p.add_argument("--annotated", type=float, default=1.0, help="share of the batch's images that keep their box")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="timed steps per stepper and round (mean per step)")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the median over rounds is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing, per stepper")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--lam", type=float, default=1.0, help="λ of the guided step (value does not affect cost)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--profile", metavar="MODEL:METHOD:LAYER", default=None, help="profile instead of benchmarking")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--amp-metrics", nargs="+", metavar="MODEL:METHOD:LAYER:EPOCHS:TRAIN_SIZE", default=None,
                   help="train each with and without bf16 autocast (TextBox, energy, --lam) and print the metrics instead of benchmarking")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.profile:
        profile(args.profile, args)
        return 0
    if args.amp_metrics:
        result = amp_metrics(args)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))
        return 0

    console = Console(width=max(Console().width, 160))
    table = Table(title=f"Seconds per training step, 64 px, batch {args.batch_size}, {args.device}, {args.threads} threads")
    for col in ("model", "method", "layer", "lever", "plain ms", "guided ms", "guided/plain", "CPU", "baseline ms", "mg/base", "CPU"):
        table.add_column(col, justify="left" if col in ("model", "method", "layer", "lever") else "right")
    rows = []
    plain_cache: dict = {}
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    for family in args.families:
        for method in args.methods:
            model = FAMILIES[family][method]
            for layer in args.layers:
                steppers, first = build_steppers(family, method, layer, args, plain_cache)
                rounds = time_interleaved(steppers, first.device, args)
                for lever in args.levers:
                    result = {"family": family, "model": model, "method": method, "layer": layer}
                    result.update(summarise(rounds, lever))
                    rows.append(result)
                    base = "–" if result["baseline_ms"] is None else f"{result['baseline_ms']:.1f}"
                    vs = "–" if result["vs_baseline"] is None else f"{result['vs_baseline']:.2f}×"
                    vs_cpu = "–" if result["vs_baseline_cpu"] is None else f"{result['vs_baseline_cpu']:.2f}×"
                    table.add_row(
                        model, method, layer, lever, f"{result['plain_ms']:.1f}", f"{result['guided_ms']:.1f}",
                        f"{result['ratio']:.2f}×", f"{result['cpu_ratio']:.2f}×", base, vs, vs_cpu,
                    )
                    console.print(f"[dim]{model} {method} {layer} {lever}: {result['ratio']:.2f}×, vs baseline {vs} ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})[/dim]")
                del steppers
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
            "levers": args.levers,
            "annotated": args.annotated,
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
            "wall_s": time.perf_counter() - start,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
