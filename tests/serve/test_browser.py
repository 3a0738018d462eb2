"""The page in a real browser (headless Chromium from Debian, driven by Playwright): upload an image, read the
class and probabilities the page shows and compare them with the API's; see the Grad-CAM overlay for a
checkpoint and the "needs the checkpoint" note for ONNX; a junk file gives one line; the batch tab gives a table
and a CSV; and no request leaves 127.0.0.1 (Gradio is kept offline)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tumorcls.labels import CLASS_NAMES
from tumorcls.serve.app import serving_in_thread
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.explain import NEEDS_CHECKPOINT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium); browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the dev extra)")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class OfflinePage:
    """A browser tab on the server at ``url`` that refuses, and records, every request going anywhere else."""

    def __init__(self, browser, url: str) -> None:  # noqa: ANN001 - playwright Browser
        self.url = url
        self.outside: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.route("**/*", self._route)
        self.page.goto(url + "/")
        self.page.wait_for_selector("#disclaimer", timeout=WAIT_MS)

    def _route(self, route) -> None:  # noqa: ANN001 - playwright Route
        host = urlparse(route.request.url).hostname
        if host == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def wait_for_text(self, selector: str, text: str) -> str:
        self.page.wait_for_function(
            "([sel, text]) => { const e = document.querySelector(sel); return e && e.innerText.includes(text); }",
            arg=[selector, text],
            timeout=WAIT_MS,
        )
        return self.text(selector)

    def upload(self, path: Path) -> None:
        if self.page.query_selector("#upload button[aria-label='Clear']"):
            self.page.click("#upload button[aria-label='Clear']")
        self.page.set_input_files("#upload input[type=file]", str(path))

    def probabilities(self) -> dict[str, float]:
        """The gr.Label's bars, at full precision (the meters' values), in the order shown."""
        meters = self.page.query_selector_all("#probabilities meter")
        return {m.get_attribute("aria-label"): float(m.get_attribute("value")) for m in meters}


def api_answer(url: str, path: Path) -> dict:
    response = httpx.post(url + "/api/predict", files=[("files", (path.name, path.read_bytes()))], timeout=60)
    assert response.status_code == 200
    return response.json()["predictions"][0]


def test_checkpoint_page_shows_class_probabilities_cam_and_errors(
    browser,
    ckpt: Path,
    image_files: dict[str, Path],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    with serving_in_thread(ServeConfig(model=ckpt, port=0)) as url:
        tab = OfflinePage(browser, url)
        assert "Research tool, not a medical device." in tab.text("#disclaimer")
        model_line = tab.text("#model-info")
        assert "best.ckpt" in model_line and "checkpoint" in model_line and "temperature 40.000" in model_line
        assert "epoch" in model_line and "run serve_run" in model_line

        tab.upload(image_files["jpeg"])
        result = tab.wait_for_text("#result", "Predicted")
        expected = api_answer(url, image_files["jpeg"])
        assert result == (
            f"Predicted {expected['class']} · confidence {expected['confidence']:.4f} (calibrated, temperature 40.000)"
        )
        shown = tab.probabilities()
        assert list(shown) == sorted(CLASS_NAMES, key=lambda n: -expected["probabilities"][n])
        np.testing.assert_allclose(
            [shown[n] for n in CLASS_NAMES], [expected["probabilities"][n] for n in CLASS_NAMES], atol=1e-6
        )
        tab.page.wait_for_function("document.querySelector('#cam-image img')?.naturalWidth > 0", timeout=WAIT_MS)
        assert tab.page.query_selector("#cam-note") is None
        tab.page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        assert (tmp_path / "page.png").stat().st_size > 10_000

        tab.upload(image_files["junk"])
        error = tab.wait_for_text("#result", "Cannot classify")
        assert error == "Cannot classify junk.jpg: not a readable image (UnidentifiedImageError)"
        assert tab.page.query_selector("#probabilities meter") is None  # the old answer is gone

        tab.page.get_by_role("tab", name="Batch").click()
        tab.page.set_input_files("#batch-upload input[type=file]", [str(image_files["png"]), str(image_files["junk"])])
        assert tab.wait_for_text("#batch-status", "classified") == "1 classified, 1 failed."
        table = tab.text("#batch-table")
        assert "scan_glioma.png" in table and "error: not a readable image (UnidentifiedImageError)" in table
        link = tab.page.get_attribute("#batch-csv a[download]", "href")
        csv_text = httpx.get(link, timeout=30).text.splitlines()
        assert csv_text[0] == "file,class,confidence," + ",".join(CLASS_NAMES)
        assert csv_text[1].startswith(f"scan_glioma.png,{api_answer(url, image_files['png'])['class']},")
        assert tab.outside == []


def test_onnx_page_says_explanations_need_the_checkpoint(browser, onnx_model: Path, image_files) -> None:  # noqa: ANN001
    with serving_in_thread(ServeConfig(model=onnx_model, port=0)) as url:
        tab = OfflinePage(browser, url)
        assert tab.text("#cam-note") == NEEDS_CHECKPOINT.format(backend="onnx")
        tab.upload(image_files["png"])
        expected = api_answer(url, image_files["png"])
        assert tab.wait_for_text("#result", "Predicted").startswith(f"Predicted {expected['class']} · confidence")
        assert not tab.page.is_visible("#cam-image")
        assert tab.outside == []
