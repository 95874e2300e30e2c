"""`cmmsf-run stream --view`: a live page of the stream, served by Starlette on uvicorn in a thread.

The page (static files shipped in this package, nothing from a CDN) listens to Server-Sent Events on
`/events`. A viewer that connects late first gets what already happened (the stream's description and
every window so far), then the live events. The pipeline thread never waits on a viewer: it hands each
event to the server's event loop (`call_soon_threadsafe`) and goes on. Per viewer, window events queue
(one per hop: small), while frames are a single slot that a newer frame overwrites, so a slow browser
sees fewer frames and never holds the stream up. Frames are JPEG-encoded at most `max_fps` times a
second while someone watches (once a second otherwise, for whoever connects next).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cv2
import numpy as np

from cmmsf.inputs.video import FaceBox

from ..records import to_json

STATIC = Path(__file__).with_name("static")
FRAME_WIDTH = 640
"""Frames wider than this are scaled down before JPEG encoding (the page shows them at about this size)."""


def sse(kind: str, data: dict) -> bytes:
    """One Server-Sent Event: its name and one line of strict JSON (a window's record as results.jsonl
    holds it: runtime/records.py)."""
    return f"event: {kind}\ndata: {to_json(data)}\n\n".encode()


def frame_event(time_s: float, rgb: np.ndarray, box: FaceBox | None, quality: int = 70) -> bytes:
    """A frame as a JPEG data URL, with the face box (fractions of the frame) the model read, if any."""
    height, width = rgb.shape[:2]
    if width > FRAME_WIDTH:
        rgb = cv2.resize(rgb, (FRAME_WIDTH, round(height * FRAME_WIDTH / width)), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    face = None if box is None else {k: round(v, 4) for k, v in (
        ("x", (box.cx - box.side / 2) / width), ("y", (box.cy - box.side / 2) / height),
        ("w", box.side / width), ("h", box.side / height))}
    return sse("frame", {"t": round(time_s, 3), "face": face,
                         "jpeg": "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode()})


class Viewer:
    """One connected browser: its queue of events and its one-frame slot (loop thread only)."""

    def __init__(self, history: list[bytes], frame: bytes | None):
        self.events: deque[bytes] = deque(history)
        self.frame = frame
        self.wake = asyncio.Event()
        self.wake.set()


class Hub:
    """Who is watching and what they have been told (touched only in the event loop's thread)."""

    def __init__(self):
        self.history: list[bytes] = []
        self.last_frame: bytes | None = None
        """What a viewer who connects now sees first (after the stream ended too)."""
        self.viewers: set[Viewer] = set()
        self.closing = False

    def publish(self, event: bytes) -> None:
        self.history.append(event)
        for viewer in self.viewers:
            viewer.events.append(event)
            viewer.wake.set()

    def show(self, frame: bytes) -> None:
        self.last_frame = frame
        for viewer in self.viewers:
            viewer.frame = frame  # the newer frame replaces one this viewer has not taken yet
            viewer.wake.set()

    def close(self) -> None:
        self.closing = True
        for viewer in self.viewers:
            viewer.wake.set()

    async def follow(self) -> AsyncIterator[bytes]:
        viewer = Viewer(self.history, self.last_frame)
        self.viewers.add(viewer)
        try:
            yield b"retry: 2000\n\n"
            while True:
                await viewer.wake.wait()
                viewer.wake.clear()
                while viewer.events:
                    yield viewer.events.popleft()
                if viewer.frame is not None:
                    frame, viewer.frame = viewer.frame, None
                    yield frame
                if self.closing:
                    return
        finally:
            self.viewers.discard(viewer)


def listening_socket(address: str, port: int) -> socket.socket:
    """Bind the page's port now, in the caller's thread: a taken port is an OSError before anything loads."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot serve the view on {address}:{port}: {err.strerror}") from None
    sock.listen(64)
    return sock


class ViewServer:
    """The live page: a sink beside the JSON-lines writers (`start`, `write`, `frame`, `finish`, `close`)."""

    def __init__(self, address: str, port: int, max_fps: float = 10.0):
        self.address, self.max_fps = address, max_fps
        self.sock = listening_socket(address, port)
        self.port = self.sock.getsockname()[1]
        self.hub = Hub()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_frame = -1e9
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    def _app(self):
        from starlette.applications import Starlette
        from starlette.responses import FileResponse, StreamingResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        @asynccontextmanager
        async def lifespan(app):
            self._loop = asyncio.get_running_loop()
            yield
            self.hub.close()

        async def page(request):
            return FileResponse(STATIC / "index.html")

        async def events(request):
            return StreamingResponse(self.hub.follow(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        return Starlette(routes=[Route("/", page), Route("/events", events),
                                 Mount("/static", StaticFiles(directory=STATIC), name="static")],
                         lifespan=lifespan)

    def start(self, description: dict, ready_timeout_s: float = 10.0) -> None:
        """Serve in a daemon thread; return once the page answers. `description` is the first event."""
        import uvicorn

        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="cmmsf-view", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the view server did not start on {self.url}")
            time.sleep(0.02)
        self._call(self.hub.publish, sse("hello", description))

    def _call(self, fn, *args) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed between the check and the call: nobody to tell
                pass

    @property
    def watched(self) -> bool:
        return bool(self.hub.viewers)

    def write(self, record: dict) -> None:
        self._call(self.hub.publish, sse("window", record))

    def frame(self, time_s: float, rgb: np.ndarray, box: FaceBox | None) -> None:
        """Show a frame, unless one went out less than 1/max_fps ago (1 s while nobody watches: a late
        viewer still finds a recent frame)."""
        now = time.perf_counter()
        if now - self._last_frame < (1.0 / self.max_fps if self.watched else 1.0):
            return
        self._last_frame = now
        self._call(self.hub.show, frame_event(time_s, rgb, box))

    def finish(self, summary: dict) -> None:
        self._call(self.hub.publish, sse("summary", summary))

    def close(self, linger_s: float = 1.0) -> None:
        """Stop serving: viewers get what is queued (up to `linger_s`), then the port closes."""
        if self._server is None:
            self.sock.close()
            return
        deadline = time.monotonic() + linger_s
        self._call(self.hub.close)
        while self.hub.viewers and time.monotonic() < deadline:
            time.sleep(0.02)
        self._server.should_exit = True
        self._thread.join(timeout=linger_s + 5)
        self.sock.close()
        self._server = None
