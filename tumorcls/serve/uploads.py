"""Read the files of a multipart request within the server's limits, in memory, refusing as early as possible:
the declared length before reading, each file's size and the number of files while the body streams in. The
bytes held are taken from the server's body memory budget as they arrive (a slow client holds only what it has
sent, never a slot that others wait for), and given back when the request is answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from tumorcls.errors import TumorclsError
from tumorcls.serve.budget import MemoryBudget, ServerBusy
from tumorcls.serve.config import ServeConfig, megabytes

FIELD = "files"
BODY_COPIES = 2  # a body is held twice while parsed: the parser's in-memory file, and the bytes read from it


class RefusedRequest(TumorclsError):
    """A request the API will not process; ``status`` is the HTTP status that says why (a 4xx, or 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class BodyMemory:
    """The part of the body memory budget one request holds: taken chunk by chunk, given back at once."""

    def __init__(self, budget: MemoryBudget, wait_s: float) -> None:
        self.budget, self.wait_s, self.held = budget, wait_s, 0

    async def take(self, n: int) -> None:
        try:
            await self.budget.acquire_async(n, self.wait_s)
        except ServerBusy as exc:
            raise RefusedRequest(503, str(exc), {"Retry-After": "1"}) from None
        self.held += n

    def give_back(self) -> None:
        self.budget.release(self.held)
        self.held = 0


class _LimitedParser(MultiPartParser):
    """Starlette's parser with a size limit per file and a count of files, checked as the parts arrive; files
    are kept in memory (never spooled to disk), which the size limits bound."""

    def __init__(self, request: Request, config: ServeConfig, memory: BodyMemory) -> None:
        super().__init__(request.headers, _capped(request.stream(), config.max_request_bytes, memory), max_fields=16)
        self.config = config
        self.spool_max_size = config.max_file_bytes + 1
        self._part_bytes = 0
        self._n_files = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._part_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._part_bytes += end - start
        if self._part_bytes > self.config.max_file_bytes:
            raise _Refusal(413, f"a file is larger than the {megabytes(self.config.max_file_bytes)} limit per file")
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        super().on_part_end()
        if isinstance(self.items[-1][1], UploadFile):
            self._n_files += 1
            if self._n_files > self.config.max_files:
                raise _Refusal(400, f"too many files: at most {self.config.max_files} per request")


class _Refusal(MultiPartException):
    """Raised inside the parser's callbacks (so that it closes its files), turned into a RefusedRequest."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _capped(stream: AsyncIterator[bytes], limit: int, memory: BodyMemory) -> AsyncIterator[bytes]:
    """The body, refused once it grows past ``limit`` (a client may send no Content-Length); each chunk is paid
    for from the body memory before it is kept."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise RefusedRequest(413, f"request body larger than {megabytes(limit)}")
        await memory.take(BODY_COPIES * len(chunk))
        yield chunk


async def read_uploads(request: Request, config: ServeConfig, memory: BodyMemory) -> list[tuple[str, bytes]]:
    """The (file name, bytes) of every ``files`` part, in order; RefusedRequest for anything out of bounds."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise RefusedRequest(415, f"send the images as multipart/form-data, one '{FIELD}' field per file")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_request_bytes:
        raise RefusedRequest(413, f"request body larger than {megabytes(config.max_request_bytes)}")
    parser = _LimitedParser(request, config, memory)
    try:
        form = await parser.parse()
    except _Refusal as exc:
        raise RefusedRequest(exc.status, exc.message) from None
    except MultiPartException as exc:
        raise RefusedRequest(400, f"malformed multipart body ({exc.message})") from None
    try:
        files = [f for f in form.getlist(FIELD) if isinstance(f, UploadFile)]
        if not files:
            raise RefusedRequest(400, f"no files: send one or more images as multipart field '{FIELD}'")
        return [(f.filename or f"file{i + 1}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()
