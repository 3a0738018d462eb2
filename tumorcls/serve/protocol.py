"""uvicorn's HTTP protocol with a deadline on a request's headers. uvicorn times out an idle keep-alive connection,
but not a new connection that sends nothing, nor headers sent a byte at a time: each would hold a connection for
ever. Here a connection whose request headers are not complete within the timeout is answered 408 and closed
(the body's own deadlines are body_guard's)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from tumorcls.serve.error_shape import error_body


def with_header_timeout(timeout_s: float, base: type[asyncio.Protocol] = AutoHTTPProtocol) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's protocol ``base`` (httptools or h11) that closes slow-header connections."""

    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        header_timeout_s = timeout_s

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._timed_cycle = None
            self._header_timer: asyncio.TimerHandle | None = None
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and cycle is not self._timed_cycle:  # a new request's headers are complete
                self._timed_cycle = cycle
                self._disarm()
            elif self._header_timer is None and (cycle is None or cycle.response_complete):
                self._arm()  # the next request has begun, its headers not complete yet

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            body = error_body(f"the request headers did not arrive within {self.header_timeout_s:g} s")
            head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            self.transport.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
            self.transport.close()

    return HeaderDeadline
