"""Where an export writes each format, and whether it may: the output-path rules. They need no checkpoint, torch
or ONNX, so ``export.py`` refuses a target it may not write (an existing file without ``overwrite=true``, a name
with the wrong suffix, the checkpoint itself, a read-only folder) in about a second, before the export stack
loads (and a checkpoint that is not there, as quickly); ``tumorcls.export.run`` applies the same rules to every
export, the Python API's included."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tumorcls.atomic_io import check_writable
from tumorcls.errors import ExportError, existing_checkpoint
from tumorcls.run_layout import RunLayout

FORMATS = ("onnx", "keras", "onnx_int8")
ALL_FORMATS = ("onnx", "keras")  # format=all: the exact (float) exports; int8 is asked for by name
SUFFIXES = {"onnx": ".onnx", "keras": ".h5", "onnx_int8": ".onnx"}
DEFAULT_NAMES = {"onnx": "model.onnx", "keras": "model.h5", "onnx_int8": "model.int8.onnx"}

CheckpointArg = str | Path | Sequence[str | Path] | None  # one checkpoint, or an ensemble's members


def checkpoint_paths(ckpt: CheckpointArg) -> list[str | Path]:
    """The checkpoint(s) given, as given: one path, or the members of an ensemble (``ckpt=[a.ckpt,b.ckpt]``); each
    must be a file (CheckpointError otherwise: what it holds is checked when it is loaded)."""
    items = [ckpt] if isinstance(ckpt, str | Path) else list(ckpt or [])
    if not items or not all(items):
        raise ExportError("no checkpoint given: python export.py ckpt=<run>/checkpoints/best.ckpt [format=onnx]")
    for item in items:
        existing_checkpoint(item)
    return items


def _given(out: str | Path | None) -> bool:
    """Whether an ``out=`` was given (Hydra's ``out=`` with no value arrives as an empty string)."""
    return out is not None and str(out) != ""


def resolve_formats(fmt: str) -> tuple[str, ...]:
    """The formats ``fmt`` stands for (checked by the schema: one of FORMATS or all)."""
    fmt = str(fmt).strip().lower()
    return ALL_FORMATS if fmt == "all" else (fmt,)


def output_paths(formats: Sequence[str], run_dir: Path, out: str | Path | None) -> dict[str, Path]:
    """Where each format goes: ``out`` is the file for one format, the folder for several;
    by default ``<run>/export/model.onnx`` and ``<run>/export/model.h5``."""
    if not _given(out):
        return {f: RunLayout(run_dir).export_dir / DEFAULT_NAMES[f] for f in formats}
    out = Path(out).expanduser()
    if len(formats) > 1:
        if out.suffix.lower() in SUFFIXES.values():
            raise ExportError(f"out='{out}' names a file, but format=all writes several: give a folder")
        return {f: out / DEFAULT_NAMES[f] for f in formats}
    fmt = formats[0]
    if out.suffix.lower() != SUFFIXES[fmt]:
        raise ExportError(f"out='{out}' must end in {SUFFIXES[fmt]} for format={fmt}")
    return {fmt: out}


def ensure_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite``; refuse directories always, and a place that
    cannot be written (read-only, full, under a file) before any work."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"output '{path}' is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise ExportError(f"'{path}' exists; pass overwrite=true to replace it")
    return check_writable(path)


def export_targets(ckpts: Sequence[str | Path], fmt: str, out: str | Path | None, overwrite: bool) -> dict[str, Path]:
    """Each format's file for an export of ``ckpts`` (one checkpoint, or an ensemble's members: ONNX only, to an
    ``out`` file of its own), every one refused in one line unless it may be written; never a checkpoint."""
    formats = resolve_formats(fmt)
    if len(ckpts) > 1:
        formats = ("onnx",) if formats == ALL_FORMATS else formats  # all the formats an ensemble has
        if formats != ("onnx",):
            raise ExportError(
                f"an ensemble of {len(ckpts)} checkpoints exports to ONNX only: format=onnx, not {formats[0]}"
            )
        if not _given(out):
            raise ExportError("an ensemble has no run folder of its own: give the file to write, out=<name>.onnx")
    sources = [Path(c).expanduser().resolve() for c in ckpts]
    targets = output_paths(formats, RunLayout.of_checkpoint(sources[0]).root, out)
    for path in targets.values():  # before anything is written, so format=all is all or nothing at the start
        if path.resolve() in sources:
            raise ExportError(f"out='{path}' is the checkpoint being exported; give another file")
        ensure_writable(path, overwrite)
    return targets
