"""The server's model worker (concurrent requests batched into one model call, failures handed to every waiting
request) and the page's handlers (the batch table and CSV, uploads deleted once answered, one-line errors)."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.serve_inputs import encoded, predict_path_probabilities, scan_like
from tumorcls.data.decode import DecodeOptions
from tumorcls.inference.backends import BatchOutput, softmax
from tumorcls.labels import CLASS_NAMES
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.model_card import describe_model, training_summary


class GatedPredictor:
    """Probabilities computed from the pixels (so every image has its own answer); the first call waits for
    ``gate`` so that the next requests queue up behind it."""

    backend = "fake"
    class_names = list(CLASS_NAMES)
    input_size = 8
    temperature = None

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batch_sizes: list[int] = []
        self.fail = False

    def predict_views(self, views: list[np.ndarray]) -> BatchOutput:
        if not self.batch_sizes:
            self.gate.wait(timeout=30)
        self.batch_sizes.append(len(views[0]))
        if self.fail:
            raise RuntimeError("model exploded")
        return BatchOutput(self.expected(views[0]))

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(size=self.input_size)

    @staticmethod
    def expected(images: np.ndarray) -> np.ndarray:
        means = images.reshape(len(images), -1, 3).mean(axis=1).astype(np.float64)
        return softmax(np.concatenate([means, means[:, :1] * 0.5], axis=1) / 50.0)


@pytest.fixture()
def engine() -> Iterator[InferenceEngine]:
    e = InferenceEngine(GatedPredictor(), max_batch=32)  # type: ignore[arg-type]
    yield e
    e.predictor.gate.set()
    e.close()


def _wait_for_queue(engine: InferenceEngine, n: int) -> None:
    deadline = time.monotonic() + 30
    while engine._jobs.qsize() < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._jobs.qsize() == n


def test_requests_waiting_behind_a_model_call_are_batched_into_the_next_one(engine: InferenceEngine) -> None:
    images = [np.full((1, 8, 8, 3), 10 * i, np.uint8) for i in range(11)]
    with ThreadPoolExecutor(11) as pool:
        first = pool.submit(engine.predict, images[0])
        while not engine._worker.is_alive():
            time.sleep(0.01)
        time.sleep(0.05)  # the worker holds the first job (it waits on the gate)
        rest = [pool.submit(engine.predict, img) for img in images[1:]]
        _wait_for_queue(engine, 10)
        engine.predictor.gate.set()
        answers = [first.result(), *(f.result() for f in rest)]
    assert engine.predictor.batch_sizes == [1, 10]
    for img, answer in zip(images, answers):
        np.testing.assert_allclose(answer, GatedPredictor.expected(img), atol=1e-12)


def test_a_failing_model_call_fails_each_waiting_request_and_the_worker_goes_on(engine: InferenceEngine) -> None:
    engine.predictor.gate.set()
    engine.predictor.fail = True
    with pytest.raises(RuntimeError, match="model exploded"):
        engine.predict(np.zeros((2, 8, 8, 3), np.uint8))
    engine.predictor.fail = False
    assert engine.predict(np.zeros((1, 8, 8, 3), np.uint8)).shape == (1, 4)


def test_classify_decodes_like_predict_and_names_the_bad_file(engine: InferenceEngine) -> None:
    engine.predictor.gate.set()
    good = scan_like(2, 0, seed=1)
    results = engine.classify([("a.png", encoded(good)), ("b.jpg", b"\xff\xd8\xff junk"), ("c.png", b"")])
    assert results[0].error is None and results[0].image.shape == (8, 8, 3)
    unreadable = "not a readable image (UnidentifiedImageError)"
    assert results[1].as_dict(CLASS_NAMES) == {"file": "b.jpg", "error": unreadable}
    assert results[2].as_dict(CLASS_NAMES) == {"file": "c.png", "error": "empty file (0 bytes)"}


@pytest.fixture(scope="module")
def handlers(ckpt: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - PageHandlers
    from tumorcls.inference import load_predictor
    from tumorcls.serve.explain import CamOverlays
    from tumorcls.serve.page import PageHandlers

    predictor = load_predictor(ckpt)
    engine = InferenceEngine(predictor)
    work = tmp_path_factory.mktemp("page_cache")
    config = ServeConfig(model=ckpt, max_files=3)
    card = describe_model(predictor, ckpt, False, True)
    yield PageHandlers(engine, config, card, CamOverlays(engine), work, frozenset({"example.png"}))
    engine.close()


def _upload(handlers, name: str, data: bytes) -> str:  # noqa: ANN001
    path = handlers.work_dir / "abc123" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_one_image_shows_class_confidence_probabilities_and_cam_and_deletes_the_upload(handlers, ckpt: Path) -> None:
    data = encoded(scan_like(2, 0, seed=1))
    upload = _upload(handlers, "scan.png", data)
    reference = Path(upload).with_name("reference.png")
    reference.write_bytes(data)
    expected = predict_path_probabilities(ckpt, [reference])["reference.png"]
    line, label, shown, cam = handlers.one(upload)
    assert not Path(upload).exists()
    k = int(np.argmax(expected))
    assert line == f"Predicted **{CLASS_NAMES[k]}** · confidence **{expected[k]:.4f}** (calibrated, temperature 40.000)"
    np.testing.assert_allclose([label[n] for n in CLASS_NAMES], expected, atol=1e-6)
    assert shown.shape == (320, 320, 3) and cam.shape == (320, 320, 3) and not np.array_equal(cam, shown)


def test_one_bad_image_gives_one_readable_line(handlers) -> None:  # noqa: ANN001
    line, label, shown, cam = handlers.one(_upload(handlers, "junk.jpg", b"not an image"))
    assert line == "**Cannot classify `junk.jpg`:** not a readable image (UnidentifiedImageError)"
    assert (label, shown, cam) == (None, None, None)


def test_batch_gives_a_table_and_a_csv_with_an_error_row(handlers, ckpt: Path, tmp_path: Path) -> None:  # noqa: ANN001
    reference = [tmp_path / "a.png", tmp_path / "b.jpg"]
    reference[0].write_bytes(encoded(scan_like(0, 3, seed=4)))
    reference[1].write_bytes(encoded(scan_like(3, 1, seed=5), "JPEG"))
    expected = predict_path_probabilities(ckpt, reference)
    uploads = [_upload(handlers, p.name, p.read_bytes()) for p in reference]
    uploads.append(_upload(handlers, "junk.png", b"junk"))
    status, table, csv_path = handlers.batch(uploads)
    assert status == "2 classified, 1 failed." and not any(Path(u).exists() for u in uploads)
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "class", "confidence", *CLASS_NAMES]
    assert rows[1:] == [[str(v) for v in row] for row in table["value"]]
    for row in rows[1:3]:
        want = expected[row[0]]
        assert row[1] == CLASS_NAMES[int(np.argmax(want))]
        np.testing.assert_allclose([float(v) for v in row[3:]], want, atol=1e-6)
    assert rows[3][:2] == ["junk.png", "error: not a readable image (UnidentifiedImageError)"]
    assert Path(csv_path).parent == handlers.work_dir


def test_batch_refuses_more_files_than_the_limit(handlers) -> None:  # noqa: ANN001
    uploads = [_upload(handlers, f"{i}.png", b"x") for i in range(4)]
    assert handlers.batch(uploads) == ("**Too many files:** at most 3 at once.", None, None)
    assert not any(Path(u).exists() for u in uploads)


def test_files_outside_the_work_folder_are_never_read_and_examples_never_deleted(handlers, tmp_path: Path) -> None:  # noqa: ANN001
    outside = tmp_path / "mine.png"
    outside.write_bytes(encoded(scan_like(1, 2, seed=6)))
    example = Path(_upload(handlers, "example.png", outside.read_bytes()))
    refused = "**Cannot classify `mine.png`:** not a file uploaded to this server"
    assert handlers.one(str(outside)) == (refused, None, None, None)
    assert handlers.one(str(example))[0].startswith("Predicted")
    assert outside.exists() and example.exists()


def test_training_summary_reads_export_and_checkpoint_metadata() -> None:
    exported = {"training_run": '{"checkpoint": "/x/logs/run7/checkpoints/best.ckpt", "epoch": 7}', "export_date": "D"}
    assert training_summary(exported) == "run run7, epoch 7, exported D"
    assert training_summary({"source_checkpoint": "/x/run3/checkpoints/last.ckpt", "epoch": "2"}) == "run run3, epoch 2"
    assert training_summary({}) == "unknown (no training metadata in the file)"


def test_examples_are_found_as_every_command_finds_images(tmp_path: Path) -> None:
    """Through a symlinked folder too (the one image finder), image files only, in sorted order."""
    from tumorcls.serve.page import example_files

    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "b.png").write_bytes(encoded(scan_like(1, 0, seed=1), "PNG"))
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encoded(scan_like(0, 0, seed=2), "JPEG"))
    (folder / "notes.txt").write_text("not an image")
    (folder / "linked").symlink_to(real, target_is_directory=True)
    assert example_files(folder) == [folder / "a.jpg", folder / "linked" / "b.png"]
