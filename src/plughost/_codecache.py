"""Compiled code shared by content: the same source is compiled once for every namespace.

In memory, a bounded map from the source's sha256 to its code object. On disk
(once a folder is given), one file per compiled source, named by the sha256
of the source and by the interpreter's bytecode magic number and
optimization level: unlike a ``.pyc`` judged by a file's modification time,
an entry can only ever hold the code of exactly that source, so it never runs
stale code, and a new interpreter version never reads an old one's. Each file
carries the sha256 of its own payload; one that is cut short or corrupted is
removed and the source compiled again. Writes go to a temporary name and are
renamed into place, so a reader never sees half of one.

The cache is as trusted as the data folder that holds it: whoever can write
there can already change what tenants deploy.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from types import CodeType

_MAGIC = importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
_MAGIC_HEX = _MAGIC.hex()
_DIGEST = 32


def _with_filename(code: CodeType, filename: str) -> CodeType:
    consts = tuple(
        _with_filename(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


class CodeCache:
    """A bounded, thread-safe map from source digest to compiled module code.

    Code objects are immutable, so namespaces that load the same file share
    one. A hit for the same source at another path gets a copy whose
    ``co_filename`` is that path, so tracebacks and ``linecache`` still point
    at the file that really runs; that copy is far cheaper than compiling.

    Args:
        max_entries: code objects kept in memory.
        max_files: entries kept on disk; past it, the least recently written half
            goes, when the folder is given and after every ``max_files // 2`` writes.
    """

    def __init__(self, max_entries: int = 4096, max_files: int = 50_000) -> None:
        self.max_entries = max_entries
        self.max_files = max_files
        self._entries: OrderedDict[bytes, CodeType] = OrderedDict()
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._written = 0  # entries written since the folder was last trimmed
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    @property
    def folder(self) -> Path | None:
        """Where compiled code is kept on disk, or None (memory only)."""
        return self._folder

    def keep_on_disk(self, folder: Path | None) -> None:
        """Keep compiled code in ``folder`` from now on (None: memory only).

        Past ``max_files`` entries, the least recently written half is removed.
        """
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            _trim(folder, self.max_files)
        self._folder = folder
        self._written = 0

    def code_for(self, source: bytes, filename: str, sha256: bytes | None = None) -> CodeType:
        """Return the module code of ``source`` as compiled from ``filename``.

        ``sha256`` is the digest of ``source``, if the caller has it already.

        Raises:
            SyntaxError: ``source`` does not compile (nothing is cached).
        """
        key = sha256 if sha256 is not None else hashlib.sha256(source).digest()
        with self._lock:
            code = self._entries.get(key)
            if code is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if code is None:
            folder = self._folder
            code = _read(folder, key) if folder is not None else None
            if code is None:
                code = compile(source, filename, "exec", dont_inherit=True)
                if folder is not None:
                    _write(folder, key, code)
                    self._note_written(folder)
                self.misses += 1
            else:
                self.disk_hits += 1
            with self._lock:
                self._entries[key] = code
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return code if code.co_filename == filename else _with_filename(code, filename)

    def _note_written(self, folder: Path) -> None:
        with self._lock:
            self._written += 1
            due = self._written >= max(1, self.max_files // 2)
            if due:
                self._written = 0
        if due:  # a long-running host that keeps deploying new code stays bounded
            _trim(folder, self.max_files)

    def clear(self) -> None:
        """Drop every code object kept in memory (the disk keeps its entries)."""
        with self._lock:
            self._entries.clear()


def _entry(folder: Path, key: bytes) -> str:
    name = f"{key.hex()}-{_MAGIC_HEX}"
    return os.path.join(folder, name[:2], name)


def _read(folder: Path, key: bytes) -> CodeType | None:
    path = _entry(folder, key)
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    payload = data[_DIGEST:]
    code = None
    if hashlib.sha256(payload).digest() == data[:_DIGEST]:
        with contextlib.suppress(ValueError, EOFError, TypeError):
            code = marshal.loads(payload)
    if not isinstance(code, CodeType):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    return code


def _write(folder: Path, key: bytes, code: CodeType) -> None:
    """Best effort: a cache that cannot be written only costs a compile next time."""
    path = _entry(folder, key)
    payload = marshal.dumps(code)
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as stream:
            stream.write(hashlib.sha256(payload).digest() + payload)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _trim(folder: Path, max_files: int) -> None:
    files = [path for path in folder.glob("*/*") if path.is_file()]
    if len(files) <= max_files:
        return
    files.sort(key=_written_at)
    for path in files[: len(files) - max_files // 2]:
        with contextlib.suppress(OSError):
            path.unlink()


def _written_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0
