"""The web page (Gradio): one image -> class probabilities, confidence and Grad-CAM; several -> a table and a CSV.

It classifies through the same engine as the HTTP API. Uploads land in the server's temp folder and are deleted
once answered; a bad upload gives one readable line on the page and the server keeps serving.
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

from tumorcls.data.files import files_under
from tumorcls.data.formats import IMAGE_SUFFIXES
from tumorcls.serve.config import ServeConfig, megabytes
from tumorcls.serve.engine import FileResult, InferenceEngine
from tumorcls.serve.explain import CamOverlays, cam_note
from tumorcls.serve.model_card import UPLOAD_FORMATS, model_markdown

DISCLAIMER = "**Research tool, not a medical device.** Its output is not a diagnosis and must not guide care."
TITLE = "Brain MRI tumour classification"
DISPLAY_SIDE = 320


class PageHandlers:
    """What the page's events call: files in, component values out."""

    def __init__(
        self,
        engine: InferenceEngine,
        config: ServeConfig,
        card: dict[str, Any],
        cams: CamOverlays | None,
        work_dir: Path,
        keep: frozenset[str],
    ) -> None:
        self.engine, self.config, self.card, self.cams = engine, config, card, cams
        self.work_dir = work_dir  # uploads and CSVs live here (gradio's cache); nothing is read from elsewhere
        self.keep = keep  # names of the example files: gradio reuses its copies, so they are not deleted

    def _load(self, paths: list[str]) -> list[tuple[str, bytes | None, str | None]]:
        """(name, bytes or None, error) per uploaded file, each deleted once read."""
        loaded = []
        for raw in paths:
            path = Path(raw)
            name = path.name
            try:
                if not self._is_ours(path):
                    loaded.append((name, None, "not a file uploaded to this server"))
                    continue
                if path.stat().st_size > self.config.max_file_bytes:
                    loaded.append((name, None, f"larger than the {megabytes(self.config.max_file_bytes)} limit"))
                else:
                    loaded.append((name, path.read_bytes(), None))
            except OSError as exc:
                loaded.append((name, None, f"cannot read the upload ({exc.strerror or exc})"))
            self._discard(path)
        return loaded

    def _is_ours(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.work_dir.resolve())

    def _discard(self, path: Path) -> None:
        if path.name not in self.keep and self._is_ours(path):
            path.resolve().unlink(missing_ok=True)

    def _classify(self, paths: list[str]) -> list[FileResult]:
        loaded = self._load(paths)
        readable = [(name, data) for name, data, _ in loaded if data is not None]
        answered = iter(self.engine.classify(readable))
        return [next(answered) if data is not None else FileResult(name, error=err) for name, data, err in loaded]

    def one(self, path: str | None) -> tuple[str, Any, Any, Any]:
        """-> (result line, label value, input image, CAM overlay)."""
        if not path:
            return "", None, None, None
        (result,) = self._classify([path])
        if result.probabilities is None:
            return f"**Cannot classify `{result.name}`:** {result.error}", None, None, None
        names = self.engine.class_names
        index = int(np.argmax(result.probabilities))
        temperature = self.card.get("temperature")
        calibrated = f" (calibrated, temperature {temperature:.3f})" if isinstance(temperature, float) else ""
        if self.card.get("members"):
            calibrated = f" (the mean of {len(self.card['members'])} models' calibrated probabilities)"
        line = f"Predicted **{names[index]}** · confidence **{result.probabilities[index]:.4f}**{calibrated}"
        label = {n: float(p) for n, p in zip(names, result.probabilities)}
        cam = self.cams(result.image, index) if self.cams is not None else None
        return line, label, _enlarged(result.image), _enlarged(cam)

    def batch(self, paths: list[str] | None) -> tuple[str, Any, Any]:
        """-> (status line, table rows, CSV file)."""
        if not paths:
            return "", None, None
        if len(paths) > self.config.max_files:
            for path in paths:
                self._discard(Path(path))
            return f"**Too many files:** at most {self.config.max_files} at once.", None, None
        results = self._classify(list(paths))
        names = self.engine.class_names
        header = ["file", "class", "confidence", *names]
        rows = [_row(r, names) for r in results]
        out = self.work_dir / f"predictions-{uuid.uuid4().hex[:8]}.csv"
        with open(out, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
        failed = sum(r.probabilities is None for r in results)
        status = f"{len(results) - failed} classified, {failed} failed."
        return status, gr.update(value=rows, headers=header), str(out)


def _enlarged(image: np.ndarray | None) -> np.ndarray | None:
    """The model's small input (150 px) shown at DISPLAY_SIDE, pixels repeated rather than smoothed."""
    if image is None or image.shape[0] >= DISPLAY_SIDE:
        return image
    return cv2.resize(image, (DISPLAY_SIDE, DISPLAY_SIDE), interpolation=cv2.INTER_NEAREST)


def _row(result: FileResult, names: list[str]) -> list[Any]:
    if result.probabilities is None:
        return [result.name, f"error: {result.error}", "", *([""] * len(names))]
    index = int(np.argmax(result.probabilities))
    probs = [round(float(p), 6) for p in result.probabilities]
    return [result.name, names[index], round(float(result.probabilities[index]), 6), *probs]


def example_files(folder: Path | None) -> list[Path]:
    """The first 50 images under ``folder``, found as every command finds them (symlinked folders followed once)."""
    if folder is None:
        return []
    return [p for p in files_under(folder) if p.suffix.lower() in IMAGE_SUFFIXES][:50]


def build_page(handlers: PageHandlers, examples: list[Path], ttl_s: int = 900) -> gr.Blocks:
    """The page; the files it makes (uploads, images shown, CSVs) are deleted by Gradio after ``ttl_s``."""
    formats = list(UPLOAD_FORMATS)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(ttl_s, ttl_s)) as page:
        gr.Markdown(f"## {TITLE}")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        gr.Markdown(model_markdown(handlers.card), elem_id="model-info")
        with gr.Tab("One image"):
            upload = gr.File(label="Image: JPEG, PNG or DICOM (.dcm)", file_types=formats, elem_id="upload")
            result = gr.Markdown(elem_id="result")
            with gr.Row():
                shown = gr.Image(label="Input, as the model sees it", interactive=False, elem_id="input-image")
                cam = gr.Image(
                    label="Grad-CAM, predicted class",
                    interactive=False,
                    elem_id="cam-image",
                    visible=handlers.cams is not None,
                )
            probabilities = gr.Label(
                num_top_classes=len(handlers.engine.class_names), label="Class probabilities", elem_id="probabilities"
            )
            if handlers.cams is None:
                gr.Markdown(cam_note(handlers.card["backend"]), elem_id="cam-note")
            if examples:
                gr.Examples(examples=[[str(p)] for p in examples], inputs=[upload], label="Examples")
            upload.change(handlers.one, inputs=upload, outputs=[result, probabilities, shown, cam])
        with gr.Tab("Batch"):
            many = gr.File(
                label=f"Images (up to {handlers.config.max_files})",
                file_count="multiple",
                file_types=formats,
                elem_id="batch-upload",
            )
            status = gr.Markdown(elem_id="batch-status")
            table = gr.Dataframe(label="Predictions", interactive=False, elem_id="batch-table")
            download = gr.File(label="CSV", interactive=False, elem_id="batch-csv")
            many.change(handlers.batch, inputs=many, outputs=[status, table, download])
    return page
