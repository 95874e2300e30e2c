"""Help that speaks the user's words: `PATHS...`, `N`, `FILE`, never `<list[Path]>`, `<bool>` or `{paths}`.

Typer ≥ 0.16 prints each parameter's Python type in help (`<int>`, `<bool>` beside a flag) and wraps a
required argument in braces in the usage line. Our options name their value with a metavar instead;
this leaves flags without one and writes the usage line the way Click and every Unix tool does. Typer's
display hooks are private, so each is replaced only where it exists: an older or newer Typer keeps its
own rendering rather than breaking.
"""

from __future__ import annotations

from typing import Any

from typer import core


def _option_type(self: Any, ctx: Any) -> str | None:
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    if self.metavar is not None:
        return self.metavar
    desc = getattr(self, "type_descriptor", None)
    if desc is not None and getattr(desc, "is_choice", False) and desc.choices:
        return "|".join(str(c) for c in desc.choices)
    return self.name.upper() if self.name else None


def _argument_type(self: Any, ctx: Any) -> str | None:
    return None  # the argument's name column already says what it is (PATHS..., SOURCE)


def _usage_name(self: Any) -> str:
    name = self.metavar or (self.name or "").upper()
    if self.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if self.required else f"[{name}]"


def use_plain_help() -> None:
    """Install the renderings above on Typer's parameter classes (idempotent)."""
    for cls, attr, hook in ((core.TyperOption, "display_type_rich", _option_type),
                            (core.TyperArgument, "display_type_rich", _argument_type),
                            (core.TyperArgument, "_usage_display_name", _usage_name)):
        if hasattr(cls, attr):
            setattr(cls, attr, hook)
