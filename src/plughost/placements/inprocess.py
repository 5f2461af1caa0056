"""The ``inprocess`` placement: a tenant's namespaces load into the host process itself.

Cheapest and fastest (a call is a method call, about a microsecond for an
async agent), it separates names, not crashes: namespaces keep tenants'
modules apart and loads are tamper-evident, but the code shares the host's
memory, files and network. Sync agents run in the agent threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .. import bounded_json
from ..agent import AgentInfo, LoadedNamespace, load_namespace
from ..agent_threads import AgentThreads
from ..deadlines import DeadlineExceeded, Deadlines
from ..environments import Environment, for_in_process
from ..errors import (
    AgentError,
    CallTimeoutError,
    DependencyError,
    InvalidArgumentsError,
    PlughostError,
    UnknownAgentError,
)
from ..loader import Libraries
from ..manifest import InstanceSpec
from ..mod import FailedMod, LoadedMod, LocalControl, ResolvedModPath, stop_mod
from ..runtime import Handler, Unit
from ..storage import CallState, enter, leave
from .base import Launch, Placement, Started

_PLAIN = frozenset({str, int, float, bool, type(None)})


class InProcessUnit(Unit):
    """A namespace loaded in this process, with its agents instantiated."""

    def __init__(
        self,
        loaded: LoadedNamespace,
        digest: str,
        threads: AgentThreads,
        deadlines: Deadlines,
        call_timeout: float,
    ) -> None:
        super().__init__(loaded.namespace, digest)
        self.loaded = loaded
        self._threads = threads
        self._deadlines = deadlines
        self._call_timeout = call_timeout

    def agents(self) -> list[AgentInfo]:
        return self.loaded.describe()

    async def call(
        self,
        agent: str,
        args: Mapping[str, Any],
        release: Callable[[], None],
        state: CallState | None = None,
    ) -> Any:
        tenant = self.namespace.tenant
        slot = self.loaded.find(agent)
        if slot is None:
            release()
            known = sorted(self.loaded.agents)
            raise UnknownAgentError(tenant, agent, self.namespace.snapshot, known)
        problem = slot.check(args)
        if problem is not None:
            release()
            raise InvalidArgumentsError(tenant, slot.name, problem)
        # Set in this task's context, which a sync agent's thread runs in too.
        entered = enter(state)
        try:
            if slot.is_async:
                try:
                    result = await self._deadlines.run(
                        slot.instance.perform(**args), self._call_timeout
                    )
                finally:
                    release()
            else:
                call = functools.partial(slot.instance.perform, **args)
                result = await self._deadlines.run(
                    self._threads.run(call, release), self._call_timeout
                )
        except DeadlineExceeded:
            raise CallTimeoutError(tenant, agent, self._call_timeout) from None
        except PlughostError:
            raise
        except Exception as exc:
            raise AgentError(tenant, agent, type(exc).__name__, str(exc)) from exc
        finally:
            leave(entered)
        if type(result) not in _PLAIN:
            # What a worker could not send back is refused here too: one contract everywhere.
            try:
                await bounded_json.dumps_async(result)  # a large answer off the loop
            except (TypeError, ValueError) as exc:
                message = f"the answer is not JSON: {exc}"
                raise AgentError(tenant, agent, type(exc).__name__, message) from None
        return result

    def handlers(self) -> list[Handler]:
        return [
            (f"agent {agent.name} in {self.namespace!r}", pattern, handler)
            for agent in self.loaded.agents.values()
            for pattern, handler in agent.handlers
        ]

    def memory(self) -> int | None:
        # Shallow: the modules, their globals and the code of their functions and classes.
        total = 0
        for module in self.loaded.bundle.modules.values():
            values = vars(module)
            total += sys.getsizeof(module) + sys.getsizeof(values)
            for value in values.values():
                total += sys.getsizeof(value)
                code = getattr(value, "__code__", None)
                if code is not None:
                    total += sys.getsizeof(code.co_code) + sys.getsizeof(code)
        return total

    def unload(self) -> None:
        self.loaded.unload()


class InProcess(Placement):
    """Runs namespaces in this process.

    Args:
        control: starts and stops mods in this process.
        threads: where sync agents run.
        deadlines: ends calls past ``call_timeout``.
        unload_timeout: how long an unload waits for an instance's running handlers.
        call_timeout: the deadline of one agent call.
    """

    name = "inprocess"

    def __init__(
        self,
        control: LocalControl,
        threads: AgentThreads,
        deadlines: Deadlines,
        *,
        unload_timeout: float,
        call_timeout: float,
    ) -> None:
        self._control = control
        self._threads = threads
        self._deadlines = deadlines
        self._unload_timeout = unload_timeout
        self._call_timeout = call_timeout

    async def start(self, launch: Launch) -> Started:
        environment = _in_process(launch)
        libraries = _libraries(environment)
        loaded = await asyncio.to_thread(load_namespace, launch.namespace, launch.folder, libraries)
        unit = InProcessUnit(
            loaded, launch.digest, self._threads, self._deadlines, self._call_timeout
        )
        started: list[LoadedMod] = []
        try:
            for spec in launch.instances:
                started.append(await self._start_instance(launch, spec, libraries))
        except BaseException:
            for mod in started:
                await stop_mod(mod, self._unload_timeout)
            unit.unload()
            raise
        return Started(unit, started, environment=environment)

    async def resume(self, launch: Launch) -> Started:
        # The namespace itself loads on first use; instances start now, each on its own.
        started: list[LoadedMod] = []
        failures: list[FailedMod] = []
        environment = None
        # If the host's copies no longer serve, its instances and its first call say so.
        with contextlib.suppress(DependencyError):
            environment = _in_process(launch)
        for spec in launch.instances:
            try:
                started.append(await self._start_instance(launch, spec, _libraries(environment)))
            except PlughostError as exc:
                failures.append(FailedMod(spec.name, spec.path, launch.tenant, str(exc)))
        return Started(None, started, failures, environment=environment)

    async def _start_instance(
        self, launch: Launch, spec: InstanceSpec, libraries: Libraries | None
    ) -> LoadedMod:
        resolved = ResolvedModPath(
            spec.path, launch.folder, spec.class_name, spec.module, libraries
        )
        return await self._control.start(
            resolved,
            spec.name,
            dict(spec.config),
            launch.tenant,
            expose=tuple(spec.expose),
            from_bundle=True,
        )


def _in_process(launch: Launch) -> Environment | None:
    """The launch's libraries as a namespace in process uses them.

    Raises:
        DependencyError: a compiled one the host's own copy does not stand in for.
    """
    if launch.environment is None:
        return None
    return for_in_process(launch.environment, launch.tenant)


def _libraries(environment: Environment | None) -> Libraries | None:
    if environment is None:
        return None
    return Libraries(environment.folder, environment.module_names())
