"""The ``ray`` placement: a tenant's worker on a node of a Ray cluster, for more than one machine.

Each namespace (a tenant's live version, each loaded snapshot) gets a Ray actor
of its own, spread over the nodes (``SPREAD``), reserving what the bundle's
``[ray]`` table asks. The actor is the worker's keeper on its node: it writes
the bundle it was sent through Ray's object store (and the tenant's installed
libraries) into a folder of its own, starts the ``process`` placement's worker
there on a socket pair, and relays the worker's frames to the host and back.
So a ray tenant runs the same worker as a ``process`` tenant, with the same
loader, agents, instances and topics, and the same :class:`Supervisor` keeps it:
an actor runs no tenant code, so it always answers, and Ray never restarts one
(``max_restarts=0``); when the worker or the actor ends (its node lost), the
supervisor starts a new actor, wherever Ray places it, after its backoff.

Nothing reaches a node by a host path: the nodes of a real cluster share no
disk with the host. For that reason a ray tenant's calls get no tenant state
(``self.storage`` says so when used): its folder lives on the host.

Where the cluster is: ``ray_address`` (``Network(ray_address=...)``, config
``ray_address``, ``plughost serve --ray-address``); unset, a process already
connected to Ray keeps its connection, else Ray's own ``RAY_ADDRESS``, else the first
ray start starts a new local Ray instance and logs it. Ray is an optional dependency
(``plughost[ray]``): without it the placement is unavailable and a ray deploy is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import BundleRejectedError, PlacementUnavailableError, WorkerStartFailed
from ..folders import read_regular, remove_tree, walk
from ..manifest import MANIFEST, RayResources, read_manifest
from ..protocol import WorkerSpec
from .base import Launch, Started
from .process_group import kill_session
from .worker import Supervisor, Worker, WorkerUnit
from .worker_spawn import ENTRY, ProcessFactory, _Process, _worker_environment, describe_exit

logger = logging.getLogger("plughost.ray")

EXTRA = "pip install 'plughost[ray]'"
"""What installs the placement's dependency."""
_CHUNK = 1 << 20  # bytes relayed in one actor call, at most
_ACTOR_CONCURRENCY = 8  # an actor's calls at once: a send, a receive, a stop and spares
_FOLDER_PREFIX = "plughost-ray-"
_OWNER = "owner"  # in a node folder: the actor process that made it
_CLOSE_WAIT = 5.0  # seconds an actor is given to end its worker and remove its folder
Files = list[tuple[str, bytes]]
"""A folder's regular files, shipped through the object store: ``(relative path, data)``."""


def pack(folder: Path) -> Files:
    """Read the regular files under ``folder`` to ship them to a node (a link is left out,
    never followed: a bundle's and a tenant's libraries' folders hold none that matter)."""
    files: Files = []
    for listed in walk(folder):
        for name in listed.others:
            data = read_regular(name, listed.descriptor)
            if data is not None:
                files.append((listed.child(name), data))
    return files


