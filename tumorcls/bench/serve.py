"""Load test of `tumorcls serve`: single-image POST /api/predict from client threads, per concurrency level, and
the same again with slow clients beside them (each sends a POST /api/predict whose body trickles in, a byte per
socket every 0.5 s, so it is never idle long enough to be cut, for the whole of --slow-hold).

    python -m tumorcls.bench.serve --model model.onnx [--requests 500] [--concurrency 1,8] [--json out.json]
    python -m tumorcls.bench.serve --model model.onnx --concurrency 1,8 --slow-clients 50 --slow-hold 20
    python -m tumorcls.bench.serve --url http://127.0.0.1:7860 --concurrency 1,8,16

Without --url it starts the server in a subprocess (its own interpreter, so the clients do not share its GIL) on a
free port of 127.0.0.1 and stops it at the end. Prints requests/s, p50/p95/max latency and the error count; with
--slow-clients, each level twice (without, then with the slow clients, timed while they are held: a level with them
stops sending after --slow-hold seconds), and how many slow clients the server still held at the end. With
TUMORCLS_API_KEY set, requests carry it.
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
    parser.add_argument("--slow-clients", type=int, default=0, help="also measure with this many slow clients")
    parser.add_argument("--slow-hold", type=float, default=20.0, help="seconds the slow clients are held (20)")
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


def _auth() -> dict[str, str]:
    key = os.environ.get("TUMORCLS_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def run_level(
    url: str, payload: bytes, n_requests: int, concurrency: int, warmup: int, max_seconds: float | None = None
) -> dict[str, Any]:
    """``n_requests`` single-image POSTs from ``concurrency`` threads (one keep-alive client each); with
    ``max_seconds``, no request starts after that."""
    local = threading.local()
    clients: list[httpx.Client] = []
    deadline = [float("inf")]

    def one(_: int) -> tuple[float, bool] | None:
        if time.perf_counter() > deadline[0]:
            return None
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60, headers=_auth())
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
        deadline[0] = started + max_seconds if max_seconds else float("inf")
        results = [r for r in pool.map(one, range(n_requests)) if r is not None]
        wall = time.perf_counter() - started
    for client in clients:
        client.close()
    return _summary(concurrency, results, wall)


def _summary(concurrency: int, results: list[tuple[float, bool]], wall: float) -> dict[str, Any]:
    latencies = sorted(seconds for seconds, _ in results) or [float("nan")]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": sum(not ok for _, ok in results),
        "requests_per_s": len(results) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


class SlowClients:
    """``n`` sockets whose POST /api/predict bodies trickle in (a byte each every 0.5 s) until closed."""

    def __init__(self, url: str, n: int) -> None:
        parts = httpx.URL(url)
        self.address = (parts.host, parts.port or 80)
        key = os.environ.get("TUMORCLS_API_KEY")
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.head = (
            f"POST /api/predict HTTP/1.1\r\nHost: {parts.host}:{self.address[1]}\r\n{auth}"
            "Content-Type: multipart/form-data; boundary=slow\r\nContent-Length: 10000000\r\n\r\n"
        ).encode()
        self.body = b'--slow\r\nContent-Disposition: form-data; name="files"; filename="s.jpg"\r\n\r\n' + b"z" * 10**6
        self.sockets = [socket.create_connection(self.address, timeout=10) for _ in range(n)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> SlowClients:
        for sock in self.sockets:
            sock.sendall(self.head)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        i = 0
        while not self._stop.wait(0.5):
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(self.body[i : i + 1])
            i += 1

    def still_held(self) -> int:
        """The slow clients the server has neither answered nor closed."""
        held = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                held += 1
            except OSError:
                pass
        return held

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


def run_levels(url: str, payload: bytes, args: argparse.Namespace, levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in levels:
        rows.append({**run_level(url, payload, args.requests, concurrency, args.warmup), "slow_clients": 0})
        if args.slow_clients:
            with SlowClients(url, args.slow_clients) as slow:
                time.sleep(1.0)  # all of them connected and sending
                row = run_level(url, payload, args.requests, concurrency, 0, max_seconds=args.slow_hold - 1.0)
                remaining = max(0.0, args.slow_hold - 1.0 - row["requests"] / max(row["requests_per_s"], 1e-9))
                time.sleep(remaining)  # hold them for the whole --slow-hold
                rows.append({**row, "slow_clients": args.slow_clients, "slow_still_held": slow.still_held()})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    heads = ("clients", "slow", "requests", "errors", "req/s", "p50 ms", "p95 ms", "max ms", "slow held")
    lines = ["  ".join(f"{h:>{max(len(h), 7)}}" for h in heads)]
    for r in rows:
        held = r.get("slow_still_held")
        lines.append(
            f"{r['concurrency']:>7}  {r.get('slow_clients', 0):>7}  {r['requests']:>8}  {r['errors']:>7}  "
            f"{r['requests_per_s']:>7.1f}  {r['p50_ms']:>7.1f}  {r['p95_ms']:>7.1f}  {r['max_ms']:>7.1f}  "
            f"{'' if held is None else held:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    payload = args.image.read_bytes() if args.image else synthetic_jpeg()
    with contextlib.ExitStack() as stack:
        url = args.url.rstrip("/") if args.url else stack.enter_context(started_server(args.model, args.threads))
        model = httpx.get(url + "/api/model", timeout=30, headers=_auth()).json()
        print(f"server {url}: {model['model']} ({model['backend']}); image {len(payload)} bytes", flush=True)
        rows = run_levels(url, payload, args, levels)
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
