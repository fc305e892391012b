"""SMERF reasoning settings (SMERF Sec. 3.2, Table 1): which objects decide the label, which to avoid.

A SMERF image holds some of three objects, Text (the letter A or B), Box1 (10x10) and
Box2 (4x4); its *bucket* (1..12, :func:`bucket_contents`) says which. Each setting
(:data:`SMERF_RULES`) maps a bucket's objects to a :class:`Reasoning`: the label, the
objects the model should attend to and those it should avoid, or None where Table 1
leaves the bucket undefined. :class:`mg_tune.data.textbox.SmerfTextBox` draws images from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

TEXT, BOX1, BOX2 = "T", "B1", "B2"
"""Object names of SMERF Table 1: Text, Box1 (10x10), Box2 (4x4)."""


def bucket_contents(bucket: int) -> tuple[str | None, bool, bool]:
    """Objects of SMERF bucket ``1..12`` as ``(text, has_box1, has_box2)`` (SMERF Fig. 5 / Table 1).

    ``bucket = 1 + 3*b + t`` with ``t`` indexing text (None, "A", "B") and ``b`` the boxes
    (0: none, 1: Box2 only, 2: Box1 only, 3: both); e.g. buckets 10-12 hold both boxes and
    buckets 1, 4, 7, 10 hold no text.
    """
    if not 1 <= bucket <= 12:
        raise ValueError(f"bucket must lie in 1..12, got bucket={bucket}")
    b, t = divmod(bucket - 1, 3)
    return (None, "A", "B")[t], b in (2, 3), b in (1, 3)


class Reasoning(NamedTuple):
    """Label of a bucket and its objects to focus on / avoid (SMERF Table 1 rows)."""

    label: int
    focus: frozenset[str]
    avoid: frozenset[str]


SmerfRule = Callable[[str | None, bool, bool], Reasoning | None]


def _present(text: str | None, box1: bool, box2: bool) -> frozenset[str]:
    return frozenset(n for n, on in ((TEXT, text is not None), (BOX1, box1), (BOX2, box2)) if on)


def _reason(label: int, focus: set[str], text: str | None, box1: bool, box2: bool) -> Reasoning:
    """Reasoning whose objects to avoid are all present objects not focused on."""
    return Reasoning(label, frozenset(focus), _present(text, box1, box2) - focus)


def _by_text(text: str | None, focus: set[str], box1: bool, box2: bool) -> Reasoning | None:
    """Label by the letter (Table 1: "if T=A: 0; if T=B: 1"); None (undefined) without text."""
    return None if text is None else _reason(int(text == "B"), focus, text, box1, box2)


def _simple_fr(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Simple-FR: "if B1: 1; otherwise: 0"."""
    return _reason(int(box1), {BOX1} if box1 else set(), text, box1, box2)


def _simple_nr(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Simple-NR: "if T=A: 0; if T=B: 1"."""
    return _by_text(text, {TEXT}, box1, box2)


def _complex_fr(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Complex-FR: "if B1 & B2: 1; otherwise: 0".

    Table 1 avoids only Text: a lone box in buckets 4-9 is neither focus nor avoid (its
    presence matters jointly with the other box). Buckets 8 and 9, missing from Table 1's
    avoid row, are read as "T" like buckets 2, 3, 5, 6 (as in SMERF's reference code).
    """
    both = box1 and box2
    avoid = frozenset({TEXT}) if text is not None else frozenset()
    return Reasoning(int(both), frozenset({BOX1, BOX2}) if both else frozenset(), avoid)


def _complex_cr1(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Complex-CR1: "if B2 & B1: 1; if B2 & NO B1: 0; if NO B2 & T=A: 0; if NO B2 & T=B: 1"."""
    if box2:
        return _reason(1, {BOX1, BOX2}, text, box1, box2) if box1 else _reason(0, {BOX2}, text, box1, box2)
    return _by_text(text, {TEXT}, box1, box2)


def _complex_cr2(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Complex-CR2: "if B1 & B2: 1; if B1 & NO B2: 0; if NO B1 & T=A: 0; if NO B1 & T=B: 1"."""
    if box1:
        return _reason(1, {BOX1, BOX2}, text, box1, box2) if box2 else _reason(0, {BOX1}, text, box1, box2)
    return _by_text(text, {TEXT}, box1, box2)


def _complex_cr3(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Complex-CR3: "if B2 & T=A: 0; if B2 & T=B: 1; if NO B2 & B1: 1; if NO B2 & NO B1: 0"."""
    if box2:
        return _by_text(text, {BOX2, TEXT}, box1, box2)
    return _reason(int(box1), {BOX1} if box1 else set(), text, box1, box2)


def _complex_cr4(text: str | None, box1: bool, box2: bool) -> Reasoning | None:
    """Complex-CR4: "if B1 & T=A: 0; if B1 & T=B: 1; if NO B1 & B2: 1; if NO B1 & NO B2: 0"."""
    if box1:
        return _by_text(text, {BOX1, TEXT}, box1, box2)
    return _reason(int(box2), {BOX2} if box2 else set(), text, box1, box2)


SMERF_RULES: dict[str, SmerfRule] = {
    "simple_fr": _simple_fr,
    "simple_nr": _simple_nr,
    "complex_fr": _complex_fr,
    "complex_cr1": _complex_cr1,
    "complex_cr2": _complex_cr2,
    "complex_cr3": _complex_cr3,
    "complex_cr4": _complex_cr4,
}
"""SMERF Table 1 "Reasoning" rows: (text, box1, box2) -> Reasoning, or None for undefined buckets."""


def smerf_reasoning(setting: str, bucket: int) -> Reasoning | None:
    """Table 1 entry (label, objects to focus, objects to avoid) of ``bucket`` in ``setting``; None if undefined."""
    if setting not in SMERF_RULES:
        raise ValueError(f"setting must be one of {sorted(SMERF_RULES)}, got setting={setting!r}")
    return SMERF_RULES[setting](*bucket_contents(bucket))
