"""`cmmsf-run serve`: the pipeline behind a real NVIDIA Triton Inference Server, through PyTriton.

PyTriton (`pip install -e '.[serve]'`) bundles the `tritonserver` binary; Triton owns HTTP, gRPC,
health, readiness, metrics and the dynamic batcher, and calls back into this process for each batch.
Two models:

- `cmmsf_tensors`: the stage-contract inputs in, `score` / `logits` / `gates` out, for clients that
  preprocess themselves (`cmmsf/inputs/`). Triton batches requests whose shapes agree.
- `cmmsf_clip`: a clip's encoded bytes (mp4, wav, …) plus an optional transcript and id in, the record
  `cmmsf-run infer` writes out (JSON), speech recognition where the transcript is missing. Each
  request of a batch is decoded on its own; the usable ones run as one padded batch. A clip that
  cannot be used gets its error record (`{"id", "error"}`, as in results.jsonl) and the rest of the
  batch is answered normally: Triton can only fail a batch as a whole.
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from cmmsf.contracts import PIPELINE_INPUTS, STAGES, sample_dims
from cmmsf.inputs.clips import Clip
from cmmsf.inputs.errors import CmmsfError, UsageError
from cmmsf.inputs.features import ClipInputs
from cmmsf.inputs.media import InMemoryMedia

from ..backends.base import NUMPY_DTYPES
from ..pipeline import Pipeline, error_record
from ..records import to_json
from ..settings import RunSettings
from .lifecycle import Housekeeping, InFlight, TritonWatchdog, limit_malloc_arenas

TENSORS_MODEL = "cmmsf_tensors"
CLIP_MODEL = "cmmsf_clip"


class ServeError(CmmsfError, RuntimeError):
    """The server cannot start (PyTriton missing, a port taken); the message says what to do."""


@dataclass(kw_only=True)
class ServeOptions:
    """What `cmmsf-run serve` was asked; the defaults are the command's (cmmsf/cli/run_commands.py)."""

    settings: RunSettings
    address: str
    """Where HTTP, gRPC and metrics listen; 0.0.0.0 serves other machines too."""
    http_port: int
    grpc_port: int
    metrics_port: int
    max_batch: int
    """The dynamic batcher's largest batch; 1 turns batching off."""
    max_queue_delay_ms: float
    log_file: Path | None = None
    """Triton's own log (and its children's output); when not given, a temporary file removed at a clean
    stop and kept (its path printed) when Triton dies."""
    grace_s: float = 10.0
    """On Ctrl-C or SIGTERM, how long running requests have to be answered before Triton stops."""


def _tensor(spec, config) -> "Tensor":  # noqa: F821 - pytriton is imported lazily
    from pytriton.model_config import Tensor

    return Tensor(name=spec.name, dtype=NUMPY_DTYPES[spec.dtype], shape=tuple(sample_dims(spec, config)) or (1,))


ERROR_OUTPUT = "error"
"""The output that carries a request's refusal to the stub (serving/stub_model.py), which answers it as
the client's error (HTTP 400, gRPC INVALID_ARGUMENT); a scored request never has it."""


def refusal(message: str, rows: int) -> dict[str, np.ndarray]:
    """A request's answer that the stub turns into INVALID_ARG with `message`."""
    return {ERROR_OUTPUT: np.array([[message.encode()]] * max(1, rows), dtype=object)}


class TensorsModel:
    """`cmmsf_tensors`: one dynamic batch of contract tensors through the five stages.

    Each request is checked against the engines' build profile and for values no input can have before
    any work (`Pipeline.check_batch`, `check_evidence`): one too long, of the wrong width or rank, empty,
    holding NaN, token ids outside the vocabulary or no real step in any modality is refused on its own
    (HTTP 400 with the one line that says what is wrong), costs no more than its own bytes, and the other
    requests of its dynamic batch are scored as if it had not come."""

    def __init__(self, pipeline: Pipeline, max_batch: int | None = None):
        self.pipeline, self.max_batch = pipeline, max_batch

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        answers: list[dict[str, np.ndarray] | None] = [None] * len(requests)
        good = []
        for index, request in enumerate(requests):
            batch = {name: request[name] for name in request}
            try:
                self.pipeline.check_batch(batch, self.max_batch)
                self.pipeline.check_evidence(batch)
                good.append(index)
            except CmmsfError as err:
                answers[index] = refusal(str(err), len(next(iter(batch.values()), [])))
        if good:
            inputs = {name: np.concatenate([requests[i][name] for i in good]) for name in requests[good[0]]}
            outputs = self.pipeline.run_batch(inputs).outputs
            outputs = {**outputs, "score": outputs["score"].reshape(-1, 1)}  # Triton wants [B, 1] for a [B] tensor
            start = 0
            for index in good:
                rows = len(next(iter(requests[index].values())))
                answers[index] = {k: v[start:start + rows] for k, v in outputs.items()}
                start += rows
        return answers


