"""The base classes for failures whose message is written for the user (the CLI prints it, no traceback)."""


class CmmsfError(Exception):
    """An expected failure: bad input, missing file, tampered artifact. Its message says what to do."""


class UsageError(CmmsfError, ValueError):
    """An option value the command cannot use (an unknown backend, a negative window). The CLI exits 2 on
    it, the code Click gives a mistyped option, so scripts tell "called wrongly" from "failed"."""


class DataError(CmmsfError, ValueError):
    """Data the user pointed at that cannot be used as asked (no rows in a split, clashing clip ids, an
    emotion with no sentiment); the message names it."""


class InstallError(CmmsfError, RuntimeError):
    """A package is missing or broken on this machine; the message says what to install."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a scheduler's time limit), raised in the main thread as Ctrl-C is,
    so every `finally` runs and the same summary is printed; the CLI exits 143 (128 + SIGTERM)."""
