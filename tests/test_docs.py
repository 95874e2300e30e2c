"""The docs a user reads first stay true: the README fits a screen-ful of sections and its picture exists,
and the command reference is what the commands say today."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_reference_matches_the_commands():
    reference = runpy.run_path(str(ROOT / "scripts" / "cli_reference.py"))["reference"]
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), "run python scripts/cli_reference.py"


def test_readme_is_short_and_every_local_link_resolves():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert any(link.endswith(".png") for link in links)
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
