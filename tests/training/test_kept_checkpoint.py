"""What a training run returns to the sweepers (``optimized_metric``): the figures of the checkpoint it keeps
(best.ckpt), not the last epoch's. A callback dictates the validation predictions, so that the first epoch is
perfect and the last one always wrong: the two numbers cannot coincide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from tests.helpers.train_runs import compose_train, small_run_args
from tumorcls.training.run import run


class ValidationOracle(L.Callback):
    """During validation the network answers with the true class in the first epoch and with the next class
    (always wrong) afterwards: val/acc is 1.0 at epoch 0 and 0.0 at every later epoch."""

    def __init__(self) -> None:
        self.labels: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.net.register_forward_hook(self._answer)

    def _answer(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self.labels is None:
            return None
        shift = 0 if self.epoch == 0 else 1
        return 10.0 * torch.nn.functional.one_hot((self.labels + shift) % output.shape[1], output.shape[1]).float()

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any
    ) -> None:
        self.labels, self.epoch = batch[1], trainer.current_epoch

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.labels = None


def test_the_run_returns_the_kept_checkpoints_score_not_the_last_epochs(synthetic_root: Path, tmp_path: Path) -> None:
    oracle = "+callbacks.oracle._target_=tests.training.test_kept_checkpoint.ValidationOracle"
    overrides = [
        *small_run_args(synthetic_root),
        "data.size=32",
        "trainer.max_epochs=2",
        "logger=csv",
        "test=false",
        f"paths.output_dir={tmp_path}",
        oracle,
    ]
    results = run(compose_train(overrides), tmp_path)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    state = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint") and v.get("monitor"))
    history = next(v for k, v in best["callbacks"].items() if "EpochHistory" in k)["history"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    last_row = next(v for k, v in last["callbacks"].items() if "EpochHistory" in k)["history"][-1]
    assert best["epoch"] == 0 and last["epoch"] == 1 and state["monitor"] == "val/acc"
    assert (history[0]["val/acc"], last_row["val/acc"]) == (1.0, 0.0)  # the oracle did its job
    assert results["val/acc"] == float(state["best_model_score"]) == 1.0  # best.ckpt's recorded score
    # every val/* figure returned is that checkpoint's epoch's, never the last epoch's
    assert results["val/loss"] == history[0]["val/loss"] != last_row["val/loss"]
    assert results["train/loss"] == history[0]["train/loss"]
