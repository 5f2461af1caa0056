"""Tenant state, in every placement: a folder per tenant and per user, ``self.storage`` and
``BRAINSTEM_MEMORY_PATH`` per call, snapshots that capture state, and sealing."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from plughost import (
    AgentError,
    CallTimeoutError,
    Deployment,
    Network,
    ReadOnlyStateError,
    StateTooLargeError,
    TenantSealedError,
    UnknownTenantError,
)
from plughost.storage import MEMORY_VARIABLE

from .conftest import STATEFUL_PLACEMENTS

# An agent file as the swarm server's memory agents are written: it finds its memory file
# through the environment, at call time.
MEMORY_AGENT = """\
import json, os
from agents.basic_agent import BasicAgent

class MemoryAgent(BasicAgent):
    def __init__(self):
        super().__init__(name="Memory", metadata={"name": "Memory", "parameters": {
            "type": "object", "properties": {"fact": {"type": "string"}}}})

    def perform(self, fact=None, **kwargs):
        path = os.environ.get("BRAINSTEM_MEMORY_PATH")
        facts = json.load(open(path)) if os.path.exists(path) else []
        if fact is not None:
            facts.append(fact)
            with open(path, "w") as out:
                json.dump(facts, out)
        return {"facts": facts, "path": path}
"""

# Reads the variable, lets other calls run, and reads it again.
SLOW_READER = """\
import os, time
from agents.basic_agent import BasicAgent

class Reader(BasicAgent):
    name = "Reader"
    def perform(self, **kwargs):
        first = os.environ["BRAINSTEM_MEMORY_PATH"]
        time.sleep(0.02)
        return [first, os.getenv("BRAINSTEM_MEMORY_PATH"), str(self.storage.memory_path)]

class AsyncReader(BasicAgent):
    name = "AsyncReader"
    async def perform(self, **kwargs):
        import asyncio
        first = os.environ["BRAINSTEM_MEMORY_PATH"]
        await asyncio.sleep(0.02)
        return [first, os.environ.get("BRAINSTEM_MEMORY_PATH"), str(self.storage.memory_path)]
"""

KEY_VALUE = """\
from agents.basic_agent import BasicAgent

class Notes(BasicAgent):
    name = "Notes"
    def perform(self, key, value=None, **kwargs):
        if value is not None:
            self.storage.set(key, value)
        return {"value": self.storage.get(key), "keys": self.storage.keys(),
                "user": self.storage.user, "read_only": self.storage.read_only}
"""


def bundle(files: dict[str, str]) -> dict[str, Any]:
    return {"agents": [{"filename": name, "source": source} for name, source in files.items()]}


MEMORY = bundle({"memory_agent.py": MEMORY_AGENT})


def writer_agent(pause: float) -> str:
    """An agent that writes 20,000 bytes to its state in 20 pieces, ``pause`` s apart."""
    return f"""\
import time
from agents.basic_agent import BasicAgent

class Writer(BasicAgent):
    name = "Writer"
    def perform(self, **kwargs):
        with open(self.storage.path / "big.txt", "w") as out:
            for _ in range(20):
                out.write("x" * 1000)
                out.flush()
                time.sleep({pause})
        return "done"
