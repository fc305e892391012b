"""Real-data loader throughput vs. the guided training step, and memory as the data set grows (issue 6).

Everything runs on generated data sets in the exact PASCAL VOC 2007 layout
(``VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}``, one or two
boxes of random classes per image, ``train.txt`` listing every image), read by
the production path: ``build_split(DataConfig(name="voc", ...), "train")``
(:class:`mg_tune.data.real.AnnotatedImageDataset`: decode, rasterise the 20
class masks, one ``transforms.v2`` resize of image + masks) in a
``torch.utils.data.DataLoader`` (batch 32, shuffled, default collate).

1. **Throughput** (``--sizes-px``, default 64 and 128 px): images/s of the
   loader with ``num_workers`` 0 (with the process's torch threads, as a
   training run with ``num_workers: 0`` has them, and with one thread) and 2
   (each worker uses one torch thread, PyTorch's default), over
   ``--batches`` batches after the first (worker start-up is reported in the
   JSON; median of ``--repeats`` measurements), on two sources: 32x32
   JPEGs (the memory data set at 1k images) and 500x375 JPEGs (VOC's typical
   size, ``--large-images`` of them). Against it, images/s of one guided
   training step (``GuidedTrainer.step``: IxG at the input, energy loss,
   lambda = 1, Adam, CPU) for ``smerf_cnn`` and ``resnet18`` at the same
   size and batch, on a real batch of the same loader (median of
   ``--steps`` steps after one warm-up step).
2. **Memory** (``--counts``, default 1k, 10k, 100k images of 32x32 px): the
   data set grows in place; for each size a fresh child process builds the
   index (``train`` split, all images), then iterates ``--mem-batches``
   batches of 64 px (or one epoch if shorter; ``--epoch``: exactly one
   epoch) with 0 and then 2 workers (the child runs with one torch thread,
   so the 0-worker run is not slowed by thread contention), sampling the memory of its process tree
   (itself and its DataLoader workers, via ``/proc``: summed RSS, and summed
   *anonymous* PSS, which counts pages shared between the forked workers once
   and leaves out library pages shared with other jobs; see
   :func:`process_memory`) every 0.1 s. Reported: the index (its build time,
   its pickled size and the anonymous memory it added), and per worker
   setting the memory once the first batch arrived, the peak and the growth
   from first to last sample; the JSON has a series of 11 samples per run.
   ``--gc-freeze`` calls ``gc.freeze()`` after the index is built (forked
   workers' garbage collector then leaves the parent's objects alone).
   Generation stops at ``--gen-budget`` seconds in total; sizes not reached
   are reported as such.

    python bench/data_loading.py
    python bench/data_loading.py --batches 10 --epoch --json bench/results/data_loading.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from guided_step import cpu_model  # bench/ is on sys.path when run as a script
from mg_tune.data.voc import VOC_CLASSES

BATCH = 32
VAL_IDS = 16  # val.txt / test.txt list the first images (the trainer builds val and heldout too)

# ---------------------------------------------------------------------------------------------- generation


def _jpeg_pool(width: int, height: int, n: int, seed: int) -> list[bytes]:
    """``n`` distinct smooth-noise JPEGs (low-resolution noise upsampled, so they compress like photos)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        pool.append(buf.getvalue())
    return pool


def _xml(image_id: str, width: int, height: int, objects: list[tuple[int, int, int, int, int]]) -> str:
    body = "".join(
        f"<object><name>{VOC_CLASSES[k]}</name><difficult>0</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for k, x0, y0, x1, y1 in objects
    )
    return f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>"


