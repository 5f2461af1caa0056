"""The bus: events to their handlers, topics to their subscribers, RPC to its method.

The dispatcher routes by ``destination_id`` (``mod:``, ``agent:``,
``topic:``; ``system:system`` goes to the system handlers it is given) or,
without one, to every handler whose pattern matches; a ``system.*`` event
without a destination goes to the system handlers too. It is the
:class:`~plughost.mod.Host` every mod in this process sees, and it answers
what worker processes ask on their tenant's behalf.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from . import bounded_json
from .agent_threads import AgentThreads
from .deadlines import DeadlineExceeded, Deadlines
from .errors import (
    AmbiguousNameError,
    CallTimeoutError,
    ModNotLoadedError,
    OutsideTenantError,
    PlughostError,
    RpcError,
    UnknownRpcError,
)
from .events import Event, EventResponse, as_response, matches, resolve_topic, topic_allowed
from .metrics import Metrics
from .mod import LoadedMod, ModRegistry, calling_tenant_var, mod_key
from .runtime import Runtime
from .storage import no_call_state

SystemHandler = Callable[[Event, str | None], Awaitable[EventResponse]]
AgentCaller = Callable[[str, str, Mapping[str, Any]], Awaitable[Any]]


class Dispatcher:
    """Routes events, topics and RPC among the mods and agents of one network.

    Args:
        mods: the registry of loaded mods.
        runtime: the loaded namespaces, whose agents' handlers get broadcasts.
        threads: where sync handlers run.
        data_dir: the data folder mods see.
        metrics: counts events.
        system: answers ``system.*`` events (with the tenant they are confined to).
        call_agent: runs an agent for an ``agent:<tenant>/<agent>`` event.
        deadlines: ends RPC calls past ``call_timeout`` seconds.
        shared_topics: absolute topics every tenant's mods may use, besides their own.
    """

    def __init__(
        self,
        mods: ModRegistry,
        runtime: Runtime,
        threads: AgentThreads,
        data_dir: Path,
        metrics: Metrics,
        system: SystemHandler,
        call_agent: AgentCaller,
        deadlines: Deadlines,
        call_timeout: float,
        shared_topics: frozenset[str] = frozenset(),
    ) -> None:
        self._mods = mods
        self._runtime = runtime
        self._threads = threads
        self.data_dir = data_dir
        self._metrics = metrics
        self._system = system
        self._call_agent = call_agent
        self._deadlines = deadlines
        self._call_timeout = call_timeout
        self._acting: Counter[str | None] = Counter()  # handler and RPC calls, by tenant
        self.shared_topics = shared_topics

    # -- events ----------------------------------------------------------------------

    async def send(self, event: Event, confine_to: str | None = None) -> EventResponse:
        """Deliver ``event``; never raises for what a handler or the routing did."""
        token = calling_tenant_var.set(event.tenant)
        try:
            response = await self._route(event, confine_to)
        except PlughostError as exc:
            response = EventResponse(success=False, message=str(exc))
        except Exception as exc:
            response = EventResponse(success=False, message=f"{type(exc).__name__}: {exc}")
        finally:
            calling_tenant_var.reset(token)
        try:
            await bounded_json.dumps_async(response.data)  # large data off the loop
        except (TypeError, ValueError) as exc:
            response = EventResponse(success=False, message=f"the answer is not JSON: {exc}")
        self._metrics.events.labels("ok" if response.success else "failed").inc()
        return response

    async def _route(self, event: Event, confine_to: str | None) -> EventResponse:
        destination = event.destination_id
        # A system.* event acts on the network, with or without system:system as its
        # destination; nobody else may answer one, or forge the notifications it sends.
        if event.event_name.startswith("system.") and destination in (None, "", "system:system"):
            return await self._system(event, confine_to)
        if not destination:
            return await self.broadcast(event)
        kind, _, target = destination.partition(":")
        if kind == "system" and target == "system":
            return await self._system(event, confine_to)
        if kind == "mod" and target:
            mod = self.mod_for(target, event.tenant)
            for pattern, handler in mod.handlers:
                if matches(pattern, event.event_name):
                    return as_response(await self.invoke(mod, handler, event))
            return EventResponse(
                success=False, message=f"mod {mod.key!r} has no handler for {event.event_name!r}"
            )
        if kind == "agent" and "/" in target:
            tenant, _, agent = target.partition("/")
            output = await self._call_agent(tenant, agent, event.payload)
            return EventResponse(success=True, data={"output": output})
        if kind == "topic" and target:
            # A tenant's event was confined before it got here; the admin's reaches any topic.
            topic = resolve_topic(target, event.tenant)
            delivered = await self.deliver(
                topic, event.payload, tenant=event.tenant, source_id=event.source_id
            )
            return EventResponse(
                success=True,
                message=f"delivered to {delivered} subscribers",
                data={"topic": topic, "delivered": delivered},
            )
        return EventResponse(
            success=False,
            message=(
                f"unknown destination_id {destination!r}: expected system:system, mod:<mod_id>, "
                "agent:<tenant>/<agent> or topic:<name>"
            ),
        )

    def mod_for(self, target: str, tenant: str | None) -> LoadedMod:
        """The mod ``target`` names, looked up inside ``tenant`` first, then globally.

        Acting for a tenant, a name resolves inside that tenant or among global mods,
        never in another tenant, even written as another tenant's key; without a
        tenant (the admin), a bare name resolves in any tenant if only one mod has it.

        Raises:
            OutsideTenantError: acting for a tenant, it names another tenant's key.
            ModNotLoadedError: nothing it may reach has that name; the text lists only
                what ``tenant`` may see.
            AmbiguousNameError: several have it.
        """
        if tenant is not None and "/" in target and target.partition("/")[0] != tenant:
            # Refused whether it exists or not: the answer must not tell.
            raise OutsideTenantError(tenant, target)
        candidates = [target] if "/" in target else [mod_key(target, tenant), target]
        for key in candidates:
            mod = self._mods.get(key)
            if mod is not None and mod.accepting:
                return mod
        if "/" not in target:
            found = [
                mod
                for mod in self._mods.loaded()
                if mod.accepting
                and target in (mod.mod_id, mod.class_name)
                and (tenant is None or mod.tenant in (None, tenant))
            ]
            if len(found) == 1:
                return found[0]
            if found:
                raise AmbiguousNameError(target, sorted(mod.key for mod in found))
        raise ModNotLoadedError(target, self._mods.status(tenant)["loaded"])

    async def broadcast(self, event: Event) -> EventResponse:
        """Deliver to every handler matching ``event_name``: of global mods and, for an event
        with a tenant, that tenant's mods; without a tenant, of every mod; and of loaded agents."""
        calls: list[tuple[str, Any]] = []
        for mod in self._mods.loaded():
            if not mod.accepting or (event.tenant and mod.tenant not in (None, event.tenant)):
                continue
            for pattern, handler in mod.handlers:
                if matches(pattern, event.event_name):
                    calls.append((mod.key, self.invoke(mod, handler, event)))
        held = self._runtime.hold()
        try:
            for unit in held:
                if event.tenant and unit.namespace.tenant != event.tenant:
                    continue
                for owner, pattern, handler in unit.handlers():
                    if matches(pattern, event.event_name):
                        calls.append((owner, self._run(handler, event)))
            if not calls:
                return EventResponse(
                    success=False, message=f"no handler for event {event.event_name!r}"
                )
            results = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
        finally:
            for unit in held:
                self._runtime.release(unit)
        responses = {
            owner: (
                EventResponse(success=False, message=f"{type(r).__name__}: {r}")
                if isinstance(r, BaseException)
                else as_response(r)
            )
            for (owner, _), r in zip(calls, results, strict=True)
        }
        if len(responses) == 1:
            return next(iter(responses.values()))
        return EventResponse(
            success=all(r.success for r in responses.values()),
            message=f"delivered to {len(responses)} handlers",
            data={"responses": {owner: r.model_dump() for owner, r in responses.items()}},
        )

    async def notify(
        self,
        event_name: str,
        mod_id: str,
        mod_path: str,
        tenant: str | None,
        **details: Any,
    ) -> None:
        """Tell the subscribers of ``event_name`` that a mod changed: global mods, and the
        mod's own tenant's if it has one (no other tenant learns of it)."""
        event = Event(
            event_name=event_name,
            payload={"mod_id": mod_id, "mod_path": mod_path, "tenant": tenant, **details},
            tenant=tenant,
        )
        await self.broadcast(event)

    async def invoke(self, mod: LoadedMod, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a handler or RPC method of ``mod``, counted (for ``mod`` and for the tenant it
        acts for) so that an unload, or a tenant's removal, can wait for it."""
        mod.in_flight += 1
        mod.idle.clear()
        acting = calling_tenant_var.get()
        self._acting[acting] += 1

        def finished() -> None:
            mod.in_flight -= 1
            if mod.in_flight == 0:
                mod.idle.set()
            self._acting[acting] -= 1
            if not self._acting[acting]:
                del self._acting[acting]

        with no_call_state():  # a mod of another tenant must not see the caller's state
            if not inspect.iscoroutinefunction(function):
                call = functools.partial(function, *args, **kwargs)
                return await self._threads.run(call, finished)
            try:
                return await function(*args, **kwargs)
            finally:
                finished()

    async def drained(self, tenant: str, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until no handler or RPC method runs for ``tenant``;
        a sync one past its caller's deadline is waited for until its thread returns."""
        deadline = time.monotonic() + timeout
        while self._acting.get(tenant) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _run(self, function: Any, *args: Any) -> Any:
        if inspect.iscoroutinefunction(function):
            return await function(*args)
        return await self._threads.run(functools.partial(function, *args), lambda: None)

    # -- topics and RPC: the Host mods see -------------------------------------------

    async def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        tenant: str | None = None,
        source_id: str = "system",
    ) -> int:
        """Publish for the mod ``source_id`` of ``tenant`` (None: a global mod); return how
        many subscribers received it.

        ``topic`` is resolved against the tenant, or is ``/<topic>`` if the mod's
        manifest entry exposes it.

        Raises:
            ValueError: the topic is empty.
            OutsideTenantError: a tenant's mod may not publish there (see
                :func:`~plughost.events.topic_allowed`).
        """
        publisher = self._mods.get(mod_key(source_id, tenant)) if tenant is not None else None
        exposed = publisher.instance.expose if publisher is not None else ()
        resolved = resolve_topic(f"/{topic}" if topic in exposed else topic, tenant)
        if not topic_allowed(resolved, tenant, exposed, self.shared_topics):
            raise OutsideTenantError(str(tenant), f"topic {resolved}")
        return await self.deliver(resolved, data, tenant=tenant, source_id=source_id)

    async def deliver(
        self, topic: str, data: Mapping[str, Any], *, tenant: str | None, source_id: str
    ) -> int:
        """Hand ``data`` to every subscriber of the absolute ``topic``; return how many got it.

        Subscribers are mods with ``@on("topic:<name>")`` whose name resolves to
        ``topic``; each gets an event ``topic.message`` with ``data`` as payload.
        """
        event = Event(
            event_name="topic.message",
            source_id=source_id,
            destination_id=f"topic:{topic}",
            payload=dict(data),
            tenant=tenant,
        )
        calls = [
            self.invoke(mod, handler, event)
            for mod in self._mods.loaded()
            if mod.accepting
            for handler in mod.topics.get(topic, ())
        ]
        await asyncio.gather(*calls, return_exceptions=True)
        return len(calls)

    async def rpc(
        self, name: str, method: str, *args: Any, tenant: str | None = None, **kwargs: Any
    ) -> Any:
        """Call an ``@rpc`` method of the mod named ``name`` (``mod_id`` or ``tenant/mod_id``).

        A bare ``mod_id`` is looked up inside ``tenant`` first, then globally.

        Raises:
            ModNotLoadedError: no such mod.
            UnknownRpcError: the mod has no such RPC method.
            RpcError: the method raised.
            CallTimeoutError: it did not return within ``call_timeout``; a sync method
                keeps its mod's unload waiting until it really returns.
        """
        mod = self.mod_for(name, tenant)
        function = mod.rpcs.get(method)
        if function is None:
            raise UnknownRpcError(mod.key, method, sorted(mod.rpcs))
        token = calling_tenant_var.set(tenant)
        try:
            call = self.invoke(mod, function, *args, **kwargs)
            return await self._deadlines.run(call, self._call_timeout)
        except DeadlineExceeded:
            target = f"{mod.mod_id}.{method}"
            raise CallTimeoutError(mod.tenant, target, self._call_timeout) from None
        except PlughostError:
            raise
        except Exception as exc:
            error_type = getattr(exc, "error_type", type(exc).__name__)  # remote errors name theirs
            raise RpcError(mod.key, method, error_type, str(exc)) from exc
        finally:
            calling_tenant_var.reset(token)

    async def answer_worker(self, tenant: str, kind: str, args: tuple[Any, ...]) -> Any:
        """Requests a worker's mods make to the network: publishing and RPC.

        The worker runs tenant code, so what it says about scope is not taken
        on trust: it acts as its own tenant, and may reach only that tenant's
        topics and instances, global mods, the topics its instances' manifest
        entries expose, and the shared topics.
        """
        if kind == "publish":
            topic, data, _, source_id = args
            if not isinstance(data, dict):
                raise TypeError("published data must be an object")
            return await self.publish(str(topic), data, tenant=tenant, source_id=str(source_id))
        if kind == "rpc":
            name, method, call_args, call_kwargs, _ = args
            if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
                raise TypeError("RPC arguments must be a list and an object")
            # As its tenant: a name resolves in that tenant or among global mods only.
            return await self.rpc(str(name), str(method), *call_args, tenant=tenant, **call_kwargs)
        raise ValueError(f"unknown request {kind!r} from a worker")