def _text(array: np.ndarray | None, row: int) -> str | None:
    """Row `row` of an optional BYTES input as text (None where absent or empty)."""
    if array is None:
        return None
    value = array[row].reshape(-1)[0]
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return text or None


class ClipModel:
    """`cmmsf_clip`: encoded clips in, `infer`'s records out; one bad clip never fails its batch."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def _prepare(self, data: bytes, clip_id: str, transcript: str | None) -> ClipInputs:
        """Decode one clip from its bytes, in memory, through the very preprocessor `infer` uses on files:
        nothing is written to disk, and an error names the clip, never a path of this server."""
        if not data:
            raise UsageError("the request holds an empty clip")
        return self.pipeline.preprocessor.from_clip(Clip(clip_id, InMemoryMedia(clip_id, data),
                                                         transcript_text=transcript))

    def records(self, clips: list[tuple[bytes, str, str | None]]) -> list[dict]:
        """(bytes, id, transcript) → one record each, in order; error records for unusable clips."""
        entries: list[ClipInputs | dict] = []
        for data, clip_id, transcript in clips:
            try:
                entries.append(self._prepare(data, clip_id, transcript))
            except Exception as err:  # noqa: BLE001 - one clip's failure is its own error record
                entries.append(error_record(clip_id, err))
        return self.pipeline.predict_prepared(entries)

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        flat: list[tuple[bytes, str, str | None]] = []
        sizes = []
        for request in requests:
            clips, ids, transcripts = request["clip"], request.data.get("id"), request.data.get("transcript")
            sizes.append(len(clips))
            for row in range(len(clips)):
                flat.append((bytes(clips[row].reshape(-1)[0]), _text(ids, row) or "clip", _text(transcripts, row)))
        records = iter(self.records(flat))
        return [{"record": np.array([[to_json(next(records)).encode()] for _ in range(n)], dtype=object)}
                for n in sizes]


def stub_sees_this_python() -> None:
    """Triton's Python backend stub links libpython by name; on a machine with several Pythons of one
    minor version (pyenv beside the system's), the loader can pick the other one and the stub dies
    with an AttributeError inside multiprocessing. Putting this interpreter's library folder first
    makes the stub load the libpython that matches the standard library it runs."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def bind_models(triton, pipeline: Pipeline, max_batch: int, queue_delay_ms: float,
                in_flight: InFlight | None = None) -> None:
    """Bind `cmmsf_tensors` and `cmmsf_clip` to a started-or-not PyTriton `Triton`, each counted by
    `in_flight` where given (so a stop can drain them)."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    def counted(infer):
        return in_flight.guard(infer) if in_flight else infer

    config = pipeline.config
    batching = ModelConfig(max_batch_size=max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=round(queue_delay_ms * 1000)))
    triton.bind(model_name=TENSORS_MODEL, infer_func=counted(TensorsModel(pipeline, max_batch)),
                inputs=[_tensor(s, config) for s in PIPELINE_INPUTS],
                outputs=[*(_tensor(s, config) for s in STAGES["mgf_head"].outputs),
                         Tensor(name=ERROR_OUTPUT, dtype=bytes, shape=(1,))],
                config=batching, strict=True)
    triton.bind(model_name=CLIP_MODEL, infer_func=counted(ClipModel(pipeline)),
                inputs=[Tensor(name="clip", dtype=bytes, shape=(1,)),
                        Tensor(name="transcript", dtype=bytes, shape=(1,), optional=True),
                        Tensor(name="id", dtype=bytes, shape=(1,), optional=True)],
                outputs=[Tensor(name="record", dtype=bytes, shape=(1,))],
                config=batching, strict=True)


def extend_proxy_models(model_store: Path) -> list[str]:
    """Put serving/stub_model.py in front of PyTriton's proxy model in each model of the store PyTriton
    wrote (`bind` writes it; Triton loads it at start): PyTriton's `model.py` becomes `pytriton_model.py`,
    ours is `model.py` and subclasses it. Returns the models extended."""
    ours = (Path(__file__).with_name("stub_model.py")).read_bytes()
    extended = []
    for proxy in sorted(model_store.glob("*/*/model.py")):
        proxy.rename(proxy.with_name("pytriton_model.py"))
        proxy.write_bytes(ours)
        extended.append(proxy.parent.parent.name)
    return extended


def triton_config(opts: ServeOptions, log_file: Path):
    from pytriton.triton import TritonConfig

    return TritonConfig(http_address=opts.address, http_port=opts.http_port, grpc_address=opts.address,
                        grpc_port=opts.grpc_port, metrics_address=opts.address, metrics_port=opts.metrics_port,
                        exit_timeout_secs=3, log_file=log_file, allow_gpu_metrics=False)


def security_config():
    """PyTriton's default protection (model loading, shared memory, tracing, log levels need its token)
    minus `statistics`: read-only per-model counts, what the load test reads the mean batch size from."""
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig

    return TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])


def check_ports_free(opts: ServeOptions) -> None:
    """A port another process holds would make Triton fail late (or PyTriton talk to that other
    server): say which one, before anything starts."""
    import socket

    for option, port in (("--http-port", opts.http_port), ("--grpc-port", opts.grpc_port),
                         ("--metrics-port", opts.metrics_port)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((opts.address, port))
            except OSError as err:
                raise ServeError(f"{opts.address}:{port} is not free ({err.strerror}); "
                                 f"choose another {option}") from None


def serve(opts: ServeOptions, console: Console) -> None:
    """Start Triton with both models and block until Ctrl-C or SIGTERM, then drain and stop.

    The stop: new requests are refused (`the server is stopping`), the running ones are answered
    (up to `opts.grace_s`), Triton stops, then every child process still alive is stopped and the
    shared memory and temporary files of the run are removed (`lifecycle.Housekeeping`). If
    `tritonserver` dies on its own, the same clean-up runs and the error is one line (exit 1); if this
    process is killed, its reaper does it (serving/reaper.py)."""
    try:
        from pytriton.exceptions import PyTritonError
        from pytriton.triton import Triton, TritonLifecyclePolicy
    except ImportError:
        raise ServeError("serving needs PyTriton: pip install -e '.[serve]' (nvidia-pytriton bundles "
                         "tritonserver)") from None
    if opts.max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1, got {opts.max_batch}")
    if len({opts.http_port, opts.grpc_port, opts.metrics_port}) < 3:
        raise UsageError("--http-port, --grpc-port and --metrics-port must differ")
    check_ports_free(opts)
    limit_malloc_arenas()  # before any thread of ours, ONNX Runtime's or PyTriton's allocates
    # no memory arena: a server meets every batch size and length, and an arena would keep the largest
    pipeline = Pipeline.load(opts.settings.replace(memory_arena=False))
    stub_sees_this_python()
    quiet_pytriton()
    # Ctrl-C and SIGTERM (`kill`, docker stop) only set a flag, from here on: an exception thrown into
    # whatever PyTriton is doing at that moment (a health probe, a lock) can leave its shutdown hanging.
    # A plain flag that the main thread polls, not an Event: a handler that takes a lock the interrupted
    # main thread may hold can deadlock
    stop: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _frame: stop.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    in_flight = InFlight()
    house = Housekeeping((TENSORS_MODEL, CLIP_MODEL))
    log = opts.log_file or house.log
    try:
        with house:
            if house.cleaned:
                console.print(f"cleaned up after {len(house.cleaned)} earlier server(s) that were killed",
                              highlight=False)
            # a local model store: Triton loads every model as it starts, before it opens its ports, so
            # readiness turns true once, when all are loaded (loaded one by one through its API, it
            # flipped 200/400 while loading, and said 200 before any model was there)
            triton = Triton(config=triton_config(opts, log), security_config=security_config(),
                            workspace=house.workspace,
                            triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True,
                                                                          local_model_store=True))
            watchdog = TritonWatchdog(lambda: die(triton, house, opts.log_file))
            watchdog.start()
            bind_models(triton, pipeline, opts.max_batch, opts.max_queue_delay_ms, in_flight)
            extend_proxy_models(house.workspace / "model-store")
            try:
                triton.run()
            except PyTritonError as err:  # a model that will not load, a server that will not start
                watchdog.stop()
                house.failed = True
                raise ServeError(f"Triton Inference Server failed to start: {err} "
                                 f"(its log: {opts.log_file or house.kept_log})") from None
            echo_off(triton)
            console.print(f"serving {TENSORS_MODEL} and {CLIP_MODEL} ({pipeline.backend.label} on "
                          f"{pipeline.backend.provider}, dynamic batching up to {opts.max_batch}, "
                          f"{opts.max_queue_delay_ms:g} ms queue delay)", highlight=False)
            console.print(f"  HTTP  http://{opts.address}:{opts.http_port}  (health: /v2/health/ready)\n"
                          f"  gRPC  {opts.address}:{opts.grpc_port}\n"
                          f"  metrics http://{opts.address}:{opts.metrics_port}/metrics\n"
                          + (f"  Triton log: {log}\n" if opts.log_file else "") + "  Ctrl-C stops",
                          highlight=False)
            while not stop:
                time.sleep(STOP_POLL_S)
            watchdog.stop()
            left = in_flight.drain(opts.grace_s)
            if left:
                console.print(f"[yellow]{left} request(s) still running after the {opts.grace_s:g} s grace "
                              "period: they fail[/]")
            # PyTriton's stop can wait on a tritonserver that crashed while exiting (seen about once in ten
            # stops under load): give it STOP_TIMEOUT_S, then the housekeeping stops what is left
            stopper = threading.Thread(target=triton.stop, name="triton stop", daemon=True)
            stopper.start()
            stopper.join(STOP_TIMEOUT_S)
            hung = stopper.is_alive()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pipeline.close()
    console.print("server stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    if hung:  # PyTriton's threads still wait; the interpreter's shutdown would wait with them
        os._exit(0)


def bound_exit() -> None:
    """For `cmmsf-run serve`'s process, after `serve` returned: everything of ours is stopped and removed,
    but the interpreter's shutdown still joins whatever threads PyTriton left (seen once past a minute on a
    loaded 2-core CI machine), so end the process if it has not ended EXIT_TIMEOUT_S from now. Never call
    it in a process that goes on working after the server."""
    deadline = threading.Timer(EXIT_TIMEOUT_S, os._exit, args=(0,))
    deadline.daemon = True
    deadline.start()


STOP_POLL_S = 0.1
"""How often the main thread looks whether Ctrl-C or SIGTERM arrived."""
STOP_TIMEOUT_S = 15.0
"""How long PyTriton's stop (Triton's own 3 s exit timeout, its stubs, its proxies) may take."""
EXIT_TIMEOUT_S = 5.0
"""How long the interpreter's shutdown may wait for threads left behind after a clean stop."""


def die(triton, house: Housekeeping, log_file: Path | None) -> None:
    """`tritonserver` died: clean up as a stop would, say so in one line, and end the process (exit 1).

    It ends the process itself, as a stop that PyTriton left hanging does: PyTriton's threads (its
    start-up, its exit callback) wait for the dead server for minutes, and the interpreter's shutdown
    would wait for them."""
    echo_off(triton)
    house.failed = True
    house.__exit__(None, None, None)
    Console(stderr=True).print("[red]error:[/] Triton Inference Server stopped on its own; the server is down "
                               f"(its log: {log_file or house.kept_log})", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def echo_off(triton) -> None:
    """PyTriton echoes everything `tritonserver` and its stubs print (their shutdown chatter: "Signal (2)
    received", "Non-graceful termination detected") to our terminal; Triton's log file has what matters."""
    server = getattr(triton, "_triton_server", None)
    if server is not None and hasattr(server, "_verbose"):
        server._verbose = False


def quiet_pytriton() -> None:
    """PyTriton logs "exited with failure" at every stop and warnings while it cleans up; `serve` says
    itself what happened, in one line."""
    import logging
    import warnings

    logging.getLogger("pytriton").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytriton")
