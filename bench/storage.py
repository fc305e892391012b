"""Bytes a search stores, before and after the storage changes of issue 22 (item 0), measured in one run.

Each row is a real ``mg-tune search`` (the CLI, a new local Ray, a SQLite
MLflow store in a fresh directory) of one of two specs:

* ``quickstart``: ``search_spaces/quickstart.yaml`` as ``make demo`` runs it
  (SMERF CNN, 6 trials × 3 epochs);
* ``voc``: a scaled-down VOC search on a generated VOC 2007 data set
  (``bench/data_loading.py``'s writer: 48 images, XML boxes), ResNet-18 at
  64 px, IxG at the input, 3 trials × 2 epochs, λ searched for Energy and L1.

``before`` runs the code of ``--before`` (a git commit, checked out into a
temporary worktree and put first on ``PYTHONPATH``, trials included);
the other rows run this checkout with the spec's ``checkpoints`` policy
(``all``, ``front_per_group``, and ``front_per_group`` with bfloat16
weights). Bytes are counted on disk after the search: MLflow's artifacts by
kind (``checkpoint.pt`` = weights, ``resume.pt`` = optimizer state of each
trial's newest epoch, ``overlays/*.png``, the rest: Pareto plots, spec) and
Ray Tune's storage path (its own checkpoint per trial and experiment state).

    python bench/storage.py --before 5ace39d --json bench/results/storage.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from data_loading import VOCWriter  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
MB = 1e6
POLICIES = {"all": {"keep": "all"}, "front_per_group": {"keep": "front_per_group"}, "front_per_group + bf16": {"keep": "front_per_group", "dtype": "bfloat16"}}


def quickstart_spec(root: Path) -> dict:
    return yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())


def voc_spec(root: Path) -> dict:
    data = root / "voc-data"
    if not data.exists():
        VOCWriter(data, 96, 72, seed=0).grow(48)
    return {
        "name": "voc-small",
        "data": {"name": "voc", "root": str(data / "VOCdevkit"), "image_size": 64, "augment": False, "options": {"val_split": "official", "heldout_fraction": 0.25}},
        "fixed": {"model": "resnet18", "attribution": "ixg", "layer": "input", "epochs": 2, "batch_size": 16, "eval_batch_size": 16, "overlay_images": 2},
        "space": {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {}}},
        "objectives": ["f1", "epg", "iou"],
        "sampler": "random",
        "trials": 3,
        "concurrency": 2,
        "resources": {"cpu": 1},
        "seed": 0,
    }


SPECS = {"quickstart": quickstart_spec, "voc": voc_spec}


def tree_bytes(root: Path) -> dict[str, int]:
    """Bytes under ``root`` by kind (see the module docstring)."""
    out = {"weights": 0, "resume": 0, "overlays": 0, "other": 0, "checkpoint files": 0}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.name == "checkpoint.pt":
            out["weights"] += size
            out["checkpoint files"] += 1
        elif path.name == "resume.pt":
            out["resume"] += size
        elif path.suffix == ".png" and "overlays" in path.parts:
            out["overlays"] += size
        else:
            out["other"] += size
    return out


def run(spec: dict, label: str, root: Path, pythonpath: str | None) -> dict:
    folder = root / f"{spec['name']}-{label.replace(' ', '').replace('+', '-')}"
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    cmd = [sys.executable, "-c", "from mg_tune.cli import app; app()", "search", str(folder / "spec.yaml"), "--name", spec["name"], "--storage-path", str(folder / "runs")]
    cwd = folder / "cwd"  # where the user runs from: nothing may land here
    cwd.mkdir()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{label} {spec['name']}: mg-tune search failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    mlflow = tree_bytes(folder / "mlartifacts")
    ray = sum(p.stat().st_size for p in (folder / "runs").rglob("*") if p.is_file())
    stray = sorted(p.name for p in cwd.iterdir())
    return {"spec": spec["name"], "code": label, "seconds": round(time.perf_counter() - start, 1), "mlflow": mlflow, "mlflow_total": sum(v for k, v in mlflow.items() if k != "checkpoint files"), "ray": ray, "written_in_cwd": stray}


def table(rows: list[dict]) -> str:
    lines = ["| search | code / policy | weights files | weights MB | resume MB | overlays MB | other MB | MLflow MB | Ray MB | total MB | total / before |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    before = {r["spec"]: r["mlflow_total"] + r["ray"] for r in rows if r["code"] == "before"}
    for r in rows:
        m, total = r["mlflow"], r["mlflow_total"] + r["ray"]
        ratio = f"{total / before[r['spec']]:.2f}" if r["spec"] in before else "—"
        lines.append(
            f"| {r['spec']} | {r['code']} | {m['checkpoint files']} | {m['weights'] / MB:.1f} | {m['resume'] / MB:.1f} | {m['overlays'] / MB:.1f} | {m['other'] / MB:.1f} | "
            f"{r['mlflow_total'] / MB:.1f} | {r['ray'] / MB:.1f} | {total / MB:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git commit to measure as 'before' (omit to skip)")
    parser.add_argument("--specs", nargs="+", choices=list(SPECS), default=list(SPECS))
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mg-tune-storage-") as tmp:
        root = Path(tmp)
        before = None
        if args.before:
            before = root / "before-checkout"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(before), args.before], check=True, capture_output=True)
        try:
            for name in args.specs:
                spec = SPECS[name](root)
                if before is not None:
                    rows.append(run(spec, "before", root, str(before)))
                    print(table(rows), flush=True)
                for label in args.policies:
                    rows.append(run({**spec, "checkpoints": POLICIES[label]}, label, root, None))
                    print(table(rows), flush=True)
        finally:
            if before is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"before": args.before, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
