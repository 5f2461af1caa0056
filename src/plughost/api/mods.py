"""Mods: listing, loading and unloading them, globally or inside a tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .auth import Auth
from .errors import ERRORS
from .models import ModLoadRequest, ModLoadResponse, ModsModel, ModUnloadResponse
from .parameters import ModId, TenantQuery
from .state import ServedNetwork

router = APIRouter()


@router.get("/api/mods", response_model=ModsModel, tags=["mods"], responses=ERRORS)
async def list_mods(principal: Auth, network: ServedNetwork) -> ModsModel:
    """The loaded mods (a tenant token sees global ones and its own)."""
    return ModsModel(**network.mod_status(principal.tenant))


@router.post(
    "/api/mods",
    response_model=ModLoadResponse,
    status_code=201,
    tags=["mods"],
    responses=ERRORS,
)
async def load_mod(
    body: ModLoadRequest, principal: Auth, network: ServedNetwork
) -> ModLoadResponse:
    """Load a mod; a tenant token loads into its own tenant only."""
    tenant = principal.scope(body.tenant)
    mod = await network.load_mod(body.mod_path, body.config, mod_id=body.mod_id, tenant=tenant)
    key = f"{tenant}/{mod.mod_id}" if tenant else mod.mod_id
    return ModLoadResponse(mod_id=mod.mod_id, key=key, mod_path=body.mod_path)


@router.delete(
    "/api/mods/{mod_id}", response_model=ModUnloadResponse, tags=["mods"], responses=ERRORS
)
async def unload_mod(
    mod_id: ModId,
    principal: Auth,
    network: ServedNetwork,
    tenant: TenantQuery = None,
    verify: Annotated[
        bool, Query(description="wait for the check that the mod's code was freed")
    ] = False,
) -> ModUnloadResponse:
    """Unload a mod by id (``?tenant=`` for one loaded inside a tenant)."""
    scoped = principal.scope(tenant)
    key = mod_id if scoped is None else f"{scoped}/{mod_id}"
    report = await network.unload_mod(key, confine_to=principal.tenant, verify=verify)
    return ModUnloadResponse.of(report)