"""


def facts(answer: Any) -> list[str]:
    listed: list[str] = answer["facts"]
    return listed


@pytest.fixture(params=STATEFUL_PLACEMENTS)
def placement(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def test_a_ray_tenant_is_told_that_its_calls_keep_no_state(network: Network) -> None:
    await network.deploy("acme", bundle({"notes_agent.py": KEY_VALUE}), placement="ray")
    with pytest.raises(AgentError, match=r"placement keeps no tenant state \(ray\)"):
        await network.call_agent("acme", "Notes", {"key": "k", "value": "v"})
    await network.deploy("acme", MEMORY)
    with pytest.raises(AgentError, match="TypeError"):  # no BRAINSTEM_MEMORY_PATH to open
        await network.call_agent("acme", "Memory", {"fact": "lost"}, user="ann")
    assert not list((network.data_dir / "tenants" / "acme").rglob("*.json"))


async def test_each_tenant_and_each_user_keeps_its_own_memory(
    network: Network, placement: str
) -> None:
    for tenant in ("acme", "bob"):
        await network.deploy(tenant, MEMORY, placement=placement)  # the same file in both
    await network.call_agent("acme", "Memory", {"fact": "acme knows"})
    await network.call_agent("acme", "Memory", {"fact": "ann knows"}, user="ann")
    await network.call_agent("bob", "Memory", {"fact": "bob knows"})
    await network.call_agent("bob", "Memory", {"fact": "ann of bob"}, user="ann")

    assert facts(await network.call_agent("acme", "Memory", {})) == ["acme knows"]
    assert facts(await network.call_agent("acme", "Memory", {}, user="ann")) == ["ann knows"]
    assert facts(await network.call_agent("bob", "Memory", {})) == ["bob knows"]
    assert facts(await network.call_agent("bob", "Memory", {}, user="ann")) == ["ann of bob"]
    assert facts(await network.call_agent("acme", "Memory", {}, user="zed")) == []
    # Outside calls the variable is the process's own: none.
    assert MEMORY_VARIABLE not in os.environ
    # The state is the tenant's, in the data folder, and goes with it.
    root = network.data_dir / "tenants" / "acme" / "state" / "live"
    assert json.loads((root / "users" / "ann" / "memory.json").read_text()) == ["ann knows"]
    await network.remove_tenant("acme")
    assert not root.exists()
    await network.deploy("acme", MEMORY, placement=placement)
    assert facts(await network.call_agent("acme", "Memory", {})) == []


async def test_a_bad_user_id_is_refused_before_the_call(network: Network) -> None:
    await network.deploy("acme", MEMORY)
    for user in ("../bob", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(ValueError, match="invalid user name"):
            await network.call_agent("acme", "Memory", {"fact": "x"}, user=user)
    assert not (network.data_dir / "tenants" / "bob").exists()


async def test_the_memory_path_is_each_calls_own_under_concurrent_calls(
    network: Network, placement: str
) -> None:
    """The swarm server swapped one process-wide variable around calls on threads, and a
    call could read another tenant's path. Here every read, before and after the others
    ran, names the call's own tenant and user."""
    reader = bundle({"reader_agent.py": SLOW_READER})
    for tenant in ("acme", "bob"):
        await network.deploy(tenant, reader, placement=placement)
    calls = [
        (tenant, agent, user)
        for tenant in ("acme", "bob")
        for agent in ("Reader", "AsyncReader")
        for user in (None, "ann", "ben")
        for _ in range(3)
    ]
    answers = await asyncio.gather(
        *(network.call_agent(tenant, agent, {}, user=user) for tenant, agent, user in calls)
    )
    for (tenant, _, user), (first, second, storage) in zip(calls, answers, strict=True):
        folder = "shared" if user is None else f"users/{user}"
        assert first == second == storage, (tenant, user)
        assert first.endswith(f"/state/live/{folder}/memory.json"), (tenant, user, first)
        if placement != "sandbox":  # a sandbox shows its own tenant's state only, at /state
            assert f"/tenants/{tenant}/state/" in first, (tenant, user, first)


async def test_storage_keeps_values_per_user_and_refuses_writes_in_a_snapshot(
    network: Network, placement: str
) -> None:
    notes = bundle({"notes_agent.py": KEY_VALUE})
    await network.deploy("acme", notes, placement=placement)
    await network.call_agent("acme", "Notes", {"key": "color", "value": "red"})
    await network.call_agent("acme", "Notes", {"key": "color", "value": "blue"}, user="ann")
    answer = await network.call_agent("acme", "Notes", {"key": "color"})
    assert answer == {"value": "red", "keys": ["color"], "user": None, "read_only": False}
    answer = await network.call_agent("acme", "Notes", {"key": "color"}, user="ann")
    assert answer["value"] == "blue" and answer["user"] == "ann"

    await network.create_snapshot("acme", "jan")
    answer = await network.call_agent("acme", "Notes", {"key": "color"}, snapshot="jan")
    assert answer["value"] == "red" and answer["read_only"] is True
    with pytest.raises(ReadOnlyStateError, match="snapshot 'jan' of tenant 'acme' is read-only"):
        await network.call_agent("acme", "Notes", {"key": "color", "value": "x"}, snapshot="jan")
    answer = await network.call_agent("acme", "Notes", {"key": "color"}, snapshot="jan")
    assert answer["value"] == "red"


