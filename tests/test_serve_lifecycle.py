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
from cmmsf.runtime.serving.processes import descendants, mapped_shm  # noqa: E402
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


def run_folder(pid: int) -> Path | None:
    import tempfile

    return next(Path(tempfile.gettempdir()).glob(f"cmmsf-serve-{pid}-*"), None)


def gone(pids: list[int], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists()]:
            return True
        time.sleep(0.2)
    return False


def test_readiness_turns_true_once_when_every_model_is_loaded(tiny_engines):
    """Probed every 20 ms from the start: no answer, then 200, never 400 in between (issue 40 item 5)."""
    import subprocess
    import sys
    import urllib.request

    from cmmsf.runtime.serving.local_server import free_port

    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen([sys.executable, "-m", "cmmsf.cli", "serve", "--engines", str(tiny_engines),
                                "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                                "--metrics-port", str(ports[2])], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    codes: list[int] = []
    try:
        deadline, first_ready = time.monotonic() + 180, None
        while time.monotonic() < deadline and (first_ready is None or time.monotonic() - first_ready < 3):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready", timeout=2) as answer:
                    code = answer.status
            except urllib.error.HTTPError as err:
                code = err.code
            except OSError:
                code = 0  # not listening yet
            if not codes or codes[-1] != code:
                codes.append(code)
            if code == 200 and first_ready is None:
                first_ready = time.monotonic()
            assert process.poll() is None
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert codes[-1] == 200 and codes.count(200) == 1 and set(codes) <= {0, 200}, codes


def test_kill_9_of_serve_leaves_no_process_no_shared_memory_and_no_folder(tiny_engines, before):
    """The OOM killer or `docker kill` on serve itself (issue 40 item 6): its reaper stops the children
    and removes the run's segments and folder."""
    with LocalServer(tiny_engines) as server:
        started(server)
        pid = server.process.pid
        children = descendants(pid)
        folder = run_folder(pid)
        assert folder is not None and any(name.startswith(f"pytrtion{pid}-") for name in os.listdir("/dev/shm"))
        os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        assert gone(children), [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in children
                                if Path(f"/proc/{p}").exists()]
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not folder.exists()
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"pytrtion{pid}-")]
    assert leftovers(*before) == {"shm": [], "model folders": []}


def test_the_next_serve_cleans_up_after_one_killed_with_its_reaper(tiny_engines, before):
    with LocalServer(tiny_engines) as server:
        started(server)
        pid = server.process.pid
        children = descendants(pid)
        folder = run_folder(pid)
        for child in children + [pid]:  # everything at once, as `kill -9 -- -<group>` plus the reaper
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.process.wait(timeout=30)
        assert gone(children)
    assert folder.exists()  # nobody was left to remove it
    with LocalServer(tiny_engines) as successor:
        started(successor)
        assert "earlier server(s) that were killed" in " ".join(successor.output().split())  # this one, at least
    assert not folder.exists() and successor.returncode == 0
    assert leftovers(*before) == {"shm": [], "model folders": []}
