"""Event routing: every destination form, failures as responses, topic isolation."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from plughost import Event, EventResponse, Network

from .conftest import agent_bundle


def _event(
    event_name: str, destination: str | None = None, tenant: str | None = None, **payload: object
) -> Event:
    return Event(event_name=event_name, destination_id=destination, payload=payload, tenant=tenant)


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "a b", "a/b", "x" * 300, "a.*"])
def test_bad_event_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="event_name"):
        Event(event_name=name)


def test_events_get_ids_and_timestamps() -> None:
    first, second = Event(event_name="a.b"), Event(event_name="a.b")
    assert first.event_id != second.event_id and first.timestamp > 0
    assert first.source_id == "system" and first.payload == {}


async def test_every_destination_form(network: Network) -> None:
    await network.deploy("acme", agent_bundle("acme"))
    await network.load_mod("plughost.mods.shared_cache")

    system = await network.send_event(_event("system.mod.list", "system:system"))
    assert system.success and list(system.data["mods"]) == ["shared_cache"]

    agent = await network.send_event(_event("call", "agent:acme/Notifier", message="hi"))
    assert agent == EventResponse(success=True, data={"output": "acme:hi"})

    mod = await network.send_event(_event("shared_cache.set", "mod:shared_cache", key="k", value=1))
    assert mod.success

    topic = await network.send_event(_event("tick", "topic:clock"))
    assert topic.success and topic.data == {"topic": "/clock", "delivered": 0}

    broadcast = await network.send_event(_event("shared_cache.get", key="k"))
    assert broadcast.data["value"] == 1

    for destination, message in [
        ("nowhere", "unknown destination_id"),
        ("mod:", "unknown destination_id"),
        ("agent:acme", "unknown destination_id"),
        ("mod:missing", "'missing' is not loaded"),
        ("agent:acme/Missing", "has no agent 'Missing'"),
        ("agent:nobody/Notifier", "unknown tenant 'nobody'"),
    ]:
        response = await network.send_event(_event("x.y", destination))
        assert not response.success and message in response.message, (destination, response)
    unknown_system = await network.send_event(_event("system.reboot", "system:system"))
    assert not unknown_system.success and "unknown system event" in unknown_system.message
    no_handler = await network.send_event(_event("nobody.listens"))
    assert (no_handler.success, no_handler.message) == (
        False,
        "no handler for event 'nobody.listens'",
    )


async def test_a_raising_handler_gives_a_failed_response_and_the_network_serves_on(
    network: Network,
) -> None:
    path = network.data_dir / "mods" / "faulty.py"
    path.write_text(
        "from plughost import Mod, on\nclass FaultyMod(Mod):\n"
        "    @on('faulty.boom')\n    def boom(self, event):\n        raise KeyError('lost')\n"
        "    @on('faulty.ok')\n    async def ok(self, event):\n        return {'fine': True}\n"
    )
    await network.load_mod("faulty")
    boom = await network.send_event(_event("faulty.boom", "mod:faulty"))
    assert (boom.success, boom.message) == (False, "KeyError: 'lost'")
    broadcast = await network.send_event(_event("faulty.boom"))
    assert not broadcast.success and "KeyError" in broadcast.message
    ok = await network.send_event(_event("faulty.ok", "mod:faulty"))
    assert ok.success and ok.data == {"fine": True}
    wrong = await network.send_event(_event("other.thing", "mod:faulty"))
    assert not wrong.success and "has no handler for 'other.thing'" in wrong.message


async def test_topics_stay_inside_their_tenant(tmp_path: Path) -> None:
    async with Network(tmp_path / "data", shared_topics=["/clock"]) as network:
        await _topics_stay_inside_their_tenant(network)


async def _topics_stay_inside_their_tenant(network: Network) -> None:
    (network.data_dir / "mods" / "sub.py").write_text(
        "from plughost import Mod, on, rpc\nclass SubMod(Mod):\n"
        "    def initialize(self):\n        self.got = []\n"
        "    @on('topic:status')\n    def relative(self, event):\n"
        "        self.got.append(('rel', event.payload['v']))\n"
        "    @on('topic:/clock')\n    def absolute(self, event):\n"
        "        self.got.append(('abs', event.payload['v']))\n"
        "    @rpc\n    def seen(self):\n        return self.got\n"
    )
    for tenant in ("robot1", "robot2"):
        await network.load_mod("sub", tenant=tenant)
    await network.load_mod("sub", mod_id="globalsub")
    to_robot1 = await network.send_event(_event("status", "topic:status", tenant="robot1", v=1))
    assert to_robot1.data == {"topic": "/robot1/status", "delivered": 1}
    to_global = await network.send_event(_event("status", "topic:status", v=2))
    assert to_global.data == {"topic": "/status", "delivered": 1}
    assert await network.publish("/clock", {"v": 3}) == 3
    assert await network.rpc("robot1/sub", "seen") == [("rel", 1), ("abs", 3)]
    assert await network.rpc("robot2/sub", "seen") == [("abs", 3)]
    assert await network.rpc("globalsub", "seen") == [("rel", 2), ("abs", 3)]


async def test_a_tenant_event_reaches_global_mods_and_its_own_only(network: Network) -> None:
    await network.load_mod("plughost.mods.shared_cache", tenant="robot1")
    await network.load_mod("plughost.mods.shared_cache", tenant="robot2")
    set_one = await network.send_event(
        _event("shared_cache.set", tenant="robot1", key="k", value=1)
    )
    assert set_one.success
    from_two = await network.send_event(_event("shared_cache.get", tenant="robot2", key="k"))
    assert from_two.data["found"] is False
    from_one = await network.send_event(_event("shared_cache.get", tenant="robot1", key="k"))
    assert from_one.data["value"] == 1


async def test_shared_cache_ttl_bound_and_partitions(network: Network) -> None:
    await network.load_mod("plughost.mods.shared_cache", config={"max_items": 2})

    async def call(verb: str, tenant: str | None = None, **payload: object) -> EventResponse:
        event = _event(f"shared_cache.{verb}", "mod:shared_cache", tenant, **payload)
        return await network.send_event(event)

    for key in "abc":
        assert (await call("set", key=key, value=key.upper())).success
    assert (await call("get", key="a")).data["found"] is False  # bounded: a was evicted
    assert (await call("get", key="c")).data["value"] == "C"
    assert (await call("get", "t1", key="c")).data["found"] is False  # tenants are partitions
    assert (await call("set", key="short", value=1, ttl=0.01)).success
    await asyncio.sleep(0.05)
    assert (await call("get", key="short")).data["found"] is False
    assert (await call("delete", key="c")).data == {"deleted": True}
    assert (await call("delete", key="c")).data == {"deleted": False}
    for bad in [{}, {"key": ""}, {"key": 3}]:
        assert not (await call("get", **bad)).success
    assert not (await call("set", key="x")).success
    assert not (await call("set", key="x", value=1, ttl=-1)).success
    stats = await network.rpc("shared_cache", "stats")
    assert stats["max_items"] == 2


async def test_shared_artifact_round_trip_per_tenant(tmp_path: Path) -> None:
    data = tmp_path / "data"
    content = bytes(range(256)) * 10
    encoded = base64.b64encode(content).decode()
    async with Network(data) as network:
        await network.load_mod("plughost.mods.shared_artifact", config={"max_bytes": 5000})

        async def call(verb: str, tenant: str | None = None, **payload: object) -> EventResponse:
            return await network.send_event(
                _event(f"shared_artifact.{verb}", None, tenant, **payload)
            )

        put = await call(
            "put", "t1", name="blob.bin", content_base64=encoded, content_type="application/x-test"
        )
        assert put.success and put.data["size"] == 2560
        assert (await call("list", "t2")).data == {"artifacts": []}
        assert not (await call("put", name="../escape", content_base64=encoded)).success
        assert not (await call("put", name=".hidden", content_base64=encoded)).success
        assert not (await call("put", name="x", content_base64="***")).success
        too_big = base64.b64encode(b"x" * 5001).decode()
        assert "over the limit" in (await call("put", name="big", content_base64=too_big)).message
    assert (data / "tenants" / "t1" / "artifacts" / "blob.bin").read_bytes() == content

    async with Network(data) as network:
        got = await network.send_event(_event("shared_artifact.get", tenant="t1", name="blob.bin"))
        assert base64.b64decode(got.data["content_base64"]) == content
        assert got.data["content_type"] == "application/x-test"
        listed = await network.send_event(_event("shared_artifact.list", tenant="t1"))
        assert listed.data["artifacts"] == [
            {"name": "blob.bin", "content_type": "application/x-test", "size": 2560}
        ]
        deleted = await network.send_event(
            _event("shared_artifact.delete", tenant="t1", name="blob.bin")
        )
        assert deleted.data == {"deleted": True}
        missing = await network.send_event(
            _event("shared_artifact.get", tenant="t1", name="blob.bin")
        )
        assert not missing.success


async def test_removing_a_tenant_removes_its_cached_keys_and_artifacts(network: Network) -> None:
    await network.deploy("leaving", agent_bundle("x"))
    await network.load_mod("plughost.mods.shared_cache")
    await network.load_mod("plughost.mods.shared_artifact")
    await network.send_event(_event("shared_cache.set", tenant="leaving", key="k", value=1))
    encoded = base64.b64encode(b"data").decode()
    put = await network.send_event(
        _event("shared_artifact.put", tenant="leaving", name="f.bin", content_base64=encoded)
    )
    assert put.success
    folder = network.data_dir / "tenants" / "leaving"
    assert (folder / "artifacts" / "f.bin").is_file()
    await network.remove_tenant("leaving")
    assert not folder.exists()
    assert "leaving" not in (await network.rpc("shared_cache", "stats"))["items"]
    await network.deploy("leaving", agent_bundle("y"))
    got = await network.send_event(_event("shared_cache.get", tenant="leaving", key="k"))
    assert got.data["found"] is False


async def test_a_system_event_without_a_destination_goes_to_the_network(network: Network) -> None:
    load = Event(
        event_name="system.mod.load",
        source_id="guide",
        payload={"mod_path": "plughost.mods.shared_artifact"},
    )
    loaded = await network.send_event(load)
    assert loaded.success and loaded.data == {"mod_id": "shared_artifact"}, loaded
    assert network.get_loaded_mods() == ["shared_artifact"]
    # Nobody may answer, or forge, a system event in the network's place.
    forged = await network.send_event(Event(event_name="system.mod.loaded", payload={}))
    assert not forged.success and "unknown system event" in forged.message
    unload = Event(
        event_name="system.mod.unload", payload={"mod_path": "plughost.mods.shared_artifact"}
    )
    assert (await network.send_event(unload)).success
    assert network.get_loaded_mods() == []
