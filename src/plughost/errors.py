"""Exception and warning classes, each carrying the object it is about."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .naming import Namespace


class PlughostError(Exception):
    """Base class of every error plughost raises on purpose."""


class BundleRejectedError(PlughostError):
    """A bundle was refused before anything was written or imported.

    Attributes:
        entry: the offending archive entry or file, or ``None`` for the bundle as a whole.
        reason: why it was refused.
    """

    def __init__(self, reason: str, entry: str | None = None) -> None:
        self.reason = reason
        self.entry = entry
        super().__init__(f"{entry!r}: {reason}" if entry is not None else reason)


class BundleTooLargeError(BundleRejectedError):
    """A bundle passes a size or count limit (``BundleLimits``)."""


class BundleLoadError(PlughostError):
    """A module of a bundle failed to load; nothing of the namespace was kept.

    Attributes:
        namespace: the namespace that was being loaded.
        file: the bundle file where the failure happened (its path in the bundle), if known.
        line: the line in ``file``, if known.
        cause: the original exception.
    """

    def __init__(
        self,
        namespace: Namespace,
        cause: BaseException,
        file: Path | None = None,
        line: int | None = None,
        *,
        why: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.cause = cause
        self.file = file
        self.line = line
        where = f"{file}:{line}" if file is not None and line is not None else str(file or "bundle")
        super().__init__(f"{namespace!r}: {where}: {why or f'{type(cause).__name__}: {cause}'}")


class ForeignModulesError(BundleLoadError):
    """A bundle, while it loaded, changed ``sys.modules`` keys outside its namespace.

    Those of other namespaces, plughost's own modules, the standard library
    and installed packages alike. The keys were put back as they were, and
    nothing of the bundle was kept.

    Attributes:
        keys: the keys it added, replaced or removed, sorted.
    """

    def __init__(self, namespace: Namespace, keys: list[str]) -> None:
        self.keys = keys
        why = f"changed sys.modules keys outside its namespace: {', '.join(keys)} (put back)"
        super().__init__(namespace, RuntimeError(why), why=why)


class NamespaceConflictError(PlughostError):
    """A namespace is already loaded with different content.

    Attributes:
        namespace: the namespace in question.
        loaded_digest: the digest of the content that is loaded.
        requested_digest: the digest of the content that was asked for.
    """

    def __init__(self, namespace: Namespace, loaded_digest: str, requested_digest: str) -> None:
        self.namespace = namespace
        self.loaded_digest = loaded_digest
        self.requested_digest = requested_digest
        super().__init__(
            f"{namespace!r} is already loaded with bundle {loaded_digest[:12]}, "
            f"not {requested_digest[:12]}: unload it first"
        )


class BundleWarning(UserWarning):
    """Bundle code did something plughost undid or could not honour (changed ``sys.path``)."""


class InvalidNameError(PlughostError, ValueError):
    """A tenant or snapshot name breaks the naming rule.

    Attributes:
        kind: ``"tenant"`` or ``"snapshot"``.
        name: the refused name.
    """

    def __init__(self, kind: str, name: str, rule: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"invalid {kind} name {name!r}: expected {rule}")


class UnknownTenantError(PlughostError, LookupError):
    """No tenant by that name has a deployment.

    Attributes:
        tenant: the name asked for.
        known: the tenants that do exist.
    """

    def __init__(self, tenant: str, known: list[str]) -> None:
        self.tenant = tenant
        self.known = known
        super().__init__(f"unknown tenant {tenant!r}; tenants: {_listing(known)}")


class UnknownSnapshotError(PlughostError, LookupError):
    """The tenant has no snapshot by that name.

    Attributes:
        tenant: the tenant.
        snapshot: the name asked for.
        known: the tenant's snapshots.
    """

    def __init__(self, tenant: str, snapshot: str, known: list[str]) -> None:
        self.tenant = tenant
        self.snapshot = snapshot
        self.known = known
        super().__init__(
            f"tenant {tenant!r} has no snapshot {snapshot!r}; snapshots: {_listing(known)}"
        )


class UnknownAgentError(PlughostError, LookupError):
    """The namespace has no agent by that name.

    Attributes:
        tenant: the tenant.
        agent: the name asked for.
        snapshot: the snapshot, or ``None`` for the live code.
        known: the agents that do exist there.
    """

    def __init__(self, tenant: str, agent: str, snapshot: str | None, known: list[str]) -> None:
        self.tenant = tenant
        self.agent = agent
        self.snapshot = snapshot
        self.known = known
        where = f"tenant {tenant!r}" + (f" snapshot {snapshot!r}" if snapshot else "")
        super().__init__(f"{where} has no agent {agent!r}; agents: {_listing(known)}")


class InvalidArgumentsError(PlughostError, ValueError):
    """A call's arguments do not fit the agent's ``parameters`` schema; it did not run.

    Attributes:
        tenant: the tenant.
        agent: the agent called.
        problem: which argument breaks which rule.
    """

    def __init__(self, tenant: str, agent: str, problem: str) -> None:
        self.tenant = tenant
        self.agent = agent
        self.problem = problem
        super().__init__(f"agent {agent!r} of tenant {tenant!r} was called with {problem}")


class InstanceConfigError(PlughostError, ValueError):
    """Config given at deploy names an instance the bundle does not declare, or is not
    an object per instance; nothing was deployed.

    Attributes:
        tenant: the tenant deployed to.
        problem: what is wrong.
        declared: the instances the bundle declares.
    """

    def __init__(self, tenant: str, problem: str, declared: list[str]) -> None:
        self.tenant = tenant
        self.problem = problem
        self.declared = declared
        super().__init__(
            f"instance config for tenant {tenant!r}: {problem}; "
            f"the bundle declares: {_listing(declared)}"
        )


class DuplicateSnapshotError(PlughostError):
    """A snapshot by that name exists already; snapshots are never overwritten.

    Attributes:
        tenant: the tenant.
        snapshot: the name.
    """

    def __init__(self, tenant: str, snapshot: str) -> None:
        self.tenant = tenant
        self.snapshot = snapshot
        super().__init__(f"tenant {tenant!r} already has a snapshot {snapshot!r}")


class DuplicateAgentError(PlughostError):
    """Two agents of one bundle are called by the same name.

    Attributes:
        agent: the shared name.
        files: the bundle's files (relative paths) that define them.
    """

    def __init__(self, agent: str, files: list[str]) -> None:
        self.agent = agent
        self.files = files
        super().__init__(f"agent name {agent!r} is defined twice: in {' and '.join(files)}")


class AgentError(PlughostError):
    """An agent raised; the network keeps serving.

    Attributes:
        tenant: the tenant.
        agent: the agent's name.
        error_type: the class name of what it raised.
        message: the text of what it raised.
    """

    def __init__(self, tenant: str, agent: str, error_type: str, message: str) -> None:
        self.tenant = tenant
        self.agent = agent
        self.error_type = error_type
        self.message = message
        super().__init__(f"agent {agent!r} of tenant {tenant!r} raised {error_type}: {message}")


class DependencyError(PlughostError):
    """A bundle's dependencies could not be installed or used; nothing was committed.

    Attributes:
        tenant: whose bundle it was.
        requirements: what it asked for.
        reason: the installer's error, which names the requirement.
    """

    def __init__(self, tenant: str, requirements: list[str], reason: str) -> None:
        self.tenant = tenant
        self.requirements = requirements
        self.reason = reason
        super().__init__(
            f"the dependencies of tenant {tenant!r} ({', '.join(requirements)}) failed: {reason}"
        )


class LimitExceededError(PlughostError):
    """Tenant code reached a limit of its sandbox; its worker is restarted.

    Attributes:
        tenant: whose sandbox it was.
        limit: the limit's name, as it is configured (``memory_mb``, ``processes``, ...).
        value: the limit.
    """

    def __init__(self, tenant: str, limit: str, value: int | None, detail: str) -> None:
        self.tenant = tenant
        self.limit = limit
        self.value = value
        super().__init__(
            f"the sandbox of tenant {tenant!r} reached its {limit} limit ({limit} = {value}):"
            f" {detail}; it is restarting"
        )


class PlacementUnavailableError(PlughostError):
    """A placement cannot run here (a sandbox where bubblewrap is missing, say).

    Attributes:
        placement: its name.
        reason: why not.
    """

    def __init__(self, placement: str, reason: str) -> None:
        self.placement = placement
        self.reason = reason
        super().__init__(
            f"the {placement!r} placement is unavailable here: {reason};"
            " nothing was deployed (a weaker placement is never used instead)"
        )


class TenantSealedError(PlughostError):
    """The tenant is sealed: its code, snapshots and state no longer change.

    Attributes:
        tenant: the sealed tenant.
        action: what was refused (``"redeploy"``, ``"remove"``, ...).
    """

    def __init__(self, tenant: str, action: str) -> None:
        self.tenant = tenant
        self.action = action
        super().__init__(
            f"tenant {tenant!r} is sealed: {action} is refused (only the admin can unseal it)"
        )


class StateTooLargeError(PlughostError):
    """A tenant's state is past what a snapshot or a seal may capture; nothing was taken.

    Attributes:
        tenant: whose state it is.
        limit: which limit, in words.
    """

    def __init__(self, tenant: str, limit: str) -> None:
        self.tenant = tenant
        self.limit = limit
        super().__init__(f"the state of tenant {tenant!r} cannot be captured: {limit}")


class ReadOnlyStateError(PlughostError):
    """A call wrote to a state that is read-only: a snapshot's, or a sealed tenant's.
    What it wrote was discarded.

    Attributes:
        tenant: whose state it is.
        snapshot: the snapshot the call ran in, or ``None`` for the live code of a
            sealed tenant.
        detail: what the write was, as far as it is known.
    """

    def __init__(self, tenant: str, snapshot: str | None, detail: str) -> None:
        self.tenant = tenant
        self.snapshot = snapshot
        self.detail = detail
        what = (
            f"the state of snapshot {snapshot!r} of tenant {tenant!r} is read-only"
            if snapshot is not None
            else f"tenant {tenant!r} is sealed: its state is read-only"
        )
        super().__init__(f"{what}; {detail}")


class DataFolderInUseError(PlughostError):
    """Another process has the data folder open.

    Attributes:
        data_dir: the folder.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        super().__init__(f"data folder {data_dir} is in use by another process")


