"""The training accuracy is updated with ``update()`` (no per-batch value computed, cheaper than the metric's forward)
and ``train/acc`` is still the accuracy over every training batch of the epoch."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from tests.models.test_whole_step import BATCHES, fit


@pytest.mark.parametrize("cuda_graphs", [False, "step"])
def test_train_acc_is_the_accuracy_of_every_training_batch_of_the_epoch(monkeypatch, cuda_graphs) -> None:  # noqa: ANN001
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    update = MulticlassAccuracy.update

    def spy(self, preds, target):  # noqa: ANN001, ANN202
        seen.append((id(self), preds.clone(), target.clone()))
        return update(self, preds, target)

    monkeypatch.setattr(MulticlassAccuracy, "update", spy)
    model, trainer, _ = fit(cuda_graphs, scheduler="none", lr=1e-3)
    last_epoch = [(p, t) for owner, p, t in seen if owner == id(model.train_acc)][-BATCHES:]
    assert len(last_epoch) == BATCHES
    expected = torch.cat([p == t for p, t in last_epoch]).float().mean()
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(float(expected))
