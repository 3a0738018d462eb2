"""Exceptions whose message is meant to be shown to the user as one line, and the check behind the commonest of
them (a checkpoint that is not there), so that every command words it alike."""

from __future__ import annotations

from pathlib import Path


class TumorclsError(Exception):
    """Base class: a user-facing problem (bad path, bad data, bad file), not a bug."""


class DatasetError(TumorclsError):
    """The dataset folder is missing, malformed or empty."""


class WeightsError(TumorclsError):
    """Pretrained weights could not be obtained or do not fit the model."""


class CheckpointError(TumorclsError):
    """A checkpoint is missing, unreadable or not one of ours."""


def existing_checkpoint(path: str | Path) -> Path:
    """``path`` (``~`` expanded) if it is a file, else CheckpointError: the one wording of a missing checkpoint,
    for the commands that check it before loading torch and for the loaders."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}'")
    return path


class TrainingDivergedError(TumorclsError, FloatingPointError):
    """The training loss became NaN or infinite."""


class OutputError(TumorclsError):
    """An output file that cannot be written (disk full, read-only file system, no permission, not a folder)."""


class ExportError(TumorclsError):
    """An export could not be written or does not reproduce the PyTorch model."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name), for one-line error messages."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
