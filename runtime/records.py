"""A record's one JSON form: what `infer` and `stream` write, a server answers and Ray hands back.

Strict JSON only (`allow_nan=False`): a non-finite number (a NaN from a broken input) is written as null
and the record says where in `nonfinite`, never as a bare `NaN` that strict parsers reject.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _finite(value: Any, path: str, bad: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        bad.append(path)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value


def to_json(record: dict[str, Any]) -> str:
    """One compact line of strict JSON; non-finite numbers become null, named in `nonfinite`."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:  # only non-finite floats make a dict of JSON values fail here
        bad: list[str] = []
        clean = _finite(record, "", bad)
        clean["nonfinite"] = bad
        return json.dumps(clean, separators=(",", ":"), allow_nan=False)
