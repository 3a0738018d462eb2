"""The data module on synthetic datasets: tensors, labels, skips, manifests and duplicate-safe splits."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.synthetic import MARK_CENTRES, make_dataset
from tumorcls.config.rules import ConfigError
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.data.decode import read_image
from tumorcls.data.transforms import denormalize
from tumorcls.errors import DatasetError

AUG = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]


def _quadrant_label(img: torch.Tensor) -> int:
    """Class of a synthetic image from where its bright disc is."""
    gray = denormalize(img).mean(0)
    side = gray.shape[-1]
    half = side // 2
    q = half // 2
    means = {
        label: gray[int(r * side) - q : int(r * side) + q, int(c * side) - q : int(c * side) + q].mean()
        for label, (r, c) in MARK_CENTRES.items()
    }
    return int(max(means, key=means.get))


def test_batches_have_the_configured_shape_dtype_and_labels(synthetic_root: Path, tmp_path: Path) -> None:
    dm = TumorDataModule(
        synthetic_root,
        protocol="official",
        size=48,
        batch_size=8,
        num_workers=0,
        train_augmentations=AUG,
        manifest_path=tmp_path / "splits.csv",
    )
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -3 < float(x.min()) < 0 < float(x.max()) < 3  # ImageNet-normalised
    xt, yt = next(iter(dm.test_dataloader()))
    assert [_quadrant_label(img) for img in xt] == yt.tolist()  # label ids follow the folder names
    assert dm.split_sizes() == {"train": 44, "val": 4, "test": 16}
    with open(tmp_path / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 64 and set(rows[0]) >= {"path", "label", "class_name", "split"}
    assert all(r["split"] == "test" for r in rows if r["path"].startswith("Testing/"))
    order = ["glioma_tumor", "no_tumor", "meningioma_tumor", "pituitary_tumor"]
    assert all(int(r["label"]) == order.index(r["class_name"]) for r in rows)


def test_training_images_are_augmented_but_eval_images_are_not(synthetic_root: Path) -> None:
    dm = TumorDataModule(
        synthetic_root,
        size=48,
        num_workers=0,
        train_augmentations=[{"_target_": "albumentations.HorizontalFlip", "p": 1.0}],
    )
    dm.setup()
    raw = dm.datasets["train"].image(0)
    flipped = dm.datasets["train"][0][0]
    plain = dm.eval_transform(image=raw)["image"]
    assert torch.allclose(flipped, torch.flip(plain, dims=[2]), atol=1e-6)
    assert torch.equal(dm.datasets["test"][0][0], dm.eval_transform(image=dm.datasets["test"].image(0))["image"])


def test_manifest_is_identical_for_the_same_seed(synthetic_root: Path, tmp_path: Path) -> None:
    texts = []
    for i, seed in enumerate((5, 5, 6)):
        manifest = tmp_path / f"{i}.csv"
        dm = TumorDataModule(synthetic_root, protocol="seed", size=32, split_seed=seed, manifest_path=manifest)
        dm.setup()
        texts.append((tmp_path / f"{i}.csv").read_text())
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_bad_files_are_skipped_counted_and_modes_converted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_dataset(tmp_path / "mri", {"Training": 6, "Testing": 2})
    cls = root / "Training" / "glioma_tumor"
    (cls / "zero.jpg").write_bytes(b"")
    (cls / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (cls / "text.jpg").write_text("not an image")
    (cls / "notes.txt").write_text("ignored by extension")
    Image.new("RGB", (3, 3)).save(cls / "tiny.png")
    Image.fromarray(np.full((40, 40), 90, np.uint8), mode="L").save(cls / "gray.png")
    Image.fromarray(np.full((40, 40, 4), 200, np.uint8), mode="RGBA").save(cls / "rgba.png")
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(cls / "deep.png")
    with caplog.at_level(logging.WARNING):
        dm = TumorDataModule(root, protocol="official", size=32)
        dm.setup()
    assert dm.skipped_files == 5  # zero, corrupt, text-as-jpg, tiny, notes.txt
    assert sum(dm.split_sizes().values()) == 4 * 8 + 3
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 4 unreadable image file(s)" in warnings[0]


def test_dataset_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mri", {"Training": 1, "Testing": 1})
    for f in root.rglob("*.jpg"):
        f.write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the 8 image files could be decoded"):
        TumorDataModule(root).setup()


def test_unknown_protocol_is_an_error(synthetic_root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        TumorDataModule(synthetic_root, protocol="leaky")
    assert str(err.value) == "config: data.protocol must be one of ['seed', 'official', 'grouped'], got 'leaky'"


def test_grouped_protocol_never_separates_duplicates(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mri", {"Training": 15, "Testing": 5}, side=96, seed=3)
    # exact copies across folders, and near copies (re-encoded at another JPEG quality)
    for label_dir in ("glioma_tumor", "pituitary_tumor"):
        for i in range(5):
            src = root / "Training" / label_dir / f"img_{i}.jpg"
            shutil.copy(src, root / "Testing" / label_dir / f"copy_{i}.jpg")
            Image.open(src).save(root / "Testing" / label_dir / f"near_{i}.jpg", quality=70)
    dm = TumorDataModule(root, protocol="grouped", size=32, split_seed=1, near_dup_distance=4)
    dm.setup()
    paths = [r.relative_to(root) for r in dm.decoded.records]
    side = dict(zip(paths, dm.split))
    for d in ("glioma_tumor", "pituitary_tumor"):
        for i in range(5):
            copies = (f"Training/{d}/img_{i}.jpg", f"Testing/{d}/copy_{i}.jpg", f"Testing/{d}/near_{i}.jpg")
            assert len({side[p] for p in copies}) == 1
    # while the official protocol would leak them
    dm_off = TumorDataModule(root, protocol="official", size=32)
    dm_off.setup()
    assert set(dm_off.split[[i for i, p in enumerate(paths) if "/copy_" in p]]) == {"test"}


def test_the_cache_holds_images_prepared_as_configured(synthetic_root: Path) -> None:
    """crop/intensity run once, at decode time: the cached pixels are exactly what predict would decode."""
    dm = TumorDataModule(synthetic_root, protocol="official", size=48, num_workers=0, crop="head", intensity="equalize")
    dm.setup()
    assert dm.decoded is not None
    plain = TumorDataModule(synthetic_root, protocol="official", size=48, num_workers=0)
    plain.setup()
    assert plain.decoded is not None
    for i in (0, 17, 40):
        path = dm.decoded.records[i].path
        assert np.array_equal(dm.decoded.images[i], read_image(path, dm.decode_options))
        assert not np.array_equal(dm.decoded.images[i], plain.decoded.images[i])


@pytest.mark.parametrize(("key", "value"), [("crop", "brain"), ("intensity", "zscore")])
def test_unknown_preprocessing_is_one_line(synthetic_root: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        TumorDataModule(synthetic_root, **{key: value})
    choices = "['none', 'head']" if key == "crop" else "['none', 'stretch', 'equalize']"
    assert str(err.value) == f"config: data.{key} must be one of {choices}, got {value!r}"
