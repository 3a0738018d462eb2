"""Decoding of single files: every mode becomes RGB uint8 at the asked size; bad files give one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, decode_image, read_image


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_jpeg_is_resized_to_uint8_rgb(tmp_path: Path) -> None:
    arr = np.zeros((200, 300, 3), np.uint8)
    arr[..., 0] = 200  # red
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg", DecodeOptions(size=150))
    assert out.shape == (150, 150, 3) and out.dtype == np.uint8
    assert out[..., 0].mean() > 190 and out[..., 1].mean() < 10  # channel order is RGB


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), mode="L")
    out = decode_image(_png_bytes(gray), DecodeOptions(size=64))
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert out[0, -1, 0] == 252


def test_rgba_is_composited_on_black() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :16, 3] = 255  # left half opaque white, right half transparent
    out = decode_image(_png_bytes(Image.fromarray(rgba, mode="RGBA")), DecodeOptions(size=32))
    assert out[:, :8].min() == 255 and out[:, 24:].max() == 0


def test_16bit_png_is_rescaled_not_clipped() -> None:
    arr = np.full((32, 32), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    img = Image.fromarray(arr)
    assert img.mode.startswith("I")
    out = decode_image(_png_bytes(img), DecodeOptions(size=32))
    assert 126 <= out.mean() <= 129


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not an image", "not a readable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "image"),  # JPEG magic, then garbage
    ],
)
def test_bad_bytes_give_one_line_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(payload)
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: corrupt image"):
        read_image(tmp_path / "cut.jpg")


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="too small"):
        decode_image(_png_bytes(Image.new("RGB", (4, 4))), DecodeOptions(min_side=16))


def test_huge_image_is_refused_before_decoding() -> None:
    big = Image.new("1", (5000, 5000))  # compresses to a few KB: a decompression bomb in miniature
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(_png_bytes(big), DecodeOptions(max_pixels=1_000_000))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="nope.jpg: cannot read"):
        read_image(tmp_path / "nope.jpg")
