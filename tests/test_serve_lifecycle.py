"""`cmmsf-run serve` dies and stops like a server (issue 17, item 5): a killed tritonserver is one error
line and exit 1, a SIGTERM under load answers or cleanly refuses every request, and nothing is left in
/dev/shm, /tmp or the process table. Real servers on free loopback ports; every wait is bounded."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.media import write_video

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton: pip install -e '.[serve]'")
pytest.importorskip("tritonclient", reason="serving needs tritonclient: pip install -e '.[serve]'")

from cmmsf.sample_inputs import make_inputs  # noqa: E402
from cmmsf.runtime.engine_folder import EngineFolder  # noqa: E402
from cmmsf.runtime.serving.local_server import LocalServer  # noqa: E402
from cmmsf.runtime.serving.lifecycle import descendants, mapped_shm  # noqa: E402
from cmmsf.runtime.serving.client import ServerClient, ServerRefused  # noqa: E402

OURS = ('name: "cmmsf_tensors"', 'name: "cmmsf_clip"')
DROPPED = ("Stream removed", "Socket closed", "connection closed", "Connection reset", "RemoteDisconnected",
           "Broken pipe", "timed out", "Deadline Exceeded")
"""How a request cut off in flight fails (what SIGTERM did before: "connection closed.", "Stream removed
(Socket closed)"). An error *answer* (the server refusing, even Triton's own shutdown refusal) or a
connection refused after the server stopped listening is a clean failure."""


def leftovers(before_shm: set[str], before_tmp: set[Path]) -> dict[str, list]:
    """Shared memory and Triton model folders created since `before` that nothing uses."""
    shm = sorted(set(os.listdir("/dev/shm")) - before_shm - mapped_shm())
    folders = [f for f in set(Path("/tmp").glob("folder*")) - before_tmp
               if (f / "config.pbtxt").is_file() and (f / "config.pbtxt").read_text().startswith(OURS)]
    return {"shm": [s for s in shm if s.startswith(("psm_", "pytrtion"))], "model folders": sorted(folders)}


def started(server: LocalServer, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while "Ctrl-C stops" not in server.output():
        assert time.monotonic() < deadline and server.process.poll() is None, server.output()[-2000:]
        time.sleep(0.2)


@pytest.fixture
def before():
    return set(os.listdir("/dev/shm")), set(Path("/tmp").glob("folder*"))


def test_kill_9_of_tritonserver_is_one_line_exit_1_and_nothing_left(tiny_engines, before):
    with LocalServer(tiny_engines) as server:
        started(server)
        children = descendants(server.process.pid)
        triton = next(p for p in children if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
                      .endswith(b"/tritonserver"))
        os.kill(triton, signal.SIGKILL)
        server.process.wait(timeout=30)
    output = server.output()
    assert server.returncode == 1, output[-2000:]
    assert " ".join(output.split()).count("error: Triton Inference Server stopped on its own") == 1
    assert "Traceback" not in output and "Non-graceful" not in output
    assert not [p for p in children if Path(f"/proc/{p}").exists()], "a child outlived serve"
    assert leftovers(*before) == {"shm": [], "model folders": []}


def test_sigterm_under_load_answers_or_cleanly_refuses_every_request(tiny_engines, tmp_path, before):
    config = EngineFolder.open(tiny_engines).config
    tensors = make_inputs(config, batch=1, text_len=5, audio_len=20, video_len=5)
    clip = write_video(tmp_path / "c.mp4", seconds=1.0).read_bytes()
    outcomes: list[str] = []
    lock = threading.Lock()
    with LocalServer(tiny_engines, "--max-batch", "4") as server:
        started(server)
        children = descendants(server.process.pid)

        def client(n: int) -> None:
            connection = ServerClient(server.grpc if n % 2 else server.http, timeout_s=30)
            while True:
                try:
                    if n % 3:
                        connection.tensors(tensors)
                    else:
                        connection.clip(clip, "c.mp4", "some words")
                    outcome = "answered"
                except ServerRefused as err:
                    outcome = "refused: " + str(err)
                except Exception as err:  # noqa: BLE001 - classified below
                    outcome = "failed: " + str(err)
                with lock:
                    outcomes.append(outcome)
                if outcome != "answered":
                    return

        clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(3.0)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
        for thread in clients:
            thread.join(timeout=60)
    output = server.output()
    assert server.returncode == 0 and "server stopped" in output, output[-2000:]
    assert "exited with failure" not in output and "Non-graceful" not in output and "Traceback" not in output
    answered = outcomes.count("answered")
    ends = [o for o in outcomes if o != "answered"]
    assert answered > 20 and len(ends) == 8, outcomes[-10:]
    dropped = [o for o in ends if any(marker in o for marker in DROPPED)]
    assert not dropped, dropped  # every request was answered or refused, none cut off
    assert any("the server is stopping" in o for o in ends), ends  # the drain refused the late ones
    assert not [p for p in children if Path(f"/proc/{p}").exists()], "a child outlived serve"
    assert leftovers(*before) == {"shm": [], "model folders": []}
