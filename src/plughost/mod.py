"""Mods: extensions loaded and unloaded while the network runs.

A mod is a class (a :class:`Mod` subclass) in a ``.py`` file or a package
folder found under an allowed mod root, or in a module of a tenant's bundle
that the bundle's ``plughost.toml`` declares as an instance. Its code is
loaded like a bundle, under its own namespace (``Namespace("*",
mod="shared_cache", load=3)``, or ``Namespace("robot1", mod="camera", load=4)``
inside a tenant), never under its plain dotted name, so an unload followed by
a load runs the code as it is on disk.

Loading is a sequence of steps (resolve the path, import, find the class,
instantiate, initialize, collect handlers); a failure at any step undoes the
ones before it. :class:`ModRegistry` is the single record of what is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import inspect
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

from .errors import ModLoadError, ModPathRefusedError, PlughostError
from .events import handlers_of, is_topic_pattern, resolve_topic, topic_of
from .lifecycle import MOD_TRANSITIONS, Lifecycle, ModState
from .loader import Libraries, LoadedBundle, UnloadReport, load_bundle
from .naming import Namespace

_log = logging.getLogger(__name__)


class Host(Protocol):
    """What a mod sees of the network it runs in: publishing, RPC and a data folder.

    The network is one host; a worker process gives its mods another that
    forwards to the network. A mod never holds the network itself.
    """

    data_dir: Path

    async def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        tenant: str | None = None,
        source_id: str = "system",
    ) -> int: ...

    async def rpc(
        self, name: str, method: str, *args: Any, tenant: str | None = None, **kwargs: Any
    ) -> Any: ...


GLOBAL_SCOPE = "*"
"""The tenant part of the namespace of a mod loaded outside any tenant."""


def mod_namespace(mod_id: str, tenant: str | None, generation: int) -> Namespace:
    """The namespace of one load of a mod; every load gets its own generation, so a
    replacement can be loaded beside the instance it replaces."""
    return Namespace(tenant or GLOBAL_SCOPE, mod=mod_id, load=generation)


_RPC_ATTRIBUTE = "__plughost_rpc__"
F = TypeVar("F", bound=Callable[..., Any])


def rpc(method: F) -> F:
    """Mark a mod method as callable through ``network.rpc("<mod_id>", "<method>", ...)``."""
    setattr(method, _RPC_ATTRIBUTE, True)
    return method


calling_tenant_var = contextvars.ContextVar[str | None]("plughost_calling_tenant", default=None)
"""The tenant the RPC call being served acts for: set by the network around each call."""


def calling_tenant() -> str | None:
    """Inside an ``@rpc`` method: the tenant whose code (or token) made the call, or ``None``
    for the admin and the network itself. A global mod that keeps data per tenant answers a
    tenant's call with that tenant's data only."""
    return calling_tenant_var.get()


class Mod:
    """Base class of mods.

    The network sets, before ``initialize()``: ``mod_id``, ``config`` (exactly
    the dict the user gave), ``network`` (a :class:`Host`), ``tenant`` (``None`` for a global
    mod) and ``namespace`` (where the mod's code is loaded). Subclasses take
    no constructor arguments; set up in ``initialize()``.
    """

    mod_id: str
    config: dict[str, Any]
    network: Host
    tenant: str | None
    namespace: Namespace

    def initialize(self) -> bool | None:
        """Start the mod; sync or async. ``False`` or an exception fails the load."""
        return None

    def shutdown(self) -> None:
        """Stop the mod; sync or async. The mod is removed whatever this does."""

    expose: tuple[str, ...] = ()

    async def publish(self, topic: str, data: dict[str, Any]) -> int:
        """Publish ``data`` to ``topic`` resolved against this mod's tenant.

        A topic its manifest entry exposes is published under the absolute
        ``/<topic>`` instead. A tenant's mod may publish only to its tenant's
        topics, those it exposes and the shared ones. Returns how many
        subscribers received it.

        Raises:
            OutsideTenantError: the topic is outside what the mod may reach.
        """
        return await self.network.publish(topic, data, tenant=self.tenant, source_id=self.mod_id)

    async def rpc(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the mod ``name``, looked up inside this mod's tenant first."""
        return await self.network.rpc(name, method, *args, tenant=self.tenant, **kwargs)


@dataclass(frozen=True)
class ResolvedModPath:
    """Where a mod's code is: a ``.py`` file or package folder, or, with ``module``, that
    module of a bundle folder (a mod instance a bundle declares); and a class name if given.
    ``libraries`` are its tenant's own, in process (see :class:`~plughost.loader.Libraries`)."""

    mod_path: str
    source: Path
    class_name: str | None
    module: str | None = None
    libraries: Libraries | None = None

    @property
    def default_id(self) -> str:
        """The last dotted segment, or the file or folder stem."""
        module_part = self.mod_path.split(":", 1)[0]
        if _looks_like_file_path(module_part):
            return self.source.stem if self.source.is_file() else self.source.name
        return module_part.rsplit(".", 1)[-1]


def _looks_like_file_path(text: str) -> bool:
    return "/" in text or text.endswith(".py") or text.startswith(".")


class ModRoots:
    """The places mods may be loaded from: dotted packages and folders.

    Args:
        roots: each a dotted package name (``plughost.mods``) or a folder path.
            A dotted ``mod_path`` must start with a dotted root or lie, as
            folders, below a folder root; a file ``mod_path`` must lie inside
            a folder root or a dotted root's folder.
    """

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.dotted: list[tuple[str, Path]] = []
        self.folders: list[Path] = []
        for root in roots:
            if isinstance(root, str) and _is_dotted(root):
                folder = _package_folder(root)
                if folder is not None:
                    self.dotted.append((root, folder))
            else:
                self.folders.append(Path(root).resolve())

    def describe(self) -> str:
        return ", ".join([name for name, _ in self.dotted] + [str(f) for f in self.folders])

    def resolve(self, mod_path: str) -> ResolvedModPath:
        """Find the file or package folder ``mod_path`` names, without importing it.

        Raises:
            ModPathRefusedError: it is malformed, outside every root, or missing.
        """
        if not isinstance(mod_path, str) or not mod_path.strip():
            raise ModPathRefusedError(str(mod_path), "mod_path must be a non-empty string")
        module_part, _, class_name = mod_path.partition(":")
        if class_name and not class_name.isidentifier():
            raise ModPathRefusedError(mod_path, f"{class_name!r} is not a class name")
        if _looks_like_file_path(module_part):
            source = self._resolve_file(mod_path, Path(module_part))
        elif _is_dotted(module_part):
            source = self._resolve_dotted(mod_path, module_part)
        else:
            raise ModPathRefusedError(mod_path, "expected a dotted module path or a .py file path")
        return ResolvedModPath(mod_path, source, class_name or None)

    def _resolve_dotted(self, mod_path: str, dotted: str) -> Path:
        parts = dotted.split(".")
        candidates: list[Path] = []
        for name, folder in self.dotted:
            root_parts = name.split(".")
            if parts[: len(root_parts)] == root_parts and len(parts) > len(root_parts):
                candidates.append(folder.joinpath(*parts[len(root_parts) :]))
        candidates += [folder.joinpath(*parts) for folder in self.folders]
        if not candidates:
            raise ModPathRefusedError(
                mod_path, f"not under an allowed mod root ({self.describe()})"
            )
        for base in candidates:
            for found in (base.with_suffix(".py"), base):
                if found.is_file() or (found / "__init__.py").is_file():
                    return self._inside(mod_path, found)
        raise ModPathRefusedError(
            mod_path, f"no such module under the mod roots ({self.describe()})"
        )

    def _inside(self, mod_path: str, path: Path) -> Path:
        """``path`` with every link resolved, if that is still inside a mod root.

        Raises:
            ModPathRefusedError: it resolves outside every root (a link pointing out).
        """
        resolved = path.resolve()
        allowed = self.folders + [folder for _, folder in self.dotted]
        if not any(resolved.is_relative_to(folder) for folder in allowed):
            raise ModPathRefusedError(
                mod_path, f"not inside an allowed mod root ({self.describe()})"
            )
        return resolved

    def _resolve_file(self, mod_path: str, path: Path) -> Path:
        resolved = self._inside(mod_path, path)
        if resolved.is_file() and resolved.suffix == ".py":
            return resolved
        if resolved.is_dir() and (resolved / "__init__.py").is_file():
            return resolved
        raise ModPathRefusedError(mod_path, "no such .py file or package folder")


def _is_dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _package_folder(dotted: str) -> Path | None:
    """The folder of an importable package, found without running the package itself."""
    try:
        spec = importlib.util.find_spec(dotted)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


class InstanceControl(Protocol):
    """Where a loaded mod's code runs, and how to shut it down or replace it there."""

    placement: str

    async def shutdown(self, mod: LoadedMod) -> str | None:
        """Run the mod's ``shutdown()``; return the error text if it failed."""
        ...

    async def restart(self, mod: LoadedMod, source: ResolvedModPath) -> LoadedMod:
        """Load ``source`` as a replacement of ``mod``, beside it; ``mod`` keeps running.

        Raises:
            ModLoadError: the new code failed; nothing changed.
        """
        ...


@dataclass(eq=False)
class LoadedMod:
    """A mod that is loaded: its instance, its code, and its handlers and RPC methods.

    ``handlers``, ``topics`` and ``rpcs`` are what the network routes to;
    for an instance that runs elsewhere they forward there. ``control``
    knows where it runs.
    """

    mod_id: str
    mod_path: str
    tenant: str | None
    config: dict[str, Any]
    instance: Mod
    bundle: LoadedBundle | None  # None where the code runs outside this process
    handlers: list[tuple[str, Callable[..., Any]]]
    topics: dict[str, list[Callable[..., Any]]]
    rpcs: dict[str, Callable[..., Any]]
    control: InstanceControl
    source: ResolvedModPath | None = None
    from_bundle: bool = False
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    lifecycle: Lifecycle[ModState] = field(init=False)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle("mod", self.key, ModState.LOADED, MOD_TRANSITIONS)

    @property
    def accepting(self) -> bool:
        """Whether it takes new events and calls: loaded, not unloading."""
        return self.lifecycle.state is ModState.LOADED

    @property
    def class_name(self) -> str:
        return type(self.instance).__name__

    @property
    def key(self) -> str:
        """The registry key and RPC name: ``mod_id``, or ``tenant/mod_id`` inside a tenant."""
        return mod_key(self.mod_id, self.tenant)

    def details(self) -> dict[str, Any]:
        return {
            "mod_id": self.mod_id,
            "mod_path": self.mod_path,
            "loaded_at": int(self.loaded_at),
            "tenant": self.tenant,
            "status": self.lifecycle.state.value,
            "origin": "bundle" if self.from_bundle else "loaded",
        }


@dataclass(frozen=True)
class FailedMod:
    """A mod the network was asked to load at start that failed to load."""

    mod_id: str
    mod_path: str
    tenant: str | None
    error: str

    def details(self) -> dict[str, Any]:
        return {
            "mod_id": self.mod_id,
            "mod_path": self.mod_path,
            "tenant": self.tenant,
            "status": "failed",
            "error": self.error,
        }


def mod_key(mod_id: str, tenant: str | None) -> str:
    return f"{tenant}/{mod_id}" if tenant else mod_id


class ModRegistry:
    """What mods are loaded, and which failed at start: the one record health and APIs read."""

    def __init__(self, kept_unloads: int = 32) -> None:
        self._loaded: dict[str, LoadedMod] = {}
        self._failed: dict[str, FailedMod] = {}
        self._unloaded: deque[ModUnloadReport] = deque(maxlen=kept_unloads)

    def register(self, mod: LoadedMod) -> None:
        self._loaded[mod.key] = mod
        self._failed.pop(mod.key, None)

    def unregister(self, key: str) -> LoadedMod | None:
        return self._loaded.pop(key, None)

    def record_unload(self, report: ModUnloadReport) -> None:
        """Keep the report of an unload (the latest few), to show while its check runs."""
        self._unloaded.append(report)

    def record_failure(self, failed: FailedMod) -> None:
        self._failed[mod_key(failed.mod_id, failed.tenant)] = failed

    def get(self, key: str) -> LoadedMod | None:
        return self._loaded.get(key)

    def list_loaded(self) -> list[str]:
        """The keys of the loaded mods, in load order."""
        return list(self._loaded)

    def loaded(self) -> list[LoadedMod]:
        return list(self._loaded.values())

    def failed(self) -> list[FailedMod]:
        return list(self._failed.values())

    def find(self, mod_path_or_id: str, tenant: str | None = None) -> list[LoadedMod]:
        """The loaded mods whose key, id or exact ``mod_path`` is ``mod_path_or_id``."""
        if mod_path_or_id in self._loaded:
            return [self._loaded[mod_path_or_id]]
        scoped = self._loaded.get(mod_key(mod_path_or_id, tenant))
        if scoped is not None:
            return [scoped]
        return [
            mod
            for mod in self._loaded.values()
            if mod.mod_path == mod_path_or_id and (tenant is None or mod.tenant == tenant)
        ]

    def details(self) -> dict[str, dict[str, Any]]:
        found = {key: mod.details() for key, mod in self._loaded.items()}
        found.update({mod_key(f.mod_id, f.tenant): f.details() for f in self._failed.values()})
        return found

    def status(self, confine_to: str | None = None, *, global_only: bool = False) -> dict[str, Any]:
        """The ``mods`` part of health: loaded and failed mods with their details.

        With ``confine_to`` (a tenant), only global mods and that tenant's; with
        ``global_only``, only global mods.
        """
        details = {
            key: value
            for key, value in self.details().items()
            if value.get("tenant") is None
            or (not global_only and confine_to in (None, value.get("tenant")))
        }
        loaded = [key for key in self._loaded if key in details]
        failed = [key for key in details if details[key]["status"] == "failed"]
        # What held a mod's code names objects and files anywhere in the process: only
        # the admin, and a tenant for its own mods, see it.
        admin = confine_to is None and not global_only
        unloaded = [
            report.details(full=admin or report.tenant is not None)
            for report in reversed(self._unloaded)
            if report.tenant is None or (not global_only and confine_to in (None, report.tenant))
        ]
        return {
            "loaded": loaded,
            "count": len(loaded),
            "failed": failed,
            "details": details,
            "unloaded": unloaded,
        }


def _pascal(mod_id: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", mod_id))


def find_mod_class(module: ModuleType, mod_id: str, class_name: str | None) -> type[Mod]:
    """Pick the class of a mod: the named one, ``<PascalCase(mod_id)>Mod``, or the only one.

    Raises:
        LookupError: no such class, or several candidates and none named.
    """
    if class_name is not None:
        found = getattr(module, class_name, None)
        if not (isinstance(found, type) and issubclass(found, Mod)):
            raise LookupError(f"{class_name!r} is not a Mod subclass in the module")
        return found
    conventional = getattr(module, _pascal(mod_id) + "Mod", None)
    if isinstance(conventional, type) and issubclass(conventional, Mod):
        return conventional
    defined = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Mod)
        and value is not Mod
        and value.__module__ == module.__name__
    ]
    if len(defined) != 1:
        names = ", ".join(sorted(cls.__name__ for cls in defined)) or "none"
        raise LookupError(
            f"expected {_pascal(mod_id)}Mod or exactly one Mod subclass, found: {names}"
        )
    return defined[0]


