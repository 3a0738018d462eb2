"""One FastAPI app holding the HTTP API and the Gradio page (mounted with gr.mount_gradio_app), behind the gate
(host, origin, key, the page's files, body deadlines), the one error shape and the metrics. Gradio is kept offline
(no analytics, no version check, no share link, no run history, system fonts) and writes only to the server's own
temp folder, which is removed when the server stops; its uploads are swept."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from tumorcls.errors import TumorclsError
from tumorcls.inference import load_model
from tumorcls.serve.api import Budgets, api_router, install_error_handlers
from tumorcls.serve.auth import LOGIN_PATH, LOGOUT_PATH, ApiKey, login_page, sign_in, sign_out
from tumorcls.serve.config import ServeConfig, model_threads
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.error_shape import ErrorShape
from tumorcls.serve.explain import CamOverlays
from tumorcls.serve.gate import Gate
from tumorcls.serve.health import Readiness, health_router
from tumorcls.serve.memory import map_large_allocations
from tumorcls.serve.metrics import MetricsMiddleware, ServerMetrics
from tumorcls.serve.model_card import describe_model
from tumorcls.serve.page_files import PageFiles

OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",  # no Node server next to ours
    "DO_NOT_TRACK": "1",
}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # nothing to download, and no half-loaded glyphs
SYSTEM_MONO_FONTS = ["ui-monospace", "monospace"]


@dataclass
class ServedApp:
    """The app and what it holds: close() stops the model worker and deletes the temp folder."""

    app: ASGIApp  # what uvicorn runs: the gate, error shape and metrics around the FastAPI app
    engine: InferenceEngine
    temp_dir: Path
    page_folder: Path
    on_shutdown: list[Any]  # called when the server begins to stop (Gradio's event streams end then)

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _cam_overlays(config: ServeConfig, engine: InferenceEngine) -> CamOverlays | None:
    """Grad-CAM when asked (an error for a model without gradients), or by default where the model has it."""
    if config.cam is False:
        return None
    try:
        return CamOverlays(engine, config.cam_layer)
    except TumorclsError:
        if config.cam or config.cam_layer:
            raise
        return None


_process_root: Path | None = None


def _temp_root() -> Path:
    """This process's temp folder, removed at exit. Gradio is first imported with it as GRADIO_TEMP_DIR: it fixes
    some folders at import time, and they must not land outside, nor in an app's folder that close() removed."""
    global _process_root
    if _process_root is None:
        _process_root = Path(tempfile.mkdtemp(prefix="tumorcls-serve-"))
        atexit.register(shutil.rmtree, _process_root, ignore_errors=True)
        os.environ.update(OFFLINE_ENV, GRADIO_TEMP_DIR=str(_process_root))
        import gradio  # noqa: F401 - imported here, under the root, on purpose
    return _process_root


def build_app(config: ServeConfig) -> ServedApp:
    """Load the model once and build the app: API routes first, then the page at '/'."""
    config.check()
    map_large_allocations()
    predictor = load_model(config.model, device=config.device, threads=model_threads(config.threads))
    temp_dir = Path(tempfile.mkdtemp(prefix="app-", dir=_temp_root()))
    gradio_dir = temp_dir / "page"
    gradio_dir.mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)  # this app's uploads: read by gradio when the page is built
    budgets = Budgets(config)
    engine = InferenceEngine(predictor, config.tta, config.max_batch, config.max_pixels, budgets.decodes,
                             config.busy_wait_s)  # fmt: skip
    try:
        app, stops = _assemble(config, engine, budgets, gradio_dir)
        return ServedApp(app, engine, temp_dir, gradio_dir, stops)
    except BaseException:
        engine.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _lifespan(page: PageFiles, readiness: Readiness, every_s: float):  # noqa: ANN202 - a lifespan factory
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(every_s)
                await run_in_threadpool(page.sweep)

        sweeper = asyncio.create_task(sweep_forever())
        await readiness.check()  # the first probe batch, before the server says it is up
        try:
            yield
        finally:
            sweeper.cancel()

    return lifespan


