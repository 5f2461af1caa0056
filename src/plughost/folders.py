"""Folders that tenant code may write to, walked and removed by the host without trusting them.

A sandbox writes its tenant's live state while the host, as root, opens it up,
captures it and removes it; tenant code anywhere may leave a deep tree, a
FIFO, or a link where a folder was a moment ago. So every folder here is
opened relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY |
O_NONBLOCK``: a link is refused rather than followed, a FIFO is never waited
on, and nothing outside the root is ever reached. Nothing recurses: a folder
nested thousands deep costs a loop, not the stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 64
"""Folders a walk goes down; a tree deeper than this is :class:`TooDeep`."""
_REMOVAL_STEPS = 1_000_000  # a tree that code keeps growing while it is removed: give up


class TooDeep(Exception):
    """A tree nests folders deeper than a walk goes (``MAX_DEPTH``)."""


@dataclass
class Listed:
    """One folder of a walk: its path under the root (``""`` for the root), a descriptor
    open on it while the walk is here, its folders (which the walk goes into, in this
    list's order; remove one to leave it out) and its other entries (files, links, FIFOs)."""

    path: str
    descriptor: int
    folders: list[str]
    others: list[str]

    def child(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


def walk(root: Path, max_depth: int = MAX_DEPTH) -> Iterator[Listed]:
    """Each folder under ``root`` (itself first), parents before children.

    A folder that cannot be opened as one (gone, made a link or a file meanwhile)
    is left out.

    Raises:
        TooDeep: a folder is more than ``max_depth`` below ``root``.
        FileNotFoundError: ``root`` is missing (or is a link).
    """
    top = os.open(root, FOLDER)
    try:
        pending = [""]
        while pending:
            path = pending.pop()
            parts = path.split("/") if path else []
            if len(parts) > max_depth:
                raise TooDeep(f"{root}: folders nest deeper than {max_depth}")
            descriptor = _open_below(top, parts)
            if descriptor is None:
                continue
            try:
                folders, others = _listing(descriptor)
                listed = Listed(path, descriptor, folders, others)
                yield listed
                pending.extend(listed.child(name) for name in reversed(listed.folders))
            finally:
                os.close(descriptor)
    finally:
        os.close(top)


def read_regular(name: str, folder: int) -> bytes | None:
    """The content of the regular file ``name`` in the open folder ``folder``; ``None`` for
    a link, a FIFO, a device or a file gone."""
    with open_regular(name, folder) as file:
        return None if file is None else file.read()


def regular_sha256(name: str, folder: int) -> str | None:
    """The sha256 hex of a regular file, read in pieces; ``None`` as :func:`read_regular`."""
    with open_regular(name, folder) as file:
        if file is None:
            return None
        digest = hashlib.sha256()
        while piece := file.read(1 << 20):
            digest.update(piece)
        return digest.hexdigest()


@contextlib.contextmanager
def open_regular(name: str, folder: int) -> Iterator[BinaryIO | None]:
    """The regular file ``name`` in the open folder ``folder``, open to read; ``None`` for
    a link (never followed), a FIFO (never waited on), a device or a file gone."""
    try:
        descriptor = os.open(name, FILE, dir_fd=folder)
    except OSError:
        yield None
        return
    with os.fdopen(descriptor, "rb") as file:
        yield file if stat.S_ISREG(os.fstat(file.fileno()).st_mode) else None


def remove_tree(root: Path) -> None:
    """Remove ``root`` and all it holds, read-only folders included; absent is fine.

    A link is removed itself, never followed. Best effort, like ``rm -rf``: what
    cannot be removed stays.
    """
    try:
        if root.is_symlink() or not root.is_dir():
            root.unlink(missing_ok=True)
            return
        top = os.open(root, FOLDER)
    except OSError:
        return
    try:
        _empty(top)
    finally:
        os.close(top)
    with contextlib.suppress(OSError):
        os.rmdir(root)


def _empty(top: int) -> None:
    # Depth first, without recursion: a folder with no folder left in it is emptied and
    # removed; a folder too deep is moved up to the top first, so no path grows long.
    pending: list[list[str]] = [[]]
    for _ in range(_REMOVAL_STEPS):
        if not pending:
            return
        parts = pending[-1]
        descriptor = _open_below(top, parts)
        if descriptor is None:
            pending.pop()
            continue
        try:
            with contextlib.suppress(OSError):
                os.fchmod(descriptor, stat.S_IRWXU)  # so that its entries can be removed
            folders, others = _listing(descriptor)
            for name in others:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=descriptor)
            if folders and len(parts) >= MAX_DEPTH:
                for name in folders:
                    with contextlib.suppress(OSError):
                        flat = f".removing-{uuid.uuid4().hex}"
                        os.rename(name, flat, src_dir_fd=descriptor, dst_dir_fd=top)
                        pending.append([flat])
                continue
            if folders:
                pending.extend([*parts, name] for name in folders)
                continue
        finally:
            os.close(descriptor)
        pending.pop()
        if parts:
            parent = _open_below(top, parts[:-1])
            if parent is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(parts[-1], dir_fd=parent)
                os.close(parent)


def _open_below(top: int, parts: list[str]) -> int | None:
    """A descriptor on the folder ``parts`` below ``top``, each part opened as a folder and
    never through a link; ``None`` if one cannot be."""
    descriptor = os.dup(top)
    for part in parts:
        try:
            child = os.open(part, FOLDER, dir_fd=descriptor)
        except OSError:
            os.close(descriptor)
            return None
        os.close(descriptor)
        descriptor = child
    return descriptor


def _listing(descriptor: int) -> tuple[list[str], list[str]]:
    folders: list[str] = []
    others: list[str] = []
    for name in sorted(os.listdir(descriptor)):
        try:
            mode = os.stat(name, dir_fd=descriptor, follow_symlinks=False).st_mode
        except OSError:
            continue  # gone meanwhile
        (folders if stat.S_ISDIR(mode) else others).append(name)
    return folders, others
