"""Resident memory of a process, as Linux reports it."""

from __future__ import annotations

from pathlib import Path


def rss_kb(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` (this one by default), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")