async def test_a_snapshot_answers_with_the_state_it_was_taken_with(
    network: Network, placement: str
) -> None:
    await network.deploy("acme", MEMORY, placement=placement)
    await network.call_agent("acme", "Memory", {"fact": "one"})
    await network.call_agent("acme", "Memory", {"fact": "ann one"}, user="ann")
    await network.create_snapshot("acme", "first")
    await network.call_agent("acme", "Memory", {"fact": "two"})
    await network.create_snapshot("acme", "second")
    await network.call_agent("acme", "Memory", {"fact": "three"})

    assert facts(await network.call_agent("acme", "Memory", {}, snapshot="first")) == ["one"]
    second = await network.call_agent("acme", "Memory", {}, snapshot="second")
    assert facts(second) == ["one", "two"]
    assert facts(await network.call_agent("acme", "Memory", {})) == ["one", "two", "three"]
    ann = await network.call_agent("acme", "Memory", {}, snapshot="first", user="ann")
    assert facts(ann) == ["ann one"]

    # A write to a snapshot fails, says why, and changes nothing, for no later call either.
    with pytest.raises(ReadOnlyStateError, match="read-only") as refused:
        await network.call_agent("acme", "Memory", {"fact": "late"}, snapshot="first")
    assert refused.value.snapshot == "first"
    assert facts(await network.call_agent("acme", "Memory", {}, snapshot="first")) == ["one"]

    # What is unchanged is stored once: ann's memory is one blob in both snapshots.
    states = {s.name: s.state for s in network.list_snapshots("acme")}
    ann_file = "users/ann/memory.json"
    assert states["first"][ann_file] == states["second"][ann_file]
    assert states["first"]["shared/memory.json"] != states["second"]["shared/memory.json"]
    # Every read-only copy a call read from is gone.
    views = network.data_dir / "tenants" / "acme" / "state" / "views"
    assert list(views.iterdir()) == []


async def test_a_sealed_tenant_is_read_only_and_stays_sealed_across_a_restart(
    tmp_path: Path, placement: str
) -> None:
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.deploy("acme", MEMORY, placement=placement)
        await network.deploy("bob", MEMORY, placement=placement)
        await network.call_agent("acme", "Memory", {"fact": "before"})
        await network.create_snapshot("acme", "old")
        sealing = await network.seal_tenant("acme", sealed_by="ops", trigger="retired")
        assert (sealing.sealed_by, sealing.trigger, sealing.version) == ("ops", "retired", 1)
        assert await network.seal_tenant("acme", sealed_by="other") == sealing  # idempotent

        with pytest.raises(TenantSealedError, match="tenant 'acme' is sealed: a redeploy"):
            await network.deploy("acme", bundle({"x.py": "X = 1\n"}))
        with pytest.raises(TenantSealedError, match="its removal"):
            await network.remove_tenant("acme")
        with pytest.raises(TenantSealedError, match="deleting snapshot 'old'"):
            await network.delete_snapshot("acme", "old")
        with pytest.raises(ReadOnlyStateError, match="tenant 'acme' is sealed") as refused:
            await network.call_agent("acme", "Memory", {"fact": "after"})
        assert refused.value.snapshot is None
        # Reads, calls and new snapshots go on; other tenants are not sealed.
        assert facts(await network.call_agent("acme", "Memory", {})) == ["before"]
        await network.create_snapshot("acme", "sealed")
        kept = await network.call_agent("acme", "Memory", {}, snapshot="sealed")
        assert facts(kept) == ["before"]
        await network.call_agent("bob", "Memory", {"fact": "bob writes"})
        assert network.health()["tenants"]["sealed"] == ["acme"]
        assert network.health(confine_to="bob")["tenants"]["sealed"] == []
        assert network.health(counts_only=True)["tenants"]["sealed"] == []

    async with Network(data) as network:
        assert network.sealing_of("acme") == sealing
        with pytest.raises(TenantSealedError):
            await network.deploy("acme", MEMORY)
        assert facts(await network.call_agent("acme", "Memory", {})) == ["before"]
        await network.unseal_tenant("acme")
        assert network.sealing_of("acme") is None
        await network.call_agent("acme", "Memory", {"fact": "after"})
        assert facts(await network.call_agent("acme", "Memory", {})) == ["before", "after"]
        await network.remove_tenant("acme")
        with pytest.raises(UnknownTenantError):
            network.sealing_of("acme")