def _login_routes(app: FastAPI, key: ApiKey | None) -> None:
    @app.get(LOGIN_PATH, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return login_page("wrong" in request.query_params) if key else RedirectResponse("/", status_code=303)

    @app.post(LOGIN_PATH, include_in_schema=False)
    async def login(request: Request) -> Response:
        return await sign_in(request, key) if key else RedirectResponse("/", status_code=303)

    @app.get(LOGOUT_PATH, include_in_schema=False)
    async def logout() -> Response:
        return sign_out()


def _assemble(
    config: ServeConfig, engine: InferenceEngine, budgets: Budgets, gradio_dir: Path
) -> tuple[ASGIApp, list[Any]]:
    cams = _cam_overlays(config, engine)
    card = describe_model(engine.predictor, config.model, config.tta, cams is not None)
    metrics = ServerMetrics(engine, [budgets.bodies, budgets.decodes])
    readiness = Readiness(engine)
    key = ApiKey(config.api_key) if config.api_key else None
    page = _build_page(config, engine, card, cams, gradio_dir)
    files = PageFiles(gradio_dir, page.upload_file_set, config)
    app = FastAPI(
        title="tumorcls",
        summary="Brain MRI tumour classification (research tool, not a medical device)",
        description="POST images to /api/predict; the web page is at /.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
        lifespan=_lifespan(files, readiness, min(60.0, config.upload_ttl_s / 4)),
    )
    # Starlette's CORS middleware, even with no origin: it also stops Gradio adding its own (which answers
    # localhost origins); with --cors-origin, those origins may call the API
    app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    install_error_handlers(app)
    routers = [health_router(readiness), api_router(engine, config, card, budgets, metrics)]
    for router in routers:
        app.include_router(router)
    app.add_api_route("/metrics", metrics.response, methods=["GET"], summary="Prometheus metrics")
    _login_routes(app, key)
    own_routes = [*app.routes, *(route for router in routers for route in router.routes)]
    _attach_page(app, page, config)
    files.note_examples()  # the examples' copies Gradio made: the page may name them
    gated = Gate(app, config, key, files, metrics, own_routes)
    return MetricsMiddleware(ErrorShape(gated), metrics), [lambda: _stop_page_streams(app)]


def _build_page(
    config: ServeConfig, engine: InferenceEngine, card: dict[str, Any], cams: CamOverlays | None, gradio_dir: Path
) -> Any:  # a gradio.Blocks: gradio is imported only once the temp root is set
    from tumorcls.serve.page import PageHandlers, build_page, example_files

    examples = example_files(config.examples)
    handlers = PageHandlers(engine, config, card, cams, gradio_dir, frozenset(p.name for p in examples))
    return build_page(handlers, examples, ttl_s=int(config.upload_ttl_s))


def _attach_page(app: FastAPI, page: Any, config: ServeConfig) -> None:
    import gradio as gr

    models = config.model if isinstance(config.model, tuple) else (config.model,)
    gr.mount_gradio_app(
        app,
        page,
        path="/",
        server_name=config.host,
        server_port=config.port,
        max_file_size=config.max_file_bytes,
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS),
        ssr_mode=False,
        mcp_server=False,
        footer_links=["api"],
        run_history=False,  # it would keep patients' scans in the browser's storage
        show_error=False,  # an exception's text may name server paths; the handlers give their own lines
        blocked_paths=[str(Path(m).resolve()) for m in models],
    )
    # Gradio checks the paths an event names (uploads only) once it believes it has launched, which mount_gradio_app
    # never says; the gate checks them first, and this turns Gradio's own check on behind it
    page.has_launched = True


def _stop_page_streams(app: FastAPI) -> None:
    """End Gradio's heartbeat streams (an open tab holds one), so that shutdown need not wait for them."""
    for route in app.routes:
        stop = getattr(getattr(route, "app", None), "stop_event", None)
        if stop is not None:
            stop.set()
