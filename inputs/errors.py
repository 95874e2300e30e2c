"""The one base class for failures whose message is written for the user (the CLI prints it, no traceback)."""


class CmmsfError(Exception):
    """An expected failure: bad input, missing file, tampered artifact. Its message says what to do."""
