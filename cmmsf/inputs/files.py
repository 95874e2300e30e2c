"""Reading a small user file safely: the one helper every transcript, sidecar and `--transcript` goes through.

A path can name anything: a FIFO (opening it for reading blocks until a writer comes), `/dev/zero`
(endless), a 10 GB log. So the file is opened without blocking, must be a regular file, and is read
only up to a cap; anything else is one clear line, never a hang or an exhausted machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CmmsfError

TRANSCRIPT_MAX_BYTES = 4 * 1024 * 1024
"""A transcript of a day of speech is a few MB of subtitles; more is not a transcript."""


def readable(text: str) -> str:
    """`text` as valid Unicode: a file name's bytes that are not UTF-8 (which Python keeps as lone
    surrogates) become `\\xe9`-style escapes, so an id or a message never carries a surrogate that
    strict JSON parsers and terminals reject. Valid text comes back unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name's byte made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InputFileError(CmmsfError, OSError):
    """A file given as input that cannot be read as one: not a regular file, too large, unreadable."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_small_file(path: Path, max_bytes: int = TRANSCRIPT_MAX_BYTES, what: str = "transcript") -> bytes:
    """The bytes of a regular file of at most `max_bytes`; InputFileError with the reason otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once, unread
    except OSError as err:
        raise InputFileError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputFileError(f"the {what} {path} is {_kind(mode)}, not a regular file")
        chunks, held = [], 0
        while held <= max_bytes:  # read to the cap, not to the stated size: a file can grow as we read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - held))
            if not chunk:
                break
            chunks.append(chunk)
            held += len(chunk)
        if held > max_bytes:
            raise InputFileError(f"the {what} {path} is larger than {max_bytes // (1024 * 1024)} MB; "
                                 f"that is not a {what}")
        return b"".join(chunks)
    except OSError as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
