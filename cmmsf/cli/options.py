"""Option groups declared once (Polygraphy's tools/args is the model).

The options that say how an engine folder runs are the fields of `RunSettings` (runtime/settings.py):
type, default and help are written there, once. `@run_settings()` turns them into a command's options,
grouped in help panels (engines, speech recognition, video, voice), and hands the command one checked
`RunSettings` as its `settings` parameter. A command that needs another default says so by name
(`@run_settings(asr="auto")`), so no option is declared twice and none is passed by position.
The evaluation options `cmmsf-run eval` and `cmmsf-train eval` share are declared here too.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from pydantic import ValidationError

from cmmsf.inputs.errors import UsageError
from cmmsf.runtime.settings import RunSettings

from .common import err_console, split_list

GROUPS: dict[str, tuple[str, ...]] = {
    "Engines": ("engines", "backend", "precision", "device", "providers", "threads"),
    "Speech recognition": ("asr", "asr_model", "asr_beam_size", "asr_vad"),
    "Video and voice": ("face_crop", "voice_check"),
}
"""Help panel → the RunSettings fields shown in it, in order (memory_arena is the server's own choice)."""

BACKEND_HELP = " (`cmmsf-run backends` lists them and says which run here)"


def _choices(annotation: Any) -> tuple[str, ...]:
    """A Literal's values (also inside Optional), else ()."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(args)
    return next((_choices(a) for a in args if _choices(a)), ())


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parameter(name: str, default: Any, panel: str) -> inspect.Parameter:
    """The typer option of one RunSettings field."""
    field = RunSettings.model_fields[name]
    help_text = field.description or ""
    choices = _choices(field.annotation)
    if choices:
        help_text += f" (choices: {', '.join(choices)})"
    if name == "backend":
        help_text += BACKEND_HELP
    if field.annotation is bool:
        option = typer.Option(f"{flag(name)}/--no-{name.replace('_', '-')}", help=help_text, rich_help_panel=panel)
        annotation: Any = bool
    elif name == "engines":
        option, annotation = typer.Option(help=help_text, rich_help_panel=panel, metavar="DIR"), Optional[Path]
    elif name == "threads":
        option, annotation = typer.Option(help=help_text, rich_help_panel=panel, min=1, metavar="N"), Optional[int]
    elif name == "providers":
        option, annotation = typer.Option(help=help_text, rich_help_panel=panel, metavar="LIST"), Optional[str]
    elif field.annotation is int:
        option, annotation = typer.Option(help=help_text, rich_help_panel=panel, min=1, metavar="N"), int
    else:
        option = typer.Option(help=help_text, rich_help_panel=panel, metavar="|".join(choices) or "TEXT")
        annotation = str
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, option])


def settings_from(values: dict[str, Any]) -> RunSettings:
    """The options' values as a checked RunSettings; the default engine folder is exported on first use.

    A value pydantic refuses is a usage error naming the option and its choices."""
    values = dict(values)
    if "providers" in values:
        values["providers"] = tuple(split_list(values["providers"])) if values["providers"] else None
    from cmmsf.runtime.backends import check_choice

    check_choice(values.get("backend", "auto"), values.get("precision", "fp32"))
    checked = {k: v for k, v in values.items() if k != "engines"}
    try:
        RunSettings(engines=Path("."), **checked)
    except ValidationError as err:
        problem = err.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else ""
        choices = _choices(RunSettings.model_fields[name].annotation) if name in RunSettings.model_fields else ()
        got = values.get(name)
        if choices:
            raise UsageError(f"{flag(name)} must be one of {', '.join(choices)}, got {got!r}") from None
        raise UsageError(f"{flag(name)}: {problem['msg']}, got {got!r}") from None
    return RunSettings(engines=engines_or_default(values.get("engines")), **checked)


def engines_or_default(engines: Optional[Path]) -> Path:
    """The given engine folder, or the shipped checkpoint's in the user cache, exported there on first use."""
    if engines is not None:
        return engines
    from cmmsf.export.default_engines import ensure_default_engines

    return ensure_default_engines(err_console)


def run_settings(**defaults: Any) -> Callable[[Callable], Callable]:
    """Replace a command's `settings: RunSettings` parameter by RunSettings' options (GROUPS), with
    `defaults` where the command's differ from the library's."""
    unknown = set(defaults) - {name for names in GROUPS.values() for name in names}
    if unknown:
        raise TypeError(f"not run settings: {sorted(unknown)}")

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.name != "settings"]
        added = [_parameter(name, defaults.get(name, RunSettings.model_fields[name].default
                                               if name != "engines" else None), panel)
                 for panel, names in GROUPS.items() for name in names]
        names = [p.name for p in added]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(settings=settings_from(values), **kwargs)

        parameters = own + added
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must read this signature, not the command's
        return wrapper

    return decorate


# the data and evaluation options the training and evaluation commands share (one evaluator, cmmsf/evaluation/)
DATA_HELP = ("transcript CSV, MMSA pickle, clip folder, or a RAVDESS- or faces-style folder; repeat (or give "
             "several) for several sources")
TrainData = Annotated[list[Path], typer.Option(help=DATA_HELP, metavar="PATH")]
EvalSplit = Annotated[str, typer.Option(help="train, dev/valid, test, or all (every speaker: leave one corpus out)",
                                        metavar="SPLIT")]
Labels = Annotated[Optional[Path], typer.Option(help="labels CSV for a clip folder", metavar="CSV")]
Modalities = Annotated[Optional[str], typer.Option(help="one subset to keep, e.g. text or text,audio "
                                                        "(default: text, audio, video and all, each on its own)",
                                                   metavar="LIST")]
SourcesFile = Annotated[Optional[Path], typer.Option(help="splits and gates (default: cmmsf/data/sources.json)",
                                                     metavar="JSON")]
VoiceCheck = _parameter("voice_check", True, "Video and voice").annotation
EnginesDir = _parameter("engines", None, "Options").annotation
"""`--engines` for the commands that read a folder without running it through RunSettings (bench, backends)."""
Threads = _parameter("threads", None, "Options").annotation
"""`cmmsf-train eval` reads checkpoints, not engine folders: of the run settings it takes this one alone."""
