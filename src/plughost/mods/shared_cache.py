"""A key-value cache for each namespace, with expiry and a size bound.

Events (payload -> response data):

* ``shared_cache.set``: ``key``, ``value`` (any JSON), optional ``ttl`` seconds -> ``{}``
* ``shared_cache.get``: ``key`` -> ``{"key", "found", "value"}``
* ``shared_cache.delete``: ``key`` -> ``{"deleted": bool}``

Config: ``max_items`` (per namespace, default 1000; the least recently used
entry goes first) and ``default_ttl`` (seconds, default: no expiry).

Namespaces: loaded inside a tenant, the cache serves that tenant alone;
loaded globally, it keeps one partition per event ``tenant`` (and one for
events without a tenant), so tenants never see each other's keys. A removed
tenant's partition is dropped (``system.tenant.removed``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from plughost import Event, EventResponse, Mod, calling_tenant, on, rpc

Entry = tuple[float | None, Any]  # (expiry on the monotonic clock or None, value)


class SharedCacheMod(Mod):
    def initialize(self) -> bool | None:
        self.max_items = int(self.config.get("max_items", 1000))
        default_ttl = self.config.get("default_ttl")
        self.default_ttl = float(default_ttl) if default_ttl is not None else None
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")
        self._partitions: dict[str | None, OrderedDict[str, Entry]] = {}
        return True

    def _partition(self, event: Event) -> OrderedDict[str, Entry]:
        return self._partitions.setdefault(self.tenant or event.tenant, OrderedDict())

    @staticmethod
    def _key(event: Event) -> str | EventResponse:
        key = event.payload.get("key")
        if not isinstance(key, str) or not key:
            return EventResponse(success=False, message="payload.key must be a non-empty string")
        return key

    @on("shared_cache.set")
    async def set(self, event: Event) -> EventResponse:
        key = self._key(event)
        if isinstance(key, EventResponse):
            return key
        if "value" not in event.payload:
            return EventResponse(success=False, message="payload.value is required")
        ttl = event.payload.get("ttl", self.default_ttl)
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            return EventResponse(success=False, message="payload.ttl must be a positive number")
        entries = self._partition(event)
        expiry = time.monotonic() + ttl if ttl is not None else None
        entries[key] = (expiry, event.payload["value"])
        entries.move_to_end(key)
        while len(entries) > self.max_items:
            entries.popitem(last=False)
        return EventResponse(success=True, message=f"set {key!r}")

    @on("shared_cache.get")
    async def get(self, event: Event) -> EventResponse:
        key = self._key(event)
        if isinstance(key, EventResponse):
            return key
        entries = self._partition(event)
        entry = entries.get(key)
        if entry is not None and entry[0] is not None and entry[0] <= time.monotonic():
            del entries[key]
            entry = None
        if entry is None:
            return EventResponse(success=True, data={"key": key, "found": False, "value": None})
        entries.move_to_end(key)
        return EventResponse(success=True, data={"key": key, "found": True, "value": entry[1]})

    @on("shared_cache.delete")
    async def delete(self, event: Event) -> EventResponse:
        key = self._key(event)
        if isinstance(key, EventResponse):
            return key
        deleted = self._partition(event).pop(key, None) is not None
        return EventResponse(success=True, data={"deleted": deleted})

    @on("system.tenant.removed")
    async def forget_tenant(self, event: Event) -> None:
        self._partitions.pop(event.payload.get("tenant"), None)

    @rpc
    def stats(self) -> dict[str, Any]:
        """Item counts per partition (``*`` is the partition of events without a tenant);
        a tenant's call sees its own partition only."""
        caller = calling_tenant()
        return {
            "max_items": self.max_items,
            "items": {
                tenant or "*": len(entries)
                for tenant, entries in self._partitions.items()
                if caller is None or tenant == caller
            },
        }
