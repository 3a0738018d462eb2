"""`tumorcls serve` as a real process, against clients that misbehave: bodies that stall or trickle and headers
that never end (each answered 408 in one line and its connection closed, and none of them keeps the others
waiting), files that decode to far more pixels than they weigh (refused from their header, in every format, at no
memory cost), many large decodes at once (held to the decode memory, and given back), clients that vanish
mid-upload (no traceback, no file left), page uploads (a quota per client, swept), and SIGTERM (the request in
flight is answered, the temp folder removed, exit status 0)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.serve_inputs import encoded, scan_like
from tests.serve.large_images import FORMATS, dicom_bytes, float_tiff, grey16_png, large_image
from tests.serve.server_process import (
    ServerProcess,
    connect,
    multipart,
    nothing_received,
    part_head,
    read_answer,
    request_head,
)

pytestmark = pytest.mark.slow  # real server processes
IDLE_S, READ_S = 1, 6  # --idle-timeout, --read-timeout of the module's server
MAX_PIXELS = 2_500_000
DECODE_MB = 100
QUOTA_MB, TTL_S = 1, 2
SMALL_PNG = encoded(scan_like(1, 2, seed=3))


@pytest.fixture(scope="module")
def server(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = ["--idle-timeout", str(IDLE_S), "--read-timeout", str(READ_S), "--max-pixels", str(MAX_PIXELS)]
    limits += ["--decode-memory-mb", str(DECODE_MB), "--upload-quota-mb", str(QUOTA_MB), "--upload-ttl", str(TTL_S)]
    process = ServerProcess(onnx_model, tmp_path_factory.mktemp("served"), limits)
    yield process
    assert process.stop() == 0


def _predict(client: httpx.Client, files: list[tuple[str, bytes]]) -> httpx.Response:
    return client.post("/api/predict", files=[("files", f) for f in files])


def _no_traceback(server: ServerProcess) -> None:
    log = server.stderr()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]


def test_stalled_and_trickling_bodies_get_408_and_never_keep_other_requests_waiting(server: ServerProcess) -> None:
    body = part_head("scan.png") + SMALL_PNG
    stalled = [connect(server.port, request_head("/api/predict", 10_000) + body[:20]) for _ in range(12)]
    trickling = [connect(server.port, request_head("/api/predict", 10_000)) for _ in range(12)]
    stop = threading.Event()

    def trickle() -> None:  # a byte every 0.25 s: never idle for IDLE_S, never done either
        stop_at = time.monotonic() + READ_S - 0.5  # then quiet, so that nothing is sent after the server's answer
        for i in range(len(body)):
            if stop.wait(0.25) or time.monotonic() > stop_at:
                return
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.sendall(body[i : i + 1])

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            answers = [_predict(client, [("scan.png", SMALL_PNG)]) for _ in range(16)]
        assert [a.status_code for a in answers] == [200] * 16
        assert all(nothing_received(sock) for sock in trickling)  # still being read while the others were answered
        for sock in stalled:
            status, text, closed = read_answer(sock, timeout=10)
            assert (status, json.loads(text), closed) == (
                408,
                {"error": f"the request body stalled (no data for {IDLE_S} s)"},
                True,
            )
        for sock in trickling:
            status, text, closed = read_answer(sock, timeout=READ_S + 10)
            expected = {"error": f"the request body did not arrive within {READ_S} s"}
            assert (status, json.loads(text), closed) == (408, expected, True)
    finally:
        stop.set()
        for sock in stalled + trickling:
            sock.close()
    _no_traceback(server)


def test_headers_that_never_end_and_silent_connections_get_408_and_are_closed(server: ServerProcess) -> None:
    partial = connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
    silent = connect(server.port)
    expected = {"error": f"the request headers did not arrive within {IDLE_S} s"}
    for sock in (partial, silent):
        status, text, closed = read_answer(sock, timeout=10)
        sock.close()
        assert (status, json.loads(text), closed) == (408, expected, True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_image_over_the_pixel_limit_is_refused_from_its_header_in_one_line(server: ServerProcess, fmt: str) -> None:
    if fmt.startswith("dicom"):
        pytest.importorskip("pydicom")
    name, data = large_image(fmt, 1600)
    response = httpx.post(server.url + "/api/predict", files=[("files", (name, data))], timeout=30)
    assert (response.status_code, response.json()) == (
        413,
        {"error": f"{name}: image too large (1600x1600 > {MAX_PIXELS} pixels); refused"},
    )


def test_an_image_needing_more_than_the_decode_memory_is_refused_before_decoding(server: ServerProcess) -> None:
    data = float_tiff(1500)  # 2.25 Mpx, within the pixel limit; float samples: (24 + 8 * 4) bytes a pixel
    response = httpx.post(server.url + "/api/predict", files=[("files", ("f.tif", data))], timeout=30)
    assert (response.status_code, response.json()) == (
        413,
        {
            "error": "f.tif: image needs about 120 MB to decode (1500x1500, 1 x 32-bit samples), more than the "
            f"{DECODE_MB} MB decode budget; refused"
        },
    )


def _reset_peak(server: ServerProcess) -> None:
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def test_decompression_bombs_cost_no_memory(server: ServerProcess) -> None:
    """8000 x 8000: a 64 Mpx PNG (~0.1 MB) and a deflated DICOM (~0.2 MB, 128 MB inflated) are refused from
    their headers, the DICOM after inflating only its first MB (the rest counted, never kept)."""
    pytest.importorskip("pydicom")
    png = large_image("png", 8000)[1]
    dicom = dicom_bytes(np.zeros((8000, 8000), np.uint16), deflated=True)
    assert len(png) < 1_000_000 and len(dicom) < 1_000_000
    _reset_peak(server)
    before = server.vm("VmRSS")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        png_answer = _predict(client, [("bomb.png", png)])
        dicom_answer = _predict(client, [("bomb.dcm", dicom)])
    assert (png_answer.status_code, png_answer.json()) == (
        413,
        {"error": f"bomb.png: image too large (8000x8000 > {MAX_PIXELS} pixels); refused"},
    )
    limit_mb = (6 * MAX_PIXELS + 2**20) // 2**20
    assert (dicom_answer.status_code, dicom_answer.json()) == (
        413,
        {"error": f"bomb.dcm: deflated DICOM data inflates past {limit_mb} MB; refused"},
    )
    assert server.vm("VmHWM") - before < 40  # MB: the files themselves, parsers' buffers


def test_large_decodes_at_once_stay_within_the_decode_memory_and_give_it_back(server: ServerProcess) -> None:
    """Eight 2.25 Mpx 16-bit PNGs at once (each holds ~80 MB while decoded, budgeted at 90 MB): with 100 MB of
    decode memory they decode one at a time, and the server's memory is back where it was afterwards."""
    data = grey16_png(1500)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert _predict(client, [("warm.png", SMALL_PNG)]).status_code == 200
        time.sleep(0.2)
        _reset_peak(server)
        before = server.vm("VmRSS")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: _predict(client, [(f"g{i}.png", data)]), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert all("class" in a.json()["predictions"][0] for a in answers)
    peak = server.vm("VmHWM") - before
    assert peak < DECODE_MB + 60, f"peak +{peak} MB"  # one decode (~80 MB) and the bodies, not eight (~640 MB)
    assert server.vm("VmRSS") - before < 40  # given back


