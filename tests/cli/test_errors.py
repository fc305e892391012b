"""Every bad input we know of, run through the real CLI: one line naming file/field/value, exit code 2,
no traceback, nothing written (no MLflow store, no files). docs/errors.md is generated from these same
cases (``python tests/cli/test_errors.py``) and checked against them here, so the table never drifts.

Plus property-based tests (hypothesis) over the spec schema: whatever YAML mapping a user writes,
``load_spec`` either accepts it or raises one ``SpecError`` line naming the file, never anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.search.spec import SearchSpec, SpecError, load_spec
from mg_tune.tracking import TrialLogger, start_search
from mg_tune.train import EpochResult

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
STORE_URI = "sqlite:///mlflow.db"  # relative: in the case's working directory
BUSY_PORT = 5391  # a case with listen="socket" holds it (or finds it held already: the same refusal)
AUTH_PORT = 5392  # a case with listen="401" serves HTTP 401 there, as MLflow's basic-auth app does without credentials


def _pickled_code_checkpoint() -> bytes:
    """A checkpoint whose pickle references a class: ``torch.load(weights_only=True)`` must refuse it."""
    buffer = io.BytesIO()
    torch.save({"model": argparse.Namespace(hook="os.system"), "config": {}, "epoch": 1}, buffer)
    return buffer.getvalue()


PICKLED = _pickled_code_checkpoint()
NOT_TEXT = b"\x00\xff\xfe\x00garbage"  # what a binary file, another encoding or random bytes look like


def _truncated_checkpoint() -> bytes:
    """The first half of a real checkpoint file: an interrupted copy or download."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(256)}, "config": {}, "epoch": 1}, buffer)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


TRUNCATED = _truncated_checkpoint()


def _jpeg() -> bytes:
    """An 8x8 grey JPEG: a real image file for the data cases that get past the images."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def _coco_without_box() -> str:
    """A COCO annotation file whose one annotation has ``bbox: null`` (the message holds brackets: printed literally)."""
    return json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": None, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}],
    })


@dataclass(frozen=True)
class Case:
    what: str
    args: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    store: bool = False  # an MLflow store at ./mlflow.db holding search 'tiny' (trial t0, epoch 1) first
    listen: str | None = None  # "socket": something listens on BUSY_PORT; "401": AUTH_PORT answers 401 (while the command runs)


def spec_case(what: str, spec: str | bytes, *extra: str, files: dict | None = None) -> Case:
    return Case(what, ["search", "spec.yaml", *extra], {"spec.yaml": spec, **(files or {})})


def data_case(what: str, name: str, files: dict[str, str | bytes]) -> Case:
    return Case(what, ["data", "check", name, "--root", name], {f"{name}/{path}": content for path, content in files.items()})


def export_case(what: str, *args: str, files: dict | None = None) -> Case:
    defaults = {"--search": "tiny", "--trial": "t0", "--epoch": "1", "--to": "exported", "--tracking-uri": STORE_URI}
    given_args = dict(zip(args[::2], args[1::2]))
    merged = [x for k, v in {**defaults, **given_args}.items() for x in (k, v)]
    return Case(what, ["export", *merged], files or {}, store=True)


def _truncated_jpeg() -> bytes:
    """The first half of a 64x64 JPEG: its header (size) reads, its pixels do not (an interrupted copy)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


TRUNCATED_JPEG = _truncated_jpeg()


def coco_files(train: dict, val: dict | None = None, images: dict[str, bytes] | None = None) -> dict[str, str | bytes]:
    """A COCO root's instances files (JSON of ``train``/``val``), its train2014/ folder and ``images`` in it."""
    empty = {"images": [], "annotations": [], "categories": train.get("categories", [])}
    return {
        "annotations/instances_train2014.json": json.dumps({"images": [], "annotations": [], "categories": [], **train}),
        "annotations/instances_val2014.json": json.dumps(val or empty),
        "train2014/.keep": "",
        **{f"train2014/{name}": content for name, content in (images or {}).items()},
    }


