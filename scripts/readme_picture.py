"""Draw the README's picture, docs/timeline.png: `cmmsf-run stream` on the real CMU-MOSI mp4 heard without
its transcript (speech recognition on, the face found in each frame), each 4 s window at its score:

    python scripts/readme_picture.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from cmmsf.cli import run_app

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "timeline.png")
    args = parser.parse_args()
    clip = args.data_dir / "mosi" / "clips" / "Oz06ZWiO20M_6.mp4"
    with tempfile.TemporaryDirectory() as folder:  # the clip alone: no sidecar, so the words are heard
        alone = Path(shutil.copy(clip, folder))
        result = CliRunner().invoke(run_app, ["stream", str(alone), "--plot", str(args.out)])
    print(result.output, end="")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
