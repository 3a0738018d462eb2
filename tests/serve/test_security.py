"""What a hostile client cannot do to `tumorcls serve`: make the page's API read a file this server did not receive
as an upload (refused before anything is copied), reach it under another host name (DNS rebinding) or post to it
from another site, use it without the key when it has one, or learn the paths of the machines it was trained and
served on. Every refusal is a status and one line, in the one error shape of every 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers.serve_inputs import encoded, scan_like, write_image
from tests.serve.conftest import LOCAL
from tumorcls.cli.main import main
from tumorcls.errors import TumorclsError
from tumorcls.serve.app import build_app
from tumorcls.serve.auth import COOKIE, ApiKey
from tumorcls.serve.config import ServeConfig, exposure_warning, read_api_key
from tumorcls.serve.error_shape import message_of
from tumorcls.serve.hosts import HostPolicy
from tumorcls.serve.runner import Running, running, serve

KEY = "k3y-for-tests-0123456789"
NEEDS_KEY = {"error": "this server needs its API key: send 'Authorization: Bearer <TUMORCLS_API_KEY>'"}
PNG = encoded(scan_like(0, 2, seed=4))


def _client(config: ServeConfig) -> Iterator[TestClient]:
    served = build_app(config)
    try:
        yield TestClient(served.app, base_url=LOCAL)
    finally:
        served.close()


@pytest.fixture(scope="module")
def open_api(onnx_model: Path) -> Iterator[TestClient]:
    yield from _client(ServeConfig(model=onnx_model, allowed_hosts=("scans.example.org", "*.lab.example")))


@pytest.fixture(scope="module")
def keyed_api(onnx_model: Path) -> Iterator[TestClient]:
    yield from _client(ServeConfig(model=onnx_model, api_key=KEY))


@pytest.fixture(scope="module")
def page_server(onnx_model: Path) -> Iterator[Running]:
    with running(ServeConfig(model=onnx_model, port=0)) as server:
        yield server


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def _file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


# 1. the page's API reads only what was uploaded to it
@pytest.mark.parametrize("route", ["call/one", "call/v2/one", "run/one", "queue/join"])
def test_the_page_api_refuses_a_path_it_did_not_receive_and_copies_nothing(
    page_server: Running, tmp_path: Path, route: str
) -> None:
    secret = write_image(tmp_path / "patient.png", scan_like(1, 2, seed=9))
    folder = page_server.served.page_folder
    before = _files(folder)
    payload = {"data": [_file_data(str(secret))], "fn_index": 0, "session_hash": "s1"}
    response = httpx.post(f"{page_server.url}/gradio_api/{route}", json=payload, timeout=30)
    assert (response.status_code, response.json()) == (
        403,
        {"error": "file 'patient.png' was not uploaded to this server; upload it first (POST /gradio_api/upload)"},
    )
    assert _files(folder) == before  # nothing was copied


def test_an_uploaded_file_is_classified_and_no_path_around_it_is(page_server: Running, tmp_path: Path) -> None:
    secret = write_image(tmp_path / "patient.png", scan_like(1, 2, seed=9))
    with httpx.Client(base_url=page_server.url, timeout=30) as client:
        (stored,) = client.post("/gradio_api/upload", files=[("files", ("scan.png", PNG))]).json()
        escape = f"{Path(stored).parent}/{'../' * 12}{str(secret).lstrip('/')}"  # normalises to the secret
        refused = client.post("/gradio_api/call/one", json={"data": [_file_data(escape)]})
        assert refused.status_code == 403 and "patient.png" in refused.json()["error"]
        nested = {"data": [{"value": [_file_data(str(secret))]}]}  # however deep it is
        assert client.post("/gradio_api/call/one", json=nested).status_code == 403
        event = client.post("/gradio_api/call/one", json={"data": [_file_data(stored)]})
        assert event.status_code == 200
        answer = client.get(f"/gradio_api/call/one/{event.json()['event_id']}").text
    assert "event: complete" in answer and "Predicted" in answer


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("/etc/passwd", "not a file of this server's page"),
        ("https://example.org/scan.png", "this server serves its own files only, never a URL"),
        ("//example.org/scan.png", "this server serves its own files only, never a URL"),
    ],
)
def test_the_file_route_serves_only_the_pages_own_files(page_server: Running, target: str, error: str) -> None:
    response = httpx.get(f"{page_server.url}/gradio_api/file={target}", timeout=30)
    assert (response.status_code, response.json()) == (403, {"error": error})
    proxied = httpx.get(f"{page_server.url}/gradio_api/proxy=https://example.org/x", timeout=30)
    assert (proxied.status_code, proxied.json()) == (403, {"error": "this server proxies nothing"})


# 2. host names and origins
@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("GET", "/api/model"), ("POST", "/api/predict")])
def test_a_host_name_the_server_was_not_given_is_refused(open_api: TestClient, method: str, path: str) -> None:
    response = open_api.request(method, path, headers={"host": "evil.example"}, files={"files": ("a.png", PNG)})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "host 'evil.example' is not served here (add it with --allowed-host)"},
    )


@pytest.mark.parametrize("host", ["localhost:7860", "127.0.0.1", "[::1]:7860", "scans.example.org", "a.lab.example"])
def test_localhost_and_the_given_names_are_served(open_api: TestClient, host: str) -> None:
    assert open_api.get("/api/model", headers={"host": host}).status_code == 200


def test_a_wildcard_bind_serves_its_addresses_by_literal_and_names_only_when_given(onnx_model: Path) -> None:
    policy = HostPolicy(ServeConfig(model=onnx_model, host="0.0.0.0", allowed_hosts=("scans.example.org",)))
    assert policy.allows_host("192.168.1.20:7860") and policy.allows_host("[fe80::1]:7860")
    assert policy.allows_host("scans.example.org") and policy.allows_host("localhost")
    assert not policy.allows_host("evil.example") and not policy.allows_host("lab.example.org.evil")
    assert not policy.allows_host("") and not policy.allows_host("a:b:c")
    bound = HostPolicy(ServeConfig(model=onnx_model, host="10.0.0.5"))
    assert bound.allows_host("10.0.0.5:7860") and not bound.allows_host("10.0.0.6:7860")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:3000"])
def test_a_cross_origin_post_is_refused(open_api: TestClient, origin: str) -> None:
    response = open_api.post("/api/predict", headers={"origin": origin}, files={"files": ("a.png", PNG)})
    assert (response.status_code, response.json()) == (
        403,
        {"error": f"cross-origin request from '{origin}' refused (see --cors-origin)"},
    )
    same = open_api.post("/api/predict", headers={"origin": "http://localhost"}, files={"files": ("a.png", PNG)})
    assert same.status_code == 200  # the server's own page


def test_no_cors_headers_unless_an_origin_is_given(open_api: TestClient, onnx_model: Path) -> None:
    for path in ("/api/model", "/config", "/gradio_api/info"):  # Gradio's own CORS answered localhost origins
        response = open_api.get(path, headers={"origin": "http://localhost:3000"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    origin = "https://app.example.org"
    for client in _client(ServeConfig(model=onnx_model, cors_origins=(origin,))):
        asked = {"origin": origin, "access-control-request-method": "POST"}
        preflight = client.options("/api/predict", headers=asked)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
        allowed = client.post("/api/predict", headers={"origin": origin}, files={"files": ("a.png", PNG)})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin


# 3. the key
def test_with_a_key_every_route_but_health_needs_it(keyed_api: TestClient) -> None:
    routes = [("POST", "/api/predict"), ("GET", "/api/model"), ("GET", "/metrics"), ("GET", "/")]
    routes += [("GET", "/openapi.json"), ("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/nope")]
    for method, path in routes:
        response = keyed_api.request(method, path)
        assert (response.status_code, response.json()) == (401, NEEDS_KEY), path
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = keyed_api.get("/api/model", headers={"authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401
    right = keyed_api.post("/api/predict", headers={"authorization": f"Bearer {KEY}"}, files={"files": ("a.png", PNG)})
    assert right.status_code == 200 and "class" in right.json()["predictions"][0]
    assert keyed_api.get("/healthz").json() == {"status": "ok"}


def test_a_person_signs_in_once_and_the_page_keeps_a_signed_session(keyed_api: TestClient) -> None:
    page = keyed_api.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert 'name="key"' in keyed_api.get("/login").text
    wrong = keyed_api.post("/login", data={"key": "guess"}, follow_redirects=False)
    assert (wrong.status_code, wrong.headers["location"]) == (303, "/login?wrong=1")
    assert "That key is not right." in keyed_api.get("/login?wrong=1").text
    right = keyed_api.post("/login", data={"key": KEY}, follow_redirects=False)
    assert (right.status_code, right.headers["location"]) == (303, "/")
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    session = right.cookies[COOKIE]
    assert KEY not in session
    signed_in = TestClient(keyed_api.app, base_url=LOCAL, cookies={COOKIE: session})
    assert signed_in.get("/api/model").status_code == 200
    tampered = session[:-1] + ("1" if session[-1] == "0" else "0")  # one character changed, never the same value
    forged = TestClient(keyed_api.app, base_url=LOCAL, cookies={COOKIE: tampered})
    assert forged.get("/api/model").status_code == 401


def test_a_session_expires_and_only_its_own_key_signs_it() -> None:
    key, other = ApiKey(KEY), ApiKey(KEY + "2")
    value = key.session_value(now=1000.0)
    assert key.cookie_ok(value, now=1000.0 + 3600) and not key.cookie_ok(value, now=1000.0 + 13 * 3600)
    assert not other.cookie_ok(value, now=1000.0) and not key.cookie_ok("", now=0)
    assert key.bearer_ok(f"bearer {KEY}") and not key.bearer_ok(KEY) and not key.bearer_ok(None)


def test_the_key_comes_from_the_environment_or_a_file_never_both(tmp_path: Path) -> None:
    assert read_api_key(None, {"TUMORCLS_API_KEY": KEY}) == KEY and read_api_key(None, {}) is None
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert read_api_key(key_file, {}) == KEY
    with pytest.raises(TumorclsError, match="^give the API key one way: TUMORCLS_API_KEY is set and --api-key-file"):
        read_api_key(key_file, {"TUMORCLS_API_KEY": KEY})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TumorclsError, match="is empty$"):
        read_api_key(tmp_path / "empty", {})


def test_a_short_key_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TUMORCLS_API_KEY", "short")
    absent = tmp_path / "absent.onnx"  # the key is checked first; were it not, this would be the error
    assert main(["serve", "--model", str(absent), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: the API key is 5 characters; use at least 16 "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')\n"
    )


def test_binding_beyond_this_machine_without_a_key_warns_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = ServeConfig(model=tmp_path / "absent.onnx", host="0.0.0.0")
    with pytest.raises(TumorclsError):  # the model is missing: nothing is bound, the warning came first
        serve(missing)
    assert capsys.readouterr().err == (
        "warning: serving on 0.0.0.0 without an API key: anyone who can reach this address can use the model "
        "(set TUMORCLS_API_KEY or --api-key-file)\n"
    )
    assert exposure_warning(ServeConfig(model=Path("m"), host="0.0.0.0", api_key=KEY)) is None
    assert exposure_warning(ServeConfig(model=Path("m"), host="::1")) is None


# 4. no path of the training or serving machine reaches a client
@pytest.mark.parametrize("backend", ["checkpoint", "onnx"])
def test_no_answer_names_a_path_of_the_machines(backend: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue("ckpt" if backend == "checkpoint" else "onnx_model")
    ckpt = request.getfixturevalue("ckpt")
    for client in _client(ServeConfig(model=model)):
        card = client.get("/api/model").json()
        answer = client.post("/api/predict", files={"files": ("a.png", PNG)}).json()
        page = client.get("/config").text
        said = json.dumps(card) + json.dumps(answer) + page + client.get("/gradio_api/info").text
    for folder in {model.parent, ckpt.parent, ckpt.parent.parent, Path.cwd()}:
        assert str(folder) not in said
    run = ckpt.parent.parent.name
    if backend == "onnx":
        training_run = json.loads(card["metadata"]["training_run"])
        assert (training_run["checkpoint"], training_run["run_dir"]) == ("best.ckpt", run)
        assert card["metadata"]["source_checkpoint"] == "best.ckpt"
    else:
        assert card["metadata"]["source_checkpoint"] == "best.ckpt"
    assert card["training"].startswith(f"run {run}, epoch ") and f"training: run {run}, epoch" in page


# the one error shape
@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nope", 404, "not found: GET /nope"),
        ("GET", "/gradio_api/nope", 404, "not found: GET /gradio_api/nope"),
        ("DELETE", "/api/predict", 405, "method DELETE not allowed on /api/predict (allowed: POST)"),
        ("POST", "/api/model", 405, "method POST not allowed on /api/model (allowed: GET)"),
        ("GET", "/gradio_api/upload_progress", 422, "query.upload_id: Field required"),
    ],
)
def test_every_error_has_one_shape(open_api: TestClient, method: str, path: str, status: int, error: str) -> None:
    response = open_api.request(method, path)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert response.headers["content-type"] == "application/json"


def test_a_server_error_says_nothing_of_its_cause() -> None:
    from starlette.datastructures import Headers

    body = b'Traceback (most recent call last):\n  File "/srv/models/x.py"'
    assert message_of(500, body, {"path": "/x"}, Headers()) == "internal server error"