def unpack(files: Files, folder: Path) -> None:
    """Write shipped ``files`` into ``folder``, refusing any path that leaves it."""
    root = folder.resolve()
    for relative, data in files:
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ValueError(f"a shipped file's path leaves its folder: {relative!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _process_identity(pid: int) -> str | None:
    """``"<pid> <start time>"`` of a running process, which no later process repeats."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{pid} {fields[19]}" if fields[0] != "Z" else None


def sweep_abandoned(top: Path) -> None:
    """Remove the node folders under ``top`` whose actor has ended without removing its
    own (killed, or its process lost): each names its owner in a file, by pid and start
    time."""
    for folder in top.glob(f"{_FOLDER_PREFIX}*"):
        try:
            owner = (folder / _OWNER).read_text().split()
        except OSError:
            continue  # being made, or not one of ours
        if (
            len(owner) == 2
            and owner[0].isdigit()
            and _process_identity(int(owner[0])) != " ".join(owner)
        ):
            remove_tree(folder)


class NodeKeeper:
    """The actor on a node: the keeper of one worker, and its link to the host.

    It runs no tenant code. Each method is a Ray call the host makes; the host
    makes one ``send`` and one ``receive`` at a time, so frames keep their order.
    """

    def __init__(self, tenant: str) -> None:
        self._tenant = tenant
        self._folder: Path | None = None
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, bundle: Files, libraries: Files | None) -> dict[str, Any]:
        """Write the bundle (and libraries) to this node and start the worker on them.

        Returns where it runs: its node, the node's address, the worker's pid there and
        the folders it was given (``bundle``, ``libraries``, ``data``).
        """
        import ray

        await asyncio.to_thread(sweep_abandoned, Path(tempfile.gettempdir()))
        folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{self._tenant}-"))
        self._folder = folder
        (folder / _OWNER).write_text(_process_identity(os.getpid()) or "")
        await asyncio.to_thread(unpack, bundle, folder / "bundle")
        if libraries is not None:
            await asyncio.to_thread(unpack, libraries, folder / "libraries")
        (folder / "data").mkdir()
        host_end, worker_end = socket.socketpair()
        with worker_end:
            self._process = subprocess.Popen(
                [sys.executable, "-c", ENTRY, str(worker_end.fileno())],
                pass_fds=[worker_end.fileno()],
                start_new_session=True,
                env=_worker_environment(),
            )
        host_end.setblocking(False)
        self._socket = host_end
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "address": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "pid": self._process.pid,
            "bundle": str(folder / "bundle"),
            "libraries": str(folder / "libraries") if libraries is not None else None,
            "data": str(folder / "data"),
        }

    async def send(self, data: bytes) -> None:
        """Pass bytes from the host to the worker."""
        assert self._socket is not None
        await asyncio.get_running_loop().sock_sendall(self._socket, data)

    async def receive(self) -> bytes:
        """The worker's next bytes for the host; none once it closed its end."""
        assert self._socket is not None
        try:
            return await asyncio.get_running_loop().sock_recv(self._socket, _CHUNK)
        except OSError:
            return b""

    async def exit_status(self, grace: float) -> int | None:
        """The worker's exit status, if it ends within ``grace`` seconds; then whatever its
        code started is ended."""
        if self._process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self._process.wait, grace)
        if self._process.returncode is None:
            kill_session(self._process.pid)
        return self._process.returncode

    async def close(self) -> None:
        """End the worker and all it started, remove its folder, and end this actor."""
        import ray

        if self._socket is not None:
            self._socket.close()
        if self._process is not None:
            if self._process.returncode is None:
                kill_session(self._process.pid)
            await asyncio.to_thread(self._process.wait)
        if self._folder is not None:
            await asyncio.to_thread(remove_tree, self._folder)
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]


class _Shipment:
    """A launch's files in the object store, put there once for all its actors."""

    def __init__(self, bundle: Path, libraries: Path | None) -> None:
        self._bundle = bundle
        self._libraries = libraries
        self._refs: tuple[Any, Any] | None = None
        self._lock = asyncio.Lock()

    async def refs(self) -> tuple[Any, Any]:
        import ray

        async with self._lock:
            if self._refs is None:
                bundle = await asyncio.to_thread(pack, self._bundle)
                libraries = None
                if self._libraries is not None:
                    libraries = await asyncio.to_thread(pack, self._libraries)
                self._refs = (
                    await asyncio.to_thread(ray.put, bundle),
                    None if libraries is None else await asyncio.to_thread(ray.put, libraries),
                )
            return self._refs


