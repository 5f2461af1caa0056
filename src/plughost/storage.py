"""Tenant state as agent code sees it, per call: ``self.storage`` and ``BRAINSTEM_MEMORY_PATH``.

Every agent call runs with the state folder of its tenant, or of the user the
call names (``user_id``), in a :class:`CallState`. Agent code reaches it in
two ways:

- ``self.storage``, a :class:`Storage`: the folder (``path``, the tenant's
  ``shared_path``, the ``memory_path`` file) and a small JSON key-value store
  (``get``, ``set``, ``delete``, ``keys``) kept in that folder;
- ``os.environ["BRAINSTEM_MEMORY_PATH"]`` (and ``os.getenv``), which agent files
  written for the swarm server read to find their memory file. During a call
  it names that call's ``memory.json``.

The variable is per call, not per process: :func:`install_call_environ`
replaces ``os.environ`` with a mapping that answers this one name from a
context variable, which each call sets in its own context (a task, or the
thread that runs a sync agent). Two calls of two tenants running at once each
read their own path; setting the variable inside a call changes it for that
call only. Outside a call the variable is whatever the process has. A
subprocess an agent starts inherits the process's environment, not the
call's: it gets the path by ``env=os.environ.copy()``.

A state can be read-only: a snapshot's, or a sealed tenant's. Then
``Storage.set`` and ``Storage.delete`` raise
:class:`~plughost.errors.ReadOnlyStateError`, and the call's folder is a copy
the host checks when the call ends (see :mod:`plughost.state`).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReadOnlyStateError

MEMORY_VARIABLE = "BRAINSTEM_MEMORY_PATH"
MEMORY_FILE = "memory.json"
VALUES_FILE = "values.json"
"""Where :class:`Storage` keeps its keys and values, in the call's folder."""


@dataclass(frozen=True)
class CallState:
    """The state one call runs with.

    Attributes:
        tenant: whose state it is.
        snapshot: the snapshot the call runs in, or ``None`` for the live code.
        root: the tenant's state folder, as the code that runs the call sees it.
        folder: the call's own folder, relative to ``root``: the user's, or the
            tenant's shared one when the call names no user.
        shared: the tenant's shared folder, relative to ``root``.
        user: the user the call names, if any.
        read_only: whether writes are refused (a snapshot, a sealed tenant).
    """

    tenant: str
    snapshot: str | None
    root: Path
    folder: str
    shared: str
    user: str | None
    read_only: bool
    memory: str = field(init=False, repr=False, compare=False)
    """``memory_path`` as text, made once: every call sets it."""

    def __post_init__(self) -> None:
        # Joined as text: a Path costs ten times more.
        object.__setattr__(self, "memory", f"{self.root}/{self.folder}/{MEMORY_FILE}")

    @property
    def path(self) -> Path:
        return self.root / self.folder

    @property
    def memory_path(self) -> Path:
        return Path(self.memory)

    def to_wire(self) -> list[Any]:
        """The state as a worker is told it; the worker has its own ``root``."""
        return [self.snapshot, self.folder, self.shared, self.user, self.read_only]

    @classmethod
    def from_wire(cls, tenant: str, root: Path, fields: list[Any]) -> CallState:
        """The state a host sent (:meth:`to_wire`), under the worker's own ``root``.

        Raises:
            ValueError: ``fields`` is not what :meth:`to_wire` gives, or names a folder
                outside ``root``.
        """
        snapshot, folder, shared, user, read_only = fields
        for relative in (folder, shared):
            if not isinstance(relative, str) or ".." in Path(relative).parts:
                raise ValueError(f"a call's state folder is a relative path, not {relative!r}")
        if not isinstance(read_only, bool):
            raise ValueError("a call's state says whether it is read-only")
        return cls(tenant, snapshot, root, folder, shared, user, read_only)


_call: contextvars.ContextVar[tuple[CallState, str] | None] = contextvars.ContextVar(
    "plughost_call_state", default=None
)
"""The call's state and its ``BRAINSTEM_MEMORY_PATH``, in one variable: a call sets it once
and resets it once."""


Entered = contextvars.Token[tuple[CallState, str] | None] | None


def enter(state: CallState | None) -> Entered:
    """Make ``state`` the call's state in this context (nothing if ``None``), until
    :func:`leave`. (Two functions, not a context manager: every call does this.)"""
    if state is None:
        return None
    return _call.set((state, state.memory))


def leave(entered: Entered) -> None:
    """Undo :func:`enter`."""
    if entered is not None:
        _call.reset(entered)


def _memory_path() -> str | None:
    """The call's ``BRAINSTEM_MEMORY_PATH``, or None outside calls."""
    entered = _call.get()
    return None if entered is None else entered[1]


@contextlib.contextmanager
def no_call_state() -> Iterator[None]:
    """Run the code inside with no call's state: a mod's handler, even one an agent's call
    reached (an event it sent, a topic it published to), is no part of that call."""
    token = _call.set(None)
    try:
        yield
    finally:
        _call.reset(token)