async def test_no_deploy_lands_after_a_seal_even_when_they_race(network: Network) -> None:
    """The swarm server checked the seal outside its lock, so a deploy that had passed the
    check could land after the seal. Here the seal and the deploys take the same lock: those
    asked for before the seal land before it, those after are refused."""
    slow = "import time\ntime.sleep(0.2)\n"
    await network.deploy("acme", MEMORY)

    def deploy(n: int) -> asyncio.Task[Deployment]:
        files = {"memory_agent.py": f"{MEMORY_AGENT}# {n}\n{slow}"}
        return asyncio.create_task(network.deploy("acme", bundle(files)))

    before = [deploy(n) for n in range(2)]
    await asyncio.sleep(0.05)  # the first deploy is importing its code
    seal = asyncio.create_task(network.seal_tenant("acme"))
    await asyncio.sleep(0)  # the seal waits for the tenant's lock
    after = [deploy(n) for n in range(2, 4)]
    landed = await asyncio.gather(*before)
    sealing = await seal
    for refused in await asyncio.gather(*after, return_exceptions=True):
        assert isinstance(refused, TenantSealedError), refused
    assert sealing.version == landed[-1].version == network.get_deployment("acme").version


async def test_a_snapshot_waits_for_a_write_in_flight_and_never_holds_half_of_it(
    network: Network,
) -> None:
    writer = writer_agent(pause=0.01)
    await network.deploy("acme", bundle({"writer_agent.py": writer}))
    call = asyncio.create_task(network.call_agent("acme", "Writer", {}))
    await asyncio.sleep(0.05)
    snapshot = await network.create_snapshot("acme", "during")
    assert await call == "done"
    blob = snapshot.state["shared/big.txt"]
    store_blob = network.data_dir / "blobs" / blob[:2] / blob
    assert len(store_blob.read_bytes()) == 20_000


async def test_links_a_sandbox_puts_in_its_state_are_never_followed_by_the_host(
    network: Network, tmp_path: Path
) -> None:
    """A sandbox writes its live state; the host opens it up for the tenant's next sandbox,
    makes users' folders and captures it, as root. A link it put there to a host folder or
    file is neither changed nor read."""
    decoy = tmp_path / "decoy"
    decoy.mkdir(mode=0o700)
    secret = decoy / "secret.txt"
    secret.write_text("host secret")
    secret.chmod(0o600)
    linker = f"""\
import os
from agents.basic_agent import BasicAgent

class Linker(BasicAgent):
    name = "Linker"
    def perform(self, **kwargs):
        shared = self.storage.shared_path
        os.makedirs("/state/live/users", exist_ok=True)
        os.symlink({str(decoy)!r}, "/state/live/users/evil")
        os.symlink({str(secret)!r}, shared / "secret.txt")
        os.symlink({str(decoy)!r}, shared / "folder")
        return "linked"
"""
    await network.deploy("hostile", bundle({"linker_agent.py": linker}), placement="sandbox")
    assert await network.call_agent("hostile", "Linker", {}) == "linked"
    # A user's folder that is a link is not made, nor opened up: the call runs without one.
    with pytest.raises(Exception):  # noqa: B017 (whatever the agent meets writing there)
        await network.call_agent("hostile", "Linker", {}, user="evil")
    snapshot = await network.create_snapshot("hostile", "then")
    await network.deploy("hostile", bundle({"linker_agent.py": linker + "# again\n"}))
    assert snapshot.state == {}  # links are not state: nothing of the host was read
    assert decoy.stat().st_mode & 0o777 == 0o700
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text() == "host secret"


