"""The HTTP API of `tumorcls serve`: the same probabilities as `tumorcls predict` on the same files, one error per
bad file, a 4xx with one line for each refused request, concurrent clients all answered, and the CLI's limits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers.serve_inputs import TEMPERATURE, encoded, predict_path_probabilities, scan_like, write_dicom
from tests.serve.conftest import LOCAL
from tumorcls.cli.main import main
from tumorcls.inference import load_predictor
from tumorcls.inference.predict import run_predictions
from tumorcls.labels import CLASS_NAMES
from tumorcls.serve.app import build_app
from tumorcls.serve.config import MB, ServeConfig
from tumorcls.serve.runner import serving_in_thread

CLI = "import sys; from tumorcls.cli import main; sys.exit(main(sys.argv[1:]))"  # the `tumorcls` command
SMALL = ServeConfig(model=Path("unset"), max_file_bytes=MB, max_files=4)  # the limits the refusal tests meet


def _client(config: ServeConfig) -> Iterator[TestClient]:
    served = build_app(config)
    try:
        yield TestClient(served.app, base_url=LOCAL)
    finally:
        served.close()


@pytest.fixture(scope="module")
def ckpt_api(ckpt: Path) -> Iterator[TestClient]:
    yield from _client(ServeConfig(model=ckpt))


@pytest.fixture(scope="module")
def onnx_api(onnx_model: Path) -> Iterator[TestClient]:
    yield from _client(ServeConfig(model=onnx_model, max_file_bytes=SMALL.max_file_bytes, max_files=SMALL.max_files))


def _post(client: TestClient | httpx.Client, paths: list[Path]) -> httpx.Response:
    parts = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    return client.post("/api/predict", files=parts)


def _check_parity(answer: dict, expected: dict[str, np.ndarray]) -> None:
    assert [p["file"] for p in answer["predictions"]] == list(expected)
    for item in answer["predictions"]:
        want = expected[item["file"]]
        got = np.array([item["probabilities"][name] for name in CLASS_NAMES])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert item["class"] == CLASS_NAMES[int(np.argmax(want))]
        assert item["confidence"] == pytest.approx(float(want.max()), abs=1e-6)


@pytest.mark.parametrize("backend", ["checkpoint", "onnx"])
def test_api_gives_the_probabilities_of_tumorcls_predict(
    backend: str, request: pytest.FixtureRequest, image_files: dict[str, Path]
) -> None:
    client = request.getfixturevalue("ckpt_api" if backend == "checkpoint" else "onnx_api")
    model = request.getfixturevalue("ckpt" if backend == "checkpoint" else "onnx_model")
    files = [image_files["jpeg"], image_files["png"], image_files["png2"]]
    expected = predict_path_probabilities(model, files)
    assert all(0.2 < p.max() < 0.99 for p in expected.values())  # informative probabilities, not 0s and 1s
    response = _post(client, files)
    assert response.status_code == 200
    answer = response.json()
    _check_parity(answer, expected)
    assert answer["model"]["backend"] == backend and answer["model"]["temperature"] == pytest.approx(TEMPERATURE)


def test_api_with_tta_gives_the_probabilities_of_predict_tta(onnx_model: Path, image_files: dict[str, Path]) -> None:
    files = [image_files["jpeg"], image_files["png"]]
    expected = predict_path_probabilities(onnx_model, files, tta=True)
    plain = predict_path_probabilities(onnx_model, files)
    assert not np.allclose(expected["scan_glioma.png"], plain["scan_glioma.png"], atol=1e-4)  # TTA changes them
    for client in _client(ServeConfig(model=onnx_model, tta=True)):
        _check_parity(_post(client, files).json(), expected)


def test_dicom_upload_gives_the_probabilities_of_predict(ckpt_api: TestClient, ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    grey = scan_like(1, 3, seed=5)[:, :, 0].astype(np.uint16) * 16 + 300  # 12-bit-like values
    path = write_dicom(tmp_path / "slice.dcm", grey)
    expected = predict_path_probabilities(ckpt, [path])
    _check_parity(_post(ckpt_api, [path]).json(), expected)


def test_bad_files_get_their_own_one_line_error_and_the_good_one_is_answered(
    ckpt_api: TestClient, ckpt: Path, image_files: dict[str, Path], tmp_path: Path
) -> None:
    bad = [image_files["junk"], image_files["truncated"]]
    if _has_pydicom():
        bad.append(write_dicom(tmp_path / "no_pixels.dcm", np.zeros((32, 32), np.uint16), pixels=False))
    predicted = run_predictions(load_predictor(ckpt), bad)
    expected_errors = {path.name: reason for path, reason in predicted.errors}
    assert len(expected_errors) == len(bad)
    response = _post(ckpt_api, [*bad, image_files["png"]])
    assert response.status_code == 200
    items = response.json()["predictions"]
    assert {i["file"]: i["error"] for i in items[:-1]} == expected_errors
    assert all("\n" not in i["error"] for i in items[:-1])
    assert items[-1]["file"] == "scan_glioma.png" and "error" not in items[-1]
    if _has_pydicom():
        assert expected_errors["no_pixels.dcm"] == "DICOM file without pixel data (no image in it)"


def _has_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("no body", 415, "send the images as multipart/form-data, one 'files' field per file"),
        ("json body", 415, "send the images as multipart/form-data, one 'files' field per file"),
        ("empty multipart", 400, "no files: send one or more images as multipart field 'files'"),
        ("no boundary", 400, "malformed multipart body (Missing boundary in multipart.)"),
        ("other field", 400, "no files: send one or more images as multipart field 'files'"),
        ("oversize file", 413, "a file is larger than the 1 MB limit per file"),
        ("declared oversize body", 413, "request body larger than 5 MB"),
        ("too many files", 400, "too many files: at most 4 per request"),
    ],
)
def test_refused_requests_get_a_4xx_and_one_line(onnx_api: TestClient, case: str, status: int, error: str) -> None:
    boundary = "b0undary"
    kwargs = {
        "no body": {},
        "json body": {"json": {"files": ["a.jpg"]}},
        "empty multipart": {"content": f"--{boundary}--\r\n", "headers": _multipart(boundary)},
        "no boundary": {"content": b"", "headers": {"content-type": "multipart/form-data"}},
        "other field": {"files": [("image", ("a.png", encoded(scan_like(0, 1, 0)), "image/png"))]},
        "oversize file": {"files": [("files", ("big.png", b"\0" * (MB + 1), "image/png"))]},
        "declared oversize body": {"content": b"--x--", "headers": {**_multipart("x"), "content-length": str(6 * MB)}},
        "too many files": {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(5)]},
    }[case]
    response = onnx_api.post("/api/predict", **kwargs)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert onnx_api.get("/healthz").status_code == 200  # and the server keeps serving


def _multipart(boundary: str) -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_health_model_description_and_openapi(onnx_api: TestClient, onnx_model: Path) -> None:
    assert onnx_api.get("/healthz").json() == {"status": "ok"}
    card = onnx_api.get("/api/model").json()
    assert card["class_names"] == list(CLASS_NAMES) and card["model"] == "tiny.onnx"
    spec = {"height": 64, "width": 64, "channels": 3, "color": "RGB", "dtype": "uint8", "range": [0, 255]}
    assert card["input"] == spec
    assert card["explanations"] is False and card["temperature"] == pytest.approx(TEMPERATURE)
    assert json.loads(card["metadata"]["class_names"]) == list(CLASS_NAMES) and card["metadata"]["export_date"]
    assert onnx_api.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    schema = onnx_api.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["files"]["maxItems"] == 4
    assert {"400", "413", "415"} <= set(schema["paths"]["/api/predict"]["post"]["responses"])


def test_32_parallel_requests_are_all_answered_correctly(onnx_model: Path, tmp_path: Path) -> None:
    files = []
    for i in range(8):
        files.append(tmp_path / f"scan{i}.png")
        files[-1].write_bytes(encoded(scan_like(i % 4, (i + 1) % 4, seed=10 + i)))
    expected = predict_path_probabilities(onnx_model, files)
    with serving_in_thread(ServeConfig(model=onnx_model, port=0, max_batch=8)) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda k: _post(client, [files[k % 8]]), range(32)))
    for k, response in enumerate(responses):
        assert response.status_code == 200
        _check_parity(response.json(), {files[k % 8].name: expected[files[k % 8].name]})


def test_cli_help_says_it_binds_localhost_and_warns_about_other_addresses(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 127.0.0.1: this machine only" in text
    assert "exposes the model to the network: without an API key (TUMORCLS_API_KEY) to everyone" in text


def test_cli_refuses_cam_for_onnx_and_a_missing_examples_folder_in_one_line(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["serve", "--model", str(onnx_model), "--cam", "--port", "0"]) == 2
    assert capsys.readouterr().err == "error: --cam needs a checkpoint (.ckpt) model; this one is onnx\n"
    assert main(["serve", "--model", str(onnx_model), "--examples", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"error: --examples '{tmp_path / 'none'}' is not a folder\n"


@pytest.mark.slow  # a real server process
def test_cli_prints_the_url_serves_and_stops_on_ctrl_c_leaving_no_temp_folder(onnx_model: Path, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "-c", CLI, "serve", "--model", str(onnx_model), "--port", "0"]
    env = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        pattern = r"tumorcls serve: (http://127\.0\.0\.1:\d+)/ \(page\)  \1/api/predict \(API\)  "
        pattern += r"\1/openapi\.json \(schema\)\n"
        match = re.fullmatch(pattern, line)
        assert match, line
        assert httpx.get(match.group(1) + "/api/model", timeout=30).json()["backend"] == "onnx"
        assert len(list(temp.glob("tumorcls-serve-*"))) == 1
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and list(temp.glob("tumorcls-serve-*")) == []
