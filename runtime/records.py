"""A record's one JSON form: what `infer` and `stream` write, a server answers and Ray hands back.

Strict JSON only (`allow_nan=False`): a non-finite number (a NaN from a broken input) is written as null
and the record says where in `nonfinite`, never as a bare `NaN` that strict parsers reject. Strings are
valid Unicode: a lone surrogate (a file name that is not UTF-8, quoted in an error) is written as its
escaped bytes, never as a `\\udcXX` escape that strict parsers reject.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cmmsf.inputs.files import readable


def _finite(value: Any, path: str, bad: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        bad.append(path)
        return None
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {readable(str(k)): _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value


def to_json(record: dict[str, Any]) -> str:
    """One compact line of strict JSON; non-finite numbers become null, named in `nonfinite`."""
    try:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        if "\\ud" not in line:  # no surrogate escape at all (the usual case): done
            return line
    except ValueError:  # only non-finite floats make a dict of JSON values fail here
        pass
    bad: list[str] = []
    clean = _finite(record, "", bad)
    if bad:
        clean["nonfinite"] = bad
    return json.dumps(clean, separators=(",", ":"), allow_nan=False)