class NotStartedError(PlughostError):
    """The network was used before ``start()`` or after ``stop()``."""


class ModPathRefusedError(PlughostError):
    """A ``mod_path`` is not under an allowed mod root; nothing was imported.

    Attributes:
        mod_path: the refused path.
        reason: why.
    """

    def __init__(self, mod_path: str, reason: str) -> None:
        self.mod_path = mod_path
        self.reason = reason
        super().__init__(f"mod_path {mod_path!r} refused: {reason}")


class ModLoadError(PlughostError):
    """Loading a mod failed at one step; everything done before it was undone.

    Attributes:
        mod_path: the mod's path.
        step: the step that failed (``import``, ``find class``, ``initialize``, ...).
        cause: the original exception, if any.
    """

    def __init__(self, mod_path: str, step: str, message: str, cause: BaseException | None = None):
        self.mod_path = mod_path
        self.step = step
        self.cause = cause
        super().__init__(f"loading mod {mod_path!r} failed at {step}: {message}")


class ModAlreadyLoadedError(PlughostError):
    """A mod with that id is loaded already in that scope.

    Attributes:
        mod_key: the id (``tenant/mod_id`` inside a tenant).
        holder_path: the ``mod_path`` of the mod that holds the id.
    """

    def __init__(self, mod_key: str, holder_path: str) -> None:
        self.mod_key = mod_key
        self.holder_path = holder_path
        super().__init__(
            f"mod {mod_key!r} is already loaded (from {holder_path!r}); "
            "unload it first or give the new one its own mod_id"
        )


