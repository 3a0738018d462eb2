"""Run the app under uvicorn: in the foreground for `tumorcls serve` (until SIGINT or SIGTERM, what systemd, Docker
and Kubernetes send), or from a thread for tests and benchmarks. Stopping drains: the socket stops accepting,
requests in flight get ``drain_s`` to finish (Gradio's event streams are ended first, so an open page does not hold
the shutdown), then the model worker stops and the temp folder is removed; the exit status is 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from tumorcls.errors import TumorclsError
from tumorcls.serve.app import ServedApp, build_app
from tumorcls.serve.config import ServeConfig, exposure_warning
from tumorcls.serve.protocol import with_header_timeout


class Stopped(Exception):
    """SIGTERM arrived: stop as after Ctrl-C."""


def _stop(_signum: int, _frame: Any) -> None:
    raise Stopped


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app when shutdown begins."""

    def __init__(self, config: uvicorn.Config, served: ServedApp) -> None:
        super().__init__(config)
        self.served = served

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for stop in self.served.on_shutdown:
            stop()
        await super().shutdown(sockets)


def uvicorn_server(served: ServedApp, config: ServeConfig) -> DrainingServer:
    settings = uvicorn.Config(
        served.app,
        host=config.host,
        port=config.port,
        log_level="warning",
        http=with_header_timeout(config.idle_timeout_s),
        timeout_keep_alive=max(1, round(config.keep_alive_s)),
        timeout_graceful_shutdown=config.drain_s,  # type: ignore[arg-type] - seconds, a float is used as such
    )
    return DrainingServer(settings, served)


def bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(config: ServeConfig) -> None:
    """Run in the foreground until SIGINT or SIGTERM; prints the URL once the socket is bound."""
    warning = exposure_warning(config)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a client's malformed body: answered 400, not logged
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        served = build_app(config)
        try:
            asyncio.run(_run_and_announce(uvicorn_server(served, config), config))
        except (KeyboardInterrupt, Stopped):  # uvicorn has drained, then re-raised the signal
            pass
        finally:
            served.close()
    except Stopped:  # while the model was loading
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _run_and_announce(server: uvicorn.Server, config: ServeConfig) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        url = bound_url(server, config.host)
        print(f"tumorcls serve: {url}/ (page)  {url}/api/predict (API)  {url}/openapi.json (schema)", flush=True)
    await task


@dataclass
class Running:
    url: str
    served: ServedApp


@contextlib.contextmanager
def running(config: ServeConfig) -> Iterator[Running]:
    """Serve from a background thread (tests, benchmarks); yields its URL and app, stops on exit."""
    served = build_app(config)
    server = uvicorn_server(served, config)
    thread = threading.Thread(target=server.run, name="tumorcls-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise TumorclsError(f"the server did not start on {config.host}:{config.port}")
            time.sleep(0.05)
        yield Running(bound_url(server, config.host), served)
    finally:
        server.should_exit = True
        thread.join(timeout=config.drain_s + 10)
        served.close()


@contextlib.contextmanager
def serving_in_thread(config: ServeConfig) -> Iterator[str]:
    """As ``running``, yielding the base URL only."""
    with running(config) as server:
        yield server.url
