"""The lifecycles of namespaces, mods and workers: states, and the one place each changes.

Every stateful thing health reports on owns a :class:`Lifecycle`. Its state
changes only through :meth:`Lifecycle.set`, which refuses a transition the
table does not allow (a bug, so it raises), logs every change, and tells its
listener (the network's feed, for a worker), so that health, the log and the
feed never disagree with what the code believes.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

log = logging.getLogger("plughost.lifecycle")


class NamespaceState(enum.Enum):
    """A namespace (one version or snapshot of a tenant, in any placement)."""

    LOADING = "loading"
    LIVE = "live"
    DRAINING = "draining"
    UNLOADED = "unloaded"


class ModState(enum.Enum):
    """A mod or a declared instance."""

    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"
    UNLOADED = "unloaded"


class WorkerState(enum.Enum):
    """A worker process (or any placement that runs code outside the host)."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


S = TypeVar("S", bound=enum.Enum)

NAMESPACE_TRANSITIONS: Mapping[NamespaceState, frozenset[NamespaceState]] = {
    NamespaceState.LOADING: frozenset({NamespaceState.LIVE, NamespaceState.UNLOADED}),
    NamespaceState.LIVE: frozenset({NamespaceState.DRAINING, NamespaceState.UNLOADED}),
    NamespaceState.DRAINING: frozenset({NamespaceState.UNLOADED}),
    NamespaceState.UNLOADED: frozenset(),
}
MOD_TRANSITIONS: Mapping[ModState, frozenset[ModState]] = {
    ModState.LOADING: frozenset({ModState.LOADED, ModState.FAILED}),
    ModState.LOADED: frozenset({ModState.UNLOADING}),
    ModState.UNLOADING: frozenset({ModState.UNLOADED}),
    ModState.FAILED: frozenset(),
    ModState.UNLOADED: frozenset(),
}
WORKER_TRANSITIONS: Mapping[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STARTING: frozenset(
        {WorkerState.READY, WorkerState.RESTARTING, WorkerState.STOPPED}
    ),
    WorkerState.READY: frozenset({WorkerState.RESTARTING, WorkerState.STOPPED}),
    WorkerState.RESTARTING: frozenset({WorkerState.READY, WorkerState.FAILED, WorkerState.STOPPED}),
    WorkerState.FAILED: frozenset({WorkerState.STOPPED}),
    WorkerState.STOPPED: frozenset(),
}


class TransitionError(RuntimeError):
    """A state change the lifecycle table forbids: a bug in plughost, never bad input."""

    def __init__(self, subject: str, old: enum.Enum, new: enum.Enum) -> None:
        self.subject = subject
        self.old = old
        self.new = new
        super().__init__(f"{subject}: {old.value} -> {new.value} is not a valid transition")


class Lifecycle(Generic[S]):
    """The state of one thing, changed only by :meth:`set`.

    Args:
        kind: what it is (``"namespace"``, ``"mod"``, ``"worker"``), for the log.
        subject: which one, for errors and the log.
        initial: the state it starts in.
        transitions: the allowed changes, from each state.
        listener: told of each change, with the lifecycle and the state it left.
    """

    def __init__(
        self,
        kind: str,
        subject: str,
        initial: S,
        transitions: Mapping[S, frozenset[S]],
        listener: Callable[[Lifecycle[S], S], None] | None = None,
    ) -> None:
        self.kind = kind
        self._listener = listener
        self.subject = subject
        self._state = initial
        self._transitions = transitions
        self.error: str | None = None

    @property
    def state(self) -> S:
        return self._state

    def set(self, new: S, error: str | None = None) -> None:
        """Move to ``new``; ``error`` says why, when the move is a failure.

        Setting the current state again only updates the error.

        Raises:
            TransitionError: the table does not allow the move.
        """
        if new is not self._state and new not in self._transitions[self._state]:
            raise TransitionError(self.subject, self._state, new)
        old, self._state, self.error = self._state, new, error
        if log.isEnabledFor(logging.DEBUG):
            why = f" ({error})" if error else ""
            log.debug("%s %s: %s -> %s%s", self.kind, self.subject, old.value, new.value, why)
        if self._listener is not None and new is not old:
            try:
                self._listener(self, old)
            except Exception:  # a listener's failure must not stop what changed state
                log.exception("%s %s: its listener failed", self.kind, self.subject)
