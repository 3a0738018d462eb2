"""The API key: programs send ``Authorization: Bearer <key>``; people sign in to the page once, with the same key,
at /login, which sets a session cookie (HttpOnly, SameSite=Strict, signed with the key, 12 hours). Keys and
signatures are compared in constant time; a wrong key waits half a second before it is answered.

The key is read from TUMORCLS_API_KEY or --api-key-file, never from the command line (which `ps` shows to every
user of the machine)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import time
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

COOKIE = "tumorcls_session"
SESSION_S = 12 * 3600
WRONG_KEY_DELAY_S = 0.5
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
OPEN_PATHS = frozenset({"/healthz", "/readyz", LOGIN_PATH, LOGOUT_PATH})  # answered without the key
MAX_LOGIN_BODY = 4096

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · tumorcls</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:12vh auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}}#wrong{{color:#b00}}</style></head>
<body><h1>Brain MRI tumour classification</h1>
<p>This server needs its API key.</p>{notice}
<form method="post" action="{action}"><label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button></form></body></html>
"""


class ApiKey:
    """Checks a request's Bearer token or session cookie against the server's key."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def _sign(self, expiry: int) -> str:
        return hmac.new(self._key, f"tumorcls-page:{expiry}".encode(), hashlib.sha256).hexdigest()

    def session_value(self, now: float | None = None) -> str:
        expiry = int((now or time.time()) + SESSION_S)
        return f"{expiry}.{self._sign(expiry)}"

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    def cookie_ok(self, value: str | None, now: float | None = None) -> bool:
        expiry, _, signature = (value or "").partition(".")
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return False
        return hmac.compare_digest(signature.encode(), self._sign(int(expiry)).encode())

    def allows(self, request_headers: dict[str, str], cookies: dict[str, str]) -> bool:
        return self.bearer_ok(request_headers.get("authorization")) or self.cookie_ok(cookies.get(COOKIE))


def login_page(wrong: bool = False) -> HTMLResponse:
    notice = '<p id="wrong">That key is not right.</p>' if wrong else ""
    return HTMLResponse(_PAGE.format(notice=notice, action=html.escape(LOGIN_PATH)), headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


async def sign_in(request: Request, key: ApiKey) -> Response:
    """POST /login (form field ``key``): to the page with a session cookie, or back to the form."""
    body = await request.body()
    given = parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace")).get("key", [""])[0]
    if not key.bearer_ok(f"Bearer {given}"):
        await asyncio.sleep(WRONG_KEY_DELAY_S)
        return RedirectResponse(f"{LOGIN_PATH}?wrong=1", status_code=303, headers=_NO_STORE)
    response = RedirectResponse("/", status_code=303, headers=_NO_STORE)
    secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE, key.session_value(), max_age=SESSION_S, httponly=True, samesite="strict", secure=secure, path="/"
    )
    return response


def sign_out() -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303, headers=_NO_STORE)
    response.delete_cookie(COOKIE, path="/")
    return response
