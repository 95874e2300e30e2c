"""Latency figures, one way for the whole package: percentiles of milliseconds and the process's peak memory."""

from __future__ import annotations

import os
import resource

import numpy as np


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90 and p99 of milliseconds (NaN for none): every latency this package reports."""
    if not len(samples):
        return {f"p{q}": float("nan") for q in (50, 90, 99)}
    values = np.asarray(samples)
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_load() -> dict:
    """The 1-minute load average beside the core count: above it, other work shared the CPUs."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on this platform
        return {"load_1min": None, "cores": cores}
    return {"load_1min": round(load, 2), "cores": cores}
