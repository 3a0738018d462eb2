"""A request body that must arrive in time and within its size: no gap longer than the idle timeout, all of it
within the read deadline, no more than the route's limit. Past any of these the route is told its client left
(its parser stops and closes its files) and the client is answered 408 or 413 in one line, on a connection
then closed; nothing waits on it any longer. A client that really leaves is only counted, never logged."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Send

from tumorcls.serve.config import megabytes

_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # the metrics label
    message: str


def is_client_disconnect(exc: BaseException) -> bool:
    """A ClientDisconnect, alone or as every member of an exception group (anyio task groups wrap it)."""
    if isinstance(exc, ClientDisconnect):
        return True
    members = getattr(exc, "exceptions", None)
    return bool(members) and all(is_client_disconnect(e) for e in members)


class GuardedBody:
    """Wraps one request's ``receive``; ``refusal`` is set once the body broke a rule."""

    def __init__(self, receive: Receive, limit: int, read_timeout_s: float, idle_timeout_s: float) -> None:
        self._receive = receive
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.deadline = time.monotonic() + read_timeout_s
        self.received = 0
        self.complete = False
        self.client_left = False
        self.response_started = False
        self.refusal: Refusal | None = None

    def _refuse(self, refusal: Refusal) -> Message:
        self.refusal = refusal
        return _DISCONNECT

    async def receive(self) -> Message:
        if self.complete or self.refusal is not None or self.client_left:
            return await self._receive()  # after the body: the route waits for a disconnect, as long as it likes
        wait = min(self.idle_timeout_s, self.deadline - time.monotonic())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(self._receive(), wait)
        except asyncio.TimeoutError:
            return self._refuse(self._too_slow())
        if message["type"] == "http.disconnect":
            self.client_left = True
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                return self._refuse(Refusal(413, "size", f"request body larger than {megabytes(self.limit)}"))
            self.complete = not message.get("more_body", False)
        return message

    def _too_slow(self) -> Refusal:
        if time.monotonic() >= self.deadline:
            why = f"the request body did not arrive within {self.read_timeout_s:g} s"
        else:
            why = f"the request body stalled (no data for {self.idle_timeout_s:g} s)"
        return Refusal(408, "slow body", why)

    async def read_all(self) -> bytes:
        """The whole body (for routes whose body is checked before they see it); ClientDisconnect if it broke a
        rule or the client left."""
        parts = []
        while not self.complete:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            parts.append(message.get("body", b""))
        return b"".join(parts)

    def replaying(self, body: bytes) -> Receive:
        """A ``receive`` that gives ``body`` (already read) first, then waits as ``receive`` does."""
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return pending.pop() if pending else await self.receive()

        return receive

    def sending(self, send: Send) -> Send:
        """The route's ``send``, silenced once the body was refused (the refusal is the answer)."""

        async def guarded(message: Message) -> None:
            if self.refusal is not None:
                return
            if message["type"] == "http.response.start":
                self.response_started = True
            await send(message)

        return guarded
