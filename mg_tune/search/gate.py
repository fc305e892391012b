"""A fault-injection hook for tests: hold a trial after an epoch, deterministically.

Tests that must catch a trial mid-run (freeze it, lose its node, stop its
search) cannot rely on timing: on an idle machine a small trial runs its
epochs in a second. With ``MG_TUNE_GATE_DIR`` set in the trials'
environment, a trial that has logged and reported an epoch waits while
``<dir>/closed`` exists and ``<dir>/open-<trial id>`` does not (checked
every 0.1 s). Unset, as in every real search, it does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

GATE_ENV = "MG_TUNE_GATE_DIR"


def wait_at_gate(trial_id: str) -> None:
    """Wait while the gate of ``$MG_TUNE_GATE_DIR`` is closed to ``trial_id``; return at once when the variable is unset."""
    root = os.environ.get(GATE_ENV)
    if not root:
        return
    while (Path(root) / "closed").exists() and not (Path(root) / f"open-{trial_id}").exists():
        time.sleep(0.1)
