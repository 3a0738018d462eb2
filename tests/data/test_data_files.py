"""The one image finder: the same class-folder spellings and the same image rule for train, evaluate and
the audit; paths, folders and globs for predict and export."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import synthetic_image
from tumorcls.data.audit import audit_dataset, discover
from tumorcls.data.files import files_under, find_images, walk_dataset
from tumorcls.data.scan import scan_dataset
from tumorcls.errors import DatasetError
from tumorcls.evaluation.evaluate import dataset_files
from tumorcls.labels import CLASS_NAMES

# other spellings of our four classes, as other copies of the dataset name their folders
SPELLED = {"Glioma_Tumor": 0, "No_Tumor": 1, "meningioma": 2, "Pituitary Tumour": 3}


def _write(path: Path, label: int = 0, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(label, np.random.default_rng(label), 32)).save(path, format=fmt)
    return path


@pytest.fixture
def spelled_root(tmp_path: Path) -> Path:
    """A Kaggle layout whose class folders are spelled Glioma_Tumor, No_Tumor, ..."""
    root = tmp_path / "mri"
    for split in ("Training", "Testing"):
        for folder, label in SPELLED.items():
            _write(root / split / folder / "a.jpg", label)
            _write(root / split / folder / "b.gif", label, fmt="GIF")
    return root


def test_train_accepts_the_class_spellings_evaluate_and_audit_accept(spelled_root: Path) -> None:
    scan = scan_dataset(spelled_root)  # refused before: "unknown class folder(s) ['Glioma_Tumor', ...]"
    labels = {r.relative_to(spelled_root): r.label for r in scan.records}
    expected = {
        f"{split}/{folder}/{name}": label
        for split in ("Training", "Testing")
        for folder, label in SPELLED.items()
        for name in ("a.jpg", "b.gif")
    }
    assert labels == expected and scan.skipped == []
    files, names, skipped = dataset_files(spelled_root, "Testing")  # evaluate
    assert {p.relative_to(spelled_root).as_posix(): CLASS_NAMES.index(n) for p, n in zip(files, names)} == {
        k: v for k, v in expected.items() if k.startswith("Testing/")
    }
    report = audit_dataset(spelled_root)
    assert report["unknown_classes"] == {} and report["missing_classes"] == {}
    assert report["counts"]["Training"] == {name: 2 for name in CLASS_NAMES}


def test_train_records_keep_source_class_path_order(spelled_root: Path) -> None:
    records = scan_dataset(spelled_root).records
    keys = [(r.source != "Training", r.label, r.path.as_posix()) for r in records]
    assert keys == sorted(keys)


def test_two_folders_of_one_class_are_refused_in_one_line(spelled_root: Path) -> None:
    _write(spelled_root / "Training" / "glioma_tumor" / "c.jpg")
    with pytest.raises(DatasetError) as err:
        scan_dataset(spelled_root)
    message = str(err.value)
    assert "'Glioma_Tumor' and 'glioma_tumor'" in message and "both mean glioma_tumor" in message
    assert str(spelled_root / "Training") in message and "\n" not in message


def test_one_image_rule_for_every_finder(tmp_path: Path) -> None:
    """JPEG, PNG, GIF, DICOM (by suffix, or by preamble without a suffix) are found; the rest is not."""
    folder = tmp_path / "glioma"
    wanted = [
        _write(folder / "a.jpg"),
        _write(folder / "b.png", fmt="PNG"),
        _write(folder / "c.GIF", fmt="GIF"),
    ]
    (folder / "d.dcm").write_bytes(b"\0" * 200)
    (folder / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # a scanner's suffix-less slice
    (folder / "README").write_text("no suffix, no preamble")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"")
    images = sorted([*wanted, folder / "d.dcm", folder / "IM0001"])
    assert find_images([tmp_path])[0] == images  # predict, export
    assert dataset_files(tmp_path)[0] == images  # evaluate
    walked = walk_dataset(tmp_path, [("all", tmp_path)], "folder-per-class")
    assert [f.path for f in walked.images] == images
    assert sorted(walked.non_images) == sorted([folder / "README", folder / "notes.txt", folder / ".hidden.jpg"])
    assert sorted(e.path for e in discover(tmp_path).entries if e.is_image) == images  # audit


def test_paths_folders_and_globs_in_order_without_repeats(tmp_path: Path) -> None:
    a = _write(tmp_path / "x" / "a.jpg")
    b = _write(tmp_path / "x" / "deep" / "b.png", fmt="PNG")
    named = tmp_path / "named.bin"
    named.write_bytes(b"taken whatever its name")
    files, missing = find_images([named, tmp_path / "x", str(tmp_path / "**" / "*.jpg"), tmp_path / "nope.jpg"])
    assert files == [named, a, b]
    assert missing == [(tmp_path / "nope.jpg", "no such file or directory")]
    assert find_images([str(tmp_path / "*.webp")])[1] == [(tmp_path / "*.webp", "no file matches this pattern")]


# ------------------------------------------------------------------------------------ folder symlinks


@pytest.fixture
def linked_root(tmp_path: Path) -> tuple[Path, Path]:
    """A Kaggle layout whose Training/glioma_tumor holds a symlink to a folder of images kept elsewhere, and a
    symlink back to itself (a loop); Testing/no_tumor is itself a symlink."""
    root = tmp_path / "mri"
    for split in ("Training", "Testing"):
        for label, name in enumerate(CLASS_NAMES):
            if (split, name) != ("Testing", "no_tumor"):
                _write(root / split / name / "a.jpg", label)
    elsewhere = tmp_path / "elsewhere"
    _write(elsewhere / "batch2" / "b.jpg")
    _write(elsewhere / "batch2" / "c.png", fmt="PNG")
    glioma = root / "Training" / "glioma_tumor"
    (glioma / "more").symlink_to(elsewhere, target_is_directory=True)
    (glioma / "more_again").symlink_to(elsewhere / "batch2", target_is_directory=True)  # a second way in
    (glioma / "loop").symlink_to(glioma, target_is_directory=True)
    _write(tmp_path / "no_tumor_testing" / "z.jpg", 1)
    (root / "Testing" / "no_tumor").symlink_to(tmp_path / "no_tumor_testing", target_is_directory=True)
    return root, glioma


def test_symlinked_folders_are_followed_once_and_a_loop_is_logged(linked_root, caplog) -> None:
    root, glioma = linked_root
    with caplog.at_level(logging.WARNING, logger="tumorcls.data.files"):
        files = files_under(glioma)
    assert files == [glioma / "a.jpg", glioma / "more" / "batch2" / "b.jpg", glioma / "more" / "batch2" / "c.png"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"not following {glioma / 'loop'}: it leads to {glioma}" in m for m in messages), messages
    second = f"not following {glioma / 'more_again'}: it leads to {glioma / 'more' / 'batch2'}"
    assert any(second in m for m in messages), messages


def test_every_finder_enters_symlinked_folders(linked_root) -> None:
    root, glioma = linked_root
    linked = {glioma / "more" / "batch2" / "b.jpg", glioma / "more" / "batch2" / "c.png"}
    testing_link = root / "Testing" / "no_tumor" / "z.jpg"
    scanned = {r.path: r.label for r in scan_dataset(root).records}  # train
    assert linked <= set(scanned) and scanned[testing_link] == 1 and len(scanned) == 10
    assert linked <= set(find_images([root])[0])  # predict, export
    assert linked <= set(dataset_files(root, "Training")[0])  # evaluate
    audited = {e.path for e in discover(root).entries}  # audit
    assert linked | {testing_link} <= audited and len(audited) == 10


def test_a_symlink_to_nothing_is_logged_not_silently_skipped(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "scans"
    _write(folder / "a.jpg")
    (folder / "gone").symlink_to(tmp_path / "deleted", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="tumorcls.data.files"):
        assert find_images([folder])[0] == [folder / "a.jpg"]
    assert [r.getMessage() for r in caplog.records] == [f"skipped {folder / 'gone'}: a symlink to nothing "
                                                        f"({tmp_path / 'deleted'})"]  # fmt: skip
