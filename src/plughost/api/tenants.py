"""Tenants: deploying a bundle, listing, describing and removing them, their tokens.

A bundle upload is the one request whose body the route reads itself, as a
stream bounded by the upload limit (:func:`is_bundle_upload`); the body
limit middleware lets it pass unread.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from starlette.types import Scope

from ..bounded_json import OFF_LOOP_BYTES, TooDeepError, loads_in_parts
from ..manifest import Placement
from ..network import Network
from .auth import Auth
from .errors import ERRORS, ApiError
from .models import (
    DeploymentModel,
    DeployProgress,
    Removed,
    SealingModel,
    SealRequest,
    TenantModel,
    TenantToken,
)
from .parameters import TenantName
from .state import ServedNetwork, upload_limit_of

ARCHIVE_TYPES = frozenset(
    {"application/zip", "application/gzip", "application/x-gzip", "application/octet-stream"}
)
_BUNDLE_PATH = re.compile(r"/api/tenants/[^/]+/bundle")

# The body of a deploy, as the route reads it itself: a JSON bundle or an archive.
_BUNDLE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "agents": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "filename": {"type": "string"},
                                "source": {"type": "string"},
                            },
                            "required": ["filename", "source"],
                        },
                    }
                },
                "required": ["agents"],
            }
        },
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "application/gzip": {"schema": {"type": "string", "format": "binary"}},
    },
}

router = APIRouter()


def is_bundle_upload(scope: Scope) -> bool:
    """Whether a request is a bundle upload, whose body :func:`deploy` reads and bounds."""
    return scope["method"] == "PUT" and _BUNDLE_PATH.fullmatch(scope["path"]) is not None


@router.put(
    "/api/tenants/{tenant}/bundle",
    response_model=DeploymentModel,
    tags=["tenants"],
    responses={
        **ERRORS,
        201: {"model": DeploymentModel, "description": "the tenant's first deploy"},
    },
    openapi_extra={"requestBody": _BUNDLE_BODY},
)
async def deploy(
    tenant: TenantName,
    request: Request,
    response: Response,
    principal: Auth,
    network: ServedNetwork,
    placement: Annotated[Placement | None, Query()] = None,
    config: Annotated[
        str | None,
        Query(description='per-instance config, JSON: {"sensor": {"sensitivity": 2.0}}'),
    ] = None,
) -> DeploymentModel:
    """Deploy a bundle: a zip, a tar.gz or a JSON bundle. The first deploy of a
    tenant (admin only) returns its token, once. ``?placement=process`` runs
    it in a worker process, ``?placement=sandbox`` in a sandboxed one (default:
    its ``plughost.toml``, else as it runs now, else in process).
    ``?config=`` is laid over the config its declared instances have, by name."""
    if not principal.is_admin:
        principal.require_tenant(tenant)
    overrides = _instance_config(config)
    upload_limit = upload_limit_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with network.upload_folder() as tmp:
        if content_type == "application/json":
            document = await _parse_json(await _read_limited(request, upload_limit))
            if not isinstance(document, dict):
                raise ApiError(400, "bundle_rejected", "a JSON bundle must be an object")
            deployed = await network.deploy_confined(
                tenant, document, placement=placement, config=overrides, confine_to=principal.tenant
            )
        elif content_type in ARCHIVE_TYPES:
            upload = Path(tmp, "bundle")
            await _save_limited(request, upload, upload_limit)
            deployed = await network.deploy_confined(
                tenant, upload, placement=placement, config=overrides, confine_to=principal.tenant
            )
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send application/zip, application/gzip or application/json",
            )
    deployment, token = deployed
    response.status_code = 201 if token is not None else 200
    return DeploymentModel(**jsonable_encoder(deployment), token=token)


@router.get("/api/tenants", response_model=list[TenantModel], tags=["tenants"], responses=ERRORS)
async def list_tenants(principal: Auth, network: ServedNetwork) -> list[TenantModel]:
    """Every tenant (a tenant token sees its own)."""
    names = network.list_tenants()
    if not principal.is_admin:
        names = [name for name in names if name == principal.tenant]
    return [_tenant_model(network, name) for name in names]


@router.get("/api/tenants/{tenant}", response_model=TenantModel, tags=["tenants"], responses=ERRORS)
async def describe_tenant(
    tenant: TenantName, principal: Auth, network: ServedNetwork
) -> TenantModel:
    principal.require_tenant(tenant)
    return _tenant_model(network, tenant)


@router.get(
    "/api/tenants/{tenant}/deploy/progress",
    response_model=DeployProgress,
    tags=["tenants"],
    responses=ERRORS,
)
async def deploy_progress(
    tenant: TenantName, principal: Auth, network: ServedNetwork
) -> DeployProgress:
    """What the tenant's deploy under way, or its last one, said while it installed the
    bundle's ``dependencies``: the installer's lines, to poll while the deploy runs."""
    principal.require_tenant(tenant)
    return DeployProgress(tenant=tenant, lines=network.deploy_progress(tenant))


@router.delete("/api/tenants/{tenant}", response_model=Removed, tags=["tenants"], responses=ERRORS)
async def remove_tenant(tenant: TenantName, principal: Auth, network: ServedNetwork) -> Removed:
    """Remove a tenant with its snapshots and files (admin)."""
    principal.require_admin()
    await network.remove_tenant(tenant)
    return Removed(removed=tenant)


@router.post(
    "/api/tenants/{tenant}/token",
    response_model=TenantToken,
    tags=["tenants"],
    responses=ERRORS,
)
async def replace_token(tenant: TenantName, principal: Auth, network: ServedNetwork) -> TenantToken:
    """Issue a new tenant token; the old one stops working (admin)."""
    principal.require_admin()
    token = await network.issue_tenant_token(tenant, replace=True)
    assert token is not None  # replace=True always issues one
    return TenantToken(tenant=tenant, token=token)


@router.post(
    "/api/tenants/{tenant}/seal", response_model=SealingModel, tags=["tenants"], responses=ERRORS
)
async def seal_tenant(
    tenant: TenantName, principal: Auth, network: ServedNetwork, body: SealRequest | None = None
) -> SealingModel:
    """Seal a tenant (admin or the tenant): no more redeploy, removal, snapshot deletion or
    state write (423); calls, reads and new snapshots go on. Sealing a sealed tenant
    changes nothing; only the admin unseals."""
    principal.require_tenant(tenant)
    body = body or SealRequest()
    caller = f"tenant {principal.tenant}" if principal.tenant else "admin"
    await network.seal_tenant(tenant, sealed_by=caller, trigger=body.trigger, actor=body.actor)
    return sealing_model(network, tenant)


@router.get(
    "/api/tenants/{tenant}/seal", response_model=SealingModel, tags=["tenants"], responses=ERRORS
)
async def sealing(tenant: TenantName, principal: Auth, network: ServedNetwork) -> SealingModel:
    """Whether the tenant is sealed, and by whom, when and why."""
    principal.require_tenant(tenant)
    return sealing_model(network, tenant)


@router.delete(
    "/api/tenants/{tenant}/seal", response_model=SealingModel, tags=["tenants"], responses=ERRORS
)
async def unseal_tenant(
    tenant: TenantName, principal: Auth, network: ServedNetwork
) -> SealingModel:
    """Unseal a tenant (admin): its state is again the one it had when it was sealed."""
    principal.require_admin()
    await network.unseal_tenant(tenant)
    return sealing_model(network, tenant)


def sealing_model(network: Network, tenant: str) -> SealingModel:
    """The tenant's seal as the routes show it."""
    seal = network.sealing_of(tenant)
    if seal is None:
        return SealingModel(tenant=tenant, sealed=False)
    return SealingModel(
        tenant=tenant,
        sealed=True,
        sealed_at=seal.sealed_at,
        sealed_by=seal.sealed_by,
        actor=seal.actor,
        trigger=seal.trigger,
        version=seal.version,
    )


