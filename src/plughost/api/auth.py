"""Who is asking: the bearer token of a request, resolved to the admin or one tenant."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..tokens import hash_token
from .errors import ApiError
from .state import admin_hash_of, network_of_app


@dataclass(frozen=True)
class Principal:
    """Who is asking: the admin (``tenant is None``) or one tenant."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "forbidden", "this needs the admin token")

    def require_tenant(self, tenant: str) -> None:
        if not self.is_admin and self.tenant != tenant:
            raise ApiError(403, "forbidden", f"this token may only use tenant {self.tenant!r}")

    def scope(self, tenant: str | None) -> str | None:
        """The tenant a request acts in: the one it names; for a tenant token, which may
        name only its own, its own when it names none."""
        if self.is_admin:
            return tenant
        if tenant is None:
            return self.tenant
        self.require_tenant(tenant)
        return tenant


async def _principal(request: Request) -> Principal:
    # Async on purpose: FastAPI runs a plain-def dependency in a thread, on every request.
    return principal_of(request)


def principal_if_any(request: Request) -> Principal | None:
    """Who asks, or ``None`` without an ``Authorization`` header; a bad token is a 401."""
    if "authorization" not in request.headers:
        return None
    return principal_of(request)


def principal_of(request: Request) -> Principal:
    """Who asks, from the bearer token; no valid token is a 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "an 'Authorization: Bearer <token>' header is needed")
    token = token.strip()
    if hmac.compare_digest(hash_token(token), admin_hash_of(request)):
        return Principal(None)
    tenant = network_of_app(request.app).tenant_for_token(token)
    if tenant is None:
        raise ApiError(401, "unauthorized", "the token is not valid")
    return Principal(tenant)


Auth = Annotated[Principal, Depends(_principal)]
