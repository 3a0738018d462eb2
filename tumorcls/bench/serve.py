"""Load test of `tumorcls serve`: single-image POST /api/predict from client threads, per concurrency level.

    python -m tumorcls.bench.serve --model model.onnx [--requests 500] [--concurrency 1,8] [--json out.json]
    python -m tumorcls.bench.serve --url http://127.0.0.1:7860 --concurrency 1,8,16

Without --url it starts the server in a subprocess (its own interpreter, so the clients do not share its GIL) on a
free port of 127.0.0.1 and stops it at the end. Prints requests/s, p50/p95/max latency and the error count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tumorcls.bench.serve", description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, help="start a server for this model file (.onnx, .ckpt, .h5)")
    target.add_argument("--url", help="benchmark a server already running here")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated client thread counts (default 1,8)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first, per level")
    parser.add_argument("--image", type=Path, help="the image to send (default: a 512x512 synthetic JPEG)")
    parser.add_argument("--threads", type=int, help="--threads of the started server")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def synthetic_jpeg(side: int = 512, seed: int = 0) -> bytes:
    """A dark noisy slice with a bright disc, the size of the Kaggle images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.normal(40, 12, (side, side)).clip(0, 255)
    yy, xx = np.mgrid[0:side, 0:side]
    img[(yy - side * 0.3) ** 2 + (xx - side * 0.6) ** 2 < (side * 0.1) ** 2] = 210
    buffer = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


CLI = "import sys; from tumorcls.cli import main; sys.exit(main(sys.argv[1:]))"  # the `tumorcls` command


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started_server(model: Path, threads: int | None, timeout: float = 300.0) -> Iterator[str]:
    """`tumorcls serve` in a subprocess on a free port; yields its URL once /healthz answers."""
    port = _free_port()
    cmd = [sys.executable, "-c", CLI, "serve", "--model", str(model), "--port", str(port)]
    cmd += ["--threads", str(threads)] if threads else []
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the server did not start ({' '.join(cmd)})")
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # lets it delete its temp folder
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_level(url: str, payload: bytes, n_requests: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """``n_requests`` single-image POSTs from ``concurrency`` threads (one keep-alive client each)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(_: int) -> tuple[float, bool]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
            clients.append(local.client)
        start = time.perf_counter()
        try:
            response = local.client.post("/api/predict", files=[("files", ("scan.jpg", payload, "image/jpeg"))])
            ok = response.status_code == 200 and "class" in response.json()["predictions"][0]
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - start, ok

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(warmup)))
        started = time.perf_counter()
        results = list(pool.map(one, range(n_requests)))
        wall = time.perf_counter() - started
    for client in clients:
        client.close()
    latencies = sorted(seconds for seconds, _ in results)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": sum(not ok for _, ok in results),
        "requests_per_s": n_requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    heads = ("clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "max ms")
    lines = ["  ".join(f"{h:>{max(len(h), 7)}}" for h in heads)]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>7}  {r['requests']:>8}  {r['errors']:>7}  {r['requests_per_s']:>7.1f}  "
            f"{r['p50_ms']:>7.1f}  {r['p95_ms']:>7.1f}  {r['max_ms']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    payload = args.image.read_bytes() if args.image else synthetic_jpeg()
    with contextlib.ExitStack() as stack:
        url = args.url.rstrip("/") if args.url else stack.enter_context(started_server(args.model, args.threads))
        model = httpx.get(url + "/api/model", timeout=30).json()
        print(f"server {url}: {model['model']} ({model['backend']}); image {len(payload)} bytes", flush=True)
        rows = [run_level(url, payload, args.requests, c, args.warmup) for c in levels]
    print(format_table(rows))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_average": os.getloadavg(),
        "model": model,
        "results": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
