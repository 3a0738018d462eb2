"""Training's test stage in process (tumorcls.training.test_stage): the temperature fit and the test cover the very
batches the trainer would (``limit_*_batches``, counted as Lightning counts them), through the one evaluation loop;
a model with ``tta`` gets its plain and its TTA figures, each as computed here from the network itself."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.trainers import quiet_trainer
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.evaluation.calibration import fit_temperature
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout
from tumorcls.training.test_stage import (
    calibrate_best,
    limited_batches,
    score_test_split,
    split_paths,
    trainer_items,
    write_test_artifacts,
)

SIZE, EVAL_BATCH, VAL_LIMIT, TEST_LIMIT = 48, 4, 1, 3


class Constant(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/x", self.layer(batch[0]).sum())


@pytest.mark.parametrize(
    ("n_items", "batch_size", "limit"),
    [(10, 4, 1), (10, 4, 2), (10, 4, 9), (10, 4, 1.0), (10, 4, 0.5), (10, 4, 0.7), (9, 3, 0.4), (3, 4, 1), (10, 4, 0)],
)
def test_limits_are_counted_as_the_trainer_counts_them(n_items: int, batch_size: int, limit: int | float) -> None:
    loader = DataLoader(TensorDataset(torch.zeros(n_items, 2)), batch_size=batch_size)
    trainer = quiet_trainer(limit_val_batches=limit, enable_checkpointing=False)
    trainer.validate(Constant(), loader, verbose=False)
    expected = trainer.num_val_batches[0] if trainer.num_val_batches else 0
    assert limited_batches(len(loader), limit) == expected
    assert trainer_items(n_items, batch_size, limit).tolist() == list(range(min(n_items, expected * batch_size)))


def test_under_ddp_each_ranks_first_batches_of_its_share_are_covered() -> None:
    # 11 items over 2 ranks: rank 0 holds 0, 2, ..., 10 and rank 1 holds 1, 3, ..., 9; 2 batches of 2 each
    assert trainer_items(11, 2, 2, world_size=2).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert trainer_items(11, 2, 1.0, world_size=2).tolist() == list(range(11))


@pytest.fixture(scope="module")
def fitted(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny model with flip TTA fitted for six epochs under validation and test limits; its best.ckpt."""
    L.seed_everything(3)
    folder = tmp_path_factory.mktemp("stage")
    datamodule = TumorDataModule(
        synthetic_root, size=SIZE, batch_size=16, eval_batch_size=EVAL_BATCH, num_workers=0, val_fraction=0.25
    )
    model = TumorClassifier(
        backbone="test_efficientnet", pretrained=False, input_size=SIZE, scheduler="none", lr=3e-3, tta=True
    )
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max")
    trainer = quiet_trainer(
        max_epochs=6, limit_val_batches=VAL_LIMIT, limit_test_batches=TEST_LIMIT, callbacks=[checkpoint]
    )
    trainer.fit(model, datamodule=datamodule)
    return datamodule, model, trainer, checkpoint.best_model_path, folder


def _pixels(datamodule: TumorDataModule, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    dataset = datamodule.datasets[split]
    return np.stack([dataset.image(i) for i in range(n)]), dataset.labels[:n]


def _logits(net: torch.nn.Module, images: np.ndarray, hparams: dict, flip: bool = False) -> torch.Tensor:
    """The network's logits on uint8 images, normalised by hand as the training transforms do."""
    mean, std = (torch.tensor(hparams[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        return net(torch.flip(x, dims=[3]) if flip else x)


def test_calibration_and_test_use_the_batches_the_trainer_uses(fitted) -> None:
    datamodule, model, trainer, best, _ = fitted
    assert len(datamodule.datasets["val"]) > VAL_LIMIT * EVAL_BATCH  # the limit really cuts both splits
    assert len(datamodule.datasets["test"]) > TEST_LIMIT * EVAL_BATCH
    summary = calibrate_best(trainer, datamodule, best, tta=True)
    n_val = VAL_LIMIT * EVAL_BATCH
    assert summary["n"] == n_val and (summary["split"], summary["inference"]) == ("val", "tta")
    # the temperature of the TTA logits of exactly those validation images
    net, hparams = load_checkpoint(best)[0].net.eval(), load_checkpoint(best)[0].hparams
    images, labels = _pixels(datamodule, "val", n_val)
    logits = ((_logits(net, images, hparams) + _logits(net, images, hparams, flip=True)) / 2).double().numpy()
    assert summary["temperature"] == pytest.approx(fit_temperature(logits, labels), rel=1e-4)
    scores = score_test_split(trainer, datamodule, model, best)
    n_test = TEST_LIMIT * EVAL_BATCH
    assert scores.n == n_test and scores.paths == split_paths(datamodule, "test")[:n_test]
    # Lightning's own test loop, under the same limit, counts the same images
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert trainer.num_test_batches == [TEST_LIMIT] and int(model.last_confmat["test"].sum()) == n_test


def _figures(predicted: np.ndarray, labels: np.ndarray) -> dict:
    # a class without images has recall 0 (metrics.json's convention: no NaN in JSON)
    recall = {
        n: float(np.mean(predicted[labels == c] == c)) if (labels == c).any() else 0.0
        for c, n in enumerate(CLASS_NAMES)
    }
    return {"acc": float(np.mean(predicted == labels)), "recall": recall}


def test_a_tta_model_reports_its_plain_and_its_tta_figures(fitted) -> None:
    datamodule, model, trainer, best, folder = fitted
    scores = score_test_split(trainer, datamodule, model, best)
    metrics = write_test_artifacts(RunLayout(folder), datamodule, scores, model.class_names, {}, [])
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    net, hparams = load_checkpoint(best)[0].net.eval(), load_checkpoint(best)[0].hparams
    images, labels = _pixels(datamodule, "test", scores.n)
    plain = _logits(net, images, hparams)
    tta = (plain + _logits(net, images, hparams, flip=True)) / 2
    plain_pred, tta_pred = plain.argmax(1).numpy(), tta.argmax(1).numpy()
    assert (plain_pred != tta_pred).any(), "TTA changes no prediction here: the data cannot tell the two apart"
    for mode, predicted in (("plain", plain_pred), ("tta", tta_pred)):
        expected = _figures(predicted, labels)
        assert metrics[mode]["acc"] == pytest.approx(expected["acc"])
        assert metrics[mode]["recall"] == pytest.approx(expected["recall"])
    assert metrics["plain"] != metrics["tta"]
    assert metrics["inference"] == "tta" and metrics["acc"] == metrics["tta"]["acc"]  # model.tta: TTA on top
    assert metrics["precision"] == "float32"