async def test_a_sealed_sandbox_is_shown_no_writable_state(network: Network) -> None:
    """A sandbox is shown its live state by a mount; sealing renews it without that mount,
    so its code cannot keep writing there, and unsealing gives it back."""
    raw = """\
import os
from agents.basic_agent import BasicAgent

class Raw(BasicAgent):
    name = "Raw"
    def perform(self, **kwargs):
        try:
            with open("/state/live/shared/raw.txt", "a") as out:
                out.write("x")
        except OSError as exc:
            return f"refused: {type(exc).__name__}"
        return "written"
"""
    await network.deploy("hostile", bundle({"raw_agent.py": raw}), placement="sandbox")
    assert await network.call_agent("hostile", "Raw", {}) == "written"
    await network.seal_tenant("hostile")
    for _ in range(3):
        assert await network.call_agent("hostile", "Raw", {}) == "refused: FileNotFoundError"
    await network.unseal_tenant("hostile")
    assert await network.call_agent("hostile", "Raw", {}) == "written"
    live = network.data_dir / "tenants" / "hostile" / "state" / "live" / "shared" / "raw.txt"
    assert live.read_text() == "xx"


async def test_a_deep_tree_and_a_fifo_in_a_sandboxs_state_hold_up_nothing(
    tmp_path: Path,
) -> None:
    maker = """\
import os
from agents.basic_agent import BasicAgent

class Maker(BasicAgent):
    name = "Maker"
    def perform(self, **kwargs):
        os.mkfifo("/state/live/shared/pipe")
        path = "/state/live/shared"
        for _ in range(1500):
            path += "/d"
            os.mkdir(path)
        return "made"
"""
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.deploy("hostile", bundle({"maker_agent.py": maker}), placement="sandbox")
        await network.deploy("quiet", MEMORY)
        assert await network.call_agent("hostile", "Maker", {}) == "made"
        with pytest.raises(StateTooLargeError, match="deeper than 64"):
            await network.create_snapshot("hostile", "deep")
        assert network.list_snapshots("hostile") == []
        await network.create_snapshot("quiet", "fine")  # another tenant is not held up
        await network.remove_tenant("hostile")
        assert not (data / "tenants" / "hostile").exists()
    async with Network(data) as network:  # and the folder starts again
        assert network.list_tenants() == ["quiet"]


async def test_a_snapshot_waits_for_a_call_past_its_deadline_to_stop_writing(
    tmp_path: Path,
) -> None:
    slow_writer = writer_agent(pause=0.03)
    async with Network(tmp_path / "data", call_timeout=0.2) as network:
        await network.deploy("acme", bundle({"writer_agent.py": slow_writer}))
        with pytest.raises(CallTimeoutError):
            await network.call_agent("acme", "Writer", {})
        snapshot = await network.create_snapshot("acme", "after")
        blob = snapshot.state["shared/big.txt"]
        assert len((network.data_dir / "blobs" / blob[:2] / blob).read_bytes()) == 20_000


async def test_the_environment_of_a_call_reads_as_one_mapping(network: Network) -> None:
    probe = """\
import os
from agents.basic_agent import BasicAgent

class Probe(BasicAgent):
    name = "Probe"
    def perform(self, **kwargs):
        names = list(os.environ)
        copied = os.environ.copy()
        os.environ.pop("BRAINSTEM_MEMORY_PATH")  # has no effect within a call
        return {"len": len(os.environ), "iterated": len(names),
                "in": "BRAINSTEM_MEMORY_PATH" in os.environ,
                "copied": copied["BRAINSTEM_MEMORY_PATH"] == os.environ["BRAINSTEM_MEMORY_PATH"]}
"""
    await network.deploy("acme", bundle({"probe_agent.py": probe}))
    answer = await network.call_agent("acme", "Probe", {})
    assert answer["len"] == answer["iterated"] and answer["in"] and answer["copied"]
    assert MEMORY_VARIABLE not in os.environ
