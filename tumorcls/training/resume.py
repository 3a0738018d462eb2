"""Which checkpoint a run resumes from (``ckpt_path``), checked before the fit: it is read through the same
safe reader as predict and export (weights only, one of ours), so a pickle payload, a truncated file or
another model's checkpoint is refused in one line instead of a long traceback from inside Lightning."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from tumorcls.errors import CheckpointError, existing_checkpoint
from tumorcls.models.checkpoint import read_checkpoint
from tumorcls.run_layout import RunLayout

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, layout: RunLayout) -> Path | None:
    """``last`` means this run folder's last checkpoint, if it exists (else a fresh start)."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        if layout.last_checkpoint.is_file():
            log.info("resuming from %s", layout.last_checkpoint)
            return layout.last_checkpoint
        log.info("ckpt_path=last but %s does not exist: starting a fresh run", layout.last_checkpoint)
        return None
    return existing_checkpoint(ckpt_path)


def checked_resume_path(ckpt_path: str | None, layout: RunLayout, model_cfg: DictConfig) -> str | None:
    """The checkpoint to resume from, after checking that it is a readable tumorcls checkpoint of the
    configured backbone; None for a fresh start."""
    path = resolve_ckpt_path(ckpt_path, layout)
    if path is None:
        return None
    hparams = read_checkpoint(path)["hyper_parameters"]
    backbone = model_cfg.get("backbone")
    if backbone and hparams.get("backbone") != backbone:
        raise CheckpointError(
            f"cannot resume from '{path}': it holds a '{hparams.get('backbone')}' model, the config asks for "
            f"model.backbone={backbone}"
        )
    return str(path)
