"""Tenants' tokens, kept as sha256 hashes only."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from .store import Store


def hash_token(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    """Which token belongs to whom. Looks tokens up by hash, never by value."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tenants: dict[str, str] = {}  # sha256 of a tenant token -> tenant

    def load(self) -> None:
        """Read the stored hashes (at start)."""
        self._tenants = self._store.token_hashes()

    def tenant_for(self, token: str) -> str | None:
        """The tenant a token belongs to, or ``None``."""
        return self._tenants.get(hash_token(token))

    async def issue(self, tenant: str, *, replace: bool) -> str | None:
        """Create and record a token for ``tenant``; ``None`` if it has one and not ``replace``.

        The caller holds the network's write lock and has checked the tenant exists.
        """
        token = "pht_" + secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        stored = await asyncio.to_thread(
            self._store.set_token_hash, tenant, token_hash, replace=replace
        )
        if not stored:
            return None
        self.forget(tenant)
        self._tenants[token_hash] = tenant
        return token

    def forget(self, tenant: str) -> None:
        """Stop accepting the tenant's token (it was replaced, or the tenant removed)."""
        for old in [h for h, t in self._tenants.items() if t == tenant]:
            del self._tenants[old]
