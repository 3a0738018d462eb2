"""Files from elsewhere are untrusted: checkpoints are unpickled with weights_only=True and must be ours
(hyperparameters, label map, tensors), and images whose header promises a huge size are refused unread."""

from __future__ import annotations

import os
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import ImageFile

from tests.helpers.trainers import quiet_trainer
from tumorcls.data.decode import DecodeOptions, ImageDecodeError, decode_image, read_image
from tumorcls.errors import CheckpointError
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier

# ------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning checkpoint of a small TumorClassifier, written by a Trainer."""
    path = tmp_path_factory.mktemp("ckpt") / "good.ckpt"
    model = TumorClassifier(backbone="test_efficientnet")
    trainer = quiet_trainer(enable_checkpointing=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def _tampered(good: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    ckpt = torch.load(good, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, target)
    return target


def _refused(path: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_our_own_checkpoint_loads(good_ckpt: Path) -> None:
    model, _ = load_checkpoint(good_ckpt)
    assert model.class_names == list(CLASS_NAMES) and not model.training
    saved = torch.load(good_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(model.net.head.weight, saved["net.head.weight"])


class _ShellPayload:
    """Unpickling this calls os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


class _LocalObject:
    """Any class of the file's choosing: refused just the same."""

    def __init__(self) -> None:
        self.value = 1


def test_pickled_code_is_refused_and_never_runs(good_ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"

    def plant(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"]["drop_rate"] = _ShellPayload(marker)

    evil = _tampered(good_ckpt, tmp_path / "evil.ckpt", plant)
    _refused(evil, r"safely: it holds pickled objects, which are never loaded \(.*GLOBAL posix\.system")
    assert not marker.exists()


def test_pickled_local_object_is_refused(good_ckpt: Path, tmp_path: Path) -> None:
    evil = _tampered(good_ckpt, tmp_path / "object.ckpt", lambda c: c.update(extra=_LocalObject()))
    _refused(evil, r"safely: it holds pickled objects, .*GLOBAL tests\.models\.test_safe_files\._LocalObject")


def test_other_label_order_is_refused(good_ckpt: Path, tmp_path: Path) -> None:
    swapped = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]
    path = _tampered(good_ckpt, tmp_path / "swapped.ckpt", lambda c: c["hyper_parameters"].update(class_names=swapped))
    _refused(path, r"has label map \['no_tumor', 'glioma_tumor', .*expected \['glioma_tumor', 'no_tumor'")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c["hyper_parameters"].update(backbone="test_byobnet"), "does not match its own hyperparameters"),
        (lambda c: c["hyper_parameters"].update(backbone="no_such_net"), "hyperparameters this version cannot use"),
        (lambda c: c["hyper_parameters"].update(scheduler="warp"), "hyperparameters this version cannot use"),
        (lambda c: c["hyper_parameters"].update(colour="red"), "hyperparameters this version cannot use"),
        (lambda c: c["hyper_parameters"].pop("class_names"), r"not a tumorcls checkpoint \(hyperparameters lack"),
        (lambda c: c.update(hyper_parameters=[1, 2]), "not a tumorcls checkpoint"),
        (
            lambda c: c["state_dict"].update({"net.head.weight": torch.zeros(4, 7)}),
            "does not match its own hyperparameters: size mismatch for net.head.weight",
        ),
        (lambda c: c["state_dict"].pop("net.head.bias"), r"does not match its own hyperparameters \(1 tensors"),
        (lambda c: c.pop("state_dict"), r"not a Lightning checkpoint \(no state_dict\)"),
    ],
)
def test_checkpoint_that_is_not_consistent_is_refused(
    good_ckpt: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    _refused(_tampered(good_ckpt, tmp_path / "changed.ckpt", change), match)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "name, write",
    [
        ("random.pt", lambda p: p.write_bytes(random.Random(0).randbytes(4096))),
        ("notes.ckpt", lambda p: p.write_text("this is a text file, not a checkpoint\n")),
        ("empty.ckpt", lambda p: p.write_bytes(b"")),
        ("zip.ckpt", lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 64)),
    ],
)
def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path, name: str, write: Callable[[Path], Any]) -> None:
    path = tmp_path / name
    write(path)
    _refused(path, r"cannot read checkpoint .* safely: not a PyTorch checkpoint file \(\w+")


def test_torch_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    _refused(tmp_path / "tensor.pt", "not a Lightning checkpoint")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    _refused(tmp_path / "plain.ckpt", r"not a tumorcls checkpoint \(hyperparameters lack")


def test_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.ckpt", "checkpoint not found")


# ---------------------------------------------------------------------------------- decompression bombs


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR for an RGB image of the given size, with a tiny IDAT: a few dozen
    bytes on disk that would need width*height*3 bytes of memory if decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image data is decoded (the pixel buffer is allocated by ImageFile.load)."""

    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"decoded a {self.size} image that should have been refused from its header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize(
    "side, limit, match",
    [
        (9000, DecodeOptions().max_pixels, r"image too large \(9000x9000 > 64000000 pixels\); refused"),
        (20000, DecodeOptions().max_pixels, r"image too large \(Image size \(400000000 pixels\) exceeds limit"),
        (3000, 1_000_000, r"image too large \(3000x3000 > 1000000 pixels\); refused"),
    ],
)
def test_huge_header_is_refused_without_decoding(
    tmp_path: Path, no_decoding: None, side: int, limit: int, match: str
) -> None:
    data = _png_header_only(side, side)
    assert len(data) < 100
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError, match=match):
        read_image(path, DecodeOptions(max_pixels=limit))
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data, DecodeOptions(max_pixels=limit))


def test_header_within_the_limit_is_decoded(no_decoding: None) -> None:
    """The guard above really intercepts decoding: an allowed size reaches ImageFile.load."""
    with pytest.raises(AssertionError, match="should have been refused"):
        decode_image(_png_header_only(64, 64))
