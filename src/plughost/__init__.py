"""plughost: a multi-tenant plugin host for Python.

Each tenant, snapshot or version of a tenant gets its own isolated module
namespace; bundles of plugin code are deployed, loaded, unloaded and
hot-swapped at runtime.
"""

from .agent import Agent, AgentInfo, BasicAgent
from .bundle import BundleLimits
from .errors import (
    AgentError,
    AmbiguousNameError,
    BundleLoadError,
    BundleRejectedError,
    BundleTooLargeError,
    BundleWarning,
    CallTimeoutError,
    DataFolderInUseError,
    DependencyError,
    DuplicateAgentError,
    DuplicateSnapshotError,
    ForeignModulesError,
    InstanceConfigError,
    InvalidArgumentsError,
    InvalidNameError,
    LimitExceededError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    ModPathRefusedError,
    NamespaceConflictError,
    NotStartedError,
    OutsideTenantError,
    PlacementUnavailableError,
    PlughostError,
    ReadOnlyStateError,
    RpcError,
    StateTooLargeError,
    TenantSealedError,
    UnknownAgentError,
    UnknownRpcError,
    UnknownSnapshotError,
    UnknownTenantError,
    WorkerBusyError,
    WorkerCrashed,
    WorkerStartFailed,
)
from .events import Event, EventResponse, on
from .mod import Mod, ModUnloadReport, calling_tenant, rpc
from .naming import Namespace
from .network import ModSpec, Network
from .storage import Storage
from .store import Deployment, Sealing, Snapshot

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentInfo",
    "AmbiguousNameError",
    "BasicAgent",
    "BundleLimits",
    "BundleLoadError",
    "BundleRejectedError",
    "BundleTooLargeError",
    "BundleWarning",
    "CallTimeoutError",
    "DataFolderInUseError",
    "DependencyError",
    "Deployment",
    "DuplicateAgentError",
    "DuplicateSnapshotError",
    "Event",
    "EventResponse",
    "ForeignModulesError",
    "InstanceConfigError",
    "InvalidArgumentsError",
    "InvalidNameError",
    "LimitExceededError",
    "Mod",
    "ModAlreadyLoadedError",
    "ModLoadError",
    "ModNotLoadedError",
    "ModPathRefusedError",
    "ModSpec",
    "ModUnloadReport",
    "Namespace",
    "NamespaceConflictError",
    "Network",
    "NotStartedError",
    "OutsideTenantError",
    "PlacementUnavailableError",
    "PlughostError",
    "ReadOnlyStateError",
    "RpcError",
    "Sealing",
    "Snapshot",
    "StateTooLargeError",
    "Storage",
    "TenantSealedError",
    "UnknownAgentError",
    "UnknownRpcError",
    "UnknownSnapshotError",
    "UnknownTenantError",
    "WorkerBusyError",
    "WorkerCrashed",
    "WorkerStartFailed",
    "__version__",
    "calling_tenant",
    "on",
    "rpc",
]
