"""Reading a spec file: its text and YAML mapping, without the schema (:mod:`mg_tune.search.spec`).

The schema checks names against the registries of attributions, losses and
models, which import torch (seconds); a command first reads its spec here
(milliseconds), so a missing, unreadable or malformed file fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mg_tune.textfiles import decode_problem, read_utf8

__all__ = ["SpecError", "read_spec_file"]


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, field and value."""


def read_spec_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """The spec at ``path`` as a YAML mapping, with its text.

    Raises:
        SpecError: the file cannot be read, is not UTF-8 text, is not YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = read_utf8(path)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: {decode_problem(exc)}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a mapping of fields, got {type(raw).__name__}")
    return raw, text
