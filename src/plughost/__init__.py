"""plughost: a multi-tenant plugin host for Python.

Each tenant, snapshot or version of a tenant gets its own isolated module
namespace; bundles of plugin code are loaded, unloaded and reloaded at runtime.
"""

from .agent import Agent, BasicAgent
from .errors import (
    BundleLoadError,
    BundleRejectedError,
    BundleWarning,
    NamespaceConflictError,
    PlughostError,
)
from .naming import Namespace

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "BasicAgent",
    "BundleLoadError",
    "BundleRejectedError",
    "BundleWarning",
    "Namespace",
    "NamespaceConflictError",
    "PlughostError",
    "__version__",
]