async def start_mod(
    resolved: ResolvedModPath,
    mod_id: str,
    config: dict[str, Any],
    tenant: str | None,
    host: Host,
    *,
    namespace: Namespace,
    control: InstanceControl,
    expose: tuple[str, ...] = (),
) -> LoadedMod:
    """Import, instantiate, bind and initialize a mod in ``namespace``; undo every step on failure.

    Raises:
        ModLoadError: naming the failed step and its cause.
    """
    path = resolved.mod_path
    try:
        bundle = await asyncio.to_thread(
            load_bundle, namespace, resolved.source, resolved.libraries
        )
    except PlughostError as exc:
        raise ModLoadError(path, "import", str(exc), exc) from exc
    instance: Mod | None = None
    initialized = False
    try:
        step = "find class"
        if resolved.module is not None:
            module = bundle.modules.get(resolved.module)
            if module is None:
                raise LookupError(f"the bundle has no module {resolved.module!r}")
        elif resolved.source.is_file():
            module = bundle.modules[resolved.source.stem]
        else:
            package = bundle.package
            if package is None:
                raise LookupError(f"{bundle.namespace!r} was unloaded while it loaded")
            module = package
        cls = find_mod_class(module, mod_id, resolved.class_name)
        step = "instantiate"
        instance = cls()
        instance.mod_id, instance.config, instance.network = mod_id, config, host
        instance.tenant, instance.namespace, instance.expose = tenant, namespace, expose
        step = "initialize"
        initialized = True
        outcome = instance.initialize()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome is False:
            raise RuntimeError("initialize() returned False")
        step = "register handlers"
        handlers: list[tuple[str, Callable[..., Any]]] = []
        topics: dict[str, list[Callable[..., Any]]] = {}
        for pattern, handler in handlers_of(instance):
            if is_topic_pattern(pattern):
                topics.setdefault(resolve_topic(topic_of(pattern), tenant), []).append(handler)
            else:
                handlers.append((pattern, handler))
        rpcs = {
            name: getattr(instance, name)
            for name in dir(type(instance))
            if getattr(getattr(type(instance), name, None), _RPC_ATTRIBUTE, False)
        }
    except Exception as exc:
        if initialized and instance is not None:
            await _call_shutdown(instance)
        del instance
        await asyncio.to_thread(bundle.unload, verify=False)
        raise ModLoadError(path, step, f"{type(exc).__name__}: {exc}", exc) from exc
    return LoadedMod(
        mod_id, path, tenant, config, instance, bundle, handlers, topics, rpcs, control, resolved
    )