class VOCWriter:
    """A VOCdevkit under ``root`` that grows by :meth:`grow`; ``count`` images exist."""

    def __init__(self, root: Path, width: int, height: int, seed: int = 0) -> None:
        self.devkit = root / "VOCdevkit"
        self.base = self.devkit / "VOC2007"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self.pool = _jpeg_pool(width, height, 64, seed)
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def grow(self, target: int, deadline: float = float("inf")) -> bool:
        """Write images up to ``target`` (stopping at ``deadline``, perf_counter seconds); True if reached."""
        w, h = self.width, self.height
        chunk = 1000
        while self.count < target and time.perf_counter() < deadline:
            n = min(chunk, target - self.count)
            k = self.rng.integers(0, len(VOC_CLASSES), (n, 2))
            two = self.rng.random(n) < 0.5
            x0 = self.rng.integers(1, w // 2, (n, 2))
            y0 = self.rng.integers(1, h // 2, (n, 2))
            x1 = x0 + self.rng.integers(2, w // 2, (n, 2))
            y1 = y0 + self.rng.integers(2, h // 2, (n, 2))
            for j in range(n):
                image_id = f"{self.count + j:06d}"
                objects = [(int(k[j, o]), int(x0[j, o]), int(y0[j, o]), int(x1[j, o]), int(y1[j, o])) for o in range(1 + int(two[j]))]
                (self.base / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, w, h, objects))
                (self.base / "JPEGImages" / f"{image_id}.jpg").write_bytes(self.pool[(self.count + j) % len(self.pool)])
            self.count += n
        ids = [f"{i:06d}" for i in range(self.count)]
        main = self.base / "ImageSets" / "Main"
        (main / "train.txt").write_text("\n".join(ids) + "\n")
        for name in ("val", "test"):
            (main / f"{name}.txt").write_text("\n".join(ids[:VAL_IDS]) + "\n")
        return self.count >= target


# ---------------------------------------------------------------------------------------------- memory of the process tree


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``/proc/<pid>/task/*/children``)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def process_memory(pid: int) -> tuple[int, int]:
    """(RSS, anonymous PSS) in bytes of one process; (0, 0) if it is gone.

    Anonymous PSS = ``Pss_Anon + Pss_Shmem`` of ``/proc/<pid>/smaps_rollup``: heap,
    tensors, copy-on-write copies and shared-memory batches, each page divided among
    the processes sharing it, so the sum over a process tree counts every page once.
    File-backed pages (libtorch & co.) are left out: they are page cache shared with
    every other process that loaded the same libraries, so their share moves with
    other jobs on the machine. Without ``/proc`` (not Linux), psutil's RSS and USS.
    """
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss_Anon", "Pss_Shmem"):
                    fields[key] = int(rest.split()[0]) * 1024
    except FileNotFoundError:
        if os.path.exists("/proc/self/smaps_rollup"):
            return 0, 0  # the process is gone
        import psutil  # not Linux

        try:
            info = psutil.Process(pid).memory_full_info()
            return info.rss, info.uss
        except psutil.Error:
            return 0, 0
    except OSError:
        return 0, 0
    return fields.get("Rss", 0), fields.get("Pss_Anon", 0) + fields.get("Pss_Shmem", 0)


def tree_memory(pid: int | None = None) -> tuple[int, int, int]:
    """(summed RSS, summed anonymous PSS, anonymous PSS of ``pid`` alone) in bytes of ``pid``'s process tree."""
    pid = pid or os.getpid()
    rss = anon = own = 0
    for p in process_tree(pid):
        r, a = process_memory(p)
        rss, anon = rss + r, anon + a
        if p == pid:
            own = a
    return rss, anon, own


class Sampler:
    """Samples :func:`tree_memory` every ``interval`` s in a thread; ``mark()`` takes one sample now.

    Each sample is ``(images seen, RSS, anon, anon of this process)``; the loop sets ``seen``.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.seen = 0
        self.samples: list[tuple[int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark(self) -> tuple[int, int, int]:
        rss, anon, own = tree_memory()
        self.samples.append((self.seen, rss, anon, own))
        return rss, anon, own

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.mark()

    def series(self, points: int = 11) -> list[dict]:
        """About ``points`` samples evenly spread over the run: images seen, tree and main-process anonymous PSS (MB)."""
        n = len(self.samples)
        picks = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)}) if n > 1 else range(n)
        return [{"seen": self.samples[i][0], "anon_mb": self.samples[i][2] / MB, "main_anon_mb": self.samples[i][3] / MB} for i in picks]

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


MB = 2**20

# ---------------------------------------------------------------------------------------------- measurements


def _data(root: Path, size: int, max_samples: int | None = None):
    from mg_tune.config import DataConfig

    return DataConfig(name="voc", root=str(root), image_size=size, max_samples=max_samples)


def loader_throughput(root: Path, size: int, workers: int, batches: int, threads: int | None = None, seed: int = 0) -> dict:
    """Images/s of the DataLoader over ``batches`` batches after the first; start-up = time to the first batch.

    ``threads``: torch intra-op threads of this process while iterating (None: unchanged).
    """
    import torch
    from torch.utils.data import DataLoader

    from mg_tune.data import build_split

    dataset = build_split(_data(root, size), "train")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["image"])
    elapsed = time.perf_counter() - first
    del it
    torch.set_num_threads(before)
    return {"startup_s": first - start, "images": n, "seconds": elapsed, "images_per_s": n / elapsed}


def train_step(root: Path, model: str, size: int, steps: int, seed: int = 0) -> dict:
    """Median seconds of ``GuidedTrainer.step`` (IxG input, energy, lambda 1) on one real batch."""
    import torch

    from mg_tune.config import TrainConfig
    from mg_tune.train import GuidedTrainer

    config = TrainConfig(
        data=_data(root, size, max_samples=4 * BATCH), model=model, attribution="ixg", layer="input", loss="energy",
        lam=1.0, batch_size=BATCH, device="cpu", seed=seed,
    )
    trainer = GuidedTrainer(config)
    trainer.model.train()
    g = torch.Generator().manual_seed(seed)
    batch = next(iter(trainer.loader(trainer.train_set, shuffle=True, generator=g)))
    trainer.step(batch, g)  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step(batch, g)
        times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"step_s": step, "steps_s": times, "images_per_s": BATCH / step}


def memory_child(root: Path, count: int, batches: int, epoch: bool, size: int, worker_settings: list[int], gc_freeze: bool = False) -> dict:
    """Run in a fresh process: index build, then iteration with 0 and 2 workers; memory of the process tree."""
    import gc

    import torch
    from torch.utils.data import DataLoader

    from mg_tune.data import build_split

    torch.set_num_threads(1)  # as in DataLoader workers; see the module doc
    gc.collect()
    base_rss, base_anon, _ = tree_memory()
    t = time.perf_counter()
    dataset = build_split(_data(root, size), "train")
    index_s = time.perf_counter() - t
    gc.collect()
    if gc_freeze:  # move every object to the permanent generation: forked workers' GC never touches them
        gc.freeze()
    index_rss, index_anon, _ = tree_memory()
    assert len(dataset) == count, (len(dataset), count)
    out = {
        "images": count,
        "base_rss_mb": base_rss / MB,
        "base_anon_mb": base_anon / MB,
        "index_s": index_s,
        "index_pickle_mb": len(pickle.dumps(dataset.records, protocol=pickle.HIGHEST_PROTOCOL)) / MB,
        "index_anon_mb": (index_anon - base_anon) / MB,
        "runs": [],
    }
    per_epoch = -(-count // BATCH)
    for workers in worker_settings:
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
        want = per_epoch if epoch else min(batches, per_epoch)
        seen = done = 0
        with Sampler() as sampler:
            t = time.perf_counter()
            first = None
            while done < want:
                it = iter(loader)  # kept alive until the last sample: its workers belong to the tree
                for batch in it:
                    seen += len(batch["image"])
                    sampler.seen = seen
                    done += 1
                    if first is None:
                        first = sampler.mark()
                    if done >= want:
                        break
                elapsed = time.perf_counter() - t
                last = sampler.mark()
                del it
        samples = [s for s in sampler.samples]
        out["runs"].append({
            "gc_freeze": gc_freeze,
            "workers": workers,
            "batches": done,
            "images_seen": seen,
            "epochs": done / per_epoch,
            "seconds": elapsed,
            "images_per_s": seen / elapsed,
            "first_rss_mb": first[0] / MB,
            "first_anon_mb": first[1] / MB,
            "peak_rss_mb": max(s[1] for s in samples) / MB,
            "peak_anon_mb": max(s[2] for s in samples) / MB,
            "last_rss_mb": last[0] / MB,
            "last_anon_mb": last[1] / MB,
            "growth_rss_mb": (last[0] - first[0]) / MB,
            "growth_anon_mb": (last[1] - first[1]) / MB,
            "samples": len(samples),
            "series": sampler.series(),
        })
        del loader
        gc.collect()
    return out


# ---------------------------------------------------------------------------------------------- report


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def tables(result: dict) -> str:
    sizes = result["meta"]["sizes_px"]
    rows = []
    for r in result["throughput"]:
        where = f"{r['workers']} workers" if r["workers"] else f"0 workers, {r['threads']} torch thread{'s' if r['threads'] > 1 else ''}"
        rows.append([f"loader, {r['source']} JPEGs, {where}"] + [f"{r['by_size'][str(s)]['images_per_s']:,.0f}" for s in sizes])
    for r in result["training"]:
        rows.append([f"guided step {r['model']} (IxG input, λ=1)"] + [f"{r['by_size'][str(s)]['images_per_s']:,.0f} ({1000 * r['by_size'][str(s)]['step_s']:,.0f} ms)" for s in sizes])
    first = _md(["images/s, batch 32, CPU", *[f"{s} px" for s in sizes]], rows) if rows else ""
    rows = []
    for m in result["memory"]:
        if m.get("missing"):
            rows.append([f"{m['images']:,}", "not generated (--gen-budget)"] + [""] * 8)
            continue
        for run in m["runs"]:
            rows.append([
                f"{m['images']:,}",
                f"{m['index_s']:.1f} s / {m['index_pickle_mb']:.1f} MB / {m['index_anon_mb']:+.0f} MB",
                str(run["workers"]) + (" + gc.freeze" if run.get("gc_freeze") else ""),
                f"{run['images_seen']:,} ({run['epochs']:.2f} ep.)",
                f"{run['images_per_s']:,.0f}",
                f"{run['first_anon_mb']:,.0f}",
                f"{run['peak_anon_mb']:,.0f}",
                f"{run['growth_anon_mb']:+.0f}",
                f"{run['peak_rss_mb']:,.0f}",
                f"{run['growth_rss_mb']:+.0f}",
            ])
    second = _md(
        ["images", "index: build / pickled / anon", "workers", "iterated", "img/s", "anon first MB", "anon peak MB", "anon growth MB", "RSS peak MB", "RSS growth MB"],
        rows,
    )
    return (first + "\n\n" if first else "") + second


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-px", nargs="+", type=int, default=[64, 128])
    p.add_argument("--models", nargs="+", default=["smerf_cnn", "resnet18"])
    p.add_argument("--batches", type=int, default=20, help="timed loader batches per throughput row")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per row (median)")
    p.add_argument("--repeats", type=int, default=3, help="loader measurements per row (median)")
    p.add_argument("--large-images", type=int, default=1024, help="500x375 images of the throughput source")
    p.add_argument("--counts", nargs="+", type=int, default=[1000, 10_000, 100_000])
    p.add_argument("--mem-batches", type=int, default=300, help="batches per memory run (at most one epoch)")
    p.add_argument("--mem-size", type=int, default=64, help="image size of the memory runs")
    p.add_argument("--epoch", action="store_true", help="memory runs iterate exactly one epoch (--mem-batches is ignored)")
    p.add_argument("--mem-workers", nargs="+", type=int, default=[0, 2], help="num_workers settings of the memory runs")
    p.add_argument("--memory-only", action="store_true", help="skip the throughput and training-step part")
    p.add_argument("--gc-freeze", action="store_true", help="memory runs call gc.freeze() after building the index")
    p.add_argument("--gen-budget", type=float, default=180.0, help="seconds allowed for generating the growing data set")
    p.add_argument("--root", type=Path, default=None, help="where to generate (default: a temporary directory, removed)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--memory-child", nargs=2, metavar=("ROOT", "COUNT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_child:
        root, count = Path(args.memory_child[0]), int(args.memory_child[1])
        print(json.dumps(memory_child(root, count, args.mem_batches, args.epoch, args.mem_size, args.mem_workers, args.gc_freeze)))
        return 0

    import torch

    start = time.perf_counter()
    work = args.root or Path(tempfile.mkdtemp(prefix="mg-tune-data-bench-"))
    result: dict = {"throughput": [], "training": [], "memory": []}
    try:
        small = VOCWriter(work / "small", 32, 32, seed=0)
        t = time.perf_counter()
        small.grow(min(args.counts[0], 2 * BATCH * (args.batches + 2)) if args.memory_only else max(args.counts[0], 2 * BATCH * (args.batches + 2)))
        large = VOCWriter(work / "large", 500, 375, seed=1)
        large.grow(0 if args.memory_only else args.large_images)
        print(f"generated {small.count} + {large.count} images ({time.perf_counter() - t:.1f} s)", file=sys.stderr)

        for source, writer in () if args.memory_only else (("32x32", small), ("500x375", large)):
            for workers, threads in ((0, None), (0, 1), (2, None)):
                row = {"source": source, "workers": workers, "threads": threads or torch.get_num_threads(), "by_size": {}}
                for size in args.sizes_px:
                    runs = [loader_throughput(writer.devkit, size, workers, args.batches, threads, seed=r) for r in range(args.repeats)]
                    best = sorted(runs, key=lambda x: x["images_per_s"])[len(runs) // 2]  # the median run
                    row["by_size"][str(size)] = {**best, "repeats_images_per_s": [x["images_per_s"] for x in runs]}
                    print(f"loader {source} w{workers} t{row['threads']} {size}px: {row['by_size'][str(size)]['images_per_s']:.0f} img/s", file=sys.stderr)
                result["throughput"].append(row)
        for model in [] if args.memory_only else args.models:
            row = {"model": model, "by_size": {}}
            for size in args.sizes_px:
                row["by_size"][str(size)] = train_step(small.devkit, model, size, args.steps)
                print(f"step {model} {size}px: {row['by_size'][str(size)]['step_s']:.3f} s", file=sys.stderr)
            result["training"].append(row)
        shutil.rmtree(work / "large", ignore_errors=True)

        gen_spent = 0.0
        for count in sorted(args.counts):
            t = time.perf_counter()
            reached = small.count >= count or small.grow(count, deadline=t + max(0.0, args.gen_budget - gen_spent))
            gen_spent += time.perf_counter() - t
            if not reached:
                print(f"generation budget spent at {small.count} images; {count} not reached", file=sys.stderr)
                result["memory"].append({"images": count, "missing": True, "generated": small.count})
                continue
            if small.count > count:  # the throughput source may be larger than the first count
                ids = [f"{i:06d}" for i in range(count)]
                (small.base / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
            cmd = [sys.executable, __file__, "--memory-child", str(small.devkit), str(count), "--mem-batches", str(args.mem_batches), "--mem-size", str(args.mem_size), "--mem-workers", *map(str, args.mem_workers)] + (["--gc-freeze"] if args.gc_freeze else [])
            if args.epoch:
                cmd.append("--epoch")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            m["generation_s_total"] = gen_spent
            result["memory"].append(m)
            print(f"memory {count}: " + ", ".join(f"w{r['workers']} anon {r['first_anon_mb']:.0f}->{r['peak_anon_mb']:.0f} MB" for r in m["runs"]), file=sys.stderr)
    finally:
        if args.root is None:
            shutil.rmtree(work, ignore_errors=True)

    result["meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "batch_size": BATCH,
        "sizes_px": args.sizes_px,
        "mem_size_px": args.mem_size,
        "mem_batches": args.mem_batches,
        "generation_s": gen_spent,
        "wall_s": time.perf_counter() - start,
    }
    print(tables(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
