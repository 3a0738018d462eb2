from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TUMORCLS_DATA", REPO.parent / "shared/data/brain-tumor-classification-mri"))
REAL_WEIGHTS = Path(
    os.environ.get("TUMORCLS_WEIGHTS", REPO.parent / "shared/weights/tf_efficientnet_b0.effnetonc_partial.safetensors")
)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model hub; a hub lookup fails at once instead of retrying."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synthetic") / "mri")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "Training").is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA} (set TUMORCLS_DATA); integration test skipped")
    return REAL_DATA


@pytest.fixture(scope="session")
def real_weights() -> Path:
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"local weights not found at {REAL_WEIGHTS} (set TUMORCLS_WEIGHTS); test skipped")
    return REAL_WEIGHTS
