"""The one model of a server, shared by every request: uploads decoded as `tumorcls predict` decodes files (each
within the pixel limit and the decode memory budget, both checked from the file's header before any pixel is
decoded), and the model run by one worker thread that batches concurrent requests together (so N clients never run
N models at once), with the same ``predict_batch`` as `tumorcls predict`, hence the same probabilities."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorcls.data import ImageDecodeError, decode_image
from tumorcls.data.decode import read_header
from tumorcls.data.formats import ImageTooLargeError
from tumorcls.errors import TumorclsError, first_line
from tumorcls.inference import Predictor, predict_batch
from tumorcls.serve.budget import MemoryBudget, ServerBusy, decode_cost
from tumorcls.serve.config import MB
from tumorcls.serve.memory import TRIM_AFTER_BYTES, release_memory

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


class ImageTooLarge(ImageTooLargeError):
    """An image over the pixel limit or the decode budget, known from its header: refused, never decoded."""


BatchObserver = Callable[[int, float], None]  # (images in a model call, its seconds)


@dataclass
class _Job:
    images: np.ndarray | None  # a prediction job, batched with its neighbours
    call: Callable[[], Any] | None  # anything else that needs the model (Grad-CAM), run alone
    future: Future


class InferenceEngine:
    """Decodes uploads and predicts them; every use of the model goes through one worker thread."""

    def __init__(
        self,
        predictor: Predictor,
        tta: bool = False,
        max_batch: int = 32,
        max_pixels: int | None = None,
        budget: MemoryBudget | None = None,
        busy_wait_s: float = 30.0,
    ) -> None:
        self.predictor = predictor
        self.tta = tta
        self.max_batch = max_batch
        self.options = predictor.decode_options()  # as `tumorcls predict` decodes: size, crop, intensity
        if max_pixels is not None:
            self.options = dataclasses.replace(self.options, max_pixels=max_pixels)
        self.budget = budget
        self.busy_wait_s = busy_wait_s
        self.observer: BatchObserver | None = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="tumorcls-model", daemon=True)
        self._worker.start()

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def queue_depth(self) -> int:
        """Model jobs waiting for the worker."""
        return self._jobs.qsize()

    def measure(self, name: str, data: bytes) -> int:
        """The bytes decoding this upload may hold, from its header; ImageTooLarge past the limits, and the
        decoder's ImageDecodeError for a header it cannot read."""
        limit = self.options.max_pixels
        try:
            header = read_header(data, name, max_inflated=6 * limit + MB)  # up to 3 samples of 16 bits per pixel
        except ImageTooLargeError as exc:
            raise ImageTooLarge(str(exc)) from None
        except ImageDecodeError:
            raise
        except Exception as exc:  # an untrusted upload: whatever a parser trips on, the file is unreadable
            raise ImageDecodeError(f"not a readable image ({first_line(exc)})") from None
        size = f"{header.width}x{header.height}"
        if header.width * header.height > limit:
            raise ImageTooLarge(f"image too large ({size} > {limit} pixels); refused")
        cost = decode_cost(header)
        if self.budget is not None and cost > self.budget.total:
            raise ImageTooLarge(
                f"image needs about {cost // MB} MB to decode ({size}, {header.channels} x "
                f"{8 * header.bytes_per_sample}-bit samples), more than the {self.budget.total // MB} MB decode "
                "budget; refused"
            )
        return cost

    @contextlib.contextmanager
    def _decoding(self, cost: int, reserved: bool) -> Iterator[None]:
        """Hold ``cost`` of the decode budget (unless the caller has), then give the memory back."""
        held = self.budget is not None and not reserved
        if held:
            self.budget.acquire(cost, self.busy_wait_s)
        try:
            yield
        finally:
            if held:
                self.budget.release(cost)
            if cost > TRIM_AFTER_BYTES:
                release_memory()

    def decode(self, name: str, data: bytes, reserved: bool = False) -> np.ndarray:
        """Upload bytes -> the model's input image, exactly as `tumorcls predict` reads a file of that name;
        ``reserved``: the caller holds the decode budget this file needs."""
        cost = self.measure(name, data)
        with self._decoding(cost, reserved):
            try:
                return decode_image(data, self.options, name)
            except ImageDecodeError:
                raise
            except Exception as exc:  # an untrusted upload: whatever a decoder trips on, the file is unreadable
                log.warning("decoder failed on an upload: %r", exc)
                raise ImageDecodeError(f"not a readable image ({first_line(exc)})") from None

    def largest_cost(self, uploads: Sequence[tuple[str, bytes]]) -> int:
        """What decoding these uploads one after another needs of the budget (ImageTooLarge for one too large);
        files whose header is unreadable count nothing (they fail alone, in classify)."""
        costs = [0]
        for name, data in uploads:
            try:
                costs.append(self.measure(name, data))
            except ImageTooLarge as exc:
                raise ImageTooLarge(f"{name}: {exc}") from None
            except ImageDecodeError:
                continue
        return max(costs)

    def classify(self, uploads: Sequence[tuple[str, bytes]], reserved: bool = False) -> list[FileResult]:
        """Each (name, bytes) -> its FileResult; the decodable ones are predicted in one model call."""
        results = [FileResult(name) for name, _ in uploads]
        for result, (name, data) in zip(results, uploads):
            try:
                result.image = self.decode(name, data, reserved)
            except (ImageDecodeError, ServerBusy) as exc:
                result.error = str(exc)
        good = [r for r in results if r.image is not None]
        if good:
            probs = self.predict(np.stack([r.image for r in good]))
            for result, p in zip(good, probs):
                result.probabilities = p
        return results

    def probe(self, timeout: float) -> float:
        """One black image through the worker (the readiness check): its seconds; TumorclsError if the worker
        is gone, does not answer in ``timeout`` s, or answers something that is not probabilities."""
        size = int(self.predictor.input_size)
        started = time.monotonic()
        job = _Job(np.zeros((1, size, size, 3), np.uint8), None, Future())
        if not self.alive:
            raise TumorclsError("the model worker has stopped")
        self._jobs.put(job)
        try:
            probs = np.asarray(job.future.result(timeout))
        except FutureTimeout:
            raise TumorclsError(f"the model did not answer a probe batch within {timeout:g} s") from None
        except Exception as exc:  # the model itself failed
            raise TumorclsError(f"the model failed its probe batch ({first_line(exc)})") from None
        if probs.shape != (1, len(self.class_names)) or not np.isfinite(probs).all():
            raise TumorclsError(f"the model answered its probe batch with {probs.shape} values, not probabilities")
        return time.monotonic() - started

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
        if not self.alive:
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
        started = time.perf_counter()
        probs = predict_batch(self.predictor, images, self.tta).probs
        if self.observer is not None:
            self.observer(len(images), time.perf_counter() - started)
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