class _Connection:
    """This process's connection to Ray, made once, when the first ray worker starts."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._lock = asyncio.Lock()
        self.started_here = False

    async def ensure(self) -> None:
        import ray

        async with self._lock:
            if ray.is_initialized():
                return
            address = self._address or os.environ.get("RAY_ADDRESS") or None
            if address is None:
                logger.warning(
                    "no ray_address is set: starting a local Ray instance for the ray placement"
                )
            # "local": a new instance, never a cluster another program started on this machine.
            await asyncio.to_thread(ray.init, address=address or "local")
            self.started_here = address is None
            logger.info("connected to Ray for the ray placement")


class _RayProcess(_Process):
    """A worker whose process a :class:`NodeKeeper` actor runs on a node of the cluster."""

    def __init__(
        self,
        spec: WorkerSpec,
        on_request: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        on_exit: Callable[[str], None],
        *,
        connection: _Connection,
        shipment: _Shipment,
        wanted: RayResources,
        availability: str,
    ) -> None:
        super().__init__(spec, on_request, on_exit)
        self._ray = connection
        self._shipment = shipment
        self._wanted = wanted
        self._availability = availability
        self._actor: Any = None
        self._ended_by_host = False  # by the host: kill() or _end_actor()
        self._closing: Any = None  # the actor's close(), under way or done
        self.where: dict[str, Any] = {}
        self._actor_lost: str | None = None
        self._relaying: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id on its node, while its actor runs it."""
        return None if self._ended_by_host else self.where.get("pid")

    @property
    def _started_pid(self) -> int | None:
        return self.where.get("pid")

    @property
    def actor(self) -> str | None:
        """The actor's id, once it is made."""
        return None if self._actor is None else str(self._actor._actor_id.hex())

    async def _launch(self, worker_end: socket.socket) -> None:
        if self._availability != "available":
            raise WorkerStartFailed(
                self.spec.tenant, "ray", "PlacementUnavailableError", self._availability
            )
        try:
            # Placing the actor waits for a node with what it asks free: not for ever.
            await asyncio.wait_for(self._start_actor(), self.spec.start_timeout)
        except TimeoutError:
            self._end_actor()
            raise WorkerStartFailed(
                self.spec.tenant,
                "timeout",
                "TimeoutError",
                f"its Ray actor was not placed and started within {self.spec.start_timeout:.0f}"
                f" s (no node had {self._asked() or 'a worker'} free)",
            ) from None
        except WorkerStartFailed:
            self._end_actor()
            raise
        except BaseException as exc:
            self._end_actor()
            if not isinstance(exc, Exception):
                raise  # cancelled: by a stop that no longer sees this process
            raise WorkerStartFailed(
                self.spec.tenant, "ray", _error_type(exc), _first_line(exc)
            ) from None
        relay = worker_end.dup()
        relay.setblocking(False)
        self._relaying = asyncio.get_running_loop().create_task(self._relay(relay))

    async def _start_actor(self) -> None:
        await self._ray.ensure()
        await self._check_resources()
        bundle, libraries = await self._shipment.refs()
        self._actor = _keeper().options(**self._options()).remote(self.spec.tenant)
        self.where = await self._actor.start.remote(bundle, libraries)

    def _asked(self) -> dict[str, float]:
        asked = dict(self._wanted.resources)
        if self._wanted.num_cpus is not None:
            asked["CPU"] = self._wanted.num_cpus
        return asked

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,  # the supervisor restarts workers: one supervision, not two
            "max_concurrency": _ACTOR_CONCURRENCY,
        }
        if self._wanted.num_cpus is not None:
            options["num_cpus"] = self._wanted.num_cpus
        if self._wanted.resources:
            options["resources"] = dict(self._wanted.resources)
        return options

    async def _check_resources(self) -> None:
        """Refuse at once what no node of the cluster has (Ray would wait for it forever)."""
        import ray

        asked = self._asked()
        nodes = await asyncio.to_thread(ray.nodes)
        if not asked or any(
            node.get("Alive")
            and all(node.get("Resources", {}).get(name, 0) >= need for name, need in asked.items())
            for node in nodes
        ):
            return
        raise WorkerStartFailed(
            self.spec.tenant,
            "ray",
            "ResourcesUnavailable",
            f"no node of the Ray cluster has what its [ray] table asks: {asked}",
        )

    async def _relay(self, relay: socket.socket) -> None:
        """Relay frames both ways; the socket is closed once neither direction uses it."""
        try:
            await asyncio.gather(self._to_worker(relay), self._to_host(relay))
        finally:
            relay.close()

    async def _to_worker(self, relay: socket.socket) -> None:
        """The host's frames to the worker, until the host's end closes."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):  # the worker or its actor is gone: see _to_host
            while data := await loop.sock_recv(relay, _CHUNK):
                await self._actor.send.remote(data)

    async def _to_host(self, relay: socket.socket) -> None:
        """The worker's frames to the host, until the worker's end closes; then the host's
        end reads the end of them."""
        loop = asyncio.get_running_loop()
        try:
            while data := await self._actor.receive.remote():
                await loop.sock_sendall(relay, data)
        except Exception as exc:  # the actor is gone: its node, or Ray, lost it
            self._lost_actor(exc)
        finally:
            with contextlib.suppress(OSError):
                relay.shutdown(socket.SHUT_WR)

    def _lost_actor(self, error: BaseException) -> None:
        if not self._ended_by_host and self._actor_lost is None:  # lost, not ended by the host
            self._actor_lost = f"{_error_type(error)}: {_first_line(error)}"

    def _first_frame(self) -> dict[str, Any]:
        spec = replace(
            self.spec,
            folder=self.where["bundle"],
            data_dir=self.where["data"],
            libraries=self.where["libraries"],
            state=None,
        )
        return spec.to_message()

    def _exit_reason(self, returncode: int | None) -> str:
        if self._actor_lost is not None:
            return f"its Ray actor was lost ({self._actor_lost})"
        return describe_exit(returncode)

    async def _exit_status(self, grace: float) -> int | None:
        if self._actor is None or self._actor_lost is not None or self._ended_by_host:
            return None
        try:
            status: int | None = await self._actor.exit_status.remote(grace)
        except Exception as exc:
            self._lost_actor(exc)
            return None
        return status

    async def _reap(self) -> None:
        return None  # the actor reaps its worker when it closes

    async def _ended_after_stop(self, timeout: float) -> None:
        if self._actor is not None and self._actor_lost is None and not self._ended_by_host:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._actor.exit_status.remote(timeout), timeout + 5)
        self.kill()
        if self._closing is not None:
            try:
                await asyncio.wait_for(self._closing, _CLOSE_WAIT)
            except TimeoutError:
                self._end_actor()  # it does not answer: Ray ends it (its folder is swept)
            except Exception:
                pass  # ended: exit_actor, or it was gone already
        if self._relaying is not None:
            self._relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relaying

    def kill(self) -> None:
        """End the worker, what it started, its folder and its actor."""
        if self._actor is not None and not self._ended_by_host:
            self._ended_by_host = True
            self._closing = self._actor.close.remote()

    def _end_actor(self) -> None:
        """End the actor at once, placed or not (what it made on its node is swept)."""
        import ray

        if self._actor is not None:
            self._ended_by_host = True
            with contextlib.suppress(Exception):
                ray.kill(self._actor)


def _error_type(error: BaseException) -> str:
    """The type of what failed: a Ray task error's cause, not its wrapper."""
    cause = getattr(error, "cause", None)
    return type(cause if isinstance(cause, BaseException) else error).__name__


