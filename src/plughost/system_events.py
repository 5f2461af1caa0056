"""The network's own events: ``system.mod.load``, ``system.mod.unload``, ``system.mod.list``,
``system.instance.restart`` and ``system.instance.unload``, as the dynamic-mod guide's CLI
sends them, answered through the network's own methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .errors import OutsideTenantError
from .events import Event, EventResponse
from .mod import Mod, ModUnloadReport, mod_key

SYSTEM_EVENTS = (
    "system.mod.load",
    "system.mod.unload",
    "system.mod.list",
    "system.instance.restart",
    "system.instance.unload",
)


class Acts(Protocol):
    """What system events act through: the methods of ``Network`` of the same names."""

    async def load_mod(
        self,
        mod_path: str,
        config: Mapping[str, Any] | None = None,
        *,
        mod_id: str | None = None,
        tenant: str | None = None,
    ) -> Mod: ...

    async def unload_mod(
        self,
        mod_path_or_id: str,
        *,
        tenant: str | None = None,
        confine_to: str | None = None,
        verify: bool = False,
    ) -> ModUnloadReport: ...

    def mod_status(self, confine_to: str | None = None) -> dict[str, Any]: ...

    async def unload(self, rpc_name: str, *, confine_to: str | None = None) -> ModUnloadReport: ...

    async def restart(
        self, rpc_name: str, *, reload: bool = True, confine_to: str | None = None
    ) -> Mod: ...


class SystemEvents:
    """Answers the network's own events, through ``network``'s methods (given, not imported:
    the network is above this module)."""

    def __init__(self, network: Acts) -> None:
        self._network = network

    async def answer(self, event: Event, confine_to: str | None) -> EventResponse:
        """Answer one ``system.*`` event of a caller (``None``: the admin, else a tenant)."""
        payload, name = event.payload, event.event_name
        tenant = payload.get("tenant", event.tenant)
        if confine_to is not None and tenant != confine_to:
            raise OutsideTenantError(confine_to, str(tenant))
        if name == "system.mod.load":
            mod_path = payload.get("mod_path")
            if not mod_path:
                return EventResponse(success=False, message="mod_path is required")
            config = payload.get("config") or {}
            if not isinstance(config, dict):
                return EventResponse(success=False, message="config must be an object")
            mod = await self._network.load_mod(
                str(mod_path), config, mod_id=payload.get("mod_id"), tenant=tenant
            )
            key = mod_key(mod.mod_id, mod.tenant)
            return EventResponse(
                success=True, message=f"mod {key!r} loaded", data={"mod_id": mod.mod_id}
            )
        if name == "system.mod.unload":
            target = payload.get("mod_id") or payload.get("mod_path")
            if not target:
                return EventResponse(success=False, message="mod_path or mod_id is required")
            report = await self._network.unload_mod(
                str(target),
                tenant=tenant,
                confine_to=confine_to,
                verify=payload.get("verify") is True,
            )
            data = {
                "mod_id": report.mod_id,
                "mod_path": report.mod_path,
                "verified": report.verified,
                "leaked": report.leaked,
            }
            if report.shutdown_error:
                data["shutdown_error"] = report.shutdown_error
            return EventResponse(success=True, message=report.message, data=data)
        if name == "system.mod.list":
            return EventResponse(
                success=True, data={"mods": self._network.mod_status(confine_to)["details"]}
            )
        if name in ("system.instance.restart", "system.instance.unload"):
            rpc_name = payload.get("rpc_name")
            if not rpc_name:
                return EventResponse(success=False, message="rpc_name is required")
            if name == "system.instance.unload":
                unloaded = await self._network.unload(str(rpc_name), confine_to=confine_to)
                return EventResponse(
                    success=True, message=unloaded.message, data={"rpc_name": rpc_name}
                )
            reload = bool(payload.get("reload", True))
            await self._network.restart(str(rpc_name), reload=reload, confine_to=confine_to)
            return EventResponse(
                success=True, message=f"{rpc_name!r} restarted", data={"rpc_name": rpc_name}
            )
        return EventResponse(
            success=False,
            message=f"unknown system event {name!r}; known: {', '.join(SYSTEM_EVENTS)}",
        )
