"""From a checkpoint to the spec its exported files carry (the contract itself, and its reading, live in
tumorcls.model_file)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tumorcls.errors import ExportError
from tumorcls.model_file import EnsembleSpec, ExportSpec, contract_difference, mismatch_message
from tumorcls.run_layout import RunLayout

if TYPE_CHECKING:
    from tumorcls.models.checkpoint import CheckpointInfo
    from tumorcls.models.lit_module import TumorClassifier


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_spec_preprocess(crop: str, intensity: str, source: str | Path | None) -> None:
    """ExportError in one line when the checkpoint asks for preprocessing this version does not know."""
    from tumorcls.data.preprocess import check_preprocess

    try:
        check_preprocess(crop, intensity)
    except ValueError as exc:
        where = f"checkpoint '{source}'" if source is not None else "the model"
        raise ExportError(f"{where} asks for preprocessing this version cannot apply: {exc}") from None


def spec_for(
    model: TumorClassifier, source: str | Path | None = None, info: CheckpointInfo | None = None
) -> ExportSpec:
    """The spec of a loaded classifier; ``source`` is its checkpoint, if it came from one, and ``info`` what
    that checkpoint holds besides weights (read from ``source`` when not given; defaults without a source)."""
    from tumorcls.models.checkpoint import CheckpointInfo, checkpoint_info, read_checkpoint

    if info is None:
        info = checkpoint_info(read_checkpoint(source), source) if source is not None else CheckpointInfo()
    hp = model.hparams
    spec: dict[str, Any] = {
        "class_names": tuple(hp.class_names),
        "backbone": str(hp.backbone),
        "input_size": int(hp.input_size),
        "mean": tuple(float(m) for m in hp.mean),
        "std": tuple(float(s) for s in hp.std),
        "temperature": float(info.temperature),
        "crop": str(hp.get("crop", "none")),  # "none" in checkpoints older than the setting
        "intensity": str(hp.get("intensity", "none")),
    }
    _check_spec_preprocess(spec["crop"], spec["intensity"], source)
    if source is not None:
        path = Path(source).expanduser().resolve()
        run_dir = RunLayout.of_checkpoint(path).root
        spec.update(source=str(path), source_sha256=_sha256_file(path), run_dir=str(run_dir))
        spec.update(epoch=info.epoch, global_step=info.global_step)
    return ExportSpec(**spec)


def load_for_export(ckpt: str | Path) -> tuple[TumorClassifier, ExportSpec]:
    """Our checkpoint, loaded safely (weights_only) in eval mode, and its export spec."""
    from tumorcls.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt)
    return model, spec_for(model, ckpt, info)


def load_ensemble_for_export(ckpts: Sequence[str | Path]) -> tuple[tuple[TumorClassifier, ...], EnsembleSpec]:
    """The members, each loaded as :func:`load_for_export` loads one checkpoint, and the ensemble's spec; a member
    whose class names, input size or preprocessing differ from the first member's is refused in one line."""
    loaded = [load_for_export(ckpt) for ckpt in ckpts]
    first = loaded[0][1]
    for (_, spec), ckpt in zip(loaded[1:], ckpts[1:]):
        difference = contract_difference(first, spec)
        if difference is not None:
            raise ExportError(mismatch_message(str(ckpts[0]), str(ckpt), difference))
    return tuple(model for model, _ in loaded), EnsembleSpec(tuple(spec for _, spec in loaded))
