"""A served Keras .h5 model answers what the tutorial's own app computes with it: cv2.imread (BGR), cv2.resize
to 150 x 150, model.predict on the (1, 150, 150, 3) array."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch._dynamo  # noqa: F401 - before TensorFlow: importing it after TensorFlow 2.21 segfaults

pytestmark = pytest.mark.slow  # builds and runs Keras models
tf = pytest.importorskip("tensorflow", reason="the Keras model needs the [keras] extra")

import cv2  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tests.helpers.export_fixtures import make_checkpoint  # noqa: E402
from tests.helpers.serve_inputs import scan_like, write_image  # noqa: E402
from tests.serve.conftest import LOCAL  # noqa: E402
from tumorcls.evaluation.calibration import store_temperature  # noqa: E402
from tumorcls.export.run import export_checkpoint  # noqa: E402
from tumorcls.labels import CLASS_NAMES  # noqa: E402
from tumorcls.serve.app import build_app  # noqa: E402
from tumorcls.serve.config import ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def h5_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("serve_keras")
    ckpt = make_checkpoint(run, size=150, seed=5)
    store_temperature(ckpt, 8.0)  # a perturbed net is over-confident; informative probabilities check more
    (result,) = export_checkpoint(ckpt, "keras", n_check=2)
    return Path(result.path)


@pytest.fixture(scope="module")
def keras_api(h5_model: Path) -> Iterator[TestClient]:
    served = build_app(ServeConfig(model=h5_model))
    try:
        yield TestClient(served.app, base_url=LOCAL)
    finally:
        served.close()


def tutorial_app_probabilities(model_path: Path, image_path: Path) -> np.ndarray:
    """The tutorial's app, step by step."""
    model = tf.keras.models.load_model(str(model_path), compile=False)
    img = cv2.imread(str(image_path))
    img = cv2.resize(img, (150, 150))
    return model.predict(img.reshape(1, 150, 150, 3), verbose=0)[0]


@pytest.mark.parametrize("name", ["scan.jpg", "scan.png"])
def test_served_h5_answers_what_the_tutorial_app_computes(
    keras_api: TestClient, h5_model: Path, tmp_path: Path, name: str
) -> None:
    path = write_image(tmp_path / name, scan_like(3, 1, seed=8, side=256))
    expected = tutorial_app_probabilities(h5_model, path)
    assert 0.05 < expected.max() < 0.999  # not a saturated answer
    response = keras_api.post("/api/predict", files=[("files", (path.name, path.read_bytes()))])
    item = response.json()["predictions"][0]
    assert response.json()["model"]["backend"] == "keras"
    got = np.array([item["probabilities"][n] for n in CLASS_NAMES])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert item["class"] == CLASS_NAMES[int(np.argmax(expected))]
