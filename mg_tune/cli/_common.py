"""What the command modules share: the console that tables and messages go to."""

from __future__ import annotations

from mg_tune.output import stdout_console

__all__ = ["console"]

console = stdout_console()
