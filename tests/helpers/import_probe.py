"""A callback for train.py runs in tests: which modules the training process has loaded at the start of its first
training step, and which at its exit (after the test stage and artifacts), written to ``<run dir>/modules.json``."""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L


class ModulesAtFirstStep(L.Callback):
    """``{"first_step": [...], "exit": [...]}``: the names in ``sys.modules`` at those two moments."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if "first_step" in self.seen:
            return
        self.seen["first_step"] = sorted(sys.modules)
        where = Path(trainer.default_root_dir, "modules.json")
        atexit.register(lambda: where.write_text(json.dumps({**self.seen, "exit": sorted(sys.modules)})))
