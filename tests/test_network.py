"""The Network over a real data folder: deployments, snapshots, agents, restarts."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from plughost import (
    AgentError,
    BundleLoadError,
    BundleRejectedError,
    BundleTooLargeError,
    DataFolderInUseError,
    DuplicateAgentError,
    DuplicateSnapshotError,
    Event,
    InvalidArgumentsError,
    InvalidNameError,
    Network,
    NotStartedError,
    UnknownAgentError,
    UnknownSnapshotError,
    UnknownTenantError,
)
from plughost.store import remove_folder

from .conftest import WriteBundle, agent_bundle, namespace_keys


async def test_the_swarm_story_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Network(data, network_id="swarms") as network:
        a1 = await network.deploy("swarm-a", agent_bundle("alpha-1"))
        b1 = await network.deploy("swarm-b", agent_bundle("beta"))
        assert (a1.version, b1.version) == (1, 1)
        assert a1.agents == ["Notifier"] and sorted(a1.files) == ["helpers.py", "notifier_agent.py"]
        assert await network.call_agent("swarm-a", "Notifier", {"message": "hi"}) == "alpha-1:hi"
        assert await network.call_agent("swarm-b", "Notifier", {"message": "hi"}) == "beta:hi"

        jan = await network.create_snapshot("swarm-a", "jan")
        assert (jan.tenant, jan.name, jan.digest) == ("swarm-a", "jan", a1.digest)
        a2 = await network.deploy("swarm-a", agent_bundle("alpha-2"))
        assert a2.version == 2 and a2.digest != a1.digest

        expected = {
            ("swarm-a", None): "alpha-2:x",
            ("swarm-a", "jan"): "alpha-1:x",
            ("swarm-b", None): "beta:x",
        }
        for (tenant, snapshot), answer in expected.items():
            assert (
                await network.call_agent(tenant, "Notifier", {"message": "x"}, snapshot=snapshot)
                == answer
            )

    assert namespace_keys() == set()
    async with Network(data, network_id="swarms") as reopened:
        assert reopened.loaded_namespaces() == []
        assert reopened.list_tenants() == ["swarm-a", "swarm-b"]
        assert reopened.get_deployment("swarm-a").version == 2
        assert [s.name for s in reopened.list_snapshots("swarm-a")] == ["jan"]
        for (tenant, snapshot), answer in expected.items():
            assert (
                await reopened.call_agent(tenant, "Notifier", {"message": "x"}, snapshot=snapshot)
                == answer
            )


@pytest.fixture
def counter() -> ModuleType:
    """A shared module bundle code can import to count how often its body ran."""
    module = ModuleType("plughost_test_counter")
    module.runs = 0  # type: ignore[attr-defined]
    module.lock = threading.Lock()  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


COUNTED = """
import time
import plughost_test_counter as counter
with counter.lock:
    counter.runs += 1
