"""Data: image files -> decoded RGB arrays -> splits -> the LightningDataModule; and the dataset audit."""
