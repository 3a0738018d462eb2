"""One shape for every error answer, whoever gives it (our routes, FastAPI's routing and validation, Gradio's
routes, Starlette's middleware): ``{"error": "<one line>"}`` with the status that says why. An unknown route is
"not found: GET /x", a wrong method "method DELETE not allowed on /api/predict (allowed: POST)"; a 5xx never
carries the exception's text (which may name server paths): it is "internal server error"."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERROR_BODY = 64 * 1024  # longer error bodies are cut before their first line is taken
_DROPPED = (b"content-type", b"content-length", b"content-encoding")


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def error_body(message: str) -> bytes:
    return json.dumps({"error": one_line(message) or "error"}).encode()


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``status`` with ``{"error": message}``."""
    body = error_body(message)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's validation errors
        first = detail[0]
        where = ".".join(str(part) for part in first.get("loc", []))
        return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
    return ""


def message_of(status: int, body: bytes, scope: Scope, headers: Headers) -> str:
    """The one line an error answer says, from whatever body its author wrote."""
    if status >= 500 and status not in (502, 503, 504):
        return "internal server error"
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    if isinstance(parsed, dict):
        said = parsed.get("error") if isinstance(parsed.get("error"), str) else _detail_text(parsed.get("detail"))
    else:
        said = parsed if isinstance(parsed, str) else ""
    said = one_line(said)
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    if status == 404 and said.lower() in ("", "not found"):
        return f"not found: {scope.get('method', 'GET')} {scope.get('path', '')}"
    if status == 405 and said.lower() in ("", "method not allowed"):
        allowed = headers.get("allow")
        tail = f" (allowed: {allowed})" if allowed else ""
        return f"method {scope.get('method')} not allowed on {scope.get('path', '')}{tail}"
    return said or phrase.lower()


class ErrorShape:
    """ASGI middleware: rewrites the body of every answer of status 400 and up to the one shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def shaped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.update(start=message, body=b"")
                return
            if message["type"] != "http.response.body" or "start" not in held:
                await send(message)
                return
            if len(held["body"]) < MAX_ERROR_BODY:
                held["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                await self._send_shaped(send, scope, held.pop("start"), held["body"])

        await self.app(scope, receive, shaped)

    @staticmethod
    async def _send_shaped(send: Send, scope: Scope, start: Message, body: bytes) -> None:
        headers = Headers(raw=start.get("headers", []))
        message = message_of(start["status"], body[:MAX_ERROR_BODY], scope, headers)
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROPPED]
        await send_error(send, start["status"], message, kept)
