"""`cmmsf-run stream --view`: the live page in a real headless browser, slow viewers, the port's life."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.inputs.video import FaceBox
from cmmsf.runtime.view import ViewServer

from .media import write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
runner = CliRunner()


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def read_events(sock: socket.socket, until: Callable[[str, dict], bool],
                timeout_s: float = 30.0) -> list[tuple[str, dict]]:
    """Server-Sent Events from a raw socket until a *complete* event satisfies `until` (a large
    frame arrives in many chunks: only the last one ends it with the blank line)."""
    sock.settimeout(timeout_s)
    data = b""
    while True:
        events = [(kind.decode(), json.loads(body))
                  for kind, body in re.findall(rb"event: (\w+)\ndata: (.*)\n\n", data)]
        if any(until(kind, body) for kind, body in events):
            return events
        chunk = sock.recv(1 << 20)
        if not chunk:
            return events
        data += chunk


def test_a_slow_viewer_gets_every_window_and_only_the_latest_frames_without_holding_the_pipeline():
    """A client that does not read while 150 large frames are shown: the pipeline's calls all return
    (none waits on the socket), the viewer then gets every window in order, far fewer frames than were
    shown, and the last frame shown; closing the view closes its port."""
    view = ViewServer("127.0.0.1", 0, max_fps=1e9)
    view.start({"source": "test"})
    client = socket.create_connection(("127.0.0.1", view.port))
    client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 10
    while not view.watched and time.monotonic() < deadline:
        time.sleep(0.02)
    assert view.watched
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # noise: JPEGs of about 200 kB
    view.write({"id": "first", "score": 0.5})
    shown = 150
    for i in range(shown):
        view.frame(i / 10, np.roll(noise, i, axis=1), FaceBox(320, 240, 100))
    view.write({"id": "last", "score": -0.25})
    view.frame(99.0, noise, None)
    events = read_events(client, lambda kind, body: kind == "frame" and body["t"] == 99.0)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "hello"
    assert [body["id"] for kind, body in events if kind == "window"] == ["first", "last"]
    frames = [body for kind, body in events if kind == "frame"]
    assert 1 <= len(frames) < shown / 2, len(frames)
    assert frames[-1]["t"] == 99.0 and frames[-1]["face"] is None
    expected = {"x": 270 / 640, "y": 190 / 480, "w": 100 / 640, "h": 100 / 480}  # fractions of the frame
    assert frames[0]["face"] == {k: pytest.approx(v, abs=1e-4) for k, v in expected.items()}
    assert frames[0]["jpeg"].startswith("data:image/jpeg;base64,")
    view.close()
    client.close()
    assert port_is_closed(view.port)


def test_a_late_viewer_gets_the_history_and_the_latest_frame():
    view = ViewServer("127.0.0.1", 0)
    view.start({"source": "clip.mp4", "window_s": 4.0})
    view.write({"id": "0.00-4.00", "score": 1.25})
    view.frame(3.5, np.full((48, 64, 3), 128, np.uint8), None)  # nobody watches: still kept for later
    view.finish({"windows": 1})
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", view.port)) as client:
        client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        events = read_events(client, lambda kind, body: kind == "frame")
    assert [kind for kind, _ in events] == ["hello", "window", "summary", "frame"]
    assert events[1][1]["score"] == 1.25 and events[3][1]["t"] == 3.5
    view.close()
    assert port_is_closed(view.port)


def test_a_taken_view_port_is_one_red_line_before_anything_loads(tiny_engines, tmp_path):
    video = write_video(tmp_path / "talk.mp4", seconds=1.0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = runner.invoke(run_app, ["stream", str(video), "--engines", str(tiny_engines), "--view",
                                         "--view-port", str(port), "--no-view-open"])
    assert result.exit_code == 1
    assert f"cannot serve the view on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
    assert "backend:" not in result.output  # the port was checked before the engines loaded


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_live_page_shows_each_windows_score_gates_and_words_in_a_real_browser(tiny_engines, tmp_path):
    """`stream --view --realtime` on a generated clip: headless chromium watches it live and the page
    shows a window's score, its gates and the transcript's words, the face box's frame and the summary;
    Ctrl-C then ends the command cleanly and the port closes."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    video = write_video(tmp_path / "talk.mp4", seconds=4.0, size=120, frame_size=(320, 240))
    (tmp_path / "talk.txt").write_text("what a wonderful bright morning")
    out = tmp_path / "windows.jsonl"
    command = [sys.executable, "-m", "cmmsf.cli", "stream", str(video), "--engines", str(tiny_engines),
               "--asr", "off", "--window", "2", "--hop", "1", "--realtime", "--out", str(out),
               "--view", "--view-port", "0", "--no-view-open", "--keep-view"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   # Ctrl-C must reach it even when the tests run as a background job (whose
                                   # children inherit SIGINT ignored, and Python keeps it so)
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, url = time.monotonic() + 120, None
        while url is None:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            url = next(iter(re.findall(r"view: (http://127\.0\.0\.1:\d+/)", log.read_text())), None)
            time.sleep(0.1)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
            try:
                page = browser.new_page()
                page.goto(url, timeout=30_000)
                page.wait_for_selector("#summary:not([hidden])", timeout=60_000)
                table = page.inner_text("#windows")
                gates = page.inner_text("#gates")
                note = page.inner_text("#frame-note")
                summary = page.inner_text("#summary")
                timeline_windows = page.locator("#timeline text").all_text_contents()
            finally:
                browser.close()
        windows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(windows) == 3 and all("score" in w for w in windows)
        for w in windows:  # every window's span and score, as the page writes them (+1.23 / −1.23)
            score = f"{'+' if w['score'] >= 0 else '−'}{abs(w['score']):.2f}"
            assert f"{w['start_s']:.2f}–{w['end_s']:.2f}" in table and score in table
            assert score in timeline_windows
        last = windows[-1]
        for modality in ("text", "audio", "video"):
            assert f"{last['gates'][modality]:.3f}" in gates
        assert "wonderful" in table
        assert "face box" in note  # the drawn face was found and its box drawn over the frame
        assert "real-time factor" in summary and "video_encoder" in summary
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    assert port_is_closed(port)
