"""Folder layout checks: clear one-line errors before training, counted skips for non-images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_dataset
from tumorcls.data.scan import scan_dataset
from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "mri", {"Training": 2, "Testing": 1})


def test_scan_finds_all_images_with_tutorial_label_order(root: Path) -> None:
    scan = scan_dataset(root)
    assert len(scan.records) == 4 * 3
    by_folder = {r.path.parent.name: r.label for r in scan.records}
    assert by_folder == {"glioma_tumor": 0, "no_tumor": 1, "meningioma_tumor": 2, "pituitary_tumor": 3}
    assert {r.source for r in scan.records} == {"Training", "Testing"}


def test_non_image_files_are_skipped_and_counted(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "Training" / "glioma_tumor" / "notes.txt").write_text("hello")
    (root / "Training" / "no_tumor" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "Testing" / "README.md").write_text("loose file")
    with caplog.at_level(logging.WARNING):
        scan = scan_dataset(root)
    assert len(scan.records) == 12 and len(scan.skipped) == 3
    assert sum("skipped 3 non-image file(s)" in r.getMessage() for r in caplog.records) == 1


def test_missing_root_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        scan_dataset(tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "TUMORCLS_DATA" in msg and "sartajbhuvaji/brain-tumor-classification-mri" in msg
    assert "\n" not in msg


def test_unknown_class_folder_is_an_error(root: Path) -> None:
    (root / "Training" / "astrocytoma").mkdir()
    with pytest.raises(DatasetError, match=r"unknown class folder\(s\) \['astrocytoma'\]"):
        scan_dataset(root)


def test_missing_class_folder_is_an_error(root: Path) -> None:
    shutil.rmtree(root / "Testing" / "no_tumor")
    with pytest.raises(DatasetError, match=r"\['no_tumor'\] missing"):
        scan_dataset(root)


def test_missing_split_folder_is_an_error(root: Path) -> None:
    shutil.rmtree(root / "Testing")
    with pytest.raises(DatasetError, match="Testing' is missing"):
        scan_dataset(root)


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    for split in ("Training", "Testing"):
        for name in CLASS_NAMES:
            (tmp_path / split / name).mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files found"):
        scan_dataset(tmp_path)
