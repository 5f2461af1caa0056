"""Compiled code shared by content: the same source is compiled once for every namespace."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from types import CodeType


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
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CodeType] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

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
            code = compile(source, filename, "exec", dont_inherit=True)
            with self._lock:
                self.misses += 1
                self._entries[key] = code
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return code
        return code if code.co_filename == filename else _with_filename(code, filename)

    def clear(self) -> None:
        """Drop every cached code object."""
        with self._lock:
            self._entries.clear()
