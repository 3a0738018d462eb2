"""Prediction rows (CSV or JSON Lines) written as batches finish, so that a long ``tumorcls predict`` loses no
finished work when it is stopped, and a later run with ``--resume`` goes on where it stopped.

With ``--out FILE`` the rows go to ``FILE.partial`` (flushed after every batch) and the partial file is renamed to
``FILE`` only when every input is done: a file under the final name is always complete. Beside the partial file,
``FILE.partial.json`` records what wrote it (model files, TTA, format, shard); a resume by a different model or
format is refused in one line instead of mixing two models' answers in one file. A resume reads the rows already
there (from the partial file, else from a complete ``FILE``, which it copies to a new partial file first, so
``FILE`` stays whole until the new one replaces it), drops a last row cut short by a kill, and appends.

Memory: nothing here keeps the rows; a resume keeps only the set of paths already written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from tumorcls.atomic_io import atomic_write_json, atomic_write_text, output_error
from tumorcls.errors import OutputError
from tumorcls.inference.predict import Prediction, csv_header, csv_rows, jsonl_rows

FORMATS = ("csv", "jsonl")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.json")


def _header_line(fmt: str, class_names: Sequence[str]) -> str:
    if fmt != "csv":
        return ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(csv_header(class_names))
    return buffer.getvalue()


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline: a row cut short by a kill (no newline yet) is dropped."""
    text = path.read_text(encoding="utf-8")
    return text[: text.rfind("\n") + 1]


def _done_paths(text: str, fmt: str, header: str, source: Path) -> set[str]:
    """The ``path`` of every row in ``text`` (a CSV with ``header``, or JSON Lines)."""
    if fmt == "csv":
        if text and not text.startswith(header):
            first = text.splitlines()[0]
            raise OutputError(f"cannot resume '{source}': its header '{first}' is not this model's '{header.strip()}'")
        return {row[0] for row in csv.reader(io.StringIO(text[len(header) :])) if row}
    done = set()
    for number, line in enumerate(text.splitlines(), 1):
        try:
            done.add(json.loads(line)["path"])
        except (ValueError, KeyError, TypeError):
            raise OutputError(f"cannot resume '{source}': line {number} is not a prediction row") from None
    return done


class RowWriter:
    """Writes rows to a stream (stdout) or to ``out``'s partial file, flushing after every batch; ``finish``
    renames the partial file to ``out``."""

    def __init__(self, stream: TextIO, out: Path | None, fmt: str, done: set[str]) -> None:
        self.stream, self.out, self.fmt, self.done = stream, out, fmt, done
        self.rows = 0

    @property
    def partial(self) -> Path | None:
        return partial_path(self.out) if self.out is not None else None

    def write(self, predictions: Iterable[Prediction]) -> None:
        predictions = list(predictions)
        text = csv_rows(predictions) if self.fmt == "csv" else jsonl_rows(predictions)
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            if self.out is None:
                raise  # stdout: a closed pipe (`| head`) is the command's business (tumorcls.cli.main)
            raise output_error(self.partial, exc) from None
        self.rows += len(predictions)

    def close(self) -> None:
        """Keep what was written (the partial file stays for ``--resume``)."""
        if self.out is None:
            return
        try:
            self.stream.close()
        except OSError as exc:
            raise output_error(self.partial, exc) from None

    def finish(self) -> None:
        """Every input is done: the partial file, on disk, becomes ``out``."""
        if self.out is None:
            self.stream.flush()
            return
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.replace(self.partial, self.out)
        except OSError as exc:
            raise output_error(self.out, exc) from None
        meta_path(self.out).unlink(missing_ok=True)


def _check_meta(out: Path, meta: dict[str, Any]) -> None:
    found = meta_path(out)
    if not found.is_file():
        return
    try:
        recorded = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable record: the rows' own header/keys are still checked
    for key, value in meta.items():
        if recorded.get(key) != value:
            raise OutputError(
                f"cannot resume '{partial_path(out)}': it was written with {key} {recorded.get(key)!r}, "
                f"this run has {value!r}; use the same options, or --overwrite to start again"
            )


def refuse_stale_partial(out: Path, resume: bool, overwrite: bool) -> None:
    """Before any work: a partial file from an interrupted run is continued (``--resume``) or replaced
    (``--overwrite``), never silently."""
    partial = partial_path(out)
    if partial.exists() and not resume and not overwrite:
        raise OutputError(
            f"'{partial}' holds the rows of an interrupted run; "
            "pass --resume to finish it or --overwrite to start again"
        )


def open_rows(out: Path | None, fmt: str, class_names: Sequence[str], resume: bool, meta: dict[str, Any]) -> RowWriter:
    """A writer for ``fmt`` rows: on stdout (``out`` None; the CSV header first), else into ``out``'s partial
    file, new, or with ``resume`` holding the rows already written (whose paths are in ``writer.done``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown row format {fmt!r}")
    header = _header_line(fmt, class_names)
    if out is None:
        sys.stdout.write(header)
        return RowWriter(sys.stdout, None, fmt, set())
    partial = partial_path(out)
    text, done = "", set()
    if resume:
        _check_meta(out, meta)
        source = partial if partial.exists() else out if out.exists() else None
        text = _complete_text(source) if source is not None else ""
        done = _done_paths(text, fmt, header, source) if text else set()
    try:
        atomic_write_json(meta_path(out), meta)
        if resume and text:
            atomic_write_text(partial, text)  # whole rows only: a torn last row is gone before anything is appended
        stream = open(partial, "a" if resume and text else "w", encoding="utf-8", newline="")  # noqa: SIM115
        if not (resume and text):
            stream.write(header)
            stream.flush()
    except OSError as exc:
        raise output_error(partial, exc) from None
    return RowWriter(stream, out, fmt, done)
