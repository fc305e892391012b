"""Turn pip's resolution report into ``requirements.lock`` (called by ``make lock``).

``pip install --dry-run --ignore-installed --report report.json ".[test]"`` resolves the
whole environment from pyproject's ranges without installing anything; this writes one
``name==version`` line per resolved distribution (mg-tune itself excluded), sorted, under
a header that says for which interpreter and platform it was resolved.

Usage: python tools/write_lock.py REPORT.json requirements.lock
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path

PROJECT = "mg-tune"


def lock_lines(report: dict) -> list[str]:
    """``name==version`` for every distribution pip would install, but the project itself."""
    pins = {}
    for item in report["install"]:
        name = item["metadata"]["name"].lower().replace("_", "-")
        if name != PROJECT:
            pins[name] = item["metadata"]["version"]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main(report_path: str, lock_path: str) -> None:
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    env = report.get("environment", {})
    header = [
        "# The whole resolved environment of mg-tune and its test extras: `make install` installs exactly this.",
        f"# Resolved by `make lock` on {date.today().isoformat()} for Python {env.get('python_full_version', platform.python_version())}"
        f" on {env.get('sys_platform', sys.platform)} {env.get('platform_machine', platform.machine())}"
        " from pyproject.toml's ranges (the newest releases they allow that day).",
        "# Upgrade: `make lock`, then `make test` and `make check-latest`; commit this file with the fixes they need.",
    ]
    Path(lock_path).write_text("\n".join(header + lock_lines(report)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
