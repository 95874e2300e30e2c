"""manifest.json: what a build produced, and the hashes every loader checks first (torch-free).

The exporter writes it (atomically, last, and only when parity passed); the runtime and
`cmmsf-export check` read it and refuse artifacts whose sha256 no longer matches.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from inputs.errors import CmmsfError
from inputs.hashing import sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(CmmsfError, RuntimeError):
    """An engine folder that cannot be trusted or used; the message says what to do."""


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write via a temporary file and an atomic rename: a reader never sees half a manifest."""
    path = folder / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{folder} has no {MANIFEST}: build it with `cmmsf-export build --out {folder}`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON ({err}); rebuild with --force") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ManifestError(f"{path} has format {manifest.get('format')!r}, this runtime reads {FORMAT_VERSION}")
    return manifest


def artifact_record(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: name relative to the folder, sha256, size."""
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def iter_artifacts(manifest: dict[str, Any], kinds: tuple[str, ...] | None = None):
    """(stage, kind, record) for every artifact, optionally only of the given kinds (fp32/fp16/plan)."""
    for stage, entry in manifest["stages"].items():
        for kind, record in entry.get("artifacts", {}).items():
            if kinds is None or kind in kinds:
                yield stage, kind, record


def verify_artifacts(folder: str | Path, manifest: dict[str, Any],
                     kinds: tuple[str, ...] | None = None) -> list[str]:
    """Re-hash artifacts; returns one line per problem (missing, size or sha256 mismatch)."""
    folder = Path(folder)
    problems = []
    for stage, kind, record in iter_artifacts(manifest, kinds):
        path = folder / record["file"]
        if not path.is_file():
            problems.append(f"{stage} {kind}: {record['file']} is missing")
        elif path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
            problems.append(f"{stage} {kind}: {record['file']} does not match its sha256 in {MANIFEST}")
    return problems


def require_verified(folder: str | Path, manifest: dict[str, Any], kinds: tuple[str, ...]) -> None:
    """Raise ManifestError unless every artifact of these kinds verifies."""
    problems = verify_artifacts(folder, manifest, kinds)
    if problems:
        raise ManifestError("refusing to load tampered or incomplete artifacts: " + "; ".join(problems)
                            + f". Rebuild with `cmmsf-export build --out {folder} --force`")
