"""The one decoder: EXIF orientation applied for every command, one rule for which formats are images
(GIF in, other PIL formats out, by name in a folder and by content when named), and a one-line hint
when a DICOM file meets a machine without pydicom."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorcls.data.audit import audit_dataset
from tumorcls.data.cache import decode_records
from tumorcls.data.decode import DecodeOptions, ImageDecodeError, decode_image, load_image, read_image
from tumorcls.data.files import find_images
from tumorcls.data.scan import ImageRecord
from tumorcls.export.run import _image_files

ORIENTATION = 0x0112


def _upright(width: int = 96, height: int = 96) -> np.ndarray:
    """An image that looks different under every rotation: a horizontal ramp and a bright top-left block."""
    ramp = np.tile(np.linspace(20, 120, width), (height, 1))
    ramp[: height // 4, : width // 3] = 240
    return np.repeat(ramp.astype(np.uint8)[:, :, None], 3, axis=2)


def _save_rotated_with_orientation_6(upright: np.ndarray, path: Path) -> Path:
    """Store the pixels turned 90 degrees counter-clockwise with EXIF orientation 6 ("turn 90 degrees clockwise
    to display"), as a phone held sideways does: a viewer shows ``upright``."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_6_is_decoded_upright(tmp_path: Path) -> None:
    upright = _upright()
    path = _save_rotated_with_orientation_6(upright, tmp_path / "phone.jpg")
    decoded = read_image(path, DecodeOptions(size=96)).astype(float)
    assert np.abs(decoded - upright).mean() < 3  # JPEG noise only
    ignored = np.asarray(Image.open(path).convert("RGB"), dtype=float)  # the stored pixels, orientation ignored
    assert np.abs(ignored - upright).mean() > 30  # what the old decoder gave: the test can tell them apart


def test_every_command_gets_the_upright_pixels(tmp_path: Path) -> None:
    """The training cache, predict/evaluate (read_image), export's file finder and the audit share the decoder."""
    upright = _upright(width=120, height=80)
    path = _save_rotated_with_orientation_6(upright, tmp_path / "glioma_tumor" / "wide.jpg")
    options = DecodeOptions(size=64)
    cached = decode_records([ImageRecord(path, 0, "Training")], options)
    assert np.array_equal(cached.images[0], read_image(path, options))
    assert load_image(path.read_bytes()).size == (120, 80)  # width x height as displayed
    assert _image_files([tmp_path]) == [path]
    report = audit_dataset(tmp_path)
    assert report["sizes"]["most_common"] == [{"size": "120x80", "count": 1}]


def _gif(path: Path) -> Path:
    Image.fromarray(_upright()[:, :, 0], mode="L").save(path, format="GIF")
    return path


def test_a_gif_is_an_image_in_a_folder_and_when_named(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    gif = _gif(folder / "slice.gif")
    (folder / "notes.txt").write_text("not an image")
    files, missing = find_images([folder])
    assert files == [gif] and missing == []  # found in a folder (it was skipped before) ...
    named = read_image(gif, DecodeOptions(size=96))  # ... and decoded when named, as before
    assert np.abs(named[:, :, 0].astype(int) - _upright()[:, :, 0]).max() <= 1


def test_a_format_outside_the_list_is_refused_when_named_and_not_found_in_a_folder(tmp_path: Path) -> None:
    """PPM is a format PIL reads but no command takes: not found in a folder, and refused when named
    (it used to be decoded when named while a folder skipped it)."""
    ppm = tmp_path / "slice.ppm"
    Image.fromarray(_upright()).save(ppm, format="PPM")
    assert find_images([tmp_path]) == ([], [])
    with pytest.raises(ImageDecodeError) as err:
        read_image(ppm)
    assert str(err.value) == f"{ppm}: not a readable image (UnidentifiedImageError)"


def test_an_image_named_without_its_suffix_is_still_decoded_by_its_content(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_upright()).save(buf, format="PNG")
    path = tmp_path / "scan.data"
    path.write_bytes(buf.getvalue())
    assert np.array_equal(read_image(path, DecodeOptions(size=96)), _upright())


def test_dicom_without_pydicom_names_the_extra_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    fake = b"\0" * 128 + b"DICM" + b"\0" * 64
    with pytest.raises(ImageDecodeError) as err:
        decode_image(fake)
    assert str(err.value) == 'DICOM files need pydicom: pip install -e ".[dicom]"'
    with pytest.raises(ImageDecodeError, match=r"pip install -e \"\.\[dicom\]\""):
        decode_image(b"\0" * 64, name="slice.dcm")  # no preamble: the name says DICOM
