from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Tests never reach a model hub: a hub lookup must fail at once instead of retrying. huggingface_hub
# reads this when first imported, so it is set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
# Tests (and the train.py runs they start) never read or fill the user's decode cache: theirs is a temporary
# folder, removed at exit. A test of the cache passes its own folder.
os.environ["TUMORCLS_CACHE"] = tempfile.mkdtemp(prefix="tumorcls-test-cache-")
atexit.register(shutil.rmtree, os.environ["TUMORCLS_CACHE"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers.synthetic import make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TUMORCLS_DATA", REPO.parent / "shared/data/brain-tumor-classification-mri"))
REAL_WEIGHTS = Path(
    os.environ.get("TUMORCLS_WEIGHTS", REPO.parent / "shared/weights/tf_efficientnet_b0.effnetonc_partial.safetensors")
)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook (the dev extra); without xdist there is no -n
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto``: a worker per core this process may use, at most 4 (a worker may run a training or a
    server process beside itself, about 3 GB together)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads the real dataset (it decodes thousands of images) is slow: out of the fast lane."""
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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
