"""The worker process: one namespace of a tenant, run outside the host process.

The host starts a Python process that runs :func:`main` on one end of a socket
pair. Messages are JSON lists in length-prefixed frames (see ``protocol``). The
host sends requests ``[kind, id, ...]``; the worker answers
``["reply", id, ok, value]``, where a failure's value is
``[error kind, type name, message]``. The worker also asks the host
(``publish`` and ``rpc`` from its mods), so both sides handle messages
concurrently. When the socket closes (the host stopped or died) the worker
shuts its mods down and exits.

The process the host starts forks at once and stays behind as the keeper of
the worker's session and process group: it runs no tenant code, so it can
always act. When the worker ends, however it ends, or the host dies (the
kernel tells the keeper with SIGTERM), the keeper kills the whole session,
itself last, so nothing the tenant's code started outlives its worker
(see ``process_group``).
The worker dies with its keeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import importlib.abc
import importlib.machinery
import inspect
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import protocol
from ..agent import LoadedNamespace, load_namespace
from ..agent_threads import AgentThreads
from ..errors import PlughostError
from ..events import Event, as_response, matches, topic_allowed
from ..mod import LoadedMod, LocalControl, ResolvedModPath, stop_mod
from ..naming import Namespace
from ..protocol import InstanceSpecTuple, RemoteError, WorkerSpec
from ..storage import CallState, enter, install_call_environ, leave
from .process_group import kill_session

_THREADS = 32  # sync calls a worker runs at once, as many as a host's agent threads
_KILL_ROUNDS = 1000
_SPARE_TASKS = 4  # processes the limit may still allow when a thread or a fork was refused


class _LibraryFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in a tenant's installed libraries, before the installed
    packages: the worker is the tenant's alone, so they load under their own names,
    compiled extensions included; a package's submodules follow its ``__path__``."""

    def __init__(self, folder: str) -> None:
        self._folder = [folder]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, self._folder)


def _import_from(folder: str) -> None:
    """Let the tenant's code import its libraries in ``folder`` (``sys.path`` is left as it
    is): ahead of the path finder, so that its versions win over the host's."""
    finders = sys.meta_path
    at = next(
        (i for i, f in enumerate(finders) if f is importlib.machinery.PathFinder), len(finders)
    )
    finders.insert(at, _LibraryFinder(folder))


def describe_instance(mod: LoadedMod) -> dict[str, Any]:
    """What the host needs to route to an instance it cannot see."""
    return {
        "name": mod.mod_id,
        "mod_path": mod.mod_path,
        "class": mod.class_name,
        "config": mod.config,
        "expose": list(mod.instance.expose),
        "handlers": [pattern for pattern, _ in mod.handlers],
        "topics": sorted(mod.topics),
        "rpcs": sorted(mod.rpcs),
    }


class _TooLarge(ValueError):
    """A message over the largest frame the host takes from this worker."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes is over the {limit}-byte limit")


class _HostLink:
    """The host a worker's mods see: publishing and RPC go through the network."""

    def __init__(self, worker: _Worker, data_dir: str) -> None:
        self._worker = worker
        self.data_dir = Path(data_dir)

    async def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        tenant: str | None = None,
        source_id: str = "system",
    ) -> int:
        delivered: int = await self._worker.ask("publish", topic, dict(data), tenant, source_id)
        return delivered

    async def rpc(
        self, name: str, method: str, *args: Any, tenant: str | None = None, **kwargs: Any
    ) -> Any:
        return await self._worker.ask("rpc", name, method, args, kwargs, tenant)


