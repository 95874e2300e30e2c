"""A client of `cmmsf-run serve` over HTTP or gRPC, on Triton's own `tritonclient` (either protocol).

`ServerClient("http://host:8000")` or `ServerClient("grpc://host:8001")`:
- `tensors(batch)` sends stage-contract tensors to `cmmsf_tensors` → score [B], logits, gates;
- `clip(data, id, transcript)` sends a clip's bytes to `cmmsf_clip` → the record `infer` writes.
A request the server refuses or fails raises `ServerRefused` with the server's own one-line reason
(`audio has 800 audio steps; these engines take at most 40 …`), not the backend's traceback around it.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import numpy as np

from cmmsf.contracts import OUTPUTS
from cmmsf.inputs.errors import CmmsfError

from .server import CLIP_MODEL, TENSORS_MODEL

PROTOCOLS = ("http", "grpc")
_TRITON_TYPES = {np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL", np.dtype(np.float32): "FP32"}


class ClientError(CmmsfError, ValueError):
    """A server URL or client setup that cannot work; the message says why."""


class ServerRefused(CmmsfError, RuntimeError):
    """The server answered a request with an error; the message is its reason, `status` the protocol's
    code (`400`, `StatusCode.INVALID_ARGUMENT`, ...), `client_error` whether it was the request's fault."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status

    @property
    def client_error(self) -> bool:
        return self.status in ("400", "StatusCode.INVALID_ARGUMENT")


_REASON = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", re.MULTILINE)


def server_reason(text: str) -> str:
    """The innermost `SomethingError: reason` line of a server error (PyTriton wraps each failure of an
    inference callable in its traceback and a TritonModelException); the text itself when there is none."""
    reasons = [m.group(2).strip() for m in _REASON.finditer(text)
               if m.group(1) != "TritonModelException" and not m.group(2).startswith("Traceback")]
    return reasons[-1] if reasons else text.strip().splitlines()[0] if text.strip() else "no reason given"


def parse_url(url: str) -> tuple[str, str]:
    """`http://host:port` or `grpc://host:port` → (protocol, host:port)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in PROTOCOLS or not parsed.hostname or not parsed.port:
        raise ClientError(f"a server URL looks like http://HOST:PORT or grpc://HOST:PORT, got {url!r}")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


class ServerClient:
    """One connection (use one per thread: tritonclient's clients are not shared across threads)."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        self.protocol, self.address = parse_url(url)
        try:
            if self.protocol == "http":
                import tritonclient.http as module

                self.client = module.InferenceServerClient(self.address, connection_timeout=timeout_s,
                                                           network_timeout=timeout_s)
            else:
                import tritonclient.grpc as module

                self.client = module.InferenceServerClient(self.address)
        except ImportError:
            raise ClientError("the client needs tritonclient: pip install -e '.[serve]'") from None
        self.module, self.timeout_s = module, timeout_s

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.address}"

    def ready(self, models: tuple[str, ...] = (TENSORS_MODEL, CLIP_MODEL)) -> bool:
        """The server and these models are ready (Triton's health API); False while it starts."""
        try:
            return bool(self.client.is_server_ready()) and all(self.client.is_model_ready(m) for m in models)
        except Exception:  # noqa: BLE001 - not up yet (connection refused) reads as not ready
            return False

    def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: tuple[str, ...]):
        inputs = []
        for name, array in arrays.items():
            kind = "BYTES" if array.dtype == object else _TRITON_TYPES[array.dtype]
            entry = self.module.InferInput(name, list(array.shape), kind)
            entry.set_data_from_numpy(array)
            inputs.append(entry)
        wanted = [self.module.InferRequestedOutput(name) for name in outputs]
        from tritonclient.utils import InferenceServerException

        try:
            if self.protocol == "grpc":
                return self.client.infer(model, inputs, outputs=wanted, client_timeout=self.timeout_s)
            return self.client.infer(model, inputs, outputs=wanted)
        except InferenceServerException as err:
            raise ServerRefused(f"{model}: {server_reason(err.message() or str(err))}", err.status()) from None

    def tensors(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The five stages on the server; `score` comes back as [B], as `Pipeline.run_batch` gives it."""
        result = self._infer(TENSORS_MODEL, batch, OUTPUTS)
        out = {name: result.as_numpy(name) for name in OUTPUTS}
        out["score"] = out["score"].reshape(-1)
        return out

    def clip(self, data: bytes, clip_id: str | None = None, transcript: str | None = None) -> dict:
        """One clip's record (an `error` record when the server could not use the clip)."""
        arrays = {"clip": np.array([[data]], dtype=object)}
        if clip_id is not None:
            arrays["id"] = np.array([[clip_id.encode()]], dtype=object)
        if transcript is not None:
            arrays["transcript"] = np.array([[transcript.encode()]], dtype=object)
        record = self._infer(CLIP_MODEL, arrays, ("record",)).as_numpy("record").reshape(-1)[0]
        return json.loads(record)

    def executions(self, model: str) -> tuple[int, int]:
        """(requests answered, batches executed) by `model` so far: their ratio is the mean batch size."""
        as_json = {"as_json": True} if self.protocol == "grpc" else {}  # HTTP answers JSON already
        entries = self.client.get_inference_statistics(model, **as_json)["model_stats"]
        return (sum(int(e.get("inference_count", 0)) for e in entries),
                sum(int(e.get("execution_count", 0)) for e in entries))

    def close(self) -> None:
        self.client.close()
