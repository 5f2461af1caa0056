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


class BundleLoadError(PlughostError):
    """A module of a bundle failed to load; nothing of the namespace was kept.

    Attributes:
        namespace: the namespace that was being loaded.
        file: the bundle file where the failure happened, if known.
        line: the line in ``file``, if known.
        cause: the original exception.
    """

    def __init__(
        self,
        namespace: Namespace,
        cause: BaseException,
        file: Path | None = None,
        line: int | None = None,
    ) -> None:
        self.namespace = namespace
        self.cause = cause
        self.file = file
        self.line = line
        where = f"{file}:{line}" if file is not None and line is not None else str(file or "bundle")
        super().__init__(f"{namespace!r}: {where}: {type(cause).__name__}: {cause}")


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