class ModNotLoadedError(PlughostError, LookupError):
    """No loaded mod has that id or path.

    Attributes:
        mod: the id or path asked for.
        loaded: the ids of the loaded mods.
    """

    def __init__(self, mod: str, loaded: list[str], reason: str = "is not loaded") -> None:
        self.mod = mod
        self.loaded = loaded
        super().__init__(f"mod {mod!r} {reason}; loaded mods: {_listing(loaded)}")


class UnknownRpcError(PlughostError, LookupError):
    """No RPC method by that name on that target.

    Attributes:
        target: the RPC name of the instance (``robot1/camera``).
        method: the method asked for.
        known: the target's RPC methods.
    """

    def __init__(self, target: str, method: str, known: list[str]) -> None:
        self.target = target
        self.method = method
        self.known = known
        super().__init__(f"{target!r} has no RPC method {method!r}; methods: {_listing(known)}")


class RpcError(PlughostError):
    """An RPC method raised.

    Attributes:
        target: the RPC name of the instance.
        method: the method.
        error_type: the class name of what it raised.
        message: the text of what it raised.
    """

    def __init__(self, target: str, method: str, error_type: str, message: str) -> None:
        self.target = target
        self.method = method
        self.error_type = error_type
        self.message = message
        super().__init__(f"RPC {target}.{method} raised {error_type}: {message}")


