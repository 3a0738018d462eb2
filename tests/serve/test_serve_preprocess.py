"""The server of a model trained with preprocessing (head crop, histogram equalisation): uploads are decoded with
it, as `tumorcls predict` decodes files, the page shows the prepared image the model saw (and its Grad-CAM on
it), and the model's description says which preprocessing it applies."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers.head_images import MODEL_OPTIONS, head_files, preprocessed_checkpoint
from tests.helpers.head_images import MODEL_SIZE as SIZE
from tests.helpers.serve_inputs import predict_path_probabilities
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.inference import load_predictor
from tumorcls.inference.gradcam import overlay
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.explain import CamOverlays
from tumorcls.serve.model_card import describe_model, model_markdown
from tumorcls.serve.page import DISPLAY_SIDE, PageHandlers


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocessed_checkpoint(tmp_path_factory.mktemp("serve_pre_run"), size=SIZE, seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return head_files(tmp_path_factory.mktemp("serve_heads"), n=2)


@pytest.fixture(scope="module")
def engine(ckpt: Path):  # noqa: ANN201 - Iterator[InferenceEngine]
    engine = InferenceEngine(load_predictor(ckpt))
    yield engine
    engine.close()


def test_uploads_are_decoded_with_the_models_crop_and_intensity(engine: InferenceEngine, files: list[Path]) -> None:
    assert engine.options == MODEL_OPTIONS
    for path in files:
        decoded = engine.decode(path.name, path.read_bytes())
        np.testing.assert_array_equal(decoded, read_image(path, MODEL_OPTIONS))
        assert np.abs(decoded.astype(int) - read_image(path, DecodeOptions(size=SIZE))).mean() > 10


def test_classify_answers_as_predict_does(engine: InferenceEngine, ckpt: Path, files: list[Path]) -> None:
    expected = predict_path_probabilities(ckpt, files)
    results = engine.classify([(p.name, p.read_bytes()) for p in files])
    for result, path in zip(results, files):
        np.testing.assert_array_equal(result.image, read_image(path, MODEL_OPTIONS))
        np.testing.assert_allclose(result.probabilities, expected[path.name], atol=1e-6)


def test_the_page_shows_the_prepared_image_and_its_cam(
    engine: InferenceEngine, ckpt: Path, files: list[Path], tmp_path: Path
) -> None:
    card = describe_model(engine.predictor, ckpt, False, True)
    cams = CamOverlays(engine)
    handlers = PageHandlers(engine, ServeConfig(model=ckpt), card, cams, tmp_path, frozenset())
    upload = tmp_path / "up" / files[0].name
    upload.parent.mkdir()
    upload.write_bytes(files[0].read_bytes())
    _, label, shown, cam = handlers.one(str(upload))
    prepared = read_image(files[0], MODEL_OPTIONS)
    np.testing.assert_array_equal(shown, _enlarged(prepared))
    index = int(np.argmax(list(label.values())))
    heatmap = engine.predictor.grad_cam()(prepared[None], [index])[0]
    np.testing.assert_allclose(cam.astype(int), _enlarged(overlay(prepared, heatmap)).astype(int), atol=1)


def _enlarged(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (DISPLAY_SIDE, DISPLAY_SIDE), interpolation=cv2.INTER_NEAREST)


def test_the_model_card_says_which_preprocessing_it_applies(engine: InferenceEngine, ckpt: Path) -> None:
    card = describe_model(engine.predictor, ckpt, False, False)
    assert card["crop"] == "head" and card["intensity"] == "equalize"
    assert model_markdown(card).endswith(" · inputs: crop head, intensity equalize")
    plain = {**card, "crop": "none", "intensity": "none"}
    assert "inputs:" not in model_markdown(plain)