COCO_IMAGE = {"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}
VOC_XML = "<annotation><size><width>8</width><height>8</height></size><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>"
VOC_BACKGROUND_VAL = {
    **{f"voc/VOC2007/ImageSets/Main/{split}.txt": ids for split, ids in (("train", "000001\n"), ("val", "000002\n000003\n"), ("test", "000001\n"))},
    **{f"voc/VOC2007/Annotations/00000{i}.xml": VOC_XML if i == 1 else VOC_XML.split("<object>")[0] + "</annotation>" for i in (1, 2, 3)},
    **{f"voc/VOC2007/JPEGImages/00000{i}.jpg": b"" for i in (1, 2, 3)},
}
"""A VOC copy whose val split holds background images only (no box to measure EPG/IoU on)."""

COCO_VAL = '{"images": [], "annotations": [], "categories": [{"id": 3, "name": "car"}]}'
CASES: list[Case] = [
    spec_case("malformed YAML", "data: {variant: multilabel\n"),
    spec_case("a spec file that is not UTF-8 text", NOT_TEXT),
    spec_case("a spec that is not a mapping", "- lr\n- lam\n"),
    Case("a spec file that does not exist", ["search", "nowhere.yaml"]),
    spec_case("unknown key (typo)", "trails: 8\n"),
    spec_case("unknown key in data", "data: {variant: multilabel, train_sise: 100}\n"),
    spec_case("unknown key in fixed", "fixed: {lamda: 0.1}\n"),
    spec_case("unknown distribution", "space: {lr: {logunifrom: [1.0e-4, 1.0e-2]}}\n"),
    spec_case("wrong type", "trials: many\n"),
    spec_case("wrong type in resources", "resources: {cpu: two}\n"),
    spec_case("zero trials", "trials: 0\n"),
    spec_case("zero bound of a log distribution", "space: {lr: {loguniform: [0, 1.0e-2]}}\n"),
    spec_case("negative λ range", "space: {lam: {loguniform_by_loss: {energy: [-1.0, 1.0]}}}\n"),
    spec_case("reversed range", "space: {dilation: {uniform: [50, 10]}}\n"),
    spec_case("range beyond the field's limits", "space: {annotation_fraction: {uniform: [0.1, 2.0]}}\n"),
    spec_case("λ searched without its loss", "space: {lam: {loguniform: [0.1, 1.0]}}\n"),
    spec_case("searched and fixed at once", "fixed: {lr: 0.001}\nspace: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n"),
    spec_case("not a searchable hyperparameter", "space: {device: {choice: [cpu, cuda]}}\n"),
    spec_case("grid sampler over a continuous range", "sampler: grid\nspace: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n"),
    spec_case("unknown sampler", "sampler: nsga9\n"),
    spec_case("unknown loss", "fixed: {loss: enrgy}\n"),
    spec_case("unknown loss among choices", "space: {loss: {choice: [energy, enrgy]}}\n"),
    spec_case("unknown loss in λ ranges", "space: {lam: {loguniform_by_loss: {enrgy: [0.1, 1.0]}}}\n"),
    spec_case("unknown attribution", "fixed: {attribution: gradcm}\n"),
    spec_case("unknown layer among choices", "space: {layer: {choice: [input, mid9]}}\n"),
    spec_case("unknown model", "fixed: {model: resnet1000}\n"),
    spec_case("fixed IoU threshold outside (0, 1)", "fixed: {iou_threshold: 1.5}\n"),
    spec_case("unknown data set", "data: {name: imagenet}\n"),
    spec_case("unknown data set option", "data: {name: coco, root: coco, options: {val_fraktion: 0.2}}\n"),
    spec_case("objective that is not a metric", "objectives: [f1, loss]\n"),
    spec_case("objective direction", "objectives: [{name: f1, direction: up}]\n"),
    spec_case("constraint on a non-metric", "constraints: ['acc >= 0.8']\n"),
    spec_case("objective the data set cannot measure", "data: {name: voc, root: voc}\nobjectives: [f1, pafl]\n"),
    spec_case("constraint on a metric the data set cannot measure", "data: {name: waterbirds, root: wb}\nobjectives: [accuracy]\nconstraints: ['seg_epg >= 0.3']\n"),
    spec_case("box objective on VOC whose val split has background images only", "data: {name: voc, root: voc}\n", files=VOC_BACKGROUND_VAL),
    spec_case("segmentation objective on VOC without segmentation files", "data: {name: voc, root: voc}\nobjectives: [f1, seg_epg]\n", files={**{f"voc/VOC2007/ImageSets/Main/{split}.txt": "000001\n000002\n" for split in ("train", "val", "test")}, **{f"voc/VOC2007/{d}/00000{i}.{e}": c for i in (1, 2) for d, e, c in (("Annotations", "xml", VOC_XML), ("JPEGImages", "jpg", b""))}}),
    spec_case("constraint syntax", "constraints: ['f1 > 0.8']\n"),
    spec_case("contradictory constraints", "constraints: ['f1 >= 0.8', 'f1 <= 0.5']\n"),
    spec_case("budget without a bound", "budget: {}\n"),
    Case("resume of a search that never ran (a typo in --name)", ["search", "spec.yaml", "--name", "tinny", "--resume"], {"spec.yaml": "trials: 2\n"}, store=True),
    Case("warm start from a search that does not exist", ["search", "spec.yaml"], {"spec.yaml": "warm_start: nope\ntrials: 2\n"}, store=True),
    spec_case("missing data root", "data: {name: voc}\n"),
    spec_case("data root that does not exist", "data: {name: voc, root: data/voc}\n"),
    spec_case(
        "corrupt annotation file",
        "data: {name: coco, root: coco}\n",
        files={"coco/annotations/instances_train2014.json": '{"images": [', "coco/annotations/instances_val2014.json": COCO_VAL},
    ),
    spec_case("initial checkpoint that does not exist", "fixed: {init_checkpoint: missing.pt}\n"),
    spec_case("initial checkpoint with pickled code", "fixed: {init_checkpoint: evil.pt}\n", files={"evil.pt": PICKLED}),
    spec_case("initial checkpoint that is not a PyTorch file", "fixed: {init_checkpoint: junk.pt}\n", files={"junk.pt": NOT_TEXT}),
    spec_case("initial checkpoint cut short", "fixed: {init_checkpoint: half.pt}\n", files={"half.pt": TRUNCATED}),
    data_case("VOC image set that is not UTF-8 text", "voc", {"VOC2007/ImageSets/Main/train.txt": NOT_TEXT, "VOC2007/Annotations/.keep": "", "VOC2007/JPEGImages/.keep": ""}),
    data_case("VOC annotation that is not UTF-8 text", "voc", {"VOC2007/ImageSets/Main/train.txt": "000001\n", "VOC2007/Annotations/000001.xml": NOT_TEXT, "VOC2007/JPEGImages/.keep": ""}),
    data_case("VOC image id listed without its annotation", "voc", {"VOC2007/ImageSets/Main/train.txt": "\n000001\n", "VOC2007/Annotations/.keep": "", "VOC2007/JPEGImages/.keep": ""}),
    data_case("COCO annotation file that is not UTF-8 text", "coco", {"annotations/instances_train2014.json": NOT_TEXT}),
    data_case("COCO box that is not [x, y, w, h] (brackets printed literally)", "coco", {
        "annotations/instances_train2014.json": _coco_without_box(), "annotations/instances_val2014.json": _coco_without_box(),
        "train2014/a.jpg": _jpeg(), "val2014/a.jpg": _jpeg(),
    }),
    data_case("Waterbirds metadata that is not UTF-8 text", "waterbirds", {"metadata.csv": NOT_TEXT}),
    data_case("Waterbirds metadata cut short", "waterbirds", {"metadata.csv": "img_filename,y,place,split\n/a/1.jpg,1,0,", "boxes.csv": "img_filename,x,y,w,h\n/a/1.jpg,1,1,5,5\n"}),
    data_case("Waterbirds boxes that are not UTF-8 text", "waterbirds", {"metadata.csv": "img_filename,y,place,split\n/a/1.jpg,1,0,0\n", "boxes.csv": NOT_TEXT}),
    data_case("COCO test file annotating a class the train file does not list", "coco", coco_files(
        {"categories": [{"id": 1, "name": "person"}]},
        {"images": [COCO_IMAGE], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}], "categories": [{"id": 1, "name": "zebra"}]},
    )),
    data_case("COCO category name with two ids", "coco", coco_files({"categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "car"}]})),
    data_case("COCO category id with two names", "coco", coco_files({"categories": [{"id": 1, "name": "car"}, {"id": 1, "name": "truck"}]})),
    data_case("COCO image id listed twice", "coco", coco_files({"images": [COCO_IMAGE, {**COCO_IMAGE, "file_name": "b.jpg"}]})),
    data_case("COCO image size that is not a number", "coco", coco_files({"images": [{**COCO_IMAGE, "width": "wide"}]})),
    data_case("COCO box of zero width", "coco", coco_files(
        {"images": [COCO_IMAGE], "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 4]}], "categories": [{"id": 1, "name": "car"}]},
        images={"a.jpg": b""},
    )),
    data_case("truncated JPEG (its header reads, its pixels do not)", "voc", {
        **{f"VOC2007/ImageSets/Main/{split}.txt": "000001\n" for split in ("train", "val")},
        "VOC2007/Annotations/000001.xml": VOC_XML.replace("<width>8</width><height>8</height>", "<width>64</width><height>64</height>"),
        "VOC2007/JPEGImages/000001.jpg": TRUNCATED_JPEG,
    }),
    Case("data check of a data set without --root", ["data", "check", "voc"]),
    Case("data check of a spec with --root", ["data", "check", "spec.yaml", "--root", "voc"], {"spec.yaml": "data: {name: voc, root: voc}\n"}),
    Case("data check of a spec whose box objective its val split cannot measure (background images only)", ["data", "check", "spec.yaml", "--no-images"],
         {"spec.yaml": "data: {name: voc, root: voc}\n", **VOC_BACKGROUND_VAL}),
    Case("data check of a spec whose data is generated", ["data", "check", "spec.yaml"], {"spec.yaml": "data: {variant: multilabel}\n"}),
    spec_case("unreachable tracking server", "trials: 2\n", "--tracking-uri", "http://127.0.0.1:9"),
    spec_case("unreachable tracking server, password in the URI", "tracking_uri: http://admin:s3cret@127.0.0.1:9\n"),
    spec_case("unreachable tracking database, password in the URI", "trials: 2\n", "--tracking-uri", "postgresql://mlflow:s3cret@127.0.0.1:9/mlflow"),
    spec_case("tracking store in a missing directory", "trials: 2\n", "--tracking-uri", "sqlite:///no/such/dir/mlflow.db"),
    Case("Pareto front from an unreachable tracking server", ["pareto", "--search", "tiny", "--tracking-uri", "http://127.0.0.1:9"]),
    Case("evaluation against an unreachable tracking server", ["evaluate", "--search", "tiny", "--tracking-uri", "http://127.0.0.1:9"]),
    export_case("export from an unreachable tracking server", "--tracking-uri", "http://127.0.0.1:9"),
    Case("dashboard of an unreachable tracking server", ["dashboard", "--search", "tiny", "--tracking-uri", "http://127.0.0.1:9"]),
    Case("tracking server on a port already in use", ["server", "--port", str(BUSY_PORT)], listen="socket"),
    Case("tracking server that wants credentials", ["pareto", "--search", "tiny", "--tracking-uri", f"http://127.0.0.1:{AUTH_PORT}"], listen="401"),
    Case("Pareto front of an unknown search", ["pareto", "--search", "nope", "--tracking-uri", STORE_URI], store=True),
    Case("search name with brackets (printed literally, not as markup)", ["pareto", "--search", "runs[bold]", "--tracking-uri", STORE_URI], store=True),
    Case("Pareto front of a search with no checkpoint", ["pareto", "--search", "empty", "--tracking-uri", STORE_URI], store=True),
    Case("Pareto front on an objective the search did not log", ["pareto", "--search", "tiny", "--objectives", "worst_group_acc", "--tracking-uri", STORE_URI], store=True),
    Case("objective direction that does not exist", ["pareto", "--search", "tiny", "--objectives", "f1:up", "--tracking-uri", STORE_URI], store=True),
    Case("evaluation of an unknown search", ["evaluate", "--search", "nope", "--tracking-uri", STORE_URI], store=True),
    Case("evaluation of a search with no checkpoint", ["evaluate", "--search", "empty", "--tracking-uri", STORE_URI], store=True),
    Case("table format that does not exist", ["pareto", "--search", "tiny", "--output", "yaml", "--tracking-uri", STORE_URI], store=True),
    Case("IoU threshold mode of evaluate that does not exist", ["evaluate", "--search", "tiny", "--iou-threshold", "median", "--tracking-uri", STORE_URI], store=True),
    export_case("export of an unknown search", "--search", "nope"),
    export_case("export of an unknown trial", "--trial", "t9"),
    export_case("export from a search with no checkpoint", "--search", "empty"),
    export_case("export of an epoch never logged", "--epoch", "7"),
    export_case("export of a checkpoint holding pickled code"),
    export_case("export of a checkpoint cut short", "--trial", "t1"),
    export_case("export target outside the current directory", "--to", "../outside"),
    export_case("export target that is a file", "--to", "exported", files={"exported": "not a directory\n"}),
    export_case("export into an earlier export without --force", "--to", "exported", files={"exported/metrics.json": '{"model_id": "m-0"}', "exported/model.pt": ""}),
    export_case("export target of an unsupported kind", "--to", "ftp://host/models"),
    Case("submit of a spec that fails validation", ["submit", "spec.yaml", "--address", "http://127.0.0.1:9"], {"spec.yaml": "trails: 8\n"}),
    Case("submit of a spec whose tracking URI holds a password", ["submit", "spec.yaml", "--address", "http://127.0.0.1:9"], {"spec.yaml": "tracking_uri: http://admin:s3cret@10.0.0.5:5000\n"}),
    Case("submit with no Ray cluster given", ["submit", "spec.yaml", "--address", ""], {"spec.yaml": "trials: 2\n"}),
    Case("submit to a Ray address that is not the dashboard's URL", ["submit", "spec.yaml", "--address", "127.0.0.1:6379"], {"spec.yaml": "trials: 2\n"}),
    Case("submit to an unreachable Ray cluster", ["submit", "spec.yaml", "--address", "http://127.0.0.1:9"], {"spec.yaml": "trials: 2\n"}),
    Case("jobs of an unreachable Ray cluster", ["jobs", "list", "--address", "http://127.0.0.1:9"]),
]


def make_store(uri: str) -> None:
    """Search 'tiny': trial t0's epoch-1 checkpoint holds pickled code, trial t1's is cut short; search 'empty': no trial yet."""
    start_search("empty", {"trials": 2}, "trials: 2\n", uri, resume=False)
    search = start_search("tiny", {"trials": 2}, "trials: 2\n", uri, resume=False)
    for trial, content in (("t0", PICKLED), ("t1", TRUNCATED)):
        logger = TrialLogger(search, trial, {"lr": 0.001})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "checkpoint.pt"
            checkpoint.write_bytes(content)
            logger.log_epoch(EpochResult(1, {"f1": 0.5, "epg": 0.5, "iou": 0.5}, checkpoint, None))
        logger.finish()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def run_case(case: Case, workdir: Path, store: Path | None) -> tuple[int, str, bool]:
    """Run ``case`` in ``workdir`` (made empty first); return (exit code, output, whether anything was written)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name, content in case.files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    if case.store:
        shutil.copyfile(store, workdir / "mlflow.db")
    before = snapshot(workdir)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with {"socket": lambda: listening(BUSY_PORT), "401": lambda: refusing(AUTH_PORT), None: contextlib.nullcontext}[case.listen]():
            result = CliRunner().invoke(app, case.args, env={"MLFLOW_TRACKING_URI": STORE_URI, "RAY_ADDRESS": None, "MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}, catch_exceptions=True)
    finally:
        os.chdir(cwd)
    output = result.output.replace(f"{workdir.resolve()}/", "")  # messages that resolve a path: shown relative, as in the doc
    return result.exit_code, output, snapshot(workdir) != before


@contextlib.contextmanager
def listening(port: int):
    """A socket listening on 127.0.0.1:``port`` while the block runs (none of ours if something else holds the port already)."""
    try:
        listener = socket.create_server(("127.0.0.1", port))
    except OSError:
        yield
        return
    with listener:
        yield


@contextlib.contextmanager
def refusing(port: int):
    """An HTTP server on 127.0.0.1:``port`` answering every request with 401, while the block runs."""

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def row(case: Case, message: str) -> str:
    command = "mg-tune " + " ".join(case.args)
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    return f"| {cell(case.what)} | `{cell(command)}` | `{cell(message)}` |"


CLUSTER_ROWS = [
    ("a head started without mg-tune on its PATH (`ray start` outside the venv)", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run mg-tune ('/bin/sh: 1: mg-tune: not found'): a job runs with the PATH of the head's 'ray start'; start Ray with mg-tune's environment active (README: a hand-started cluster)"),
    ("a node whose Ray workers lack mg-tune or run another version", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search s: node 10.0.0.7 (3f2a9c1e): Ray's workers (/usr/bin/python3) have mg-tune not importable (PackageNotFoundError: No package metadata was found for mg-tune), the submitting machine 0.1.0"),
    ("a tracking server the cluster cannot reach", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search unreachable: from the cluster, tracking URI http://127.0.0.1:9: cannot connect (connection refused)"),
    ("no tracking URI on the cluster", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search s: no tracking URI on the cluster: set MLFLOW_TRACKING_URI in the environment of 'ray start' on the head (or tracking_uri in the spec)"),
    ("resume of a search that never ran", "mg-tune submit spec.yaml --name tinny --resume", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search tinny: --resume: search tinny never ran in http://10.0.0.5:5000: check the name, or leave out --resume to start it"),
    ("a new search under a name MLflow holds", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search s: search s exists in http://10.0.0.5:5000: add --resume to continue it, or choose another --name"),
    ("a storage path the head cannot write", "mg-tune submit spec.yaml", "error: the Ray cluster at http://127.0.0.1:8265 cannot run search s: storage path /data/model.pt/runs is not writable from the head (NotADirectoryError: [Errno 20] Not a directory: '/data/model.pt/runs')"),
    ("a job server that is still starting", "mg-tune submit spec.yaml", "error: the Ray job server at http://127.0.0.1:8265 answered: Request failed with status code 500: No available agent to submit job, please try again later.."),
    ("stop of a search that finished", "mg-tune jobs stop s", "error: search s is not running: its job mg-tune-s-20261207-131500 SUCCEEDED, so there is nothing to stop or resume"),
]
"""Refusals that need a Ray cluster: checked by the pre-flight job (tests/services/test_jobs.py runs the tracking-server one and a job that fails as a head without mg-tune does)."""


def document(rows: list[str]) -> str:
    return "\n".join(
        [
            "# Error messages",
            "",
            "Every bad input we know of and what `mg-tune` answers. Each answer is one line on stderr naming the",
            "file, field and value at fault; the exit code is 2; there is no traceback; nothing is written (no",
            "MLflow store is created or changed, no file appears). Generated by `python tests/cli/test_errors.py` from",
            "real runs of the CLI (`tests/cli/test_errors.py` checks every row). Commands run in a directory holding",
            "the files named; `MLFLOW_TRACKING_URI=sqlite:///mlflow.db` unless the command says otherwise; the",
            "export and Pareto rows run against a store holding search `tiny` (trial `t0`, epoch 1, whose",
            "checkpoint holds pickled code; trial `t1`, whose checkpoint is cut short) and search `empty` (no trial",
            "yet). Spec and data files are",
            "shown in `tests/cli/test_errors.py`; `NOT_TEXT` there is the bytes `00 ff fe 00` followed by `garbage`.",
            "",
            "| bad input | command | message |",
            "|---|---|---|",
            *rows,
            "",
            "Refusals that need a process in a given state, checked (with their own port, store and timeout) by the tests named:",
            "",
            "| situation | command | message | test |",
            "|---|---|---|---|",
            "| the port was free when checked, then another process bound it and answered `/health` | `mg-tune server --port P` "
            "| `error: port P is answered by another process, not by the mlflow server started for STORE; choose another --port` "
            "| `tests/services/test_server.py` |",
            "| a tracking server that accepts connections but does not answer within 10 s | `mg-tune pareto --search S` "
            "| `error: tracking URI URI: cannot connect (no answer within 10 s)` | `tests/cli/test_fast_failures.py` |",
            "",
            "## Refusals that need a Ray cluster",
            "",
            "`mg-tune submit` runs a pre-flight job on the cluster first (`mg_tune/jobs/preflight.py`); what it finds missing",
            "is one line, exit 2, and nothing is submitted. Examples (addresses, names and versions vary):",
            "",
            "| bad input | command | message |",
            "|---|---|---|",
            *(f"| {what} | `{command}` | `{message}` |" for what, command, message in CLUSTER_ROWS),
            "",
            FAILED_SEARCH_SECTION,
        ]
    )


FAILED_SEARCH_SECTION = """
## A search whose trials failed

The rows above are input refused before anything runs (exit code 2). A search that was accepted
and ran, but whose every trial failed, exits with code **1**: nothing was wrong with the command,
but it produced nothing. Its parent run ends `FAILED` in MLflow, no front is computed, and stderr
holds one line naming the first failed trial and its cause (the trial run's tag
`mg_tune.failure_reason`; Ray's traceback stays in the trial's `error.txt` under the storage path), e.g.

`error: search 'allfail': all 2 trials failed; trial 9af06362: DivergedError: non-finite loss nan (class nan, localization 0.0) with lam=1.0, lr=1e+29`

A search where only some trials failed exits 0; its summary names how many and why, e.g.
`1 of 2 trials failed: DivergedError: non-finite loss … (1)`, and the console printed each failure
as one line (`trial … FAILED: …`) when it happened (`tests/search/test_faults.py`).
"""
"""Not a refusal (the search ran): documented after the table; tested in tests/search/test_faults.py."""


@pytest.fixture(scope="module")
def store(new_mlflow_store, tmp_path_factory) -> Path:
    uri = new_mlflow_store()
    make_store(uri)
    return Path(uri.removeprefix("sqlite:///"))


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written_and_documented(case, store, tmp_path):
    code, output, wrote = run_case(case, tmp_path / "work", store)
    lines = output.strip().splitlines()
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    assert not wrote, "the command wrote files before failing"
    assert "s3cret" not in output
    assert row(case, lines[0]) in DOC.read_text(), f"docs/errors.md is out of date (python tests/cli/test_errors.py): {lines[0]}"


# --------------------------------------------------------------------------- properties of the spec schema

FIELD_NAMES = sorted({*SearchSpec.model_fields, *TrainConfig.model_fields, *DataConfig.model_fields, "loguniform", "choice", "uniform", "int"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)), max_leaves=8)


def _load(tmp_path: Path, raw) -> tuple[SearchSpec | None, str | None]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    try:
        return load_spec(path)[0], None
    except SpecError as exc:
        return None, str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, values, max_size=4))
def test_any_mapping_is_a_valid_spec_or_one_line_naming_the_file(tmp_path, raw):
    spec, error = _load(tmp_path, raw)
    if error is not None:
        assert error.startswith(str(tmp_path / "spec.yaml") + ":") and "\n" not in error
        assert "Traceback" not in error


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["loguniform", "uniform"]),
    low=st.floats(-10, 10, allow_nan=False),
    high=st.floats(-10, 10, allow_nan=False),
)
def test_ranges_are_accepted_exactly_when_ordered_and_positive_for_log(tmp_path, kind, low, high):
    spec, error = _load(tmp_path, {"space": {"dilation" if kind == "uniform" else "lr": {kind: [low, high]}}})
    valid = low < high and (kind == "uniform" and low >= 0 or kind == "loguniform" and low > 0)
    assert (spec is not None) == valid, error
    if spec is not None:
        assert low <= list(spec.first_point().values())[0] <= high
    else:
        assert "space." in error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["loss", "attribution", "layer", "model"]), junk=st.text(st.characters(categories=["Ll"]), min_size=1, max_size=8))
def test_an_unknown_name_among_choices_is_refused_naming_the_field(tmp_path, name, junk):
    known = {"loss": "energy", "attribution": "ixg", "layer": "input", "model": "smerf_cnn"}[name]
    spec, error = _load(tmp_path, {"space": {name: {"choice": [known, junk]}}})
    try:
        TrainConfig(**{name: junk})
        junk_is_valid = True
    except ValueError:
        junk_is_valid = False
    assert (spec is not None) == junk_is_valid
    if not junk_is_valid:
        assert f"space.{name}: choice {junk!r}" in error


def main() -> None:
    """Regenerate docs/errors.md from real runs of every case."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store" / "mlflow.db"
        store.parent.mkdir()
        make_store(f"sqlite:///{store}")
        rows = []
        for case in CASES:
            code, output, wrote = run_case(case, Path(tmp) / "work", store)
            lines = output.strip().splitlines()
            if code != 2 or len(lines) != 1 or wrote:
                sys.exit(f"case {case.what!r} did not fail cleanly (exit {code}, wrote={wrote}):\n{output}")
            rows.append(row(case, lines[0]))
    DOC.write_text(document(rows))
    print(f"wrote {DOC} ({len(rows)} cases)")


def test_a_failed_jobs_reason_is_its_drivers_last_line_not_rays():
    """``jobs list``'s error column and the pre-flight's reason: Ray's message about a job on a head without mg-tune, as Ray 2.60 writes it (out of order)."""
    from mg_tune.jobs.client import last_output_line

    message = (
        "Job entrypoint command failed with exit code 127, last available logs (truncated to 20,000 chars):\n"
        "2026-12-07 13:02:22,848\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        "/bin/sh: 1: mg-tune: not found\n"
        "Running entrypoint for job raysubmit_R7sR5ndfvCJdCVF3: mg-tune jobs preflight\n"
    )
    assert last_output_line(message) == "/bin/sh: 1: mg-tune: not found"
    assert last_output_line("Running entrypoint for job x: y\n") is None


def test_cluster_refusals_are_documented():
    text = DOC.read_text()
    for what, command, message in CLUSTER_ROWS:
        assert f"| {what} | `{command}` | `{message}` |" in text, f"docs/errors.md is out of date (python tests/cli/test_errors.py): {what}"


def test_the_preflight_checks_name_what_is_missing(tmp_path, new_mlflow_store):
    """The checks the pre-flight job runs on the head, run here: each problem is the phrase docs/errors.md shows."""
    from mg_tune.jobs.preflight import storage_problems, tracking_problems

    (tmp_path / "model.pt").write_bytes(b"")
    assert storage_problems(str(tmp_path / "model.pt" / "runs")) == [f"storage path {tmp_path}/model.pt/runs is not writable from the head (NotADirectoryError: [Errno 20] Not a directory: '{tmp_path}/model.pt/runs')"]
    assert storage_problems(str(tmp_path / "runs")) == [] and list((tmp_path / "runs").iterdir()) == []  # written and deleted
    assert tracking_problems(None, "s", False) == ["no tracking URI on the cluster: set MLFLOW_TRACKING_URI in the environment of 'ray start' on the head (or tracking_uri in the spec)"]
    assert tracking_problems("http://127.0.0.1:9", "s", False) == ["from the cluster, tracking URI http://127.0.0.1:9: cannot connect (connection refused)"]
    uri = new_mlflow_store()
    assert tracking_problems(uri, "tinny", True) == [f"--resume: search tinny never ran in {uri}: check the name, or leave out --resume to start it"]
    start_search("s", {"trials": 2}, "trials: 2\n", uri, resume=False)
    assert tracking_problems(uri, "s", False) == [f"search s exists in {uri}: add --resume to continue it, or choose another --name"]
    assert tracking_problems(uri, "s", True) == []


if __name__ == "__main__":
    main()
