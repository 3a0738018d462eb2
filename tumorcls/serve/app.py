"""One FastAPI app holding the HTTP API and the Gradio page (mounted with gr.mount_gradio_app), served by uvicorn;
Gradio is kept offline (no analytics, no version check, no share link, system fonts) and writes only to the
server's own temp folder, which is removed when the server stops."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tumorcls.errors import TumorclsError
from tumorcls.inference import load_model
from tumorcls.serve.api import api_router, install_error_handlers
from tumorcls.serve.config import ServeConfig, model_threads
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.explain import CamOverlays
from tumorcls.serve.model_card import describe_model

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

    app: FastAPI
    engine: InferenceEngine
    temp_dir: Path

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
    predictor = load_model(config.model, device=config.device, threads=model_threads(config.threads))
    temp_dir = Path(tempfile.mkdtemp(prefix="app-", dir=_temp_root()))
    gradio_dir = temp_dir / "page"
    gradio_dir.mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)  # this app's uploads: read by gradio when the page is built
    engine = InferenceEngine(predictor, config.tta, config.max_batch)
    try:
        return ServedApp(_assemble(config, engine, gradio_dir), engine, temp_dir)
    except BaseException:
        engine.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _assemble(config: ServeConfig, engine: InferenceEngine, gradio_dir: Path) -> FastAPI:
    import gradio as gr

    from tumorcls.serve.page import PageHandlers, build_page, example_files

    cams = _cam_overlays(config, engine)
    card = describe_model(engine.predictor, config.model, config.tta, cams is not None)
    app = FastAPI(
        title="tumorcls",
        summary="Brain MRI tumour classification (research tool, not a medical device)",
        description="POST images to /api/predict; the web page is at /.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(api_router(engine, config, card))
    examples = example_files(config.examples)
    handlers = PageHandlers(engine, config, card, cams, gradio_dir, frozenset(p.name for p in examples))
    page = build_page(handlers, examples)
    return gr.mount_gradio_app(
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
    )


def _uvicorn_server(app: FastAPI, config: ServeConfig) -> uvicorn.Server:

    return uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning"))


def bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(config: ServeConfig) -> None:
    """Run in the foreground until Ctrl-C; prints the URL once the socket is bound."""
    served = build_app(config)
    server = _uvicorn_server(served.app, config)

    async def run_and_announce() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            url = bound_url(server, config.host)
            print(f"tumorcls serve: {url}/ (page)  {url}/api/predict (API)  {url}/openapi.json (schema)", flush=True)
        await task

    try:
        asyncio.run(run_and_announce())
    except KeyboardInterrupt:  # uvicorn has shut down cleanly, then re-raised the signal
        pass
    finally:
        served.close()


@contextlib.contextmanager
def serving_in_thread(config: ServeConfig) -> Iterator[str]:
    """Serve from a background thread (tests, benchmarks); yields the base URL, stops on exit."""
    served = build_app(config)
    server = _uvicorn_server(served.app, config)
    thread = threading.Thread(target=server.run, name="tumorcls-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise TumorclsError(f"the server did not start on {config.host}:{config.port}")
            time.sleep(0.05)
        yield bound_url(server, config.host)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        served.close()
