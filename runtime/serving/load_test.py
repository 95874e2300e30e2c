"""`cmmsf-run bench --serve URL`: a load test of a running server with Triton's own client.

N concurrent clients (threads, each with its own connection) send a fixed number of requests in all;
each answer is checked against a reference (the first answer for tensors, the same record for a
clip). Reported per URL and client count: requests, ok, errors (server errors and wrong answers),
lost (no answer before the deadline), throughput, p50/p90/p99 latency, and the mean batch the server
executed (Triton's statistics: requests / executions), which shows dynamic batching at work.
Bounded in count and time; it never retries, so every failure is counted.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.inputs.errors import UsageError

from ..latency import percentiles
from .client import ServerClient
from .server import CLIP_MODEL, TENSORS_MODEL

MODELS = {"tensors": TENSORS_MODEL, "clip": CLIP_MODEL}
SCORE_TOLERANCE = 1e-4
"""Batched and unbatched runs of one input agree to float noise; more than this is a wrong answer."""


@dataclass(kw_only=True)
class LoadOptions:
    urls: list[str]
    model: str = "tensors"
    clients: list[int] = field(default_factory=lambda: [1, 8])
    requests: int = 200
    """Requests per row (URL × client count), shared among the clients."""
    timeout_s: float = 300.0
    """The whole row's deadline: requests unanswered by then count as lost."""
    tensors: dict[str, np.ndarray] | None = None
    """The batch-1 input each tensors request sends."""
    clip: bytes = b""
    clip_id: str = "clip"


def typical_request(engines: Path) -> dict[str, np.ndarray]:
    """A batch-1 `cmmsf_tensors` request at the engines' typical lengths (the profile's opt), as `bench` feeds."""
    from cmmsf.sample_inputs import make_inputs

    from ..engine_folder import EngineFolder

    folder = EngineFolder.open(engines)
    lengths = folder.typical_lengths
    return make_inputs(folder.config, 1, lengths["text"], lengths["audio"], lengths["video"], padded=False)


def _answer(client: ServerClient, opts: LoadOptions) -> float:
    """One request; returns the score it got (raises on a server error or an error record)."""
    if opts.model == "tensors":
        return float(client.tensors(opts.tensors)["score"][0])
    record = client.clip(opts.clip, opts.clip_id)
    if "error" in record:
        raise RuntimeError(record["error"])
    return float(record["score"])


def load_row(url: str, clients: int, opts: LoadOptions) -> dict[str, Any]:
    """`opts.requests` requests from `clients` threads against one URL."""
    local = threading.local()
    opened: list[ServerClient] = []
    lock = threading.Lock()

    def connection() -> ServerClient:
        if not hasattr(local, "client"):
            local.client = ServerClient(url, timeout_s=opts.timeout_s)
            with lock:
                opened.append(local.client)
        return local.client

    reference_client = ServerClient(url, timeout_s=opts.timeout_s)
    model = MODELS[opts.model]
    reference = _answer(reference_client, opts)  # also the warm-up
    before = reference_client.executions(model)
    latencies: list[float] = []
    errors: list[str] = []

    def one() -> None:
        begin = time.perf_counter()
        try:
            score = _answer(connection(), opts)
        except Exception as err:  # noqa: BLE001 - every failure is counted, none stops the test
            with lock:
                errors.append(f"{type(err).__name__}: {err}"[:300])
            return
        elapsed = time.perf_counter() - begin
        with lock:
            if abs(score - reference) > SCORE_TOLERANCE:
                errors.append(f"wrong answer: {score} instead of {reference}")
            else:
                latencies.append(elapsed)

    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load")
    futures = [pool.submit(one) for _ in range(opts.requests)]
    done, pending = wait(futures, timeout=opts.timeout_s)
    wall = time.perf_counter() - start
    for future in pending:
        future.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
    after = reference_client.executions(model)
    for client in [reference_client, *opened]:
        client.close()
    answered, executions = after[0] - before[0], after[1] - before[1]
    return {"url": url, "model": model, "clients": clients, "requests": opts.requests, "ok": len(latencies),
            "errors": len(errors), "lost": len(pending), "first_errors": errors[:3], "wall_s": round(wall, 3),
            "throughput_rps": len(latencies) / wall if wall else 0.0, **percentiles([s * 1e3 for s in latencies]),
            "mean_batch": answered / executions if executions else None}


def run_load(opts: LoadOptions, console: Console) -> list[dict[str, Any]]:
    """Every URL × client count, one after another; a table at the end."""
    if opts.model not in MODELS:
        raise UsageError(f"--serve-model must be tensors or clip, got {opts.model!r}")
    rows = []
    for url in opts.urls:
        probe = ServerClient(url)
        ready = probe.ready()
        probe.close()
        if not ready:
            raise ConnectionError(f"no ready Triton server at {url}; start one with `cmmsf-run serve`")
        for clients in opts.clients:
            console.print(f"{url} {MODELS[opts.model]}: {opts.requests} requests from {clients} clients…",
                          highlight=False)
            rows.append(load_row(url, clients, opts))
    console.print(load_table(rows))
    for row in rows:
        for error in row["first_errors"]:
            console.print(f"[red]{row['url']} {row['clients']} clients:[/] {error}", highlight=False)
    return rows


def load_table(rows: list[dict[str, Any]], title: str = "load test") -> Table:
    table = Table(title=title)
    for column in ("server", "model", "clients", "ok", "errors", "lost", "req/s", "p50 ms", "p90 ms", "p99 ms",
                   "mean batch"):
        table.add_column(column, justify="left" if column in ("server", "model") else "right")
    for r in rows:
        batch = "-" if r["mean_batch"] is None else f"{r['mean_batch']:.2f}"
        table.add_row(r["url"], r["model"], str(r["clients"]), f"{r['ok']}/{r['requests']}", str(r["errors"]),
                      str(r["lost"]), f"{r['throughput_rps']:.1f}", f"{r['p50']:.1f}", f"{r['p90']:.1f}",
                      f"{r['p99']:.1f}", batch)
    return table


def read_clip(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no such clip: {path}")
    return path.read_bytes()