class _Worker:
    def __init__(self, sock: socket.socket, spec: WorkerSpec) -> None:
        self.sock = sock
        self.spec = spec
        self.connection: protocol.Connection | None = None
        self.link = _HostLink(self, spec.data_dir)
        self.control = LocalControl(self.link)
        self.mods: dict[str, LoadedMod] = {}
        self.entry: LoadedNamespace | None = None
        self.requests = protocol.Requests()
        self.closed: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.threads = AgentThreads(_THREADS)
        limits = dict(spec.limits)
        self.max_frame = (
            limits["message_mb"] << 20 if "message_mb" in limits else protocol.MAX_FRAME
        )

    # -- messages ----------------------------------------------------------------------

    async def _send(self, message: list[Any]) -> None:
        # Encoded at once, however large: only this tenant's own requests wait meanwhile,
        # and the host decodes a large frame off its loop.
        assert self.connection is not None
        frame = protocol.encode(message)
        if len(frame) > self.max_frame:  # the host would take it for a broken worker
            raise _TooLarge(len(frame), self.max_frame)
        self.connection.write(frame)
        await self.connection.drain()

    async def ask(self, kind: str, *args: Any) -> Any:
        message, future = self.requests.open(kind, *args)
        try:
            await self._send(message)
        except (TypeError, ValueError) as exc:
            self.requests.drop(message)
            raise RemoteError("encode", type(exc).__name__, f"cannot send: {exc}") from None
        return await future

    def _on_message(self, message: list[Any]) -> None:
        kind, request_id = message[0], message[1]
        if kind == "reply":
            self.requests.settle(message)
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(kind, request_id, tuple(message[2:]))
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_closed(self, error: protocol.WireError | None) -> None:
        self._close()

    def _close(self) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    async def _answer(self, kind: str, request_id: int, args: tuple[Any, ...]) -> None:
        try:
            value = await self._handle(kind, args)
        except Exception as exc:
            limit = _limit_reached(exc, dict(self.spec.limits)) if self.spec.limits else None
            if limit is not None:
                failure = ["limit", limit[0], limit[1]]
            elif isinstance(exc, RemoteError):
                failure = [exc.kind, exc.error_type, exc.message]
            else:
                failure = ["error", type(exc).__name__, str(exc)]
            reply = ["reply", request_id, False, failure]
        else:
            reply = ["reply", request_id, True, value]
        try:
            await self._send(reply)
        except _TooLarge as exc:
            failure = ["limit", "message_mb", str(exc)]
            await self._send(["reply", request_id, False, failure])
        except (TypeError, ValueError) as exc:
            failure = ["encode", type(exc).__name__, f"the answer is not JSON: {exc}"]
            await self._send(["reply", request_id, False, failure])
        except (OSError, AssertionError):
            self._close()
        if kind == "stop":
            self._close()

    # -- requests from the host ----------------------------------------------------------

    async def _handle(self, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "call":
            return await self._call(*args)
        if kind == "rpc":
            name, method, call_args, call_kwargs = args
            mod = self._mod(name)
            function = mod.rpcs.get(method)
            if function is None:
                raise RemoteError("unknown_rpc", "UnknownRpcError", method)
            try:
                return await _invoke(self.threads, mod, function, *call_args, **call_kwargs)
            except Exception as exc:
                # A refusal by the host, met inside the method, keeps its own name.
                error_type = exc.error_type if isinstance(exc, RemoteError) else type(exc).__name__
                raise RemoteError("rpc", error_type, str(exc)) from exc
        if kind == "event":
            name, event_data = args
            mod = self._mod(name)
            event = Event.model_validate(event_data)
            for pattern, handler in mod.handlers:
                if matches(pattern, event.event_name):
                    return as_response(
                        await _invoke(self.threads, mod, handler, event)
                    ).model_dump()
            raise RemoteError("no_handler", "LookupError", event.event_name)
        if kind == "topic":
            name, topic, event_data = args
            mod = self._mod(name)
            event = Event.model_validate(event_data)
            for handler in mod.topics.get(topic, []):
                await _invoke(self.threads, mod, handler, event)
            return None
        if kind == "restart":
            return await self._restart(*args)
        if kind == "unload":
            mod = self._mod(args[0])
            del self.mods[mod.mod_id]
            report = await stop_mod(mod, self.spec.unload_timeout)
            return report.message
        if kind == "stop":
            return None
        raise RemoteError("error", "ValueError", f"unknown request {kind!r}")

    def _mod(self, name: str) -> LoadedMod:
        mod = self.mods.get(name)
        if mod is None or not mod.accepting:
            raise RemoteError("not_loaded", "ModNotLoadedError", name)
        return mod

    async def _call(self, agent: str, args: dict[str, Any], wire: list[Any] | None) -> Any:
        assert self.entry is not None
        state = None
        if wire is not None and self.spec.state is not None:
            try:
                state = CallState.from_wire(self.spec.tenant, Path(self.spec.state), wire)
            except (TypeError, ValueError) as exc:
                raise RemoteError("error", "ValueError", str(exc)) from None
        slot = self.entry.find(agent)
        if slot is None:
            raise RemoteError(
                "unknown_agent", "UnknownAgentError", ",".join(sorted(self.entry.agents))
            )
        problem = slot.check(args)
        if problem is not None:
            raise RemoteError("invalid_arguments", slot.name, problem)
        entered = enter(state)  # the thread of a sync agent runs in this context
        try:
            if slot.is_async:
                return await slot.instance.perform(**args)
            call = functools.partial(slot.instance.perform, **args)
            return await self.threads.run(call, lambda: None)
        except Exception as exc:
            raise RemoteError("agent", type(exc).__name__, str(exc)) from exc
        finally:
            leave(entered)

    async def _start_instance(self, folder: str, spec: InstanceSpecTuple) -> LoadedMod:
        path, name, config, expose = spec
        module, _, class_name = path.partition(":")
        resolved = ResolvedModPath(path, Path(folder), class_name or None, module)
        try:
            return await self.control.start(
                resolved, name, config, self.spec.tenant, expose=expose, from_bundle=True
            )
        except PlughostError as exc:
            raise RemoteError("load", type(exc).__name__, str(exc)) from exc

    async def _restart(self, name: str) -> dict[str, Any]:
        old = self._mod(name)
        spec = (old.mod_path, old.mod_id, old.config, old.instance.expose)
        new = await self._start_instance(self.spec.folder, spec)
        # The host would refuse it after the swap, and the instance would be gone: the old
        # one keeps running instead. The host checks again; this only spares the tenant.
        tenant, shared = self.spec.tenant, self.spec.shared_topics
        refused = sorted(t for t in new.topics if not topic_allowed(t, tenant, (), shared))
        if refused:
            await stop_mod(new, self.spec.unload_timeout)
            raise RemoteError(
                "restart", "ModLoadError", f"it subscribes outside its tenant: {', '.join(refused)}"
            )
        self.mods[name] = new
        await stop_mod(old, self.spec.unload_timeout)
        return describe_instance(new)

    # -- lifetime ------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self.connection = await protocol.connect(self.sock, self._on_message, self._on_closed)
        try:
            tenant, snapshot = self.spec.tenant, self.spec.snapshot
            # One namespace a process: its name only has to be right, not unique across workers.
            namespace = (
                Namespace(tenant, snapshot=snapshot)
                if snapshot is not None
                else Namespace(tenant, version=self.spec.version)
            )
            if self.spec.libraries is not None:
                _import_from(self.spec.libraries)
            self.entry = await asyncio.to_thread(load_namespace, namespace, Path(self.spec.folder))
            for spec in self.spec.instances:
                mod = await self._start_instance(self.spec.folder, spec)
                self.mods[mod.mod_id] = mod
        except Exception as exc:
            kind = exc.kind if isinstance(exc, RemoteError) else "load"
            error_type = exc.error_type if isinstance(exc, RemoteError) else type(exc).__name__
            await self._send(["failed", 0, kind, error_type, str(exc)])
            await self._shutdown()
            return
        agents = {
            name: [str(slot.instance.metadata.get("description", "")), slot.instance.to_tool()]
            for name, slot in self.entry.agents.items()
        }
        await self._send(["ready", 0, agents, [describe_instance(m) for m in self.mods.values()]])
        await self.closed
        await self._shutdown()

    async def _shutdown(self) -> None:
        for mod in list(self.mods.values()):
            await stop_mod(mod, self.spec.unload_timeout)
        self.mods.clear()
        if self.entry is not None:
            self.entry.unload()


# What a sandbox's limits make system calls fail with (``RLIMIT_NPROC`` makes ``fork`` and
# new threads fail with EAGAIN).
_LIMIT_ERRNOS = {
    errno.EMFILE: "open_files",
    errno.EFBIG: "file_size_mb",
    errno.ENOSPC: "tmp_mb",
    errno.EAGAIN: "processes",
}


def _limit_reached(error: BaseException, limits: Mapping[str, int]) -> tuple[str, str] | None:
    """The limit that ``error`` (or what caused it) shows was reached, and what was raised.

    EAGAIN counts for the processes limit only when the sandbox's processes and threads
    are at it: a non-blocking socket raises it too.
    """
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        text = f"{type(found).__name__}: {found}"
        limit = None
        if isinstance(found, MemoryError):
            limit = "memory_mb"
        elif isinstance(found, OSError) and found.errno in _LIMIT_ERRNOS:
            limit = _LIMIT_ERRNOS[found.errno]
        elif isinstance(found, RuntimeError) and "can't start new thread" in str(found):
            limit = "processes"
        if limit == "processes" and _tasks() < limits.get("processes", 0) - _SPARE_TASKS:
            limit = None
        if limit is not None:
            return limit, text
        found = found.__cause__ or found.__context__
    return None


def _tasks() -> int:
    """The processes and threads this process's pid namespace holds (a sandbox's own)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


async def _invoke(
    threads: AgentThreads, mod: LoadedMod, function: Any, *args: Any, **kwargs: Any
) -> Any:
    """Run a handler or RPC method of ``mod``, counted so that its unload waits for it (for
    a sync one, until its thread returns)."""
    mod.in_flight += 1
    mod.idle.clear()

    def finished() -> None:
        mod.in_flight -= 1
        if mod.in_flight == 0:
            mod.idle.set()

    if not inspect.iscoroutinefunction(function):
        return await threads.run(functools.partial(function, *args, **kwargs), finished)
    try:
        return await function(*args, **kwargs)
    finally:
        finished()


def main(descriptor: int) -> None:
    """The worker's entry point: serve the host on the socket ``descriptor``.

    The first frame is the :class:`WorkerSpec`; the worker runs until the
    host asks it to stop or the socket closes, then exits at once, even if
    an agent's thread is still busy.
    """
    _keep_the_group(descriptor)
    sock = socket.socket(fileno=descriptor)
    with sock.makefile("rb") as stream:
        size = int.from_bytes(stream.read(4), "big")
        spec = WorkerSpec.from_message(json.loads(stream.read(size)))
    install_call_environ()
    asyncio.run(_serve(_Worker(sock, spec)))


async def _serve(worker: _Worker) -> None:
    try:
        await worker.run()
    finally:
        # Exit here: asyncio.run would otherwise wait for agent threads that are still busy.
        os._exit(0)


class _HostDied(Exception):
    pass


def _host_died(signum: int, frame: object) -> None:
    raise _HostDied


def _keep_the_group(descriptor: int) -> None:
    """Fork; return in the worker, and in the parent keep the group until the worker ends."""
    host, keeper = os.getppid(), os.getpid()
    worker = os.fork()
    if worker == 0:
        _die_with_parent(signal.SIGKILL)
        if os.getppid() != keeper:  # the keeper died before the kernel was asked
            os._exit(1)
        return
    os.close(descriptor)  # the host must see the socket close when the worker ends
    signal.signal(signal.SIGTERM, _host_died)
    _die_with_parent(signal.SIGTERM)
    status = -signal.SIGKILL  # the host, dying, told the keeper: the worker goes with it
    try:
        if os.getppid() == host:  # else the host died before the kernel was asked
            status = os.waitstatus_to_exitcode(os.waitpid(worker, 0)[1])
    except _HostDied:
        pass
    finally:
        # The host's death may be told (SIGTERM) after the worker saw it and ended: that must
        # not cut the killing short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Until none is left (a process can fork while the others are being killed), but
        # not for ever: one stuck in the kernel cannot die until it returns.
        for _ in range(_KILL_ROUNDS):
            if not kill_session(keeper, spare=keeper):
                break
        # The worker's status, a signal N as 128 + N: the host names what ended it. An exit
        # code above 127 would read as a signal, so the worker cannot pose as a limit.
        os._exit(128 - status if status < 0 else min(status, 127))


def _die_with_parent(signum: int) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)
