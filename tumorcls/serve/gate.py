"""Every request passes here first, in this order: its Host must be one this server answers, a request that changes
something must come from this server's own pages (or a --cors-origin), it must carry the key when the server has
one, what it names of the page's files must be the page's, and its body must arrive in time and within size.
A refusal is answered here, in one line (README "Serve" lists them), before any route runs or any byte is stored.
A client that leaves early ends its request quietly: counted, never logged with a traceback."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tumorcls.serve.auth import LOGIN_PATH, MAX_LOGIN_BODY, OPEN_PATHS, ApiKey
from tumorcls.serve.body_guard import GuardedBody, Refusal, is_client_disconnect
from tumorcls.serve.config import KEY_ENV, ServeConfig
from tumorcls.serve.error_shape import send_error
from tumorcls.serve.hosts import SAFE_METHODS, HostPolicy
from tumorcls.serve.metrics import ServerMetrics
from tumorcls.serve.page_files import MAX_JSON_BODY, PREFIX, QUOTA_SLACK, UPLOAD_ROUTE, PageFiles

_CLOSE = [(b"connection", b"close")]


class Gate:
    """ASGI middleware in front of the whole app (API routes and the mounted page)."""

    def __init__(
        self,
        app: ASGIApp,
        config: ServeConfig,
        key: ApiKey | None,
        page: PageFiles,
        metrics: ServerMetrics,
        own_routes: list[BaseRoute],
    ) -> None:
        self.app, self.config, self.key, self.page, self.metrics = app, config, key, page, metrics
        self.hosts = HostPolicy(config)
        upload_limit = min(config.max_request_bytes, config.upload_quota_bytes + QUOTA_SLACK)  # chunked bodies too
        self.limits = {"/api/predict": config.max_request_bytes, UPLOAD_ROUTE: upload_limit}
        self.limits[LOGIN_PATH] = MAX_LOGIN_BODY
        self.methods = _route_methods(own_routes)  # a wrong method on one of ours is 405, not the page's 404

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._refuse(scope, send, refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._serve(scope, receive, send)

    def _refusal(self, scope: Scope) -> Refusal | None:
        headers = Headers(scope=scope)
        host, method, path = headers.get("host", ""), scope.get("method", "GET"), scope.get("path", "")
        if not self.hosts.allows_host(host):
            shown = host[:100] or "(none)"
            return Refusal(400, "host", f"host '{shown}' is not served here (add it with --allowed-host)")
        changes = scope["type"] == "websocket" or method not in SAFE_METHODS
        if changes and not self.hosts.allows_origin(headers.get("origin"), host):
            origin = (headers.get("origin") or "")[:100]
            return Refusal(403, "origin", f"cross-origin request from '{origin}' refused (see --cors-origin)")
        if self.key is not None and path not in OPEN_PATHS and method != "OPTIONS":
            cookies = cookie_parser(headers.get("cookie", ""))
            if not self.key.allows(dict(headers), cookies):
                return Refusal(401, "key", f"this server needs its API key: send 'Authorization: Bearer <{KEY_ENV}>'")
        allowed = self.methods.get(path)
        if allowed and method not in allowed and method != "OPTIONS":
            return Refusal(405, "method", f"method {method} not allowed on {path} (allowed: {', '.join(allowed)})")
        if path.startswith(("/gradio_api/file=", "/gradio_api/proxy=")):
            why = self.page.file_route_refusal(path)
            if why:
                return Refusal(403, "file", why)
        if path == UPLOAD_ROUTE and method == "POST":
            declared = headers.get("content-length")
            why = self.page.quota_refusal(_client(scope), int(declared) if (declared or "").isdigit() else None)
            if why:
                return Refusal(429, "quota", why)
        return None

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        self.metrics.refused(refusal.reason)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        wants_page = "text/html" in Headers(scope=scope).get("accept", "") and scope.get("method") == "GET"
        if refusal.reason == "key" and wants_page:  # a person at the page: to the sign-in form
            location = LOGIN_PATH.encode()
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", location)]})
            await send({"type": "http.response.body", "body": b""})
            return
        extra = [(b"www-authenticate", b"Bearer")] if refusal.status == 401 else []
        if refusal.status == 405:
            extra.append((b"allow", ", ".join(self.methods[scope["path"]]).encode()))
        await send_error(send, refusal.status, refusal.message, extra + (_CLOSE if refusal.status != 401 else []))

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        body = GuardedBody(
            receive, self.limits.get(path, MAX_JSON_BODY), self.config.read_timeout_s, self.config.idle_timeout_s
        )
        upload = path == UPLOAD_ROUTE and method == "POST"
        if upload:
            self.page.upload_started(id(body))
            send = self._recording_upload(scope, send)
        try:
            await self._run(scope, body, send, checks_payload=path.startswith(PREFIX) and method == "POST")
        except Exception as exc:
            if not (body.refusal is not None or is_client_disconnect(exc)):
                raise
        finally:
            if upload:
                self.page.upload_ended(id(body))
        if body.refusal is not None and not body.response_started:
            self.metrics.refused(body.refusal.reason)
            await send_error(send, body.refusal.status, body.refusal.message, _CLOSE)
        elif body.client_left or body.refusal is not None:
            self.metrics.disconnects.inc()
        if upload and (body.refusal is not None or body.client_left):
            await run_in_threadpool(self.page.sweep)  # the partial upload it left

    async def _run(self, scope: Scope, body: GuardedBody, send: Send, checks_payload: bool) -> None:
        receive = body.receive
        if checks_payload and scope.get("path") != UPLOAD_ROUTE:
            raw = await body.read_all()
            why = self.page.payload_refusal(raw)
            if why:
                self.metrics.refused("file")
                await send_error(send, 403, why)
                return
            receive = body.replaying(raw)
        await self.app(scope, receive, body.sending(send))

    def _recording_upload(self, scope: Scope, send: Send) -> Send:
        """``send`` that notes which files an upload answer names, as the client's holdings."""
        answer: list[bytes] = []
        status = {"code": 0}

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and status["code"] == 200:
                answer.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.page.record_upload(_client(scope), b"".join(answer))
            await send(message)

        return recording


def _route_methods(routes: list[BaseRoute]) -> dict[str, tuple[str, ...]]:
    """path -> the methods of our own routes (not those of the page mounted at '/')."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods:
            methods.setdefault(route.path, set()).update(route.methods)
    return {path: tuple(sorted(found)) for path, found in methods.items()}


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
