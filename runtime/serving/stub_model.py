"""The Triton Python-backend model each cmmsf model runs in Triton's stub: PyTriton's proxy model, with a
client's mistake answered as the client's error.

`cmmsf-run serve` writes this file as `model.py` into PyTriton's model store, beside PyTriton's own
proxy model (renamed `pytriton_model.py`; see `serving/stub.py`). It runs inside Triton's Python stub
process, where `triton_python_backend_utils` exists; nothing else imports it. PyTriton answers every
failure as Triton's INTERNAL error (HTTP 500) carrying a full Python traceback with the server's paths,
and fails a whole dynamic batch for one bad request. Here, through the Python backend's documented API
(error codes on `pb_utils.TritonError`, since Triton 23.09):

- a request with an empty input (a [1, 0] tensor: PyTriton's transport cannot even carry it) is
  answered INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT) on its own, before PyTriton sees it;
- a response the inference callable marks with an `error` output (a request it refused: NaN, token
  ids outside the vocabulary, lengths beyond the profile...) becomes INVALID_ARG with that one line,
  while the other requests of the batch are answered normally;
- anything that still fails the batch is one line per request (UNAVAILABLE while the server drains,
  INTERNAL otherwise), the traceback kept for Triton's log.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils  # type: ignore # only inside Triton's Python stub

from . import pytriton_model

ERROR_OUTPUT = "error"
STOPPING = "ServerStoppingError"


def _refusal(message: str, code=None):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code or pb_utils.TritonError.INVALID_ARG))


_pytriton_wrap_response = pytriton_model._wrap_response


def _wrap_response(response, requested_outputs_names, model_outputs_dict):
    """PyTriton's response wrapper, except that a response carrying `error` is the request's refusal."""
    data = response.data
    if data is not None and ERROR_OUTPUT in data:
        value = data[ERROR_OUTPUT].reshape(-1)[0]
        return _refusal(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return _pytriton_wrap_response(response, requested_outputs_names, model_outputs_dict)


pytriton_model._wrap_response = _wrap_response  # looked up at call time by PyTriton's response handler


def _empty_input(request, names: list[str]) -> str | None:
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None and tensor.as_numpy().size == 0:
            shape = list(tensor.as_numpy().shape)
            return f"{name} is empty (shape {shape}): every input needs at least one step"
    return None


def _one_line(message: str) -> str:
    """The last `SomeError: what` line of a traceback, without the type's module path."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        head, _, rest = line.partition(": ")
        if rest and head.replace(".", "").replace("_", "").isalnum() and not line.startswith("File "):
            return f"{head.rsplit('.', 1)[-1]}: {rest}"[:500]
    return "the request failed inside the server"


class TritonPythonModel(pytriton_model.TritonPythonModel):
    """PyTriton's proxy model with the refusals above."""

    def initialize(self, args):
        super().initialize(args)
        self._input_names = list(self._model_inputs)

    def execute(self, triton_requests):
        answers: list = [None] * len(triton_requests)
        passed = []
        for index, request in enumerate(triton_requests):
            problem = _empty_input(request, self._input_names)
            if problem:
                answers[index] = _refusal(problem)
            else:
                passed.append(index)
        if passed:
            try:
                responses = super().execute([triton_requests[i] for i in passed])
            except pb_utils.TritonModelException as err:
                message = str(err)
                pb_utils.Logger.log_error(message)  # the traceback stays in Triton's log, not in the answer
                code = (pb_utils.TritonError.UNAVAILABLE if STOPPING in message else pb_utils.TritonError.INTERNAL)
                responses = [_refusal(_one_line(message), code) for _ in passed]
            for index, response in zip(passed, responses):
                answers[index] = response
        return answers
