"""A bounded soak of `cmmsf-run serve`: mixed good and bad requests over HTTP and gRPC, memory sampled.

Starts the server on free loopback ports, then N clients send, for --minutes, a rotating mix:
typical tensors (answered), tensors past the build profile (refused with the limit named), a real clip
(the shipped MOSI wav, else a generated tone: a record), corrupt bytes and an empty clip (error records).
Every answer is checked against what that kind must get; a request with no answer before its timeout is
lost. The serve process tree's resident memory is sampled every few seconds: the last minute's median
must stay within --rss-tolerance of the second minute's (the first is warm-up).

    python scripts/serve_soak.py --minutes 10 --clients 8 [--engines DIR] [--json soak.json]

Exit 1 if anything was wrong or lost, or memory grew past the tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.export.default_engines import ensure_default_engines
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.serving.load_test import typical_request
from cmmsf.runtime.serving.local_server import LocalServer
from cmmsf.runtime.serving.processes import tree_rss_mb
from cmmsf.runtime.serving.client import ServerClient, ServerRefused

MOSI_WAV = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi" / "clips" / "03bSnISJMiM_1.wav"
KINDS = ("tensors", "too long", "clip", "corrupt", "empty")
WARM_UP_S = 60.0


def a_clip() -> bytes:
    if MOSI_WAV.is_file():
        return MOSI_WAV.read_bytes()
    from tests.media import write_wav

    path = Path(__file__).resolve().parents[1] / ".soak-tone.wav"
    data = write_wav(path, seconds=2.0).read_bytes()
    path.unlink()
    return data


def send(client: ServerClient, kind: str, requests: dict) -> str:
    """One request of `kind`; "ok" when the answer is what that kind must get, else what went wrong."""
    try:
        if kind == "tensors":
            out = client.tensors(requests["tensors"])
            return "ok" if np.isfinite(out["score"]).all() else "wrong: non-finite score"
        if kind == "too long":
            client.tensors(requests["too long"])
            return "wrong: an over-long request was answered"
        record = client.clip(requests[kind], f"{kind}.wav")
        wanted = "score" if kind == "clip" else "error"
        return "ok" if wanted in record else f"wrong: {kind} gave {sorted(record)}"
    except ServerRefused as err:
        return "ok" if kind == "too long" and "at most" in str(err) else f"wrong: {err}"
    except Exception as err:  # noqa: BLE001 - a timeout is a lost request, the rest is counted as wrong
        text = str(err)
        return "lost" if "timed out" in text.lower() or "deadline" in text.lower() else f"wrong: {text[:200]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--rss-tolerance", type=float, default=0.2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=150)
    engines = args.engines or ensure_default_engines(console)
    folder = EngineFolder.open(engines)
    from cmmsf.sample_inputs import make_inputs

    top = folder.profile.max_len
    requests = {"tensors": typical_request(engines),
                "too long": make_inputs(folder.config, batch=1, text_len=8, audio_len=3 * top["audio"],
                                        video_len=4, seed=2),
                "clip": a_clip(), "corrupt": b"\x00 not a clip " * 200, "empty": b""}
    outcomes: Counter = Counter()
    per_kind: Counter = Counter()
    wrong: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    samples: list[tuple[float, float]] = []
    with LocalServer(engines, "--max-batch", "8", "--asr", "auto") as server:
        start = time.monotonic()

        def client(n: int) -> None:
            connection = ServerClient(server.grpc if n % 2 else server.http, timeout_s=60)
            turn = n
            while not stop.is_set():
                kind = KINDS[turn % len(KINDS)]
                turn += 1
                result = send(connection, kind, requests)
                with lock:
                    outcomes["ok" if result == "ok" else result.split(":")[0]] += 1
                    per_kind[kind] += 1
                    if result != "ok" and len(wrong) < 10:
                        wrong.append(f"{kind}: {result}")
            connection.close()

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        while time.monotonic() - start < args.minutes * 60:
            samples.append((time.monotonic() - start, tree_rss_mb(server.process.pid)))
            console.print(f"{samples[-1][0]:6.0f} s  rss {samples[-1][1]:7.0f} MB  answered {sum(outcomes.values())}",
                          highlight=False)
            time.sleep(args.sample_s)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    after = [rss for t, rss in samples if t >= WARM_UP_S] or [samples[-1][1]]
    # flat = the last minute's median against the second minute's: a trend, not one sample's noise
    level = statistics.median([rss for t, rss in samples if WARM_UP_S <= t < 2 * WARM_UP_S] or after[:1])
    end = statistics.median([rss for t, rss in samples if t >= samples[-1][0] - WARM_UP_S])
    growth = end / level - 1
    table = Table(title=f"soak: {args.minutes:g} min, {args.clients} clients over HTTP and gRPC")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("ok", "wrong", "lost"):
        table.add_row(key, str(outcomes.get(key, 0)))
    table.add_row("requests by kind", ", ".join(f"{k} {per_kind[k]}" for k in KINDS))
    table.add_row("rss, 2nd minute (median)", f"{level:.0f} MB")
    table.add_row("rss, last minute (median)", f"{end:.0f} MB")
    table.add_row("rss past 1 min (min / max)", f"{min(after):.0f} / {max(after):.0f} MB")
    table.add_row("growth", f"{growth * 100:+.1f}% (tolerance {args.rss_tolerance * 100:.0f}%)")
    table.add_row("server exit code", str(server.returncode))
    console.print(table)
    for line in wrong:
        console.print(f"[red]{line}[/]", highlight=False)
    if args.json:
        args.json.write_text(json.dumps({"outcomes": dict(outcomes), "per_kind": dict(per_kind), "samples": samples,
                                         "growth": growth, "returncode": server.returncode, "wrong": wrong},
                                        indent=1) + "\n")
    failed = outcomes.get("wrong", 0) + outcomes.get("lost", 0) or growth > args.rss_tolerance or server.returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
