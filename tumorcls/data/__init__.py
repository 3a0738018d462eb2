"""Data: image files -> decoded RGB arrays -> splits -> the LightningDataModule; and the dataset audit.

The light public names are re-exported here (no Lightning import): the one image finder
(``find_images``, ``walk_dataset``), the one decoder (``decode_image``, ``read_image``, ``load_image``)
and the rule for what counts as an image (``is_image_path``).
"""

from tumorcls.data.decode import (
    DecodeOptions,
    ImageDecodeError,
    SourceImage,
    decode_image,
    is_image_path,
    load_image,
    read_image,
)
from tumorcls.data.files import DatasetFile, DatasetFiles, find_images, split_folders, walk_dataset
from tumorcls.data.formats import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetFile",
    "DatasetFiles",
    "DecodeOptions",
    "ImageDecodeError",
    "SourceImage",
    "decode_image",
    "find_images",
    "is_image_path",
    "load_image",
    "read_image",
    "split_folders",
    "walk_dataset",
]
