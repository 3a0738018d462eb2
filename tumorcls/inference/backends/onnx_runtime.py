"""The ONNX backend: a graph run with ONNX Runtime on the CPU, taking float32 RGB 0..255 (NCHW as tumorcls
exports it, or NHWC) and returning probabilities.

On load the graph is held to the contract: one 4-D input with 3 channels and a square size (when static), and
one probability per class name (the metadata's, else the tutorial's four). A file that breaks it is refused in
one line instead of being "predicted" with the wrong labels. The crop and intensity normalisation the inputs need
come from the ``preprocess`` metadata (tumorcls.model_file; "none" for a file without it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.errors import first_line
from tumorcls.inference.backends.base import ModelFileError, Predictor, check_outputs, checked_input_size
from tumorcls.labels import CLASS_NAMES
from tumorcls.model_file import read_metadata

log = logging.getLogger(__name__)


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelFileError(f"cannot load ONNX model '{path}': {first_line(exc)}") from None


class OnnxPredictor(Predictor):
    """An ONNX Runtime session and the graph's input layout."""

    backend = "onnx"
    suffixes = (".onnx",)

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        self.session = _session(path, threads)
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            declared = read_metadata(metadata, f"'{path}'")
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"'{path}' has {len(inputs)} inputs; expected one batch of images")
        self.input_name = inputs[0].name
        shape = list(inputs[0].shape)
        self.channels_first = len(shape) == 4 and shape[1] == 3
        layout = "N x 3 x H x W, or N x H x W x 3"
        size = checked_input_size(path, shape, 1 if self.channels_first else 3, declared.input_size, layout)
        names = declared.class_names or list(CLASS_NAMES)
        preprocess = {"crop": declared.crop, "intensity": declared.intensity}  # "none" unless declared
        super().__init__(path, names, size, declared.temperature, metadata, **preprocess)
        check_outputs(path, self._outputs_per_image(), names, declared.class_names is not None)
        if declared.class_names is None:
            log.warning("'%s' has no class_names metadata; assuming %s", path, names)

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu", threads: int | None = None) -> OnnxPredictor:
        return cls(path, threads)

    def _outputs_per_image(self) -> int | None:
        """The first output's width: from the graph when static, else from one run on a black image."""
        shape = list(self.session.get_outputs()[0].shape)
        if len(shape) != 2:
            raise ModelFileError(f"'{self.path}' gives {len(shape)}-D output {shape}; expected N x classes")
        if isinstance(shape[1], int) and shape[1] > 0:
            return int(shape[1])
        try:
            probe = self._probabilities(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFileError(f"cannot run ONNX model '{self.path}': {first_line(exc)}") from None
        return int(probe.shape[-1])

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        if self.channels_first:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return np.asarray(self.session.run(None, {self.input_name: x})[0])
