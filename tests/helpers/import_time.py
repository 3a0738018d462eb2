"""Which modules a script's process imported, read from ``python -X importtime``: its report goes to stderr, and is
taken out of it here, so that the script's own lines are checked as usual."""

from __future__ import annotations

import subprocess

REPORT_LINE = "import time:"


def imported_modules(stderr: str) -> set[str]:
    """The name of every module the report lists."""
    lines = [line for line in stderr.splitlines() if line.startswith(REPORT_LINE) and "|" in line]
    return {line.rsplit("|", 1)[1].strip() for line in lines}


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def split_report(proc: subprocess.CompletedProcess) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The process with the report taken out of its stderr, and the modules the report lists."""
    kept = "".join(line for line in proc.stderr.splitlines(keepends=True) if not line.startswith(REPORT_LINE))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, kept), imported_modules(proc.stderr)