def _instance_config(text: str | None) -> Any:
    """The ``?config=`` JSON; its shape is the deploy's to check (``InstanceConfigError``)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(422, "invalid_instance_config", "config is not valid JSON") from None


def _tenant_model(network: Network, tenant: str) -> TenantModel:
    deployment = network.get_deployment(tenant)
    return TenantModel(
        name=tenant,
        version=deployment.version,
        digest=deployment.digest,
        agents=deployment.agents,
        files=deployment.files,
        snapshots=[s.name for s in network.list_snapshots(tenant)],
        created_at=deployment.created_at,
        placement=deployment.placement,
        dependencies=network.dependencies_of(tenant),
        sealing=sealing_model(network, tenant),
    )


# -- reading the body of a bundle upload, within the upload limit --------------------


async def _parse_json(chunks: list[bytes]) -> Any:
    # A large body is parsed in a thread that gives up the GIL as it goes: json.loads
    # would hold it, and stall every tenant, for as long as it parses.
    try:
        if sum(map(len, chunks)) <= OFF_LOOP_BYTES:
            return json.loads(b"".join(chunks))
        return await asyncio.to_thread(loads_in_parts, chunks)
    except (RecursionError, TooDeepError):
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


async def _read_limited(request: Request, limit: int) -> list[bytes]:
    _check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return chunks


async def _save_limited(request: Request, path: Path, limit: int) -> None:
    _check_declared_length(request, limit)
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the upload is over {limit} bytes")
            out.write(chunk)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
