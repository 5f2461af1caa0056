"""The path and query parameters the routes share, with the patterns they must match."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParameter
from fastapi import Query

from ..naming import TENANT_NAME_PATTERN
from ..tenants import SNAPSHOT_NAME_PATTERN

TenantName = Annotated[str, PathParameter(pattern=TENANT_NAME_PATTERN)]
ModId = Annotated[str, PathParameter(pattern=TENANT_NAME_PATTERN)]
SnapshotName = Annotated[str, PathParameter(pattern=SNAPSHOT_NAME_PATTERN)]
TenantQuery = Annotated[str | None, Query(pattern=TENANT_NAME_PATTERN)]
SnapshotQuery = Annotated[str | None, Query(pattern=SNAPSHOT_NAME_PATTERN)]