time.sleep(0.05)  # widen the window in which the other callers arrive
"""


async def test_fifty_threads_calling_a_cold_tenant_load_it_once(
    tmp_path: Path, counter: ModuleType
) -> None:
    data = tmp_path / "data"
    bundle = agent_bundle("cold")
    bundle["agents"].append({"filename": "counted.py", "source": COUNTED})  # type: ignore[attr-defined]
    async with Network(data) as network:
        await network.deploy("cold", bundle)
    counter.runs = 0  # type: ignore[attr-defined]

    async with Network(data) as network:
        loop = asyncio.get_running_loop()
        start = threading.Barrier(50)
        answers: list[str] = []

        def call() -> None:
            start.wait()
            future = asyncio.run_coroutine_threadsafe(
                network.call_agent("cold", "Notifier", {"message": "m"}), loop
            )
            answers.append(future.result())

        threads = [threading.Thread(target=call) for _ in range(50)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])

    assert answers == ["cold:m"] * 50
    assert counter.runs == 1  # type: ignore[attr-defined]


async def test_the_least_recently_used_namespaces_are_evicted(tmp_path: Path) -> None:
    async with Network(tmp_path / "data", max_loaded_namespaces=10) as network:
        for i in range(50):
            await network.deploy(f"t{i}", agent_bundle(f"w{i}"))
            assert len(network.loaded_namespaces()) <= 10
        for i in [*range(50), 49, 3, 49]:
            assert await network.call_agent(f"t{i}", "Notifier", {"message": ""}) == f"w{i}:"
            loaded = network.loaded_namespaces()
            assert len(loaded) <= 10
            prefixes = {ns.package_name for ns in loaded}
            assert {
                key.split(".")[0] + "." + key.split(".")[1] for key in namespace_keys()
            } == prefixes
        assert [ns.tenant for ns in network.loaded_namespaces()][-2:] == ["t3", "t49"]
        namespaces = network.health()["namespaces"]
        assert (namespaces["loaded"], namespaces["limit"]) == (10, 10)
        assert namespaces["states"] == {"live": 10}


async def test_a_namespace_with_a_call_in_flight_is_never_evicted(tmp_path: Path) -> None:
    entered, gate = threading.Event(), threading.Event()
    blocking = agent_bundle(
        "blocked",
        extra=(
            "class Wait(BasicAgent):\n"
            "    name = 'Wait'\n"
            "    def perform(self, **kwargs):\n"
            "        import plughost_test_gate\n"
            "        plughost_test_gate.wait()\n"
            "        return 'done'\n"
        ),
    )
    module = ModuleType("plughost_test_gate")
    module.wait = lambda: entered.set() or gate.wait(timeout=60)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        async with Network(tmp_path / "data", max_loaded_namespaces=1) as network:
            await network.deploy("busy", blocking)
            await network.deploy("other", agent_bundle("other"))
            pending = asyncio.create_task(network.call_agent("busy", "Wait"))
            assert await asyncio.to_thread(entered.wait, 60)
            assert await network.call_agent("other", "Notifier") == "other:"
            # The bound is 1: the idle namespace goes, the one with a call stays.
            assert [ns.tenant for ns in network.loaded_namespaces()] == ["busy"]
            gate.set()
            assert await pending == "done"
            assert await network.call_agent("other", "Notifier") == "other:"
            assert [ns.tenant for ns in network.loaded_namespaces()] == ["other"]
    finally:
        gate.set()
        del sys.modules[module.__name__]


async def test_a_redeploy_replaces_the_whole_bundle(network: Network) -> None:
    first = agent_bundle(
        "one",
        extra="class Extra(BasicAgent):\n    name = 'Extra'\n"
        "    def perform(self, **kwargs):\n        return 'extra'\n",
    )
    await network.deploy("acme", first)
    assert [a.name for a in await network.list_agents("acme")] == ["Extra", "Notifier"]
    second = {
        "agents": [
            {
                "filename": "only.py",
                "source": (
                    "from plughost import Agent\nclass Only(Agent):\n    name = 'Only'\n"
                    "    def perform(self, **kwargs):\n        return 'only'\n"
                ),
            }
        ]
    }
    deployment = await network.deploy("acme", second)
    assert deployment.files == ["only.py"] and deployment.agents == ["Only"]
    with pytest.raises(UnknownAgentError, match="agents: 'Only'"):
        await network.call_agent("acme", "Notifier")


async def test_deploying_identical_content_changes_nothing(network: Network) -> None:
    first = await network.deploy("same", agent_bundle("x"))
    again = await network.deploy("same", agent_bundle("x"))
    assert again == first and again.version == 1


async def test_agents_are_discovered_where_they_are_defined(network: Network) -> None:
    bundle = {
        "agents": [
            {
                "filename": "base.py",
                "source": (
                    "from basic_agent import BasicAgent\n"
                    "class Shared(BasicAgent):\n    name = 'Shared'\n"
                    "    metadata = {'description': 'shared one'}\n"
                    "    def perform(self, **kwargs):\n        return 'shared'\n"
                ),
            },
            {
                "filename": "user.py",
                "source": (
                    "from base import Shared\nfrom plughost import Agent\n"
                    "class User(Agent):\n    name = 'User'\n"
                    "    async def perform(self, **kwargs):\n        return {'user': kwargs}\n"
                ),
            },
        ]
    }
    await network.deploy("disc", bundle)
    agents = await network.list_agents("disc")
    assert [a.name for a in agents] == ["Shared", "User"]
    shared = agents[0]
    assert shared.description == "shared one"
    assert shared.tool == {
        "type": "function",
        "function": {
            "name": "Shared",
            "description": "shared one",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    assert await network.call_agent("disc", "User", {"a": 1}) == {"user": {"a": 1}}


async def test_two_agents_with_one_name_fail_the_deploy_naming_both_files(
    network: Network,
) -> None:
    twice = (
        "from plughost import Agent\n"
        "class A(Agent):\n"
        "    name = 'Dup'\n"
        "    def perform(self, **k):\n"
        "        return 1\n"
    )
    bundle = {
        "agents": [{"filename": "one.py", "source": twice}, {"filename": "two.py", "source": twice}]
    }
    with pytest.raises(
        DuplicateAgentError, match=r"'Dup' is defined twice: in one\.py and two\.py"
    ):
        await network.deploy("dup", bundle)
    assert network.list_tenants() == []
    assert namespace_keys() == set()


async def test_a_failing_deploy_keeps_the_previous_deployment(network: Network) -> None:
    await network.deploy("keep", agent_bundle("good"))
    broken = {"agents": [{"filename": "bad.py", "source": "raise RuntimeError('nope')\n"}]}
    with pytest.raises(BundleLoadError, match=r"bad\.py:1: RuntimeError: nope"):
        await network.deploy("keep", broken)
    assert network.get_deployment("keep").version == 1
    assert await network.call_agent("keep", "Notifier", {"message": "m"}) == "good:m"
    assert {ns.version for ns in network.loaded_namespaces()} == {"1"}


async def test_agent_errors_reach_the_caller_and_the_network_keeps_serving(
    network: Network,
) -> None:
    failing = agent_bundle(
        "ok",
        extra=(
            "class Fails(BasicAgent):\n    name = 'Fails'\n"
            "    def perform(self, **kwargs):\n        raise ValueError('bad value')\n"
        ),
    )
    await network.deploy("errs", failing)
    with pytest.raises(AgentError) as caught:
        await network.call_agent("errs", "Fails")
    assert (caught.value.error_type, caught.value.message) == ("ValueError", "bad value")
    with pytest.raises(InvalidArgumentsError, match="'nonsense' was unexpected"):
        await network.call_agent("errs", "Notifier", {"nonsense": 1, "message": 2})
    assert await network.call_agent("errs", "Notifier", {"message": "still"}) == "ok:still"


async def test_unknown_names_get_errors_that_list_what_exists(network: Network) -> None:
    await network.deploy("known", agent_bundle("k"))
    await network.create_snapshot("known", "jan")
    with pytest.raises(UnknownTenantError, match="tenants: 'known'"):
        await network.call_agent("nobody", "Notifier")
    with pytest.raises(UnknownAgentError, match="agents: 'Notifier'"):
        await network.call_agent("known", "Nope")
    with pytest.raises(UnknownSnapshotError, match="snapshots: 'jan'"):
        await network.call_agent("known", "Notifier", snapshot="feb")
    with pytest.raises(TypeError, match="args must be a mapping"):
        await network.call_agent("known", "Notifier", ["x"])  # type: ignore[arg-type]


async def test_a_slow_sync_agent_does_not_stall_the_others(network: Network) -> None:
    gate = threading.Event()
    module = ModuleType("plughost_test_slow")
    module.gate = gate  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        await network.deploy(
            "slow",
            agent_bundle(
                "fast",
                extra=(
                    "class Slow(BasicAgent):\n    name = 'Slow'\n"
                    "    def perform(self, **kwargs):\n"
                    "        import plughost_test_slow\n"
                    "        return plughost_test_slow.gate.wait(timeout=60)\n"
                ),
            ),
        )
        slow = asyncio.create_task(network.call_agent("slow", "Slow"))
        for _ in range(20):
            assert await network.call_agent("slow", "Notifier", {"message": "m"}) == "fast:m"
        assert not slow.done()
        gate.set()
        assert await slow is True
    finally:
        gate.set()
        del sys.modules[module.__name__]


async def test_snapshots_are_immutable_unique_and_deletable(network: Network) -> None:
    await network.deploy("snap", agent_bundle("v1"))
    names = ["jan", "jan 2026 (final)", "été", "a.b-c_d", "x" * 128]
    for name in names:
        await network.create_snapshot("snap", name)
    assert [s.name for s in network.list_snapshots("snap")] == names
    with pytest.raises(DuplicateSnapshotError):
        await network.create_snapshot("snap", "jan")
    for bad in ["", "a/b", "tab\there", "x" * 129, ".", ".."]:
        with pytest.raises(InvalidNameError):
            await network.create_snapshot("snap", bad)

    await network.deploy("snap", agent_bundle("v2"))
    for name in names:
        assert await network.call_agent("snap", "Notifier", {"message": ""}, snapshot=name) == "v1:"
    assert await network.call_agent("snap", "Notifier", {"message": ""}) == "v2:"

    await network.delete_snapshot("snap", "jan")
    with pytest.raises(UnknownSnapshotError):
        await network.call_agent("snap", "Notifier", snapshot="jan")
    with pytest.raises(UnknownSnapshotError):
        await network.delete_snapshot("snap", "jan")
    await network.create_snapshot("snap", "jan")
    assert await network.call_agent("snap", "Notifier", {"message": ""}, snapshot="jan") == "v2:"


async def test_removing_a_tenant_removes_everything_and_its_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.deploy("gone", agent_bundle("gone-only-content"))
        await network.create_snapshot("gone", "jan")
        await network.deploy("stays", agent_bundle("stays"))
        await network.call_agent("gone", "Notifier", snapshot="jan")
        blobs_before = set((data / "blobs").rglob("*"))

        await network.remove_tenant("gone")

        assert network.list_tenants() == ["stays"]
        assert {ns.tenant for ns in network.loaded_namespaces()} <= {"stays"}
        assert set((data / "blobs").rglob("*")) < blobs_before
        with pytest.raises(UnknownTenantError):
            await network.remove_tenant("gone")
        with pytest.raises(UnknownTenantError):
            network.list_snapshots("gone")
        await network.deploy("gone", agent_bundle("again"))
        assert network.get_deployment("gone").version == 2

    async with Network(data) as reopened:
        assert await reopened.call_agent("stays", "Notifier", {"message": "m"}) == "stays:m"
        assert await reopened.call_agent("gone", "Notifier", {"message": "m"}) == "again:m"


async def test_garbage_collection_keeps_every_referenced_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Network(data, keep_versions=1) as network:
        for i in range(5):
            await network.deploy("gc", agent_bundle(f"v{i}"))
        await network.create_snapshot("gc", "keep")
        await network.deploy("gc", agent_bundle("last"))
        await network.collect_garbage()
        report = await network.collect_garbage()
        assert (report.blobs, report.bundles) == (0, 0)
    for bundle_dir in (data / "bundles").iterdir():
        remove_folder(bundle_dir)  # read-only by mode, as the store leaves it
    async with Network(data) as reopened:
        assert await reopened.call_agent("gc", "Notifier", {"message": ""}) == "last:"
        assert (
            await reopened.call_agent("gc", "Notifier", {"message": ""}, snapshot="keep") == "v4:"
        )


async def test_deploy_sources_folder_zip_tar_bytes_and_json(
    network: Network, write_bundle: WriteBundle, tmp_path: Path
) -> None:
    import shutil

    json_bundle = agent_bundle("same")
    folder = write_bundle({e["filename"]: e["source"] for e in json_bundle["agents"]})  # type: ignore[index, union-attr]
    zip_path = Path(shutil.make_archive(str(tmp_path / "b"), "zip", folder))
    tar_path = Path(shutil.make_archive(str(tmp_path / "b"), "gztar", folder))
    digests = set()
    for tenant, source in [
        ("by-folder", folder),
        ("by-zip", zip_path),
        ("by-tar", str(tar_path)),
        ("by-bytes", zip_path.read_bytes()),
        ("by-json", {**json_bundle, "owner": "team-x"}),
    ]:
        deployment = await network.deploy(tenant, source)
        digests.add(deployment.digest)
        assert await network.call_agent(tenant, "Notifier", {"message": "m"}) == "same:m"
    assert len(digests) == 1
    assert network.get_deployment("by-json").metadata == {"owner": "team-x"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"not an archive", "not a .zip or .tar.gz"),
        ({"agents": []}, "non-empty 'agents'"),
        ({"agents": 5}, "'agents' must be a list"),
        ({"agents": [], "files": {"a.py": "x"}}, "'files' must be a list"),
        ({"agents": [{"filename": "../x.py", "source": "x"}]}, "'..'"),
        ({"agents": [{"filename": "/abs.py", "source": "x"}]}, "absolute"),
        ({"agents": [{"filename": "x.py"}]}, "string 'source'"),
        ({"agents": ["x"]}, "not an object"),
        ({"agents": [{"filename": "x.py", "source": "x"}], "meta": {1, 2}}, "not JSON"),
        (
            {"files": [{"filename": "a", "source": ""}, {"filename": "a/b.py", "source": ""}]},
            "share this name",
        ),
        (
            {"files": [{"filename": "a/b.py", "source": ""}, {"filename": "a", "source": ""}]},
            "share this name",
        ),
        ({"files": [{"filename": "x" * 300 + ".py", "source": ""}]}, "over 255 bytes"),
    ],
)
async def test_bad_bundles_are_refused_and_change_nothing(
    network: Network, source: object, message: str
) -> None:
    await network.deploy("victim", agent_bundle("before"))
    with pytest.raises(BundleRejectedError, match=message):
        await network.deploy("victim", source)  # type: ignore[arg-type]
    assert network.get_deployment("victim").version == 1
    assert await network.call_agent("victim", "Notifier", {"message": ""}) == "before:"


async def test_names_and_lifecycle_are_checked(tmp_path: Path) -> None:
    network = Network(tmp_path / "data")
    with pytest.raises(NotStartedError):
        await network.deploy("x", agent_bundle("x"))
    await network.start()
    try:
        with pytest.raises(InvalidNameError, match="invalid tenant name"):
            await network.deploy("../etc", agent_bundle("x"))
        with pytest.raises(DataFolderInUseError):
            await Network(tmp_path / "data").start()
    finally:
        await network.stop()
    second = Network(tmp_path / "data")
    await second.start()
    await second.stop()


def test_health_has_the_established_fields(tmp_path: Path) -> None:
    async def scenario() -> dict[str, object]:
        async with Network(tmp_path / "data", network_id="my_network") as network:
            await network.deploy("h", agent_bundle("h"))
            return network.health()

    health = asyncio.run(scenario())
    assert health["status"] == "healthy" and health["network_id"] == "my_network"
    assert health["mods"] == {
        "loaded": [],
        "count": 0,
        "failed": [],
        "details": {},
        "unloaded": [],
    }
    assert health["tenants"] == {"count": 1, "sealed": []}
    assert isinstance(health["uptime"], int)


class _Gate:
    """A module that bundle code imports to block, at import, until the test opens it."""

    def __init__(self) -> None:
        self.module = ModuleType("plughost_test_import_gate")
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()
        self.module.wait = self._wait  # type: ignore[attr-defined]

    def _wait(self) -> None:
        self.entered.set()
        self.opened.wait(timeout=60)


@pytest.fixture
def import_gate() -> Iterator[_Gate]:
    gate = _Gate()
    sys.modules[gate.module.__name__] = gate.module
    yield gate
    gate.opened.set()
    del sys.modules[gate.module.__name__]


GATED = "import plughost_test_import_gate as gate\ngate.wait()\n"


async def _blocked_first_call(
    network: Network, gate: _Gate, tenant: str, snapshot: str | None = None
) -> asyncio.Task[Any]:
    gate.opened.clear()
    gate.entered.clear()
    call = asyncio.create_task(
        network.call_agent(tenant, "Notifier", {"message": "m"}, snapshot=snapshot)
    )
    assert await asyncio.to_thread(gate.entered.wait, 60)
    return call


async def test_a_namespace_replaced_while_it_loads_serves_its_call_then_unloads(
    tmp_path: Path, import_gate: _Gate
) -> None:
    data = tmp_path / "data"
    gated = agent_bundle("v1", extra=GATED)
    async with Network(data) as network:
        await network.deploy("race", gated)
        await network.create_snapshot("race", "jan")
    async with Network(data) as network:
        call = await _blocked_first_call(network, import_gate, "race")
        await network.deploy("race", agent_bundle("v2"))
        import_gate.opened.set()
        assert await call == "v1:m"
        assert await network.call_agent("race", "Notifier", {"message": "m"}) == "v2:m"
        assert [ns.version for ns in network.loaded_namespaces()] == ["2"]

        snapshot_call = await _blocked_first_call(network, import_gate, "race", "jan")
        await network.delete_snapshot("race", "jan")
        await network.create_snapshot("race", "jan")
        import_gate.opened.set()
        assert await snapshot_call == "v1:m"
        assert (
            await network.call_agent("race", "Notifier", {"message": "m"}, snapshot="jan") == "v2:m"
        )
        assert all(
            ns.snapshot is None or ns.dimensions["digest"] != ""
            for ns in network.loaded_namespaces()
        )
        assert len([ns for ns in network.loaded_namespaces() if ns.snapshot == "jan"]) == 1


async def test_stopping_while_a_namespace_loads_leaves_nothing_loaded(
    tmp_path: Path, import_gate: _Gate
) -> None:
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.deploy("slowstart", agent_bundle("s", extra=GATED))
    network = Network(data)
    await network.start()
    call = await _blocked_first_call(network, import_gate, "slowstart")
    stopping = asyncio.create_task(network.stop())
    await asyncio.sleep(0.05)
    import_gate.opened.set()
    await stopping
    with pytest.raises(NotStartedError):
        await call
    assert namespace_keys() == set()


async def test_a_cancelled_call_keeps_its_code_loaded_until_its_thread_returns(
    network: Network, import_gate: _Gate
) -> None:
    outcome = ModuleType("plughost_test_outcome")
    outcome.seen = []  # type: ignore[attr-defined]
    sys.modules[outcome.__name__] = outcome
    slow = agent_bundle(
        "old",
        extra=(
            "class Slow(BasicAgent):\n"
            "    name = 'Slow'\n"
            "    def perform(self, **kwargs):\n"
            "        import plughost_test_import_gate as gate, plughost_test_outcome as out\n"
            "        gate.wait()\n"
            "        try:\n"
            "            from helpers import decorate\n"
            "            out.seen.append(decorate('late'))\n"
            "        except Exception as exc:\n"
            "            out.seen.append(repr(exc))\n"
        ),
    )
    try:
        await network.deploy("cancel", slow)
        import_gate.opened.clear()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(network.call_agent("cancel", "Slow"), 0.2)
        await network.deploy("cancel", agent_bundle("new"))
        assert {ns.version for ns in network.loaded_namespaces()} == {"1", "2"}
        import_gate.opened.set()
        while not outcome.seen:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        assert outcome.seen == ["old:late"]  # type: ignore[attr-defined]
        for _ in range(500):  # the lease ends when the thread has returned
            if {ns.version for ns in network.loaded_namespaces()} == {"2"}:
                break
            await asyncio.sleep(0.01)
        assert {ns.version for ns in network.loaded_namespaces()} == {"2"}
    finally:
        del sys.modules[outcome.__name__]


async def test_a_slow_import_in_one_tenant_does_not_hold_up_another(
    network: Network, import_gate: _Gate
) -> None:
    import_gate.opened.clear()
    import_gate.entered.clear()
    slow = asyncio.create_task(network.deploy("slow-tenant", agent_bundle("s", extra=GATED)))
    assert await asyncio.to_thread(import_gate.entered.wait, 60)
    fast = await network.deploy("fast-tenant", agent_bundle("f"))
    await network.create_snapshot("fast-tenant", "while-slow")
    assert fast.version == 1 and not slow.done()
    import_gate.opened.set()
    assert (await slow).version == 1


async def test_a_failed_deploy_leaves_no_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.deploy("kept", agent_bundle("kept"))
        before = sorted(p.relative_to(data) for p in (data / "blobs").rglob("*"))
        bundles_before = sorted(p.name for p in (data / "bundles").iterdir())
        broken = agent_bundle("broken", extra="raise RuntimeError('no')\n")
        with pytest.raises(BundleLoadError):
            await network.deploy("kept", broken)
        assert sorted(p.relative_to(data) for p in (data / "blobs").rglob("*")) == before
        assert sorted(p.name for p in (data / "bundles").iterdir()) == bundles_before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "class Broken(BasicAgent):\n    name = 'Broken'\n"
            "    def __init__(self):\n        raise RuntimeError('no init')\n"
            "    def perform(self, **kwargs):\n        return 1\n",
            "RuntimeError: no init",
        ),
        (
            "class Odd(BasicAgent):\n    metadata = 'oops'\n"
            "    def perform(self, **kwargs):\n        return 1\n",
            "AttributeError",
        ),
    ],
)
async def test_agents_that_fail_to_set_up_fail_the_deploy_clearly(
    network: Network, extra: str, message: str
) -> None:
    with pytest.raises(BundleLoadError, match=message) as caught:
        await network.deploy("setup", agent_bundle("x", extra=extra))
    assert network.list_tenants() == [] and namespace_keys() == set()
    if "no init" in message:
        assert caught.value.file is not None and caught.value.file.name == "notifier_agent.py"


async def test_an_answer_that_is_not_json_is_a_failed_response(network: Network) -> None:
    await network.deploy(
        "objects",
        agent_bundle(
            "x",
            extra=(
                "class Weird(BasicAgent):\n    name = 'Weird'\n"
                "    def perform(self, **kwargs):\n        return object()\n"
            ),
        ),
    )
    response = await network.send_event(
        Event(event_name="call", destination_id="agent:objects/Weird")
    )
    assert not response.success and "not JSON" in response.message


async def test_a_failing_garbage_pass_neither_stops_collection_nor_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = Network(tmp_path / "data", gc_interval=0.01)
    await network.start()
    passes = []
    real = network._store.collect_garbage

    def failing_once(*args: Any) -> Any:  # an injected fault: the first pass fails
        passes.append(1)
        if len(passes) == 1:
            raise PermissionError("injected")
        return real(*args)

    monkeypatch.setattr(network._store, "collect_garbage", failing_once)
    for _ in range(500):
        if len(passes) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(passes) >= 3
    await network.stop()
    assert network.health()["status"] == "stopped"


async def test_a_bundle_of_ten_thousand_files_is_refused_by_the_file_limit(
    network: Network,
) -> None:
    many = {"files": [{"filename": f"f{i}.txt", "source": "x"} for i in range(10_000)]}
    with pytest.raises(BundleTooLargeError, match="more than 5000 files"):
        await network.deploy("many", many)
    assert network.list_tenants() == []
