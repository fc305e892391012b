"""``mg-tune data ...``: commands about the user's local copies of the real data sets.

``mg-tune data check DATASET --root PATH`` loads the index of every split,
validates every annotation (and, unless ``--no-images``, every image header and
segmentation file) and prints the counts per split and class. Any problem is one
line naming the file, exit code 2.
"""

from __future__ import annotations

from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check the real data sets (VOC, COCO, Waterbirds) on disk.")


def _fail(message: str) -> None:
    from mg_tune.cli import fail

    fail(message)


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"--option {pair!r} must look like key=value")
        options[key.strip()] = yaml.safe_load(value)
    return options


@data_app.command("check")
def check(
    dataset: str = typer.Argument(..., help="voc, coco or waterbirds"),
    root: str = typer.Option(..., "--root", help="the data set's directory (see README 'Using your data')"),
    variant: Optional[str] = typer.Option(None, "--variant", help="VOC 2007, COCO 2014, Waterbirds conventional|reversed"),
    option: list[str] = typer.Option([], "--option", "-o", help="a loader option as key=value (repeatable), e.g. crowd=include"),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error: stop at the first problem; skip: count and skip bad samples"),
    images: bool = typer.Option(True, "--images/--no-images", help="also open every image header and segmentation file"),
) -> None:
    """Validate every annotation of DATASET under --root and print counts per split and class."""
    from pydantic import ValidationError

    from mg_tune.config import DataConfig
    from mg_tune.data import REAL_LOADERS, check_dataset

    if dataset not in REAL_LOADERS:
        _fail(f"DATASET {dataset!r} is not a real data set; valid: {', '.join(REAL_LOADERS)}")
    try:
        config = DataConfig(name=dataset, root=root, variant=variant, options=_options(option), on_bad_sample=on_bad_sample)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        _fail(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}")
    try:
        info, reports = check_dataset(config, images=images)
    except ValueError as exc:  # DatasetError and option errors
        _fail(str(exc))
    console = Console()
    summary = Table(title=f"{info.name} at {root}")
    for column in ("split", "images", "boxes", "with segmentation"):
        summary.add_column(column, justify="right")
    for r in reports:
        summary.add_row(r.split, str(r.images), str(r.boxes), str(r.with_seg))
    console.print(summary)
    per_class = Table(title="images per class")
    per_class.add_column("class")
    for r in reports:
        per_class.add_column(r.split, justify="right")
    for k, name in enumerate(info.class_names):
        per_class.add_row(name, *(str(r.class_counts[k]) for r in reports))
    console.print(per_class)
    if info.group_names:
        groups = Table(title="images per group")
        groups.add_column("group")
        for r in reports:
            groups.add_column(r.split, justify="right")
        for g, name in enumerate(info.group_names):
            groups.add_row(name, *(str(r.group_counts.get(g, 0)) for r in reports))
        console.print(groups)
    console.print(f"ok: every annotation of {dataset} is valid{' (images and segmentation files too)' if images else ''}")
