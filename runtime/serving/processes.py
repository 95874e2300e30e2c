"""Processes and shared memory as /proc shows them (Linux): what the server's housekeeping and its reaper
both need, and nothing that starts or serves anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

SHM = Path("/dev/shm")


def command_line(pid: int | str) -> bytes | None:
    """A process's command line as /proc holds it (arguments NUL-separated), None once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (serve, tritonserver, the stubs), in MB."""
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
    return total


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _reap() -> None:
    """Collect exited children (ours, and the orphans we adopted as subreaper) so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_processes(pids: list[int], grace_s: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace_s`, for each process still alive; returns those killed hard."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap()
        time.sleep(0.05)
    hard = [p for p in pids if alive(p)]
    for pid in hard:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    _reap()
    return hard


def mapped_shm() -> set[str]:
    """Names under /dev/shm that some live process has mapped (read from /proc/*/maps)."""
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:
            continue
        names.update(line.rsplit("/dev/shm/", 1)[1].split(" (deleted)")[0]
                     for line in text.splitlines() if "/dev/shm/" in line)
    return names