class AmbiguousNameError(PlughostError, LookupError):
    """A bare name or class name matches instances in several namespaces; none was picked.

    Attributes:
        name: the name asked for.
        matches: the RPC names of every instance it matches.
    """

    def __init__(self, name: str, matches: list[str]) -> None:
        self.name = name
        self.matches = matches
        super().__init__(f"{name!r} is ambiguous: it matches {_listing(matches)}; use an RPC name")


class OutsideTenantError(PlughostError, PermissionError):
    """An action confined to one tenant named something outside it.

    Attributes:
        tenant: the tenant the caller is confined to.
        target: what it named.
    """

    def __init__(self, tenant: str, target: str) -> None:
        self.tenant = tenant
        self.target = target
        super().__init__(f"{target!r} is outside tenant {tenant!r}")


class WorkerCrashed(PlughostError):
    """The worker process running a namespace died before answering; it is being restarted.

    Attributes:
        tenant: whose worker it was.
        pid: its process id, if it had started.
    """

    def __init__(self, tenant: str, pid: int | None, reason: str | None = None) -> None:
        self.tenant = tenant
        self.pid = pid
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"the worker of tenant {tenant!r} (pid {pid}) crashed{why}; it is restarting"
        )


class CallTimeoutError(PlughostError, TimeoutError):
    """A call did not finish within its deadline; its lease ends when the work really stops.

    Attributes:
        tenant: whose code it called (None: a global mod's).
        target: the agent, or ``instance.method``.
        seconds: the deadline.
    """

    def __init__(self, tenant: str | None, target: str, seconds: float) -> None:
        self.tenant = tenant
        self.target = target
        self.seconds = seconds
        whose = f" of tenant {tenant!r}" if tenant is not None else ""
        super().__init__(f"{target!r}{whose} did not answer within {seconds:g} s")


class WorkerBusyError(PlughostError):
    """A worker has as many requests in flight as it may take; try again shortly.

    Attributes:
        tenant: whose worker it is.
        limit: the requests it may have in flight (``worker_max_inflight``).
    """

    def __init__(self, tenant: str, limit: int) -> None:
        self.tenant = tenant
        self.limit = limit
        super().__init__(
            f"the worker of tenant {tenant!r} has {limit} requests in flight, its limit; "
            "try again shortly"
        )


class WorkerStartFailed(PlughostError):
    """A worker process could not load its deployment; nothing was committed.

    Attributes:
        tenant: whose worker it was.
        kind: what failed (``load``: the code or an instance; ``exit``: the process died).
        error_type: the type name of the error in the worker.
    """

    def __init__(self, tenant: str, kind: str, error_type: str, message: str) -> None:
        self.tenant = tenant
        self.kind = kind
        self.error_type = error_type
        super().__init__(
            f"the worker of tenant {tenant!r} failed to start: {error_type}: {message}"
        )


def _listing(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none)"
