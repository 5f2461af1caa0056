"""Every Python block of the README and of docs/ runs as written, from a copy of the repository's
examples, while another process may hold the default data folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks() -> list[tuple[str, int, str]]:
    """``(document, index, source)`` of every fenced Python block, numbered per document."""
    return [
        (str(document.relative_to(ROOT)), index, block)
        for document in DOCUMENTS
        for index, block in enumerate(_PYTHON_BLOCK.findall(document.read_text()))
    ]


BLOCKS = python_blocks()
PAGES = ["tenants", "bundles", "mods", "placements", "security", "operations"]
"""The pages of concepts under docs/, each with at least one runnable block."""


def test_the_readme_and_every_concept_page_have_python_blocks() -> None:
    documents = {document for document, _, _ in BLOCKS}
    pages = {"README.md"} | {f"docs/{page}.md" for page in PAGES}
    assert pages <= documents, sorted(pages - documents)


def test_every_python_fence_is_closed() -> None:
    # A block left open would be skipped by the pattern, and so never run.
    for document in DOCUMENTS:
        opened = document.read_text().count("```python\n")
        found = sum(1 for name, _, _ in BLOCKS if name == str(document.relative_to(ROOT)))
        assert opened == found, document


@contextlib.contextmanager
def holding_default_data_folder(cwd: Path) -> Iterator[None]:
    """Hold ``cwd/.plughost`` the way a running ``make serve`` holds it (its lock's flock)."""
    (cwd / ".plughost").mkdir()
    descriptor = os.open(cwd / ".plughost" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)


@pytest.mark.parametrize(
    ("document", "index", "source"), BLOCKS, ids=[f"{d}-{i}" for d, i, _ in BLOCKS]
)
def test_the_block_runs_as_written(document: str, index: int, source: str, tmp_path: Path) -> None:
    # A copy of what blocks refer to (examples/), so a run leaves nothing in the repository.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")}
    with holding_default_data_folder(tmp_path):
        result = subprocess.run(
            [sys.executable, "-c", source],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert result.returncode == 0, (document, index, result.stdout, result.stderr)
