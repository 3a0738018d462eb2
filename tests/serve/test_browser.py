"""The page in a real browser (headless Chromium from Debian, driven by Playwright): upload an image, read the
class and probabilities the page shows and compare them with the API's; see the Grad-CAM overlay for a
checkpoint and the "needs the checkpoint" note for ONNX; a junk file gives one line; the batch tab gives a table
and a CSV; an example is classified; and no request leaves 127.0.0.1 (Gradio is kept offline). Against a hostile
web: a page served under another name (DNS rebinding) gets nothing, another site's form cannot post to the API,
and a server with a key asks a person for it once, then the page works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tumorcls.labels import CLASS_NAMES
from tumorcls.serve.config import ServeConfig
from tumorcls.serve.explain import NEEDS_CHECKPOINT
from tumorcls.serve.runner import serving_in_thread

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
    "--host-resolver-rules=MAP rebound.example 127.0.0.1",  # a name an attacker pointed at this machine
]
pytestmark = pytest.mark.slow  # a real browser against a served page
KEY = "browser-test-key-0123456789"
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

    def __init__(self, browser, url: str, wait_for: str = "#disclaimer") -> None:  # noqa: ANN001 - playwright Browser
        self.url = url
        self.outside: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.route("**/*", self._route)
        self.page.goto(url + "/")
        self.page.wait_for_selector(wait_for, timeout=WAIT_MS)

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


def test_onnx_page_says_explanations_need_the_checkpoint_and_classifies_an_example(
    browser,  # noqa: ANN001
    onnx_model: Path,
    image_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "example_scan.png").write_bytes(image_files["png2"].read_bytes())
    with serving_in_thread(ServeConfig(model=onnx_model, port=0, examples=examples)) as url:
        tab = OfflinePage(browser, url)
        assert tab.text("#cam-note") == NEEDS_CHECKPOINT.format(backend="onnx")
        tab.upload(image_files["png"])
        expected = api_answer(url, image_files["png"])
        assert tab.wait_for_text("#result", "Predicted").startswith(f"Predicted {expected['class']} · confidence")
        assert not tab.page.is_visible("#cam-image")
        tab.page.click("button.gallery-item:has-text('example_scan.png')")  # Gradio's copy of the example
        example = api_answer(url, image_files["png2"])
        tab.page.wait_for_function(
            "text => document.querySelector('#result').innerText.includes(text)",
            arg=f"Predicted {example['class']} · confidence {example['confidence']:.4f}",
            timeout=WAIT_MS,
        )
        assert tab.outside == []


def test_a_page_under_a_name_the_server_was_not_given_gets_nothing(browser, onnx_model: Path) -> None:  # noqa: ANN001
    """DNS rebinding: rebound.example resolves to 127.0.0.1; what the browser loads there is refused."""
    with serving_in_thread(ServeConfig(model=onnx_model, port=0)) as url:
        port = urlparse(url).port
        page = browser.new_page()
        response = page.goto(f"http://rebound.example:{port}/")
        refused = {"error": f"host 'rebound.example:{port}' is not served here (add it with --allowed-host)"}
        assert (response.status, response.json()) == (400, refused)
        fetched = page.evaluate("fetch('/api/model').then(r => r.status)")  # same-origin for that page
        assert fetched == 400
        page.close()


def test_another_sites_form_cannot_post_to_the_api(browser, onnx_model: Path) -> None:  # noqa: ANN001
    """A page of attacker.example submits a multipart form to the server (no preflight is needed for that)."""
    with serving_in_thread(ServeConfig(model=onnx_model, port=0)) as url:
        form = (
            f'<form id="f" method="post" enctype="multipart/form-data" action="{url}/api/predict">'
            '<input name="files" value="x"></form><script>document.getElementById("f").submit()</script>'
        )
        page = browser.new_page()
        page.route("http://attacker.example/**", lambda route: route.fulfill(body=form, content_type="text/html"))
        with page.expect_response(f"{url}/api/predict") as answer:
            page.goto("http://attacker.example/")
        refused = {"error": "cross-origin request from 'http://attacker.example' refused (see --cors-origin)"}
        assert (answer.value.status, answer.value.json()) == (403, refused)
        page.close()


def test_a_server_with_a_key_asks_a_person_for_it_once_then_the_page_works(
    browser,  # noqa: ANN001
    onnx_model: Path,
    image_files: dict[str, Path],
) -> None:
    with serving_in_thread(ServeConfig(model=onnx_model, port=0, api_key=KEY)) as url:
        tab = OfflinePage(browser, url, wait_for="#key")
        assert tab.page.url == url + "/login"
        tab.page.fill("#key", "not the key")
        tab.page.click("button[type=submit]")
        assert tab.wait_for_text("#wrong", "That key is not right.")
        tab.page.fill("#key", KEY)
        tab.page.click("button[type=submit]")
        tab.page.wait_for_selector("#disclaimer", timeout=WAIT_MS)
        tab.upload(image_files["png"])
        assert tab.wait_for_text("#result", "Predicted").startswith("Predicted ")
        assert httpx.get(url + "/api/model", timeout=30).status_code == 401  # the session is the browser's alone
        assert tab.outside == []