def test_clients_leaving_mid_upload_leave_no_traceback_and_no_file(server: ServerProcess) -> None:
    started = time.time() - 1
    body = part_head("scan.png") + b"\x89PNG" + b"z" * 300_000
    for path in ["/api/predict"] * 3 + ["/gradio_api/upload"] * 10:
        sock = connect(server.port, request_head(path, 900_000) + body)  # within the upload quota
        time.sleep(0.05)
        sock.close()

    def left() -> list[str]:  # files written since the test began
        return sorted(p.name for p in server.page_folder().rglob("*") if p.is_file() and p.stat().st_mtime > started)

    deadline = time.monotonic() + TTL_S - 0.5  # deleted at once, not by the TTL's sweep
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left() == []  # no partial upload
    _no_traceback(server)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert float(_sample(metrics, "tumorcls_client_disconnects_total")) >= 13


def _sample(metrics: str, name: str) -> str:
    (line,) = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    return line.split()[-1]


def _upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/gradio_api/upload", files=[("files", (name, data))])


def test_page_uploads_have_a_quota_per_client_and_are_swept_after_their_ttl(server: ServerProcess) -> None:
    blob = np.random.default_rng(0).bytes(400_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first, second = _upload(client, "a.png", blob), _upload(client, "b.png", blob[::-1])
        assert (first.status_code, second.status_code) == (200, 200)
        stored = [Path(first.json()[0]), Path(second.json()[0])]
        assert all(p.is_file() and p.is_relative_to(server.page_folder()) for p in stored)
        third = _upload(client, "c.png", blob[1:])
        held = "this client's uploads hold 0.763 MB of 1 MB; they are freed once classified"
        assert (third.status_code, third.json()) == (429, {"error": f"upload quota reached: {held}"})
        deadline = time.monotonic() + TTL_S + 10
        while any(p.exists() for p in stored) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(p.exists() for p in stored)  # swept after the TTL
        assert _upload(client, "c.png", blob[1:]).status_code == 200  # and the quota is free again


def test_sigterm_answers_the_request_in_flight_removes_the_temp_folder_and_exits_0(
    onnx_model: Path, tmp_path: Path
) -> None:
    server = ServerProcess(onnx_model, tmp_path, ["--drain-timeout", "20"])
    try:
        assert len(list(server.tmp.glob("tumorcls-serve-*"))) == 1
        body = multipart([("scan.png", SMALL_PNG)])
        sock = connect(server.port, request_head("/api/predict", len(body)) + body[:100])
        time.sleep(0.3)  # the request is in flight
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new connection once stopping
            httpx.get(server.url + "/healthz", timeout=5)
        sock.sendall(body[100:])
        status, text, _ = read_answer(sock, timeout=30)
        sock.close()
        assert status == 200 and json.loads(text)["predictions"][0]["file"] == "scan.png"
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop(signal.SIGKILL)
    assert list(server.tmp.glob("tumorcls-serve-*")) == []  # the temp folder is gone
    assert "Traceback" not in server.stderr()
