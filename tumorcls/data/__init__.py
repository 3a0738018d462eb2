"""Data: image files -> decoded RGB arrays -> splits -> the LightningDataModule; and the dataset audit."""

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, decode_image, is_image_path, read_image

__all__ = ["DecodeOptions", "ImageDecodeError", "decode_image", "is_image_path", "read_image"]
