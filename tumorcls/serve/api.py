"""The HTTP API: POST /api/predict (multipart files -> per-file classes and probabilities), GET /api/model and
GET /healthz. Bad input is answered with a 4xx and one line, never a 500; the model runs through the engine."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tumorcls.serve.config import ServeConfig, megabytes
from tumorcls.serve.engine import InferenceEngine
from tumorcls.serve.uploads import FIELD, RefusedRequest, read_uploads

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
            "413": {"description": f"a file over {megabytes(config.max_file_bytes)}, or the body too large", **_ERROR},
            "415": {"description": "the body is not multipart/form-data", **_ERROR},
        },
    }


def api_router(engine: InferenceEngine, config: ServeConfig, card: dict[str, Any]) -> APIRouter:
    router = APIRouter()
    reading = asyncio.Semaphore(config.max_pending)  # bodies held in memory at once

    @router.get("/healthz", summary="Liveness: the model is loaded")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "backend": card["backend"], "model": card["model"]}

    @router.get("/api/model", summary="The served model: class names, input spec, metadata")
    def model() -> dict[str, Any]:
        return card

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
        async with reading:
            uploads = await read_uploads(request, config)
            results = await run_in_threadpool(engine.classify, uploads)
        return JSONResponse({"model": card, "predictions": [r.as_dict(engine.class_names) for r in results]})

    return router


def install_error_handlers(app: FastAPI) -> None:
    """A refusal becomes its 4xx with ``{"error": "<one line>"}``."""

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RefusedRequest)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    app.add_exception_handler(RefusedRequest, refused)
