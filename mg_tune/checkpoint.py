"""Checkpoints: one file per epoch, device independent, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors and JSON-like values (no pickled
code): ``model`` and ``optimizer`` state dicts, ``epoch``, validation
``metrics``, the full ``config`` (``TrainConfig.model_dump(mode="json")``) and
``dataset``: what the outputs mean and the input size
(:class:`mg_tune.data.card.DatasetCard` as JSON), so a checkpoint
becomes a model without the data set on disk.

Each epoch is two files in its folder (:func:`split_for_storage`):
``checkpoint.pt``, the checkpoint without its optimizer state (``optimizer``
is None), optionally with half-precision weights: what the front,
``evaluate`` and ``export`` read; and ``resume.pt`` beside it, what
continuing training needs on top (the optimizer state, and the float32
weights when the stored ones are cast). A search keeps ``resume.pt`` for each
trial's newest epoch only; :func:`load_resumable` puts the two together again.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
RESUME_FILE = "resume.pt"

STORED_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Precisions a search can store weights in (spec ``checkpoints.dtype``)."""


def epoch_dir(root: str | Path, epoch: int) -> Path:
    """``root/epoch=NNN``: where the checkpoint of ``epoch`` lives."""
    return Path(root) / f"epoch={epoch:03d}"


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    metrics: dict[str, float],
    config: dict[str, Any],
    dataset: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``path`` and, with an optimizer, ``resume.pt`` beside it (:func:`split_for_storage` in ``dtype``); return ``path``.

    Each file is written atomically (a temporary file, then a rename), ``resume.pt`` first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": _to_cpu(model.state_dict()),
        "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "epoch": epoch,
        "metrics": dict(metrics),
        "config": config,
        "dataset": dataset,
    }
    stored, resume = split_for_storage(state, dtype)
    if optimizer is not None:
        _save(resume, path.with_name(RESUME_FILE))
    _save(stored, path)
    return path


def _save(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _to_cpu(value: Any) -> Any:
    """``value`` with every tensor inside dicts/lists moved to the CPU (a GPU trial's file loads anywhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def split_for_storage(state: dict[str, Any], dtype: str = "float32") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(stored, resume)`` of a checkpoint: see the module docstring.

    ``stored`` is ``state`` with ``optimizer=None`` and every floating-point
    weight cast to ``dtype`` (integer buffers, e.g. BatchNorm's
    ``num_batches_tracked``, unchanged); ``resume`` holds the ``optimizer``
    state and, unless ``dtype`` is float32, the ``model`` weights as trained.
    """
    cast = STORED_DTYPES[dtype]
    model = {k: v.to(cast) if v.is_floating_point() else v for k, v in state["model"].items()}
    stored = {**state, "model": model, "optimizer": None}
    resume = {"optimizer": state["optimizer"], "model": None if cast == torch.float32 else state["model"]}
    return stored, resume


def join_resume(stored: dict[str, Any], resume: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint :func:`split_for_storage` split (``resume=None``: ``stored`` as it is)."""
    if resume is None:
        return stored
    return {**stored, "optimizer": resume["optimizer"], "model": resume["model"] if resume["model"] is not None else stored["model"]}


def load_resumable(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` joined with ``resume.pt`` beside it (as :func:`save_checkpoint` wrote them).

    A checkpoint written before ``resume.pt`` existed holds its optimizer state itself.

    Raises:
        FileNotFoundError: neither file holds the optimizer state.
    """
    path = Path(path)
    resume = path.with_name(RESUME_FILE)
    state = join_resume(load_checkpoint(path), load_checkpoint(resume) if resume.exists() else None)
    if state["optimizer"] is None:
        raise FileNotFoundError(f"{path} has no {RESUME_FILE} beside it: only a trial's newest epoch keeps the state to continue training from")
    return state


ZIP_MAGIC = b"PK\x03\x04"
"""How every file ``torch.save`` writes (zip serialisation, the default since PyTorch 1.6) begins."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU; refuses anything but tensors and plain data."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def read_weights(path: str | Path, shown: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or one ``ValueError`` line naming ``shown``.

    The line says which of these it is: the file cannot be read, it holds
    pickled code (``weights_only`` refuses a global; the class is named), it
    is not a PyTorch file at all (random bytes, text), or it is a truncated or
    corrupt one (an interrupted copy or download).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise ValueError(f"{shown}: cannot read ({exc.strerror})") from None
    try:
        return load_checkpoint(path)
    except pickle.UnpicklingError as exc:  # what weights_only=True raises for pickled code, and for non-pickles
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None and head != ZIP_MAGIC:
            raise ValueError(f"{shown} is not a PyTorch checkpoint (neither a zip archive nor a pickle)") from None
        detail = f" (it references {found.group(1)})" if found else ""
        raise ValueError(f"{shown} is not a weights file: it holds pickled objects{detail}; refusing to load it") from None
    except (RuntimeError, EOFError) as exc:  # torch's zip reader, or a pickle that stops short
        reason = str(exc).split(". ")[0].strip() or "file ends early"
        raise ValueError(f"{shown} is a truncated or corrupt PyTorch file ({reason})") from None


def check_checkpoint(path: str | Path, field: str) -> None:
    """Raise a one-line ``ValueError`` naming ``field`` unless ``path`` is a loadable checkpoint (weights only)."""
    state = read_weights(path, f"{field}: {path}")
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{field}: {path}: not an mg-tune checkpoint (no 'model' entry)")