def _first_line(error: BaseException) -> str:
    """A Ray error's first line: the rest is the remote traceback."""
    cause = getattr(error, "cause", None)
    text = str(cause if isinstance(cause, BaseException) else error)
    return text.splitlines()[0] if text else ""


@functools.cache
def _keeper() -> Any:
    """:class:`NodeKeeper` as a Ray actor class (made once Ray is imported)."""
    import ray

    return ray.remote(NodeKeeper)


def availability() -> str:
    """Whether the placement can run here: Ray is installed."""
    if importlib.util.find_spec("ray") is None:
        return f"unavailable: Ray is not installed ({EXTRA})"
    return "available"


class RayUnit(WorkerUnit):
    """A namespace whose worker runs on a node of the Ray cluster."""

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        process = self.supervisor.process
        if isinstance(process, _RayProcess) and process.pid is not None:  # not a lost one
            found.update(
                actor=process.actor,
                node=process.where.get("node"),
                address=process.where.get("address"),
            )
        return found

    def memory(self) -> int | None:
        return None  # the worker's memory is its node's to tell, not this host's /proc


class Ray(Worker):
    """Runs each namespace in a supervised worker on a node of a Ray cluster.

    Args:
        ray_address: the cluster (as ``ray.init`` takes it); ``None``: the connection this
            process has, or a local Ray instance started at the first ray start.
        ray_resources: the custom resources a tenant's ``[ray]`` table may ask for; a
            deploy asking for another is refused.
    """

    name = "ray"

    def __init__(
        self,
        *args: Any,
        ray_address: str | None = None,
        ray_resources: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._connection = _Connection(ray_address)
        self._resources = ray_resources
        self.availability = availability()

    async def start(self, launch: Launch) -> Started:
        if self.availability != "available":
            raise PlacementUnavailableError(
                self.name, self.availability.removeprefix("unavailable: ")
            )
        asked = read_manifest(launch.folder).ray.resources
        refused = sorted(set(asked) - self._resources)
        if launch.live and refused:  # a deploy; a stored bundle runs without them (_wanted)
            allowed = ", ".join(sorted(self._resources)) or "none"
            raise BundleRejectedError(
                f"[ray] asks for resources tenants may not ask for here: {', '.join(refused)}"
                f" (allowed by the network's ray_resources: {allowed})",
                MANIFEST,
            )
        return await super().start(launch)

    def _wanted(self, launch: Launch) -> RayResources:
        """What the launch's actor reserves: its ``[ray]`` table, but resources the network
        does not let tenants ask for (another tenant's device, a node's own name)."""
        wanted = read_manifest(launch.folder).ray
        allowed = {name: need for name, need in wanted.resources.items() if name in self._resources}
        return wanted.model_copy(update={"resources": allowed})

    def _unit(self, launch: Launch, supervisor: Supervisor) -> WorkerUnit:
        return RayUnit(launch, supervisor, self.name, mounts_state=False)

    def _process(self, launch: Launch, spec: WorkerSpec) -> ProcessFactory:
        libraries = launch.environment.folder if launch.environment else None
        shipment = _Shipment(launch.folder, libraries)
        wanted = self._wanted(launch)
        return functools.partial(
            _RayProcess,
            connection=self._connection,
            shipment=shipment,
            wanted=wanted,
            availability=self.availability,
        )

    async def close(self) -> None:
        if self._connection.started_here:
            import ray

            await asyncio.to_thread(ray.shutdown)
