"""A tenant's agents: listing them and calling one."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..bounded_json import dumps_async
from .auth import Auth
from .errors import ERRORS
from .models import AgentModel, CallRequest, CallResponse
from .parameters import SnapshotQuery, TenantName
from .state import ServedNetwork

router = APIRouter()


@router.get(
    "/api/tenants/{tenant}/agents",
    response_model=list[AgentModel],
    tags=["agents"],
    responses=ERRORS,
)
async def list_agents(
    tenant: TenantName, principal: Auth, network: ServedNetwork, snapshot: SnapshotQuery = None
) -> list[AgentModel]:
    principal.require_tenant(tenant)
    agents = await network.list_agents(tenant, snapshot)
    return [AgentModel(name=a.name, description=a.description, tool=a.tool) for a in agents]


@router.post(
    "/api/tenants/{tenant}/agents/{agent}/call",
    response_model=CallResponse,
    tags=["agents"],
    responses=ERRORS,
)
async def call_agent(
    tenant: TenantName,
    agent: str,
    body: CallRequest,
    principal: Auth,
    network: ServedNetwork,
    snapshot: SnapshotQuery = None,
) -> Response:
    """Run an agent with ``args``; ``?snapshot=`` runs a snapshot's code."""
    principal.require_tenant(tenant)
    output = await network.call_agent(
        tenant, agent, body.args, snapshot=snapshot, user=body.user_id
    )
    # Every placement answers with JSON; a large answer is encoded off the event loop.
    return Response(await dumps_async({"output": output}), media_type="application/json")
