"""The HTTP API: POST /api/predict (multipart files -> per-file classes and probabilities) and GET /api/model.
Bad input is answered with a 4xx and one line, never a 500: a request whose body is too large or too slow, an
image whose header declares more pixels (or decode memory) than the server allows (413, before anything is
decoded); 503 when the server's memory for bodies or decoding stays taken by others. The model runs through the
engine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tumorcls.serve.budget import MemoryBudget, ServerBusy
from tumorcls.serve.config import ServeConfig, megabytes
from tumorcls.serve.engine import ImageTooLarge, InferenceEngine
from tumorcls.serve.metrics import ServerMetrics
from tumorcls.serve.uploads import FIELD, BodyMemory, RefusedRequest, read_uploads

_REFUSAL = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ERROR = {"content": {"application/json": {"schema": _REFUSAL}}}


def _openapi_extra(config: ServeConfig) -> dict[str, Any]:
    files = {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": config.max_files}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {FIELD: files}, "required": [FIELD]},
                }
            },
        },
        "responses": {
            "400": {"description": "no files, too many files, or a malformed body", **_ERROR},
            "401": {"description": "the server has an API key and the request did not carry it", **_ERROR},
            "408": {"description": "the body stalled or did not arrive in time", **_ERROR},
            "413": {
                "description": f"a file over {megabytes(config.max_file_bytes)}, the body too large, or an image "
                f"over {config.max_pixels} pixels or the decode memory",
                **_ERROR,
            },
            "415": {"description": "the body is not multipart/form-data", **_ERROR},
            "503": {"description": "the server's memory for bodies or decoding is in use: retry", **_ERROR},
        },
    }


class Budgets:
    """The two memory budgets an API request takes from: its body's bytes, then its largest decode."""

    def __init__(self, config: ServeConfig) -> None:
        self.bodies = MemoryBudget(config.body_memory, "body memory")
        self.decodes = MemoryBudget(config.decode_memory_bytes, "decode memory")


def api_router(
    engine: InferenceEngine, config: ServeConfig, card: dict[str, Any], budgets: Budgets, metrics: ServerMetrics
) -> APIRouter:
    router = APIRouter()

    @router.get("/api/model", summary="The served model: class names, input spec, metadata")
    async def model() -> dict[str, Any]:
        return card

    async def classify(uploads: list[tuple[str, bytes]]) -> list[Any]:
        try:
            need = await run_in_threadpool(engine.largest_cost, uploads)  # headers only
        except ImageTooLarge as exc:
            raise RefusedRequest(413, str(exc)) from None
        try:
            async with budgets.decodes.hold_async(need, config.busy_wait_s):
                return await run_in_threadpool(engine.classify, uploads, True)
        except ServerBusy as exc:
            raise RefusedRequest(503, str(exc), {"Retry-After": "1"}) from None

    @router.post(
        "/api/predict",
        summary=f"Classify images (multipart field '{FIELD}', repeated)",
        description=(
            f"Up to {config.max_files} files of at most {megabytes(config.max_file_bytes)} each (JPEG, PNG, DICOM). "
            "Each file gets its class, confidence and the probability of every class, or an error of its own."
        ),
        openapi_extra=_openapi_extra(config),
    )
    async def predict(request: Request) -> JSONResponse:
        memory = BodyMemory(budgets.bodies, config.busy_wait_s)
        try:
            results = await classify(await read_uploads(request, config, memory))
        finally:
            memory.give_back()
        failed = sum(r.probabilities is None for r in results)
        metrics.count_images(len(results) - failed, failed)
        return JSONResponse({"model": card, "predictions": [r.as_dict(engine.class_names) for r in results]})

    return router


def install_error_handlers(app: FastAPI) -> None:
    """A refusal becomes its status with ``{"error": "<one line>"}``."""

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RefusedRequest)
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(RefusedRequest, refused)
