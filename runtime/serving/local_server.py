"""A `cmmsf-run serve` child process on free loopback ports: the harness of the serving tests and of
scripts/serve_load_test.py and scripts/serve_soak.py (load tests against a real server). A user starts
the server with the command itself."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cmmsf.runtime.serving.client import ServerClient
from cmmsf.runtime.serving.server import ServeError


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """`cmmsf-run serve` in a child process on free loopback ports: for tests and the load-test script.

    `with LocalServer(engines, "--max-batch", "8") as server:` waits until Triton reports ready (or
    the child dies: its output is in the error), then `server.http` / `server.grpc` are the URLs.
    Leaving the block sends Ctrl-C (SIGINT) and waits for a clean exit; `returncode` keeps the code.
    Triton's log lives in a temporary folder removed on exit."""

    def __init__(self, engines: Path, *args: str, ready_timeout_s: float = 180.0):
        self.engines, self.args, self.ready_timeout_s = engines, args, ready_timeout_s
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.http = f"http://127.0.0.1:{self.ports['http']}"
        self.grpc = f"grpc://127.0.0.1:{self.ports['grpc']}"
        self.metrics = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        self.returncode: int | None = None

    def __enter__(self) -> "LocalServer":
        self.log = tempfile.TemporaryFile()
        self.folder = tempfile.TemporaryDirectory(prefix="cmmsf-serve-")
        command = [sys.executable, "-m", "cmmsf.cli", "serve", "--engines", str(self.engines),
                   "--log-file", str(Path(self.folder.name) / "triton.log"),
                   "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
                   "--metrics-port", str(self.ports["metrics"]), *self.args]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        client, deadline = ServerClient(self.http), time.monotonic() + self.ready_timeout_s
        while not client.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.__exit__()
                raise ServeError(f"cmmsf-run serve did not become ready:\n{output[-3000:]}")
            time.sleep(0.5)
        client.close()
        return self

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        self.folder.cleanup()