async def _call_shutdown(instance: Mod) -> str | None:
    """Run ``shutdown()``; return the error text if it raised."""
    try:
        outcome: object = instance.shutdown()  # type: ignore[func-returns-value]
        if inspect.isawaitable(outcome):
            await outcome
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class ModUnloadReport:
    """What unloading a mod did: the shutdown error, leaks, and whether handlers were cut off.

    ``verified`` turns True once :meth:`check_freed` has proven (or disproven,
    with ``leaked``) that the mod's code was freed; a mod placed in a worker
    process is freed with that process, so there is nothing to check here.
    """

    mod_id: str
    mod_path: str
    tenant: str | None = None
    shutdown_error: str | None = None
    leaked: list[str] = field(default_factory=list)
    timed_out_handlers: int = 0
    verified: bool = False
    unloaded_at: float = field(default_factory=time.time)
    _unloaded: UnloadReport | None = field(default=None, repr=False, compare=False)

    def check_freed(self) -> list[str]:
        """Prove the code was freed; blocks for a garbage collection, so run it in a thread."""
        if self._unloaded is not None:
            self.leaked = [
                f"{leak.module_name} held by {', '.join(leak.holders)}"
                for leak in self._unloaded.check_freed()
            ]
            self._unloaded = None
        self.verified = True
        return self.leaked

    def details(self, *, full: bool = True) -> dict[str, Any]:
        """What health shows; without ``full``, how many modules leaked, not what holds them."""
        return {
            "mod_id": self.mod_id,
            "mod_path": self.mod_path,
            "tenant": self.tenant,
            "unloaded_at": self.unloaded_at,
            "verified": self.verified,
            "leaked": self.leaked if full else len(self.leaked),
            "shutdown_error": self.shutdown_error if full else None,
            "timed_out_handlers": self.timed_out_handlers,
        }

    @property
    def message(self) -> str:
        parts = [f"mod {self.mod_id!r} unloaded"]
        if self.timed_out_handlers:
            parts.append(f"{self.timed_out_handlers} handler calls still running at the timeout")
        if self.shutdown_error:
            parts.append(f"shutdown() raised {self.shutdown_error}")
        if self.leaked:
            parts.append(f"modules still referenced: {'; '.join(self.leaked)}")
        return "; ".join(parts)


