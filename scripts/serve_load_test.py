"""Dynamic batching on and off, side by side: the figures of README's "Scaling out".

Starts `cmmsf-run serve` on free loopback ports twice (`--max-batch 8`, then `--max-batch 1`, which
turns batching off), load-tests each over HTTP and gRPC with the same clients and requests, and
prints both tables and the throughput ratio at the highest client count.

    python scripts/serve_load_test.py --clients 1,8 --requests 200 [--model clip --clip FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from cmmsf.export.default_engines import ensure_default_engines
from cmmsf.runtime.serving.load_test import LoadOptions, load_row, load_table, typical_request
from cmmsf.runtime.serving.local_server import LocalServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, default=None)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", choices=("tensors", "clip"), default="tensors")
    parser.add_argument("--clip", type=Path, help="the clip every request sends (with --model clip)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write every row as JSON")
    args = parser.parse_args()
    console = Console(width=150)
    engines = args.engines or ensure_default_engines(console)
    opts = LoadOptions(urls=[], model=args.model, clients=[int(c) for c in args.clients.split(",")],
                       requests=args.requests, tensors=typical_request(engines))
    if args.model == "clip":
        opts.clip, opts.clip_id = args.clip.read_bytes(), args.clip.name
    rows: dict[str, list[dict]] = {}
    for label, max_batch in (("batching", args.max_batch), ("no batching", 1)):
        with LocalServer(engines, "--max-batch", str(max_batch), "--asr", "auto") as server:
            rows[label] = [load_row(url, clients, opts) for url in (server.http, server.grpc)
                           for clients in opts.clients]
        console.print(load_table(rows[label], title=f"{label} (--max-batch {max_batch})"))
    top = max(opts.clients)
    for protocol in ("http", "grpc"):
        on, off = ([r for r in rows[k] if r["clients"] == top and r["url"].startswith(protocol)][0]
                   for k in ("batching", "no batching"))
        console.print(f"{protocol}, {top} clients: {on['throughput_rps']:.1f} vs {off['throughput_rps']:.1f} req/s, "
                      f"dynamic batching ×{on['throughput_rps'] / off['throughput_rps']:.2f} "
                      f"(p50 {on['p50']:.0f} vs {off['p50']:.0f} ms)", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    failed = sum(r["errors"] + r["lost"] for rs in rows.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
