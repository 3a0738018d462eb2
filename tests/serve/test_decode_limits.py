"""The decode limits of the server, below the HTTP layer: what a file's header says (read without decoding; a
deflated DICOM inflated only to be counted, in bounded memory), the pixel limit and the decode budget checked
from it, and the memory budgets themselves (waiting, giving back, refusing in one line)."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc

import numpy as np
import pytest

from tests.helpers.serve_inputs import encoded, scan_like
from tests.serve.large_images import dicom_bytes, float_tiff, grey16_png, large_image
from tumorcls.data.decode import ImageHeader, read_header
from tumorcls.data.formats import ImageDecodeError, ImageTooLargeError
from tumorcls.inference import load_predictor
from tumorcls.serve.budget import MemoryBudget, ServerBusy, decode_cost
from tumorcls.serve.engine import ImageTooLarge, InferenceEngine

MB = 2**20


@pytest.mark.parametrize(
    ("fmt", "header"),
    [
        ("png", ImageHeader(300, 300, 1, 1, "PNG")),
        ("jpeg", ImageHeader(300, 300, 1, 1, "JPEG")),
        ("tiff", ImageHeader(300, 300, 1, 1, "TIFF")),
        ("webp", ImageHeader(300, 300, 3, 1, "WEBP")),
        ("gif", ImageHeader(300, 300, 1, 1, "GIF")),
        ("dicom", ImageHeader(300, 300, 1, 2, "DICOM")),
        ("dicom-deflated", ImageHeader(300, 300, 1, 2, "DICOM")),
    ],
)
def test_the_header_gives_size_and_samples_without_decoding(fmt: str, header: ImageHeader) -> None:
    if fmt.startswith("dicom"):
        pytest.importorskip("pydicom")
    name, data = large_image(fmt, 300)
    assert read_header(data, name, max_inflated=10 * MB) == header


def test_sixteen_bit_and_float_samples_are_seen_in_the_header() -> None:
    assert read_header(grey16_png(64)) == ImageHeader(64, 64, 1, 2, "PNG")
    assert read_header(float_tiff(64)) == ImageHeader(64, 64, 1, 4, "TIFF")
    assert read_header(encoded(scan_like(0, 1, seed=1))) == ImageHeader(200, 200, 3, 1, "PNG")


def test_a_deflated_dicom_bomb_is_counted_in_bounded_memory_and_refused() -> None:
    pytest.importorskip("pydicom")
    bomb = dicom_bytes(np.zeros((6000, 6000), np.uint16), deflated=True)  # ~0.1 MB, 72 MB inflated
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as refused:
            read_header(bomb, "bomb.dcm", max_inflated=16 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(refused.value) == "deflated DICOM data inflates past 16 MB; refused"
    assert peak < 8 * MB  # pieces of 1 MB, the first one kept: never the 72 MB
    assert read_header(bomb, "bomb.dcm", max_inflated=80 * MB) == ImageHeader(6000, 6000, 1, 2, "DICOM")


def test_an_unreadable_header_is_a_one_line_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match=r"^not a readable image \(UnidentifiedImageError\)$"):
        read_header(b"not an image at all", "x.png")
    with pytest.raises(ImageDecodeError, match=r"^empty file \(0 bytes\)$"):
        read_header(b"", "x.png")


def test_decode_cost_counts_a_float64_copy_of_every_sample() -> None:
    assert decode_cost(ImageHeader(1000, 1000, 3, 1, "PNG")) == 1000 * 1000 * (24 + 8 * 3)
    assert decode_cost(ImageHeader(1000, 1000, 1, 2, "DICOM")) == 1000 * 1000 * (24 + 16)


@pytest.fixture(scope="module")
def engine(onnx_model) -> InferenceEngine:  # noqa: ANN001
    engine = InferenceEngine(load_predictor(onnx_model), max_pixels=500_000, budget=MemoryBudget(30 * MB, "decode"))
    yield engine
    engine.close()


def test_the_engine_refuses_by_pixels_or_decode_memory_before_decoding(engine: InferenceEngine) -> None:
    with pytest.raises(ImageTooLarge, match=r"^big\.png: image too large \(800x800 > 500000 pixels\); refused$"):
        engine.largest_cost([("ok.png", encoded(scan_like(0, 1, seed=1))), large_image("png", 800)])
    assert engine.measure("f.tif", float_tiff(700)) == 700 * 700 * 56  # 0.49 Mpx at 56 bytes: 26 MB of 30
    heavy = grey16_png(700)
    engine.budget.total = 15 * MB
    try:
        with pytest.raises(ImageTooLarge) as refused:
            engine.measure("g.png", heavy)
    finally:
        engine.budget.total = 30 * MB
    assert str(refused.value) == (
        "image needs about 18 MB to decode (700x700, 1 x 16-bit samples), more than the 15 MB decode budget; refused"
    )
    junk = [("junk.png", b"junk"), ("ok.png", encoded(scan_like(0, 1, seed=1)))]
    assert engine.largest_cost(junk) == 200 * 200 * 48  # the unreadable one fails alone, later
    results = engine.classify(junk)
    assert results[0].error == "not a readable image (UnidentifiedImageError)" and results[1].error is None
    assert engine.budget.used == 0  # every decode gave its share back


def test_a_budget_waits_for_memory_given_back_and_refuses_after_its_timeout() -> None:
    budget = MemoryBudget(100, "decode memory")
    budget.acquire(80, timeout=1)
    with pytest.raises(ServerBusy, match=r"^server busy: the decode memory is in use by other requests; retry"):
        budget.acquire(30, timeout=0.05)
    threading.Timer(0.1, budget.release, args=(80,)).start()
    budget.acquire(30, timeout=10)  # woken by the release
    assert budget.used == 30

    async def waiting() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, budget.release, 30)
        async with budget.hold_async(100, timeout=10):  # once the 30 are given back
            assert budget.used == 100
        with pytest.raises(ServerBusy):
            await budget.acquire_async(101, timeout=0.05)

    asyncio.run(waiting())
    assert budget.used == 0