async def stop_mod(mod: LoadedMod, timeout: float) -> ModUnloadReport:
    """Wait for the mod's handler calls (up to ``timeout``), shut it down, and unload its code.

    The code is out of reach when this returns; the proof that it was freed
    is the report's :meth:`~ModUnloadReport.check_freed`, left to the caller.
    """
    mod.lifecycle.set(ModState.UNLOADING)
    report = ModUnloadReport(mod.mod_id, mod.mod_path, mod.tenant)
    if mod.in_flight:
        try:
            await asyncio.wait_for(mod.idle.wait(), timeout)
        except TimeoutError:
            report.timed_out_handlers = mod.in_flight
    report.shutdown_error = await mod.control.shutdown(mod)
    mod.handlers.clear()
    mod.topics.clear()
    mod.rpcs.clear()
    del mod.instance
    if mod.bundle is not None:
        report._unloaded = await asyncio.to_thread(mod.bundle.unload, verify=False)
    mod.lifecycle.set(ModState.UNLOADED)
    return report


class FreedChecks:
    """Proves, after unloads have returned, that the unloaded mods' code was freed.

    Unloads queue their reports; one task checks all that are queued in one
    thread call and hands each checked report to ``checked``. It waits for
    unloads to pause for ``quiet`` seconds (at most ``longest`` after the
    first one queued), so that a burst of unloads costs one garbage
    collection, not one each.
    """

    def __init__(
        self,
        checked: Callable[[ModUnloadReport], Awaitable[None]],
        *,
        quiet: float = 0.05,
        longest: float = 1.0,
    ) -> None:
        self._checked = checked
        self.quiet = quiet
        self.longest = longest
        self._queue: list[ModUnloadReport] = []
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()

    def submit(self, report: ModUnloadReport) -> None:
        self._queue.append(report)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                first = loop.time()
                seen = 0
                while len(self._queue) != seen and loop.time() - first < self.longest:
                    seen = len(self._queue)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._now.wait(), self.quiet)
                batch, self._queue = self._queue, []
                await asyncio.to_thread(_check_all, batch)
                for report in batch:
                    try:
                        await self._checked(report)
                    except Exception:
                        _log.exception("telling of the unload of mod %r failed", report.mod_id)
        finally:
            self._task = None

    async def drain(self) -> None:
        """Check every queued report now, and wait until each is handed on."""
        self._now.set()
        try:
            while self._task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._task)
        finally:
            self._now.clear()


