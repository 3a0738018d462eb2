"""Integration on the real Kaggle dataset (skipped, saying so, when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest

from tumorcls.data.datamodule import TumorDataModule
from tumorcls.data.hashing import duplicate_groups
from tumorcls.data.splits import make_splits
from tumorcls.models.lit_module import TumorClassifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def official(real_data: Path) -> TumorDataModule:
    dm = TumorDataModule(real_data, protocol="official", batch_size=16, num_workers=0)
    dm.setup()
    return dm


def test_real_dataset_decodes_completely(official: TumorDataModule) -> None:
    decoded = official.decoded
    assert decoded.images.shape == (3264, 150, 150, 3) and decoded.images.dtype == np.uint8
    assert official.skipped_files == 0
    training = np.array([r.source == "Training" for r in decoded.records])
    assert np.bincount(decoded.labels[training]).tolist() == [826, 395, 822, 827]  # glioma, no, meningioma, pituitary
    assert np.bincount(decoded.labels[~training]).tolist() == [100, 105, 115, 74]


def test_three_protocols_build_their_splits(official: TumorDataModule) -> None:
    decoded = official.decoded
    sources = [r.source for r in decoded.records]
    exact = duplicate_groups(decoded.sha256, decoded.phashes, None)
    assert official.split_sizes() == {"train": 2582, "val": 288, "test": 394}

    seed = make_splits("seed", decoded.labels, sources, seed=101)
    assert (seed == "test").sum() == 326  # the tutorial's 10% of 3264

    near = duplicate_groups(decoded.sha256, decoded.phashes, 4)
    grouped = make_splits("grouped", decoded.labels, sources, seed=101, groups=near)
    for split in (seed, grouped):
        assert 0.07 < (split == "test").mean() < 0.13
    for g in np.unique(near):
        assert len(set(grouped[near == g])) == 1  # no group straddles train/val/test

    def test_images_with_exact_copy_in_train(split: np.ndarray) -> int:
        train_groups = set(exact[split == "train"])
        return int(sum(exact[i] in train_groups for i in np.flatnonzero(split == "test")))

    assert test_images_with_exact_copy_in_train(seed) > 0  # the tutorial's split leaks
    assert test_images_with_exact_copy_in_train(official.split) > 0  # so does the official Testing folder
    assert test_images_with_exact_copy_in_train(grouped) == 0


def test_a_few_training_batches_on_real_data(official: TumorDataModule, real_weights: Path, tmp_path: Path) -> None:
    model = TumorClassifier(backbone="tf_efficientnet_b0.aa_in1k", weights=str(real_weights), channels_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=official)
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))
    results = trainer.test(model, datamodule=official, verbose=False)[0]
    confmat = np.asarray(model.last_confmat["test"])
    n = 2 * official.eval_batch_size  # limit_test_batches=2: the first n images of the Testing folder, by class
    assert confmat.sum() == n
    first_test = official.decoded.labels[official.split == "test"][:n]
    assert confmat.sum(axis=1).tolist() == np.bincount(first_test, minlength=4).tolist()
    assert results["test/acc"] == pytest.approx(np.trace(confmat) / n)  # the accuracy of the predictions counted
