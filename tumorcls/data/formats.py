"""Which files are images: the one list of file-name suffixes and decodable formats every command uses,
and the error for a file that is not a usable image.

A folder is searched by name (``is_image_path``): files are never opened to find out what they are, except
files without any suffix, which are DICOM slices when they carry the DICM preamble (scanners often write
``IM0001``-style names). A file named on the command line is taken whatever its name, and the decoder
decides by its content, among the same formats: PIL opens only ``PIL_FORMATS`` and DICOM goes to pydicom.
"""

from __future__ import annotations

from pathlib import Path

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# suffix -> what it is; each PIL format here is one of PIL_FORMATS
PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
IMAGE_SUFFIXES = PIL_SUFFIXES | DICOM_SUFFIXES
# the PIL plugins tried on a file's bytes (PIL's JPEG plugin also opens MPO, the JPEG variant of some cameras)
PIL_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")

_PREAMBLE_END = 132  # 128 bytes of preamble, then b"DICM"


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is one line naming the reason."""


class ImageTooLargeError(ImageDecodeError):
    """A file refused for the size its header declares (pixels, or inflated bytes), before decoding it."""


def has_dicom_preamble(data: bytes) -> bool:
    """True for the bytes of a DICOM Part 10 file (128-byte preamble followed by ``DICM``)."""
    return len(data) >= _PREAMBLE_END and data[128:_PREAMBLE_END] == b"DICM"


def is_dicom_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in DICOM_SUFFIXES


def _file_has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return has_dicom_preamble(fh.read(_PREAMBLE_END))
    except OSError:
        return False


def is_image_path(path: str | Path) -> bool:
    """Whether a file found in a folder is an image: a visible file with an image suffix (GIF and DICOM
    included), or a suffix-less file holding a DICOM preamble."""
    path = Path(path)
    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and _file_has_dicom_preamble(path)