def _check_all(reports: list[ModUnloadReport]) -> None:
    for report in reports:
        try:
            report.check_freed()
        except Exception:  # a holder's repr() that raised, say
            _log.exception("the check that mod %r was freed failed", report.mod_id)
            report.leaked = ["the check that the code was freed failed (see the server log)"]
            report.verified = True


class LocalControl:
    """Runs mods in this process, each load under a namespace of its own.

    Args:
        host: what the mods it starts see as their network.
    """

    placement = "inprocess"

    def __init__(self, host: Host) -> None:
        self._host = host
        self._generations = itertools.count(1)

    async def start(
        self,
        resolved: ResolvedModPath,
        mod_id: str,
        config: dict[str, Any],
        tenant: str | None,
        *,
        expose: tuple[str, ...] = (),
        from_bundle: bool = False,
    ) -> LoadedMod:
        """Load, instantiate and initialize one mod; see :func:`start_mod`."""
        namespace = mod_namespace(mod_id, tenant, next(self._generations))
        mod = await start_mod(
            resolved,
            mod_id,
            config,
            tenant,
            self._host,
            namespace=namespace,
            control=self,
            expose=expose,
        )
        mod.from_bundle = from_bundle
        return mod

    async def shutdown(self, mod: LoadedMod) -> str | None:
        return await _call_shutdown(mod.instance)

    async def restart(self, mod: LoadedMod, source: ResolvedModPath) -> LoadedMod:
        return await self.start(
            source,
            mod.mod_id,
            mod.config,
            mod.tenant,
            expose=mod.instance.expose,
            from_bundle=mod.from_bundle,
        )
