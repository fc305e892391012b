"""The error every data loader raises: one line naming the file and the problem (its own module so that any loader, local or remote, can raise it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A data set that cannot be used; the message is one line naming the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(line.strip() for line in str(problem).splitlines() if line.strip())  # one line; spaces inside a line (an id's) kept
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers and Ray
        return type(self), (self.path, self.problem)
