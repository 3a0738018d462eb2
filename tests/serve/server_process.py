"""`tumorcls serve` as a real process on 127.0.0.1 (its own temp folder, its stderr kept in a file), and raw sockets
that talk to it as slow or vanishing clients do."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLI = "import sys; from tumorcls.cli import main; sys.exit(main(sys.argv[1:]))"  # the `tumorcls` command
URL_LINE = re.compile(r"tumorcls serve: (http://127\.0\.0\.1:(\d+))/ \(page\)")


class ServerProcess:
    """`tumorcls serve --model MODEL --port 0 ARGS...`, started with TMPDIR=``folder``/tmp."""

    def __init__(self, model: Path, folder: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.tmp = folder / "tmp"
        self.tmp.mkdir(parents=True)
        self.stderr_path = folder / "stderr.txt"
        cmd = [sys.executable, "-c", CLI, "serve", "--model", str(model), "--port", "0", *args]
        environ = {**os.environ, "TMPDIR": str(self.tmp), **(env or {})}
        with open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=environ)
        line = self.process.stdout.readline()
        match = URL_LINE.match(line)
        if not match:
            self.process.kill()
            raise AssertionError(f"the server did not start: {line!r} {self.stderr()[-2000:]}")
        self.url, self.port = match.group(1), int(match.group(2))

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def page_folder(self) -> Path:
        (folder,) = self.tmp.glob("tumorcls-serve-*/app-*/page")
        return folder

    def vm(self, key: str) -> int:
        """VmRSS or VmHWM (the peak) of the server process, in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) // 1024

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def request_head(path: str, length: int, boundary: str = "x", host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def part_head(name: str, field: str = "files", boundary: str = "x") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart(files: list[tuple[str, bytes]], boundary: str = "x") -> bytes:
    body = b"".join(part_head(name, boundary=boundary) + data + b"\r\n" for name, data in files)
    return body + f"--{boundary}--\r\n".encode()


def connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, bytes, bool]:
    """(status, body, closed) of the one answer on ``sock``: it must come within ``timeout`` s, and the server
    then closes the connection (closed is True once it has)."""
    sock.settimeout(timeout)
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            status = int(data.split(b" ", 2)[1]) if data else 0
            return status, data.partition(b"\r\n\r\n")[2], True
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.partition(b"\r\n\r\n")[2], False


def nothing_received(sock: socket.socket) -> bool:
    """True while the server has sent nothing on ``sock`` (and not closed it)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # data, or b"" for a closed connection
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(10)
    return False
