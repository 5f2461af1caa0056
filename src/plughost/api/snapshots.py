"""A tenant's snapshots: creating, listing and deleting them."""

from __future__ import annotations

from fastapi import APIRouter

from ..store import Snapshot
from .auth import Auth
from .errors import ERRORS
from .models import Removed, SnapshotCreate
from .parameters import SnapshotName, TenantName
from .state import ServedNetwork

router = APIRouter()


@router.post(
    "/api/tenants/{tenant}/snapshots",
    response_model=Snapshot,
    status_code=201,
    tags=["snapshots"],
    responses=ERRORS,
)
async def create_snapshot(
    tenant: TenantName, body: SnapshotCreate, principal: Auth, network: ServedNetwork
) -> Snapshot:
    principal.require_tenant(tenant)
    return await network.create_snapshot(tenant, body.name)


@router.get(
    "/api/tenants/{tenant}/snapshots",
    response_model=list[Snapshot],
    tags=["snapshots"],
    responses=ERRORS,
)
async def list_snapshots(
    tenant: TenantName, principal: Auth, network: ServedNetwork
) -> list[Snapshot]:
    principal.require_tenant(tenant)
    return network.list_snapshots(tenant)


@router.delete(
    "/api/tenants/{tenant}/snapshots/{name}",
    response_model=Removed,
    tags=["snapshots"],
    responses=ERRORS,
)
async def delete_snapshot(
    tenant: TenantName, name: SnapshotName, principal: Auth, network: ServedNetwork
) -> Removed:
    principal.require_tenant(tenant)
    await network.delete_snapshot(tenant, name)
    return Removed(removed=name)
