"""Running mod instances: listing them, restarting one, unloading one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .auth import Auth, Principal
from .errors import ERRORS, ApiError
from .models import InstanceModel, ModUnloadResponse
from .state import ServedNetwork

router = APIRouter()


@router.get(
    "/api/instances", response_model=list[InstanceModel], tags=["instances"], responses=ERRORS
)
async def list_instances(principal: Auth, network: ServedNetwork) -> list[dict[str, Any]]:
    """Every running mod instance (a tenant token sees its own)."""
    return [
        item
        for item in network.instances()
        if principal.is_admin or item["tenant"] == principal.tenant
    ]


@router.post(
    "/api/instances/{rpc_name:path}/restart",
    response_model=InstanceModel,
    tags=["instances"],
    responses=ERRORS,
)
async def restart_instance(
    rpc_name: str,
    principal: Auth,
    network: ServedNetwork,
    reload: Annotated[bool, Query()] = True,
) -> dict[str, Any]:
    """Restart one instance with fresh code (``?reload=false``: the code it runs)."""
    _require_instance(principal, rpc_name)
    mod = await network.restart(rpc_name, reload=reload, confine_to=principal.tenant)
    key = f"{mod.tenant}/{mod.mod_id}" if mod.tenant else mod.mod_id
    return next(item for item in network.instances() if item["rpc_name"] == key)


@router.delete(
    "/api/instances/{rpc_name:path}",
    response_model=ModUnloadResponse,
    tags=["instances"],
    responses=ERRORS,
)
async def unload_instance(
    rpc_name: str, principal: Auth, network: ServedNetwork
) -> ModUnloadResponse:
    """Unload one instance; the others keep running."""
    _require_instance(principal, rpc_name)
    report = await network.unload(rpc_name, confine_to=principal.tenant)
    return ModUnloadResponse.of(report)


def _require_instance(principal: Principal, rpc_name: str) -> None:
    """A tenant token names its instances by full RPC name, inside its own tenant."""
    if principal.is_admin:
        return
    tenant, slash, _ = rpc_name.partition("/")
    if not slash:
        raise ApiError(
            403, "forbidden", f"a tenant token names its instances as {principal.tenant}/<name>"
        )
    principal.require_tenant(tenant)
