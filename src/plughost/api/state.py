"""What :func:`~plughost.api.create_app` keeps on ``app.state``, and typed ways to read it.

Routes reach the network through the :data:`ServedNetwork` dependency.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from ..network import Network


def keep(app: FastAPI, network: Network, *, admin_hash: str, upload_limit: int) -> None:
    """Keep on ``app.state`` what the routes read: the network, the admin token's hash
    and the bound on a bundle upload."""
    app.state.network = network
    app.state.admin_hash = admin_hash
    app.state.upload_limit = upload_limit


def network_of_app(app: FastAPI) -> Network:
    network: Network = app.state.network
    return network


async def network_of(request: Request) -> Network:
    """The network the app serves."""
    # Async on purpose: FastAPI runs a plain-def dependency in a thread, on every request.
    return network_of_app(request.app)


def admin_hash_of(request: Request) -> str:
    admin_hash: str = request.app.state.admin_hash
    return admin_hash


def upload_limit_of(request: Request) -> int:
    upload_limit: int = request.app.state.upload_limit
    return upload_limit


ServedNetwork = Annotated[Network, Depends(network_of)]
