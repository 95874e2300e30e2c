"""Where cmmsf keeps what it builds for the user: a per-user cache, never the working folder.

`$CMMSF_CACHE_DIR` overrides it (a shared cache on a server, a temporary one in tests); otherwise it is
platformdirs' user cache (~/.cache/cmmsf on Linux). The shipped checkpoint's engines go under
`engines/default-<hash>`, one folder per checkpoint, so an upgrade never reads stale engines.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from cmmsf.config import DEFAULT_CHECKPOINT
from cmmsf.inputs.hashing import sha256_file

CACHE_ENV = "CMMSF_CACHE_DIR"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cmmsf"))


@lru_cache(maxsize=1)
def _checkpoint_key() -> str:
    return sha256_file(DEFAULT_CHECKPOINT / "model.safetensors")[:12]


def default_engines_dir() -> Path:
    """The shipped checkpoint's engine folder in the cache."""
    return cache_dir() / "engines" / f"default-{_checkpoint_key()}"
