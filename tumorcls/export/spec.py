"""What every export shares: the model's description (labels, input, preprocessing, provenance) and
the rule that an existing file is replaced only when asked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tumorcls.errors import ExportError
from tumorcls.models.checkpoint import load_classifier, read_checkpoint
from tumorcls.models.lit_module import TumorClassifier

FORMATS = ("onnx", "keras", "onnx_int8")
ALL_FORMATS = ("onnx", "keras")  # format=all: the exact (float) exports; int8 is asked for by name
SUFFIXES = {"onnx": ".onnx", "keras": ".h5", "onnx_int8": ".onnx"}


@dataclass(frozen=True)
class ExportSpec:
    """Everything an exported file must say about the model it holds."""

    class_names: tuple[str, ...]
    backbone: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    temperature: float = 1.0
    source: str = ""
    source_sha256: str = ""
    run_dir: str = ""
    epoch: int | None = None
    global_step: int | None = None
    exported_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def metadata(self, input_spec: dict[str, Any], output_spec: dict[str, Any]) -> dict[str, str]:
        """Flat string key/values (ONNX metadata_props, HDF5 attributes)."""
        run = {"checkpoint": self.source, "sha256": self.source_sha256, "run_dir": self.run_dir}
        run.update(epoch=self.epoch, global_step=self.global_step)
        return {
            "class_names": json.dumps(list(self.class_names)),
            "input_spec": json.dumps(input_spec),
            "output_spec": json.dumps(output_spec),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "temperature": repr(float(self.temperature)),
            "backbone": self.backbone,
            "source_checkpoint": self.source,
            "training_run": json.dumps(run),
            "export_date": self.exported_at,
            "producer": "tumorcls",
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def spec_for(model: TumorClassifier, source: str | Path | None = None) -> ExportSpec:
    """The spec of a loaded classifier; ``source`` is its checkpoint, if it came from one."""
    hp = model.hparams
    spec: dict[str, Any] = {
        "class_names": tuple(hp.class_names),
        "backbone": str(hp.backbone),
        "input_size": int(hp.input_size),
        "mean": tuple(float(m) for m in hp.mean),
        "std": tuple(float(s) for s in hp.std),
        "temperature": float(getattr(model, "temperature", 1.0)),
    }
    if source is not None:
        path = Path(source).expanduser().resolve()
        # load_classifier noted the progress; read the file again only for a model built otherwise
        progress = getattr(model, "trained_progress", None) or read_checkpoint(path)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        spec.update(source=str(path), source_sha256=_sha256_file(path), run_dir=str(run_dir))
        spec.update(epoch=progress.get("epoch"), global_step=progress.get("global_step"))
    return ExportSpec(**spec)


def load_for_export(ckpt: str | Path) -> tuple[TumorClassifier, ExportSpec]:
    """Our checkpoint, loaded safely (weights_only) in eval mode, and its export spec."""
    model = load_classifier(ckpt)
    return model, spec_for(model, ckpt)


def ensure_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite``; refuse directories always."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"output '{path}' is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise ExportError(f"'{path}' exists; pass overwrite=true to replace it")
    return path
