"""The one model of a server, shared by every request: uploads decoded as `tumorcls predict` decodes files, and
the model run by one worker thread that batches concurrent requests together (so N clients never run N models
at once), with the same ``predict_batch`` as `tumorcls predict`, hence the same probabilities."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorcls.data import ImageDecodeError, decode_image
from tumorcls.errors import TumorclsError, first_line
from tumorcls.inference import Predictor, predict_batch

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    """One upload's answer: its probabilities, or the one-line reason it could not be classified."""

    name: str
    probabilities: np.ndarray | None = None
    error: str | None = None
    image: np.ndarray | None = None  # the input the model saw (cropped and normalised as it asks), uint8 RGB

    def as_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        if self.probabilities is None:
            return {"file": self.name, "error": self.error}
        index = int(np.argmax(self.probabilities))
        return {
            "file": self.name,
            "class": class_names[index],
            "confidence": float(self.probabilities[index]),
            "probabilities": {n: float(p) for n, p in zip(class_names, self.probabilities)},
        }


@dataclass
class _Job:
    images: np.ndarray | None  # a prediction job, batched with its neighbours
    call: Callable[[], Any] | None  # anything else that needs the model (Grad-CAM), run alone
    future: Future


class InferenceEngine:
    """Decodes uploads and predicts them; every use of the model goes through one worker thread."""

    def __init__(self, predictor: Predictor, tta: bool = False, max_batch: int = 32) -> None:
        self.predictor = predictor
        self.tta = tta
        self.max_batch = max_batch
        self.options = predictor.decode_options()  # as `tumorcls predict` decodes: size, crop, intensity
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="tumorcls-model", daemon=True)
        self._worker.start()

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    def decode(self, name: str, data: bytes) -> np.ndarray:
        """Upload bytes -> the model's input image, exactly as `tumorcls predict` reads a file of that name."""
        try:
            return decode_image(data, self.options, name)
        except ImageDecodeError:
            raise
        except Exception as exc:  # an untrusted upload: whatever a decoder trips on, the file is unreadable
            log.warning("decoder failed on an upload: %r", exc)
            raise ImageDecodeError(f"not a readable image ({first_line(exc)})") from None

    def classify(self, uploads: Sequence[tuple[str, bytes]]) -> list[FileResult]:
        """Each (name, bytes) -> its FileResult; the decodable ones are predicted in one model call."""
        results = [FileResult(name) for name, _ in uploads]
        for result, (name, data) in zip(results, uploads):
            try:
                result.image = self.decode(name, data)
            except ImageDecodeError as exc:
                result.error = str(exc)
        good = [r for r in results if r.image is not None]
        if good:
            probs = self.predict(np.stack([r.image for r in good]))
            for result, p in zip(good, probs):
                result.probabilities = p
        return results

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB -> (N, C) probabilities, through the worker."""
        return self._submit(_Job(images, None, Future()))

    def run_exclusive(self, call: Callable[[], Any]) -> Any:
        """Run ``call`` on the worker, alone with the model (Grad-CAM's backward pass)."""
        return self._submit(_Job(None, call, Future()))

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=10)

    def _submit(self, job: _Job) -> Any:
        if not self._worker.is_alive():
            raise TumorclsError("the model worker has stopped; restart the server")
        self._jobs.put(job)
        return job.future.result()

    def _run(self) -> None:
        pending: _Job | None = None
        while True:
            job = pending or self._jobs.get()
            pending = None
            if job is None:
                return
            if job.call is not None:
                _settle([job], job.call)
                continue
            batch, n = [job], len(job.images)
            while n < self.max_batch:  # take whatever else is already waiting, up to one batch
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or nxt.call is not None or n + len(nxt.images) > self.max_batch:
                    pending = nxt
                    break
                batch.append(nxt)
                n += len(nxt.images)
            _settle(batch, lambda b=batch: self._predict_together(b))

    def _predict_together(self, batch: list[_Job]) -> list[np.ndarray]:
        images = np.concatenate([j.images for j in batch]) if len(batch) > 1 else batch[0].images
        probs = predict_batch(self.predictor, images, self.tta).probs
        bounds = np.cumsum([len(j.images) for j in batch])[:-1]
        return np.split(probs, bounds)


def _settle(jobs: list[_Job], work: Callable[[], Any]) -> None:
    """Run ``work`` and give each job its share of the result (a list for batched jobs), or the exception."""
    try:
        result = work()
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, never lost
        for job in jobs:
            job.future.set_exception(exc)
        return
    if len(jobs) == 1 and jobs[0].call is not None:
        jobs[0].future.set_result(result)
        return
    for job, share in zip(jobs, result):
        job.future.set_result(share)
