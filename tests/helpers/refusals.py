"""What a refusal must look like to the user, as README's "What happens with bad input" promises it, checked the
same way by every test of bad input.

A refusal: exit status 2, exactly one error line (``error: ...`` from ``tumorcls`` and ``export.py``; Hydra's
``[...][ERROR] - ...`` log line from ``train.py``) that says what the test expects, no traceback, and no other
line that talks of an error (a wrapped exception, a second message). ``predict`` with some unreadable files is
not a refusal: each bad file gets its own ``error: PATH: reason`` line, the rest are predicted, exit status 1.
"""

from __future__ import annotations

import re
import subprocess

TRACEBACK = "Traceback (most recent call last)"
HYDRA_ERROR = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[ERROR\] - ")  # hydra/job_logging's format


def is_error_line(line: str) -> bool:
    return line.startswith("error: ") or bool(HYDRA_ERROR.match(line))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if is_error_line(line)]


def _mentions_an_error(line: str) -> bool:
    return "error" in line.lower() or "exception" in line.lower()


def assert_refused(code: int, text: str, *needles: str, status: int = 2) -> str:
    """``text`` (stderr, or a script's stdout + stderr) is a refusal with exit ``status``: one error line, which
    holds every needle (case-insensitive), no traceback, no other line about an error. Returns the line."""
    tail = text[-3000:]
    assert TRACEBACK not in text, tail
    assert code == status, f"exit status {code}, expected {status}:\n{tail}"
    lines = error_lines(text)
    assert len(lines) == 1, f"expected exactly one error line, got {lines}:\n{tail}"
    missing = [n for n in needles if n.lower() not in lines[0].lower()]
    assert not missing, f"{missing} not in the error line {lines[0]!r}"
    others = [line for line in text.splitlines() if _mentions_an_error(line) and not is_error_line(line)]
    assert not others, f"other lines about an error besides {lines[0]!r}: {others}"
    return lines[0]


def assert_script_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """train.py / export.py refused in one line (Hydra's job logging writes the scripts' log on stdout)."""
    return assert_refused(proc.returncode, proc.stdout + proc.stderr, *needles)


def assert_files_failed(code: int, out: str, err: str, failed: list[str], predicted: list[str]) -> list[str]:
    """predict's "some files failed, the rest ran": exit 1, one ``error: PATH: reason`` line per failed file (in
    any order, each naming its file once), no traceback; each predicted file in the output, no failed one."""
    assert TRACEBACK not in err, err[-3000:]
    assert code == 1, f"exit status {code}, expected 1:\n{err[-3000:]}"
    lines = error_lines(err)
    assert len(lines) == len(failed), f"expected one error line per failed file {failed}, got {lines}"
    for name in failed:
        naming = [line for line in lines if re.match(rf"^error: \S*{re.escape(name)}: \S", line)]
        assert len(naming) == 1, f"{name}: expected one 'error: PATH: reason' line, got {lines}"
    for name in predicted:
        assert name in out, f"{name} not predicted:\n{out}"
    for name in failed:
        assert name not in out, f"{name} has a prediction row although it failed:\n{out}"
    return lines
