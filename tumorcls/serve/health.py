"""Liveness and readiness, as orchestrators probe them (answered without the key, and naming nothing of the model):

- GET /healthz: the process answers HTTP (200 ``{"status": "ok"}``), nothing else is claimed;
- GET /readyz: the model worker is alive and has answered a probe batch (one black image, its probabilities
  checked) within the last PROBE_EVERY_S + PROBE_TIMEOUT_S seconds; 503 with the reason otherwise. A stale probe
  is renewed in the background, so the check itself answers at once (except for the very first one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tumorcls.errors import TumorclsError, first_line
from tumorcls.serve.engine import InferenceEngine

PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 10.0


class Readiness:
    """The last probe batch's outcome, renewed when stale."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine
        self.answered_at: float | None = None  # monotonic time of the last good probe
        self.seconds: float | None = None
        self.failure = "the model has not answered its probe batch yet"
        self._probe: asyncio.Task | None = None

    async def _run_probe(self) -> None:
        try:
            self.seconds = await run_in_threadpool(self.engine.probe, PROBE_TIMEOUT_S)
            self.answered_at = time.monotonic()
        except TumorclsError as exc:
            self.failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever the probe met, readiness says it in one line
            self.failure = f"the probe batch failed ({first_line(exc)})"

    async def check(self) -> str | None:
        """None when ready, else the one line saying why not."""
        if not self.engine.alive:
            return "the model worker has stopped"
        stale = self.answered_at is None or time.monotonic() - self.answered_at > PROBE_EVERY_S
        if stale and (self._probe is None or self._probe.done()):
            self._probe = asyncio.create_task(self._run_probe())
        if self.answered_at is None:
            await asyncio.wait({self._probe}, timeout=PROBE_TIMEOUT_S + 1)
            if self.answered_at is None:
                return self.failure
        age = time.monotonic() - self.answered_at
        if age > PROBE_EVERY_S + PROBE_TIMEOUT_S:
            return f"the model has not answered a probe batch for {age:.0f} s ({self.failure})"
        return None


def health_router(readiness: Readiness) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the model worker is alive and answered a probe batch")
    async def readyz() -> JSONResponse:
        why = await readiness.check()
        if why is not None:
            return JSONResponse({"error": why}, status_code=503)
        return JSONResponse({"status": "ready", "probe_seconds": round(readiness.seconds or 0.0, 6)})

    return router
