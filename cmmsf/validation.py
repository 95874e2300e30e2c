"""Files people edit (checkpoint configs, training recipes, sources.json, engine manifests), checked by pydantic.

One rule for all of them: unknown fields are refused, types and `Literal[...]` choices are checked, and a
file that fails is one line naming the field and what it allows (`video.backbone 'vgg' is not one of
'resnet' or 'fer' (config)`), never a traceback from deep inside the code that first used the bad value. The
checked types are the plain dataclasses the code already passes around (with `STRICT` as their pydantic
config), so there is one definition of each file's fields: their annotations.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from cmmsf.inputs.errors import CmmsfError

T = TypeVar("T")

STRICT = ConfigDict(extra="forbid")
"""The pydantic config of every checked file's types: a field nobody declared is a mistake (a typo)."""


class FileFieldError(CmmsfError, ValueError):
    """A field of a config, recipe, sources or manifest file with a value its type does not allow."""


def describe(err: ValidationError, what: str, prefix: str = "") -> str:
    """A pydantic error as one line: the unknown fields, or the first field whose value is not allowed
    (`video.backbone 'vgg' is not one of 'resnet' or 'fer' (config)`), and how many more problems there are."""
    problems = err.errors()
    unknown = [prefix + ".".join(map(str, p["loc"])) for p in problems if p["type"] in UNKNOWN_FIELD]
    if unknown:
        return f"unknown {what} keys: {unknown}"
    missing = [prefix + ".".join(map(str, p["loc"])) for p in problems if p["type"] == "missing"]
    if missing:
        return f"it lacks {', '.join(missing)} ({what})"
    first = problems[0]
    where = prefix + ".".join(str(part) for part in first["loc"]) or "(the whole file)"
    if first["type"] == "literal_error":
        problem = f"{where} {first['input']!r} is not one of {first['ctx']['expected']}"
    else:
        problem = f"{where} {first['input']!r}: {first['msg']}"
    more = f", and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return f"{problem} ({what}{more})"


UNKNOWN_FIELD = ("extra_forbidden", "unexpected_keyword_argument")


@lru_cache(maxsize=None)
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def validated(kind: type[T], data: Any, what: str, prefix: str = "") -> T:
    """`data` (parsed JSON) as an instance of `kind`, checked; `what` names the file in the error line,
    `prefix` where `data` sits in it (`ravdess.`)."""
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as err:
        raise FileFieldError(describe(err, what, prefix)) from None
