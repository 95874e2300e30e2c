"""`cmmsf-run infer PATHS --ray [ADDRESS]`: the same records, computed on a Ray cluster with Ray Data.

The clip list becomes a Ray dataset. Decoding and preprocessing (PyAV, tokenizer, speech recognition:
the heavy, embarrassingly parallel part) run as Ray tasks; the five stages run in an actor pool, one
backend per actor (`--ray-actors`, `--num-gpus-per-actor`), on micro-batches of `--batch` clips. The
driver receives the records as they stream out and writes them through the same `ResultWriter`
(resumable), progress bar and summary as a single-process run; Ray adds no scheduler of ours.

Every node must see the engine folder and the clips at the same paths (a shared filesystem, or the
same copy on each node) and have this package installed.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cmmsf.inputs.clips import Clip
from cmmsf.inputs.errors import CmmsfError

from ..backends import check_choice
from ..engine_folder import EngineFolder
from ..pipeline import Pipeline, error_record, preprocessor_for
from ..records import to_json
from ..settings import RunSettings

LOCAL = "local"


class RayError(CmmsfError, RuntimeError):
    """Ray is missing or the cluster cannot be reached; the message says what to do."""


@dataclass
class RaySettings:
    address: str = LOCAL
    """`local` starts a Ray instance on this machine; `auto` joins the one running here; or ray://HOST:PORT."""
    actors: int = 1
    num_gpus_per_actor: float = 0.0


@lru_cache(maxsize=4)
def _preprocessor(settings: RunSettings):
    """One preprocessor per worker process (Ray reuses workers across tasks): the tokenizer and the ASR
    model load once, not once per clip."""
    return preprocessor_for(EngineFolder.open(settings.engines), settings)


def preprocess_row(row: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    """A Ray task: one clip → its preprocessed inputs (pickled; only our own workers read them back)
    or its error, exactly as `Pipeline.iter_predict` words it."""
    clip = Clip(row["id"], Path(row["media"]) if row["media"] else None,
                Path(row["transcript"]) if row["transcript"] else None)
    try:
        item = _preprocessor(settings).from_clip(clip)
        return {"id": clip.id, "error": "", "item": pickle.dumps(item)}
    except Exception as err:  # noqa: BLE001 - any failure of one clip becomes its error line
        return {"id": clip.id, "error": error_record(clip.id, err)["error"], "item": b""}


class StageActor:
    """A Ray actor holding one backend: micro-batches of preprocessed clips → JSON records."""

    def __init__(self, settings: RunSettings):
        self.pipeline = Pipeline.load(settings.replace(asr="off"))  # inputs arrive preprocessed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = [{"id": str(clip_id), "error": str(error)} if error else pickle.loads(item)
                   for clip_id, error, item in zip(batch["id"], batch["error"], batch["item"])]
        records = self.pipeline.predict_prepared(entries)
        return {"record": np.array([to_json(r) for r in records], dtype=object)}


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a cluster address nobody answers (ray.init would keep retrying for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"--ray wants local, auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RayError(f"cannot reach a Ray cluster at {address}: {err.strerror or err}") from None


def connect(address: str) -> None:
    """Start or join Ray, quietly (no dashboard; workers' logs stay in Ray's session folder)."""
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs Ray Data: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return
    if address not in (LOCAL, "auto"):
        reachable(address)
    try:
        ray.init(address=None if address == LOCAL else address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    except ConnectionError as err:
        raise RayError(f"cannot reach a Ray cluster at {address}: {err}") from None


class RayRunner:
    """`infer`'s clip runner on a cluster (runtime/infer.py): the options, engines and ASR model are checked
    here, once, before any worker starts; records come back as the cluster finishes them."""

    def __init__(self, settings: RunSettings, cluster: RaySettings):
        check_choice(settings.backend, settings.precision)
        preprocessor_for(EngineFolder.open(settings.engines), settings)
        # every node reads the engines at this path (README: a shared filesystem or the same copy)
        self.settings = settings.replace(engines=Path(settings.engines).resolve())
        self.cluster = cluster
        self.label = (f"Ray: {cluster.address}, {cluster.actors} stage actor(s) on {settings.backend} "
                      f"{settings.precision}" + (f", {cluster.num_gpus_per_actor:g} GPU each"
                                                 if cluster.num_gpus_per_actor else ""))

    def records(self, clips: list[Clip], batch: int) -> Iterator[dict]:
        return ray_records(clips, self.settings, self.cluster, batch)

    def close(self) -> None:
        pass


def ray_records(clips: list[Clip], settings: RunSettings, cluster: RaySettings, batch: int) -> Iterator[dict]:
    """Yield one record per clip as the cluster finishes them (in no particular order)."""
    connect(cluster.address)
    import ray

    context = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # after importing ray.data, which sets its own
    context.enable_progress_bars = False  # the driver shows one rich progress bar, as without Ray
    context.print_on_execution_start = False
    rows = [{"id": c.id, "media": str(c.media.resolve()) if c.media else "",
             "transcript": str(c.transcript.resolve()) if c.transcript else ""} for c in clips]
    # decoding runs in as many tasks at once as the cluster has CPUs; a task-pool size other than the
    # actor pool's also keeps Ray from fusing decoding into the stage actors
    decoders = max(1, int(ray.cluster_resources().get("CPU", 1)))
    dataset = (ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
               .map(preprocess_row, fn_kwargs={"settings": settings},
                    compute=ray.data.TaskPoolStrategy(size=decoders))
               .map_batches(StageActor, fn_constructor_kwargs={"settings": settings},
                            batch_size=batch, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=cluster.actors),
                            num_gpus=cluster.num_gpus_per_actor or None))
    for row in dataset.iter_rows():
        yield json.loads(row["record"])
