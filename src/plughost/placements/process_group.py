"""Ending a worker and everything it started: its process group, and its session.

A worker is started in a session of its own, whose id is the pid of the
process the host started. What the worker's code starts stays in that
session, even a process that moved to a group of its own (``setpgid``); only
``setsid`` leaves it, and only OS-level isolation (a sandbox) contains that.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def kill_session(session: int, *, spare: int | None = None) -> int:
    """SIGKILL every process of ``session`` but ``spare``: its process group at once, then
    the members that left the group, found in ``/proc``; how many of those were found."""
    if spare is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)
    found = 0
    for pid in _members(session):
        if pid != spare:
            found += 1
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return found


def _members(session: int) -> list[int]:
    """The live processes of ``session`` (a zombie is dead already, waiting to be reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # After the command's closing parenthesis: state, ppid, pgrp, session, ...
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 3 and fields[3] == str(session) and fields[0] != "Z":
            found.append(int(entry.name))
    return found