def current() -> Storage:
    """The state of the call running now.

    Raises:
        RuntimeError: no call is running here (code at import, a mod's handler), or its
            placement keeps no state (``ray``).
    """
    entered = _call.get()
    if entered is None:
        raise RuntimeError(
            "self.storage is the state of a call, and none is here: no agent call runs"
            " (code at import, a mod's handler), or the call's placement keeps no tenant"
            " state (ray)"
        )
    return Storage(entered[0])


class Storage:
    """One call's tenant state: a folder and a small key-value store in it.

    ``path`` is the call's folder (its user's, or the tenant's shared one);
    files written there stay with the tenant, are captured by its snapshots,
    and go when it is removed. Values are JSON; ``set`` writes the whole store
    atomically, under a lock, so concurrent calls of one user lose no key.
    """

    def __init__(self, state: CallState) -> None:
        self._state = state

    @property
    def path(self) -> Path:
        """The call's folder."""
        return self._state.path

    @property
    def shared_path(self) -> Path:
        """The tenant's shared folder (``path`` itself when the call names no user)."""
        return self._state.root / self._state.shared

    @property
    def memory_path(self) -> Path:
        """The call's memory file, which ``BRAINSTEM_MEMORY_PATH`` names."""
        return self._state.memory_path

    @property
    def user(self) -> str | None:
        """The user the call names, if any."""
        return self._state.user

    @property
    def read_only(self) -> bool:
        """Whether writes are refused: a snapshot's state, or a sealed tenant's."""
        return self._state.read_only

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._values().get(key, default)

    def keys(self) -> list[str]:
        """The keys that have a value, sorted."""
        return sorted(self._values())

    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON-able) under ``key``.

        Raises:
            ReadOnlyStateError: the state is a snapshot's or a sealed tenant's.
            TypeError: ``value`` is not JSON-able.
        """
        encoded = json.loads(json.dumps(value))  # refused before anything is written
        with self._changing() as values:
            values[key] = encoded

    def delete(self, key: str) -> None:
        """Forget ``key`` (nothing if it has no value).

        Raises:
            ReadOnlyStateError: the state is a snapshot's or a sealed tenant's.
        """
        with self._changing() as values:
            values.pop(key, None)

    def _values(self) -> dict[str, Any]:
        try:
            values: dict[str, Any] = json.loads((self.path / VALUES_FILE).read_bytes())
        except FileNotFoundError:
            return {}
        return values

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        state = self._state
        if state.read_only:
            raise ReadOnlyStateError(state.tenant, state.snapshot, "storage writes are refused")
        self.path.mkdir(exist_ok=True)  # not its parents: a tenant removed stays removed
        with open(self.path / ".values.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            values = self._values()
            yield values
            temporary = self.path / f".values-{os.getpid()}-{id(values)}.tmp"
            temporary.write_text(json.dumps(values))
            temporary.replace(self.path / VALUES_FILE)


# -- BRAINSTEM_MEMORY_PATH per call ----------------------------------------------------

_Environ = type(os.environ)


class _CallEnviron(_Environ):  # type: ignore[valid-type,misc]
    """``os.environ``, except that during a call ``BRAINSTEM_MEMORY_PATH`` is the call's."""

    def __init__(self, base: Any) -> None:
        # The same data: what the process's environment holds is shared, not copied.
        super().__init__(
            base._data, base.encodekey, base.decodekey, base.encodevalue, base.decodevalue
        )

    def __getitem__(self, key: str) -> str:
        if key == MEMORY_VARIABLE:
            path = _memory_path()
            if path is not None:
                return path
        value: str = super().__getitem__(key)
        return value

    def __setitem__(self, key: str, value: str) -> None:
        entered = _call.get()
        if key == MEMORY_VARIABLE and entered is not None:
            _call.set((entered[0], str(value)))  # for this call only
            return
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        if key == MEMORY_VARIABLE and _memory_path() is not None:
            return  # within a call it names the call's file, whatever the call does
        super().__delitem__(key)

    def __iter__(self) -> Iterator[str]:
        names: Iterator[str] = super().__iter__()
        if _memory_path() is None:
            yield from names
            return
        for name in names:
            if name != MEMORY_VARIABLE:
                yield name
        yield MEMORY_VARIABLE

    def __len__(self) -> int:
        length: int = super().__len__()
        if _memory_path() is not None and self.encodekey(MEMORY_VARIABLE) not in self._data:
            length += 1
        return length

    def __contains__(self, key: object) -> bool:
        return (key == MEMORY_VARIABLE and _memory_path() is not None) or super().__contains__(key)


def install_call_environ() -> None:
    """Make ``os.environ`` answer ``BRAINSTEM_MEMORY_PATH`` per call; once per process."""
    if not isinstance(os.environ, _CallEnviron):
        os.environ = _CallEnviron(os.environ)  # noqa: B003 (the same data, answered per call)
