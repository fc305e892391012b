"""``mg-tune data ...``: commands about the user's local copies of the real data sets.

``mg-tune data check DATASET --root PATH`` loads the index of every split,
validates every annotation (and, unless ``--no-images``, decodes every image whole
-- a truncated JPEG has a valid header -- and loads every segmentation file, with a
progress bar on a terminal and nothing extra in a pipe) and prints the counts per
split and class. ``mg-tune data check SPEC.yaml`` does the same for a search spec's
``data`` block, options and all, so it checks exactly what the search will load. Any
problem is one line naming the file, exit code 2; what is legal but suspicious
(images listed twice, images shared between splits, a split whose groups cannot
measure worst-group accuracy, samples skipped under ``--on-bad-sample skip``) is a
``warning:`` line each, exit code 0.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional

import typer
import yaml

from mg_tune.output import Column, check_output_format, fail, message, output_option, print_table, progress_bars, warning

if TYPE_CHECKING:
    from mg_tune.search.spec import SearchSpec

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check the real data sets (VOC, COCO, Waterbirds) on disk.")


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--option {pair!r} must look like key=value")
        options[key.strip()] = yaml.safe_load(value)
    return options


@data_app.command("check")
def check(
    dataset: str = typer.Argument(..., help="voc, coco or waterbirds (with --root), or a search spec SPEC.yaml: its data block as the search loads it"),
    root: Optional[str] = typer.Option(None, "--root", help="the data set's directory (see README 'Using your data'); not with a spec"),
    variant: Optional[str] = typer.Option(None, "--variant", help="VOC 2007, COCO 2014, Waterbirds conventional|reversed"),
    option: list[str] = typer.Option([], "--option", "-o", help="a loader option as key=value (repeatable), e.g. crowd=include"),
    on_bad_sample: Optional[str] = typer.Option(None, "--on-bad-sample", help="error (default): stop at the first problem; skip: count and skip bad samples"),
    images: bool = typer.Option(True, "--images/--no-images", help="also decode every image and load every segmentation file"),
    output: str = output_option(),
) -> None:
    """Validate every annotation of DATASET under --root (or of a spec's data) and print counts per split and class."""
    check_output_format(output)
    if dataset.endswith((".yaml", ".yml")):
        spec = _spec(dataset, root=root, variant=variant, option=option, on_bad_sample=on_bad_sample)
        config = spec.data
        what = f"data of {dataset}"
    else:
        from pydantic import ValidationError

        from mg_tune.config import DataConfig
        from mg_tune.data import REAL_LOADERS

        spec = None

        if dataset not in REAL_LOADERS:
            fail(f"DATASET {dataset!r} is not a real data set; valid: {', '.join(REAL_LOADERS)} (or a spec file ending in .yaml)")
        if root is None:
            fail(f"--root is required with DATASET {dataset!r}: the directory holding it (see README 'Using your data')")
        try:
            config = DataConfig(name=dataset, root=root, variant=variant, options=_options(option), on_bad_sample=on_bad_sample or "error")
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            fail(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}")
        what = dataset
    from mg_tune.data import check_dataset

    found: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info, reports = check_dataset(config, images=images, progress=_progress_bar, warn=found.append)
    except ValueError as exc:  # DatasetError and option errors
        fail(str(exc))
    if spec is not None:
        try:
            spec.check_val_split(reports)  # what mg-tune search refuses before training (e.g. EPG on a val split without a box)
        except ValueError as exc:
            fail(f"{dataset}: {exc}")
    print_reports(f"{info.name} at {config.root}", info, reports, output)
    found = [str(w.message) for w in caught if issubclass(w.category, UserWarning)] + found  # skipped samples first
    for text in found:
        warning(text)
    count = f"; {len(found)} warning{'s' if len(found) != 1 else ''} above" if found else ""
    message(f"ok: every annotation of {what} is valid{' (images decoded and segmentation files too)' if images else ''}{count}", output)


def _progress_bar(split: str):
    """The bar over a split's images (:func:`mg_tune.output.progress_bars`); None in a pipe, which gets nothing extra."""
    bars = progress_bars()
    return (lambda items, total: bars.track(items, f"decoding {split} images", total)) if bars.shown else None


def _spec(path: str, **flags) -> SearchSpec:
    """The spec at ``path``, exactly as ``mg-tune search`` loads it (its ``data`` block is what is checked).

    The flags that describe a data set on the command line are refused: the spec decides.
    """
    from mg_tune.search.spec_file import SpecError, read_spec_file

    given = [f"--{name.replace('_', '-')}" for name, value in flags.items() if value]
    if given:
        fail(f"{given[0]} cannot be given with a spec ({path}): its data block decides; edit data: in the spec")
    try:
        read_spec_file(path)  # a missing or malformed file fails here, before the data loaders (torch) are imported
        from mg_tune.data import REAL_LOADERS
        from mg_tune.search.spec import load_spec

        spec, _ = load_spec(path)
    except SpecError as exc:
        fail(str(exc))
    if spec.data.name not in REAL_LOADERS:
        fail(f"{path}: data.name: {spec.data.name!r} is generated, not read from disk; data check reads {', '.join(REAL_LOADERS)}")
    return spec


def print_reports(title: str, info, reports, output: str) -> None:
    """Print the per-split counts of ``data check``.

    As tables: the counts per split (images, boxes, segmented images, difficult objects,
    crowd regions, images left without labels, classes without a box), the names of the
    classes without a box, then images per class (and per group) with one column per split.
    As JSON/CSV: one row per split holding all of it, the per-class image counts under
    ``class:<name>`` and the per-group counts under ``group:<name>``.
    """
    counts = [
        Column("split", justify="left"), Column("images"), Column("boxes"), Column("with_segmentation", "with segmentation"),
        Column("difficult"), Column("crowd"), Column("unlabeled", "without labels"), Column("classes_without_boxes", "classes without boxes"),
    ]
    rows = [
        {
            "split": r.split, "images": r.images, "boxes": r.boxes, "with_segmentation": r.with_seg,
            "difficult": r.difficult, "crowd": r.crowd, "unlabeled": r.unlabeled, "classes_without_boxes": len(r.classes_without_boxes),
            **{f"class:{name}": r.class_counts[k] for k, name in enumerate(info.class_names)},
            **{f"group:{name}": r.group_counts.get(g, 0) for g, name in enumerate(info.group_names or ())},
        }
        for r in reports
    ]
    if output != "table":
        extra = [Column(key) for key in rows[0] if key.startswith(("class:", "group:"))] if rows else []
        print_table(title, counts + extra, rows, output)
        return
    print_table(title, counts, rows)
    for r in reports:
        if r.classes_without_boxes:
            message(f"{r.split}: no box of {', '.join(info.class_names[k] for k in r.classes_without_boxes)}")
    for kind, names in (("class", info.class_names), ("group", info.group_names or ())):
        if names:
            per_split = [Column(kind, justify="left"), *(Column(r.split) for r in reports)]
            print_table(f"images per {kind}", per_split, [{kind: n, **{r["split"]: r[f"{kind}:{n}"] for r in rows}} for n in names])
