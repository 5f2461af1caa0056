"""plughost: a multi-tenant plugin host for Python.

Each tenant, snapshot or version of a tenant gets its own isolated module
namespace; bundles of plugin code are deployed, loaded, unloaded and
hot-swapped at runtime.
"""

from .agent import Agent, BasicAgent
from .bundle import BundleLimits
from .errors import (
    AgentError,
    BundleLoadError,
    BundleRejectedError,
    BundleWarning,
    DataFolderInUseError,
    DuplicateAgentError,
    DuplicateSnapshotError,
    InvalidNameError,
    NamespaceConflictError,
    NotStartedError,
    PlughostError,
    UnknownAgentError,
    UnknownSnapshotError,
    UnknownTenantError,
)
from .naming import Namespace
from .network import AgentInfo, Network
from .store import Deployment, Snapshot

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentInfo",
    "BasicAgent",
    "BundleLimits",
    "BundleLoadError",
    "BundleRejectedError",
    "BundleWarning",
    "DataFolderInUseError",
    "Deployment",
    "DuplicateAgentError",
    "DuplicateSnapshotError",
    "InvalidNameError",
    "Namespace",
    "NamespaceConflictError",
    "Network",
    "NotStartedError",
    "PlughostError",
    "Snapshot",
    "UnknownAgentError",
    "UnknownSnapshotError",
    "UnknownTenantError",
    "__version__",
]
