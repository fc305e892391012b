"""GPU benchmark in one run (issue 22, item 5): guided/plain step ratios, trials packed per GPU, loader vs step.

Three sections, each written to the JSON and the markdown table as soon as it
finishes (a run killed by a timeout keeps what it measured):

1. **Step ratios** at ``--image-size`` (224 px) and ``--batch-size``: the real
   trainer's step (``GuidedTrainer.step``, :mod:`guided_step`'s machinery:
   warm-up, then rounds that interleave one guided and one plain step in
   rotating order) for ``resnet50`` (IxG and Grad-CAM at ``input`` and
   ``mid2``) and ``bcos_resnet50`` (B-cos at ``input`` and ``mid2``), each with
   autocast off (fp32) and bf16 on. bf16 is the trainer's own autocast
   (``TrainConfig(amp=True)``: ``torch.autocast`` around the forward, the
   attribution with ``create_graph=True`` and both losses; maps and logits are
   cast to fp32 before the losses; the backward runs in the forward's dtypes).
   The trainer picks fp16 + ``GradScaler`` for ``amp`` on CUDA; the benchmark
   sets its ``amp_dtype`` to bfloat16 and disables the scaler (bf16 has fp32's
   exponent range and needs no loss scaling), so "bf16" means bf16 on both
   devices. Reported per row: ms per step (median over rounds), the median
   of the per-round ratios guided/plain, images/s, and on CUDA the peak
   memory of one guided step.
2. **Packing**: images/s per trial with 1, 2 and 4 trials training at once on
   one GPU (``--pack``). Each trial is a separate OS process with its own CUDA
   context, which is what Ray Tune does with ``resources: {gpu: 0.5}``
   (fractional GPUs only co-schedule worker processes on the same device;
   Ray does not partition the GPU). The processes are forked from a
   ``forkserver`` that has imported torch and mg-tune (and never touched
   CUDA), so start-up is cheap and the same on CPU and GPU. Ray itself is left
   out on purpose: it is not part of the GPU image, its wheel does not fit
   the device's 64 MiB transfer, and its per-trial overhead is measured by
   ``bench/search_overhead.py``; what is measured here is GPU contention
   between trials. Each trial builds the trainer (``--pack-model``, IxG at
   ``input``, λ = 1), runs warm-up steps, waits at a barrier with the others,
   then steps for ``--pack-seconds`` and reports images/s.
3. **Data loading**: a VOC 2007 fixture (``bench/data_loading.py``'s
   generator: VOCdevkit layout, XML boxes, JPEGs) written to a temporary
   directory, read by mg-tune's VOC loader (``build_split(DataConfig(name="voc",
   image_size=224))``) in a ``DataLoader`` with 0..N workers, for JPEGs of
   224x224 and of VOC's typical 500x375; images/s next to the guided step's
   images/s (section 1, ``resnet50`` IxG input, fp32 and bf16).

    bench/gpu.sh                                   # on the GPU machine: everything, ~6 min
    python bench/gpu.py --device cpu --dry-run --out /tmp/gpu-dry   # the test in make test

``--dry-run`` keeps every row, section and code path but runs them at tiny
sizes, with the SMERF CNN and the small B-cos CNN in place of the two
ResNet-50s (32 px, batch 2, 2 rounds of 1 step, 0.5 s packing windows, a
12-image fixture): about 10 s of CPU.

``--budget-s`` bounds the whole run: a section that would start after the
budget is skipped and reported as such; packing workers that do not answer in
time are killed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # guided_step, data_loading

import guided_step  # noqa: E402

ROWS = (  # (which of --models, method, layer) of the step-ratio section
    (0, "ixg", "input"),
    (0, "ixg", "mid2"),
    (0, "gradcam", "input"),
    (0, "gradcam", "mid2"),
    (1, "bcos", "input"),
    (1, "bcos", "mid2"),
)
DRY_RUN_MODELS = ("smerf_cnn", "bcos_cnn")  # the same rows and code paths, with models that step in milliseconds on CPU
AUTOCAST = ("off", "bf16")


def log(msg: str) -> None:
    print(f"[gpu-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_args(args: argparse.Namespace) -> argparse.Namespace:
    """The namespace :func:`guided_step.make_trainer` and :func:`guided_step.time_interleaved` read."""
    return argparse.Namespace(
        batch_size=args.batch_size, device=args.device, seed=args.seed, lam=1.0,
        steps=args.steps, repeats=args.repeats, warmup=args.warmup,
    )


def make_trainer(model: str, method: str, layer: str, lam: float, autocast: str, args: argparse.Namespace):
    """The real trainer, with bf16 autocast when ``autocast == "bf16"`` (see the module docstring)."""
    trainer = guided_step.make_trainer(model, method, layer, lam, bench_args(args), lever="bf16" if autocast == "bf16" else "none")
    if autocast == "bf16":
        trainer.amp_dtype = torch.bfloat16
        trainer.scaler = torch.amp.GradScaler(enabled=False)
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def guided_peak_mib(trainer, batch: dict) -> float | None:
    """Peak CUDA memory of one guided step (None on CPU)."""
    if trainer.device.type != "cuda":
        return None
    sync(trainer.device)
    torch.cuda.reset_peak_memory_stats(trainer.device)
    trainer.step(batch, torch.Generator().manual_seed(0))
    sync(trainer.device)
    return torch.cuda.max_memory_allocated(trainer.device) / 2**20


# ----------------------------------------------------------------------------------------------- 1. step ratios


def step_ratios(args: argparse.Namespace, deadline: float) -> list[dict]:
    rows = []
    plain_cache: dict = {}
    for which, method, layer in ROWS:
        model = args.models[which]
        for autocast in args.autocast:
            if time.perf_counter() > deadline:
                rows.append({"model": model, "method": method, "layer": layer, "autocast": autocast, "skipped": "budget"})
                continue
            guided = make_trainer(model, method, layer, 1.0, autocast, args)
            key = (model, autocast)
            if key not in plain_cache:
                plain_cache[key] = make_trainer(model, method, layer, 0.0, autocast, args)
            plain = plain_cache[key]
            batch = guided_step.make_batch(guided.info.num_classes, args.batch_size, args.seed, image_size=args.image_size)
            steppers = {
                "guided": lambda g, t=guided, b=batch: t.step(b, g),
                "plain": lambda g, t=plain, b=batch: t.step(b, g),
            }
            rounds = guided_step.time_interleaved(steppers, guided.device, bench_args(args))
            gw = [w for w, _ in rounds["guided"]]
            pw = [w for w, _ in rounds["plain"]]
            row = {
                "model": model,
                "method": method,
                "layer": layer,
                "autocast": autocast,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "plain_ms": 1000 * statistics.median(pw),
                "guided_ms": 1000 * statistics.median(gw),
                "ratio": statistics.median(g / p for g, p in zip(gw, pw)),
                "rounds_guided_ms": [1000 * w for w in gw],
                "rounds_plain_ms": [1000 * w for w in pw],
                "guided_peak_mib": guided_peak_mib(guided, batch),
            }
            row["guided_images_per_s"] = args.batch_size / (row["guided_ms"] / 1000)
            row["plain_images_per_s"] = args.batch_size / (row["plain_ms"] / 1000)
            rows.append(row)
            log(f"{model} {method} {layer} autocast={autocast}: plain {row['plain_ms']:.1f} ms, guided {row['guided_ms']:.1f} ms, {row['ratio']:.2f}x")
            del guided, steppers
    return rows


# ----------------------------------------------------------------------------------------------- 2. packing


def _pack_worker(rank: int, cfg: dict, barrier, results) -> None:
    """One 'trial': build the trainer, warm up, wait for the others, step for ``seconds``; put images/s."""
    try:
        torch.set_num_threads(cfg["threads"])
        args = argparse.Namespace(**cfg["args"])
        trainer = make_trainer(cfg["model"], "ixg", "input", 1.0, cfg["autocast"], args)
        batch = guided_step.make_batch(trainer.info.num_classes, args.batch_size, args.seed + rank, image_size=args.image_size)
        g = torch.Generator().manual_seed(args.seed + rank)
        for _ in range(cfg["warmup"]):
            trainer.step(batch, g)
        sync(trainer.device)
        barrier.wait(timeout=cfg["barrier_timeout"])
        start = time.perf_counter()
        steps = 0
        while steps == 0 or time.perf_counter() - start < cfg["seconds"]:
            trainer.step(batch, g)  # .item()s inside: synchronised
            steps += 1
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if trainer.device.type == "cuda" else None
        results.put({"rank": rank, "steps": steps, "seconds": elapsed, "images_per_s": steps * args.batch_size / elapsed, "peak_mib": peak})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records the failure
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def packing(args: argparse.Namespace, deadline: float) -> list[dict]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mg_tune.train", "guided_step"])
    cpus = os.cpu_count() or 1
    rows = []
    for n in args.pack:
        if time.perf_counter() > deadline:
            rows.append({"trials": n, "skipped": "budget"})
            continue
        cfg = {
            "model": args.pack_model,
            "autocast": args.pack_autocast,
            "threads": args.threads or max(1, cpus // n),
            "args": vars(bench_args(args)) | {"image_size": args.image_size, "batch_size": args.pack_batch_size},
            "warmup": max(1, args.warmup),  # at least one step before the barrier (lazy init, cuDNN plans)
            "seconds": args.pack_seconds,
            "barrier_timeout": args.pack_timeout,
        }
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_pack_worker, args=(rank, cfg, barrier, results), daemon=True) for rank in range(n)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        got = []
        limit = t0 + args.pack_timeout + args.pack_seconds + 30
        while len(got) < n and time.perf_counter() < limit:
            try:
                got.append(results.get(timeout=1.0))
            except Exception:  # queue.Empty
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        errors = [r for r in got if "error" in r]
        ok = sorted((r for r in got if "error" not in r), key=lambda r: r["rank"])
        row: dict = {"trials": n, "model": args.pack_model, "autocast": args.pack_autocast, "batch_size": args.pack_batch_size,
                     "image_size": args.image_size, "seconds": args.pack_seconds, "wall_s": time.perf_counter() - t0, "per_trial": ok}
        if errors or len(ok) < n:
            row["error"] = errors[0]["error"] if errors else f"{n - len(ok)} of {n} trials did not report in time"
            if errors:
                log(errors[0].get("traceback", ""))
        if ok:
            ips = [r["images_per_s"] for r in ok]
            row.update(images_per_s_per_trial=statistics.mean(ips), images_per_s_min=min(ips), images_per_s_total=sum(ips))
        rows.append(row)
        log(f"packing {n} trial(s): " + (f"{row['images_per_s_per_trial']:.1f} images/s per trial, {row['images_per_s_total']:.1f} total" if ok else row["error"]))
    single = next((r.get("images_per_s_total") for r in rows if r.get("trials") == 1), None)
    for r in rows:
        if single and r.get("images_per_s_total"):
            r["total_vs_one_trial"] = r["images_per_s_total"] / single
    return rows


# ----------------------------------------------------------------------------------------------- 3. data loading


def data_loading(args: argparse.Namespace, deadline: float, steps: list[dict]) -> list[dict]:
    from torch.utils.data import DataLoader

    from data_loading import VOCWriter
    from mg_tune.config import DataConfig
    from mg_tune.data import build_split

    guided = {r["autocast"]: r["guided_images_per_s"] for r in steps if r.get("model") == args.models[0] and r.get("method") == "ixg" and r.get("layer") == "input" and "guided_ms" in r}
    rows = []
    for source in args.loader_sources:
        width, height = (int(v) for v in source.split("x"))
        root = Path(tempfile.mkdtemp(prefix=f"mg-tune-gpu-voc-{source}-"))
        try:
            writer = VOCWriter(root, width, height, seed=args.seed)
            writer.grow(args.loader_images)
            data = DataConfig(name="voc", root=str(writer.devkit), image_size=args.image_size)
            dataset = build_split(data, "train")
            for workers in args.loader_workers:
                if time.perf_counter() > deadline:
                    rows.append({"source": source, "workers": workers, "skipped": "budget"})
                    continue
                loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                    pin_memory=args.device == "cuda", generator=torch.Generator().manual_seed(args.seed),
                                    persistent_workers=False)
                t0 = time.perf_counter()
                it = iter(loader)
                next(it)  # worker start-up and the first batch are not counted
                first = time.perf_counter() - t0
                t1 = time.perf_counter()
                images = 0
                for _ in range(args.loader_batches):
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    images += len(batch["image"])
                elapsed = time.perf_counter() - t1
                del it
                row = {"source": source, "image_size": args.image_size, "workers": workers, "batch_size": args.batch_size,
                       "images": images, "seconds": elapsed, "first_batch_s": first, "images_per_s": images / elapsed}
                for autocast, ips in guided.items():
                    row[f"loader_vs_guided_{autocast}"] = row["images_per_s"] / ips
                rows.append(row)
                log(f"loader {source} -> {args.image_size} px, {workers} workers: {row['images_per_s']:.0f} images/s")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------------------- output


def _md(headers: list[str], rows: list[list[str]]) -> str:
    aligns = ["---" if h in ("model", "method", "layer", "autocast", "JPEGs", "status") else "---:" for h in headers]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _f(v, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(result: dict) -> str:
    meta = result["meta"]
    out = [f"# GPU benchmark ({meta['date']}, {meta['device_name']}, torch {meta['torch']})", "", f"Command: `{meta['command']}`", ""]
    steps = result.get("step_ratios")
    if steps is not None:
        out += [f"## Guided / plain step, {meta['image_size']} px, batch {meta['batch_size']}", ""]
        rows = []
        for r in steps:
            if "skipped" in r:
                rows.append([r["model"], r["method"], r["layer"], r["autocast"], "–", "–", "skipped (budget)", "–", "–", "–"])
                continue
            rows.append([r["model"], r["method"], r["layer"], r["autocast"], _f(r["plain_ms"]), _f(r["guided_ms"]), f"{r['ratio']:.2f}×",
                         _f(r["plain_images_per_s"]), _f(r["guided_images_per_s"]), _f(r["guided_peak_mib"], ".0f")])
        out += [_md(["model", "method", "layer", "autocast", "plain ms", "guided ms", "guided/plain", "plain img/s", "guided img/s", "guided peak MiB"], rows), ""]
    packs = result.get("packing")
    if packs is not None:
        out += [f"## Trials packed on one device ({meta['pack_model']} IxG input, batch {meta['pack_batch_size']}, autocast {meta['pack_autocast']}, separate processes)", ""]
        rows = []
        for r in packs:
            if "skipped" in r:
                rows.append([str(r["trials"]), "–", "–", "–", "–", "skipped (budget)"])
                continue
            rows.append([str(r["trials"]), _f(r.get("images_per_s_per_trial")), _f(r.get("images_per_s_min")), _f(r.get("images_per_s_total")),
                         _f(r.get("total_vs_one_trial"), ".2f"), r.get("error", "ok")])
        out += [_md(["trials", "img/s per trial", "slowest trial img/s", "total img/s", "total vs 1 trial", "status"], rows), ""]
    loads = result.get("data_loading")
    if loads is not None:
        out += [f"## Data loader vs guided step (VOC fixture, {meta['image_size']} px out, batch {meta['batch_size']})", ""]
        rows = []
        for r in loads:
            if "skipped" in r:
                rows.append([r["source"], str(r["workers"]), "skipped (budget)", "–", "–"])
                continue
            rows.append([r["source"], str(r["workers"]), _f(r["images_per_s"]), _f(r.get("loader_vs_guided_off"), ".2f"), _f(r.get("loader_vs_guided_bf16"), ".2f")])
        out += [_md(["JPEGs", "workers", "loader img/s", "loader / guided step (fp32)", "loader / guided step (bf16)"], rows), ""]
    for name, err in result.get("errors", {}).items():
        out += [f"**{name} failed:** `{err}`", ""]
    return "\n".join(out)


def write(result: dict, out: Path, t0: float) -> None:
    """Write (or rewrite, after each section) ``gpu_bench.json`` and ``gpu_bench.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result["meta"]["wall_s"] = time.perf_counter() - t0
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_bench.md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes for the CPU test: smerf_cnn / bcos_cnn for the two models, 32 px, batch 2, two rounds of one step, packs of 1/2/4 for 0.5 s, a 12-image fixture")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu"), help="directory for gpu_bench.json and gpu_bench.md")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="timed steps per trainer and round")
    p.add_argument("--repeats", type=int, default=5, help="rounds (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--autocast", nargs="+", default=list(AUTOCAST), choices=list(AUTOCAST))
    p.add_argument("--pack", nargs="+", type=int, default=[1, 2, 4], help="trials per device")
    p.add_argument("--models", nargs=2, default=["resnet50", "bcos_resnet50"], metavar=("STANDARD", "BCOS"),
                   help="the standard model (IxG, Grad-CAM, packing, loader comparison) and the B-cos model")
    p.add_argument("--pack-model", default=None, help="model of the packed trials (default: the standard model)")
    p.add_argument("--pack-autocast", default="off", choices=list(AUTOCAST))
    p.add_argument("--pack-batch-size", type=int, default=32,
                   help="batch of each packed trial (4 guided ResNet-50 trials at batch 64 and 224 px may not fit in one GPU's memory together)")
    p.add_argument("--pack-seconds", type=float, default=20.0, help="timed window in which all packed trials step")
    p.add_argument("--pack-timeout", type=float, default=180.0, help="seconds for every trial to build and warm up")
    p.add_argument("--loader-sources", nargs="+", default=["224x224", "500x375"], help="JPEG sizes WxH of the VOC fixture")
    p.add_argument("--loader-images", type=int, default=2048)
    p.add_argument("--loader-batches", type=int, default=24)
    p.add_argument("--loader-workers", nargs="+", type=int, default=[0, 4, 8, 16])
    p.add_argument("--sections", nargs="+", default=["steps", "packing", "loader"], choices=["steps", "packing", "loader"])
    p.add_argument("--budget-s", type=float, default=480.0, help="no section starts after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --device cpu, torch's default on CUDA)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads is None and args.device == "cpu":
        args.threads = 1  # 2 threads on a shared 2-core machine stall in OpenMP barriers (docs/benchmarks.md)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.dry_run:
        args.image_size, args.batch_size, args.steps, args.repeats, args.warmup = 32, 2, 1, 2, 0
        args.pack_batch_size = 2
        args.pack_seconds, args.pack_timeout = 0.5, 120.0
        args.loader_sources, args.loader_images, args.loader_batches, args.loader_workers = ["64x48"], 12, 3, [0, 1]
        args.models = list(DRY_RUN_MODELS)
    args.pack_model = args.pack_model or args.models[0]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: --device cuda but torch sees no CUDA device (use --device cpu --dry-run for the CPU test)", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else guided_step.cpu_model()
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device,
        "device_name": device_name,
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if args.device == "cuda" else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "python": platform.python_version(),
        "cpu": guided_step.cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "models": args.models,
        "pack_model": args.pack_model,
        "pack_autocast": args.pack_autocast,
        "pack_batch_size": args.pack_batch_size,
        "budget_s": args.budget_s,
    }
    result: dict = {"meta": meta, "errors": {}}
    log(f"{device_name}, torch {torch.__version__}, sections {' '.join(args.sections)}, budget {args.budget_s:.0f} s, writing {args.out}")
    sections = {
        "steps": ("step_ratios", lambda: step_ratios(args, deadline)),
        "packing": ("packing", lambda: packing(args, deadline)),
        "loader": ("data_loading", lambda: data_loading(args, deadline, result.get("step_ratios", []))),
    }
    for name in args.sections:
        key, run = sections[name]
        log(f"section {key} ({time.perf_counter() - t0:.0f} s elapsed)")
        try:
            result[key] = run()
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
            result["errors"][key] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        write(result, args.out, t0)
    log(f"done in {time.perf_counter() - t0:.0f} s: {args.out / 'gpu_bench.json'}, {args.out / 'gpu_bench.md'}")
    print(markdown(result), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
