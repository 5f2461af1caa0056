"""Each script of examples/scripts runs as a user would run it, and shows what it is about."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "tenants.py": ["alice live: [alice v2] hi!", "alice jan: [alice] hi", "bob live: <bob> HI"],
    "wiki_mod.py": [
        "edit: True {'pages': 1}",
        "page Home: Welcome",
        "statuses: [{'robot': 'robot1', 'shots': 1}]",
        "unloaded: mod 'wiki' unloaded",
    ],
    "robots.py": [
        "robot1/mapper saw: ['robot1-frame-1']",
        "robot2/mapper saw: ['robot2-frame-1']",
        "robot1/camera after restart: {'fps': 30, 'shots': 0}",
        "robot2/camera: {'fps': 30, 'shots': 1}",
    ],
    "worker.py": [
        "placement: process",
        "agent ran in another process: True",
        "worker crunch: state ready, pid ",
    ],
}
"""The start of lines each script must print, by script name."""


def test_every_script_is_checked() -> None:
    assert sorted(p.name for p in (ROOT / "examples" / "scripts").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_script_runs(name: str, tmp_path: Path) -> None:
    # A copy, so that nothing a run writes (bytecode, say) lands in the repository.
    examples = shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = subprocess.run(
        [sys.executable, str(examples / "scripts" / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")},
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    for expected in EXPECTED[name]:
        assert any(line.startswith(expected) for line in lines), (expected, lines)
