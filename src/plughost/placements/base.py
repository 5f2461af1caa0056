"""The placement interface: where a tenant's code runs, behind one set of operations.

Everything above this package (the deploy pipeline, hot swap, leases,
routing, confinement, health) talks to a :class:`Placement` and the
:class:`~plughost.runtime.Unit` it starts, never to a process or a thread,
so a new placement joins by implementing this interface and nothing else.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..environments import Environment
from ..manifest import InstanceSpec
from ..mod import FailedMod, LoadedMod
from ..naming import Namespace
from ..runtime import Unit


@dataclass(frozen=True)
class Launch:
    """What to start: one namespace of a tenant, from a bundle folder.

    ``instances`` are the declared instances to start with it: those of the
    live deployment when it is deployed or the network starts, none for a
    snapshot or for a namespace started again after it was evicted.
    ``live`` says the namespace is the tenant's live code.
    """

    tenant: str
    namespace: Namespace
    version: int
    digest: str
    folder: Path
    instances: tuple[InstanceSpec, ...] = ()
    live: bool = False
    environment: Environment | None = None
    """The tenant's own libraries, installed: ``dependencies`` in its ``plughost.toml``."""


@dataclass
class Started:
    """What a placement started: the namespace's unit (if it keeps one) and its instances.

    ``failures`` are instances that could not start where a start tolerates it
    (when the network starts again, each instance on its own). ``coming`` gives
    the instances of a unit that could not start yet but keeps trying (a worker
    at the network's start), once it is up: none if it never comes up.
    """

    unit: Unit | None
    instances: list[LoadedMod]
    failures: list[FailedMod] = field(default_factory=list)
    coming: Awaitable[list[LoadedMod]] | None = None
    environment: Environment | None = None
    """The launch's libraries as the placement uses them (in process: with the host's
    copies it shares), when it changed them."""


class Placement(abc.ABC):
    """One way of running tenants' code."""

    name: ClassVar[str]
    availability: str = "available"
    """``"available"``, or ``"unavailable: <why>"`` (health shows it)."""

    def check(self) -> str:
        """Find out whether the placement can run here, as :attr:`availability` says.

        It may block (it runs in a thread, once, when the network starts).
        """
        return self.availability

    @abc.abstractmethod
    async def start(self, launch: Launch) -> Started:
        """Load the namespace and start its instances, all or nothing.

        Raises:
            BundleLoadError, ModLoadError, WorkerStartFailed: something failed to
                load; nothing started is left running.
        """

    @abc.abstractmethod
    async def resume(self, launch: Launch) -> Started:
        """Bring back a live deployment when the network starts again.

        Unlike :meth:`start` it does not fail: what cannot start is shown in
        health (``failures``, or a worker that keeps trying).
        """

    async def close(self) -> None:
        """Stop what the placement still runs (the network is stopping)."""
        return None
