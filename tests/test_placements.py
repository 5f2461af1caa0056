"""One matrix of the guarantees, run the same in every placement (guarantee 9).

A new placement joins the matrix by adding its name to ``PLACEMENTS`` (in conftest,
shared with the instance tests of ``test_instances``). Every
test uses the public ``Network`` API only, so nothing here knows how a
placement runs a tenant's code.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plughost import (
    AgentError,
    BundleLoadError,
    DuplicateAgentError,
    Event,
    InvalidArgumentsError,
    Namespace,
    Network,
    PlughostError,
    UnknownAgentError,
    UnknownTenantError,
    WorkerStartFailed,
)

from .conftest import PLACEMENTS, SharedFolder, agent_bundle, namespace_keys
from .test_instances import STATUS_WATCHER, robot_bundle

# What a deploy whose code fails to load raises, by placement: both answer HTTP 422
# (``bundle_load_failed``) and both are PlughostErrors.
LOAD_FAILED = (BundleLoadError, WorkerStartFailed)


@pytest.fixture(params=PLACEMENTS)
def placement(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# -- helpers -----------------------------------------------------------------------------


async def _until(condition: Callable[[], bool], what: str, tries: int = 6000) -> None:
    """Wait, a bounded number of short polls, until ``condition()`` holds."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"still not true after {tries} polls: {what}")


def _tenant_keys(tenant: str) -> set[str]:
    """The ``sys.modules`` keys of every namespace of ``tenant`` (live, snapshots, mods)."""
    return {
        key
        for key in namespace_keys()
        if Namespace.parse_package_name(".".join(key.split(".")[:2])).tenant == tenant
    }


def _stable_health(network: Network) -> dict[str, Any]:
    """Health without the one field that moves on its own."""
    return {key: value for key, value in network.health().items() if key != "uptime"}


async def _wait_gone(pid: int) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await _until(gone, f"process {pid} is gone")


def _worker_pid(network: Network, tenant: str) -> int | None:
    worker = network.health()["workers"].get(tenant)
    return worker.get("pid") if worker else None


COUNT_AGENT = """
class Count(BasicAgent):
    name = "Count"

    def perform(self, **kwargs):
        import helpers
        helpers.calls = getattr(helpers, "calls", 0) + 1
        return [helpers.decorate("x"), helpers.calls]
"""

BROKEN = {
    "agents": [
        {"filename": "notifier_agent.py", "source": "raise RuntimeError('nope')\n"},
        {"filename": "helpers.py", "source": "def decorate(m):\n    return m\n"},
    ]
}


# -- 1. isolation ------------------------------------------------------------------------


@pytest.mark.parametrize("order", [("alice", "bob"), ("bob", "alice")])
async def test_two_tenants_shipping_the_same_file_names_run_their_own_code(
    network: Network, placement: str, order: tuple[str, str]
) -> None:
    for tenant in order:
        await network.deploy(tenant, agent_bundle(tenant, extra=COUNT_AGENT), placement=placement)
    for tenant in reversed(order):
        message = {"message": "m"}
        assert await network.call_agent(tenant, "Notifier", message) == f"{tenant}:m"
    for _ in range(3):
        await network.call_agent(order[0], "Count")
    # Module state is the tenant's own: the other tenant's helpers counted nothing.
    assert await network.call_agent(order[0], "Count") == [f"{order[0]}:x", 4]
    assert await network.call_agent(order[1], "Count") == [f"{order[1]}:x", 1]
    for tenant in order:
        response = await network.send_event(
            Event(
                event_name="call",
                destination_id=f"agent:{tenant}/Notifier",
                payload={"message": "e"},
            )
        )
        assert response.success, response.message
        assert response.data == {"output": f"{tenant}:e"}
        assert [a.name for a in await network.list_agents(tenant)] == ["Count", "Notifier"]


# -- 3. atomicity ------------------------------------------------------------------------


async def test_a_redeploy_that_fails_to_load_changes_nothing(
    network: Network, placement: str
) -> None:
    first = await network.deploy("keep", agent_bundle("good"), placement=placement)
    assert await network.call_agent("keep", "Notifier", {"message": "m"}) == "good:m"
    before = _stable_health(network)

    with pytest.raises(LOAD_FAILED, match="RuntimeError: nope") as caught:
        await network.deploy("keep", BROKEN, placement=placement)

    assert isinstance(caught.value, PlughostError)
    assert network.get_deployment("keep") == first
    assert await network.call_agent("keep", "Notifier", {"message": "m"}) == "good:m"
    assert _stable_health(network) == before
    assert await network.check() == []
    # The version number the failed deploy would have had is not taken by it.
    assert (await network.deploy("keep", agent_bundle("next"), placement=placement)).version == 2


async def test_a_first_deploy_that_fails_leaves_no_tenant(network: Network, placement: str) -> None:
    before = _stable_health(network)
    with pytest.raises(LOAD_FAILED, match="RuntimeError: nope") as caught:
        await network.deploy("never", BROKEN, placement=placement)
    assert isinstance(caught.value, PlughostError)
    assert network.list_tenants() == []
    assert _stable_health(network) == before
    assert "never" not in network.health()["workers"]
    assert _tenant_keys("never") == set()
    with pytest.raises(UnknownTenantError):
        await network.call_agent("never", "Notifier")


# -- 4. clean unload ---------------------------------------------------------------------


async def test_removing_a_tenant_leaves_no_module_worker_or_process(
    network: Network, placement: str
) -> None:
    await network.deploy("gone", agent_bundle("gone"), placement=placement)
    await network.deploy("stays", agent_bundle("stays"), placement=placement)
    await network.create_snapshot("gone", "jan")
    assert await network.call_agent("gone", "Notifier", {"message": "m"}) == "gone:m"
    assert await network.call_agent("gone", "Notifier", {"message": "s"}, snapshot="jan") == (
        "gone:s"
    )
    pid = _worker_pid(network, "gone")

    await network.remove_tenant("gone")

    assert network.list_tenants() == ["stays"]
    assert _tenant_keys("gone") == set()
    assert "gone" not in network.health()["workers"]
    assert network.health()["tenants"] == {"count": 1, "sealed": []}
    if pid is not None:
        await _wait_gone(pid)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(UnknownTenantError):
        await network.call_agent("gone", "Notifier")
    assert await network.call_agent("stays", "Notifier", {"message": "m"}) == "stays:m"


# -- 5. durability -----------------------------------------------------------------------


async def test_a_deployment_and_its_placement_survive_a_restart(
    network: Network, placement: str
) -> None:
    await network.deploy("durable", agent_bundle("v1"), placement=placement)
    await network.create_snapshot("durable", "jan")
    await network.deploy("durable", agent_bundle("v2"), placement=placement)
    await network.stop()

    async with Network(network.data_dir, network_id="test") as reopened:
        deployment = reopened.get_deployment("durable")
        assert (deployment.version, deployment.placement) == (2, placement)
        message = {"message": "m"}
        assert await reopened.call_agent("durable", "Notifier", message) == "v2:m"
        assert await reopened.call_agent("durable", "Notifier", message, snapshot="jan") == "v1:m"
        assert await reopened.check() == []
        # A redeploy after the restart keeps the placement too.
        assert (
            await reopened.deploy("durable", agent_bundle("v3"), placement=placement)
        ).placement == placement
        assert await reopened.call_agent("durable", "Notifier", message) == "v3:m"


# -- 6. availability ---------------------------------------------------------------------


def _versioned(marker: int) -> dict[str, object]:
    agent = (
        "import asyncio\n"
        "from helpers import MARKER\n"
        "from plughost import Agent\n"
        "class AsyncV(Agent):\n"
        "    name = 'AsyncV'\n"
        "    async def perform(self, **kwargs):\n"
        "        await asyncio.sleep(0)\n"
        "        return MARKER\n"
        "class SyncV(Agent):\n"
        "    name = 'SyncV'\n"
        "    def perform(self, **kwargs):\n"
        "        return MARKER\n"
    )
    return {
        "agents": [
            {"filename": "v.py", "source": agent},
            {"filename": "helpers.py", "source": f"MARKER = {marker}\n"},
        ]
    }


REDEPLOYS = 50
CLIENTS = 32


@pytest.mark.parametrize("agent", ["SyncV", "AsyncV"])
async def test_redeploys_under_load_fail_no_call(
    network: Network, placement: str, agent: str
) -> None:
    await network.deploy("hot", _versioned(0), placement=placement)
    answers: list[list[int]] = [[] for _ in range(CLIENTS)]
    failures: list[BaseException] = []
    pids = {_worker_pid(network, "hot")}
    running = True

    async def client(mine: list[int]) -> None:
        while running:
            try:
                mine.append(await network.call_agent("hot", agent))
            except Exception as exc:
                failures.append(exc)
            # A client waits on its network between calls. Without any wait, 32 clients keep
            # the GIL from the thread that writes the new version's files for seconds.
            await asyncio.sleep(0.001)

    def calls() -> int:
        return sum(map(len, answers)) + len(failures)

    clients = [asyncio.create_task(client(mine)) for mine in answers]
    try:
        for marker in range(1, REDEPLOYS + 1):
            deployment = await network.deploy("hot", _versioned(marker), placement=placement)
            assert deployment.version == marker + 1
            pids.add(_worker_pid(network, "hot"))
            done = calls()
            # Let every client call the new version before the next redeploy.
            await _until(lambda done=done: calls() >= done + CLIENTS, "clients keep calling")
    finally:
        running = False
        await asyncio.gather(*clients)

    assert failures == [], f"{len(failures)} calls failed, first: {failures[0]!r}"
    for mine in answers:
        assert set(mine) <= set(range(REDEPLOYS + 1))
        # A call that starts after a version answered never runs an older one.
        assert mine == sorted(mine)
    assert await network.call_agent("hot", agent) == REDEPLOYS
    assert {ns.version for ns in network.loaded_namespaces()} <= {str(REDEPLOYS + 1)}
    last = _worker_pid(network, "hot")
    for pid in pids - {None, last}:
        assert pid is not None
        await _wait_gone(pid)


SLOW_AGENT = """
import asyncio
import time
from pathlib import Path


class Slow(BasicAgent):
    name = "Slow"

    def perform(self, **kwargs):
        Path(kwargs["entered"]).touch()
        for _ in range(6000):  # bounded: the test opens the gate
            if Path(kwargs["release"]).exists():
                break
            time.sleep(0.005)
        return decorate("slow")


class AsyncSlow(BasicAgent):
    name = "AsyncSlow"

    async def perform(self, **kwargs):
        Path(kwargs["entered"]).touch()
        for _ in range(6000):
            if Path(kwargs["release"]).exists():
                break
            await asyncio.sleep(0.005)
        return decorate("slow")
"""


@pytest.mark.parametrize("agent", ["Slow", "AsyncSlow"])
async def test_a_call_in_flight_during_a_redeploy_finishes_on_the_old_code(
    network: Network, placement: str, agent: str, tmp_path: Path
) -> None:
    shared = SharedFolder(placement, tmp_path)
    await network.deploy("slow", agent_bundle("v1", extra=SLOW_AGENT), placement=placement)
    folder = shared.on_host(network, "slow")  # the old code's, after the redeploy too
    entered, release = folder / "entered", folder / "release"
    paths = {"entered": f"{shared.inside}/entered", "release": f"{shared.inside}/release"}
    in_flight = asyncio.create_task(network.call_agent("slow", agent, paths))
    redeploy: asyncio.Task[Any] | None = None
    try:
        await _until(lambda: entered.exists() or in_flight.done(), "the slow call started")
        assert not in_flight.done(), in_flight
        redeploy = asyncio.create_task(
            network.deploy("slow", agent_bundle("v2", extra=SLOW_AGENT), placement=placement)
        )
        await _until(
            lambda: network.get_deployment("slow").version == 2 or redeploy.done(),
            "the redeploy committed",
        )
        # New calls already run the new code while the old call is still running.
        assert await network.call_agent("slow", "Notifier", {"message": "m"}) == "v2:m"
        assert not in_flight.done()
    finally:
        release.touch()
        # Both settle before anything is asserted, so no task outlives the test.
        pending = [task for task in (in_flight, redeploy) if task is not None]
        settled = await asyncio.gather(*pending, return_exceptions=True)
    answer, deployed = settled
    assert answer == "v1:slow"
    assert not isinstance(deployed, BaseException) and deployed.version == 2
    assert await network.call_agent("slow", "Notifier", {"message": "m"}) == "v2:m"


# -- declared instances: topics, RPC, restart, unload ------------------------------------


async def _two_robots(network: Network, placement: str) -> None:
    (network.data_dir / "mods" / "watcher.py").write_text(STATUS_WATCHER)
    await network.load_mod("watcher")
    await network.deploy("robot1", robot_bundle(fps=30), placement=placement)
    await network.deploy("robot2", robot_bundle(fps=10), placement=placement)


async def test_restarting_one_instance_leaves_the_other_robot_serving(
    network: Network, placement: str
) -> None:
    await _two_robots(network, placement)
    assert await network.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    assert await network.rpc("robot2/camera", "shoot") == "robot2-v1-1"
    served: list[Any] = []
    failures: list[BaseException] = []
    restarting = True

    async def keep_calling_robot2() -> None:
        while restarting:
            try:
                served.append(await network.rpc("robot2/camera", "settings"))
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(0)

    caller = asyncio.create_task(keep_calling_robot2())
    try:
        camera = await network.restart("robot1/camera")
        assert camera.config == {"fps": 30}
        response = await network.send_event(
            Event(
                event_name="system.instance.restart",
                destination_id="system:system",
                payload={"rpc_name": "robot1/camera"},
            )
        )
        assert response.success, response.message
        await _until(lambda: len(served) + len(failures) >= 5, "robot2 was called")
    finally:
        restarting = False
        await caller
    assert failures == []
    assert all(answer == {"config": {"fps": 10}, "version": 1} for answer in served)
    # The restarted camera starts counting afresh; robot2's was never touched.
    assert await network.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    assert await network.rpc("robot2/camera", "shoot") == "robot2-v1-2"
    # The mapper hears the new camera on the same topic.
    assert await network.rpc("robot1/mapper", "seen") == ["robot1-v1-1", "robot1-v1-1"]
    assert [i["rpc_name"] for i in network.instances()].count("robot1/camera") == 1


# -- 7. clear errors ---------------------------------------------------------------------

FAILING_AGENTS = """
class Fails(BasicAgent):
    name = "Fails"

    def perform(self, **kwargs):
        raise ValueError("bad value")


class AsyncFails(BasicAgent):
    name = "AsyncFails"

    async def perform(self, **kwargs):
        raise RuntimeError("bad async")


class Deep(BasicAgent):
    name = "Deep"

    def perform(self, **kwargs):
        value = []
        for _ in range(5000):
            value = [value]
        return value
"""


async def test_unknown_agents_and_agent_errors_are_clear(network: Network, placement: str) -> None:
    await network.deploy("errs", agent_bundle("ok", extra=FAILING_AGENTS), placement=placement)
    with pytest.raises(
        UnknownAgentError, match="agents: 'AsyncFails', 'Deep', 'Fails', 'Notifier'"
    ):
        await network.call_agent("errs", "Nope")
    for agent, error_type, message in [
        ("Fails", "ValueError", "bad value"),
        ("AsyncFails", "RuntimeError", "bad async"),
    ]:
        with pytest.raises(AgentError) as caught:
            await network.call_agent("errs", agent)
        assert (caught.value.error_type, caught.value.message) == (error_type, message)
        response = await network.send_event(
            Event(event_name="call", destination_id=f"agent:errs/{agent}")
        )
        assert not response.success and message in response.message
    assert await network.call_agent("errs", "Notifier", {"message": "still"}) == "ok:still"


async def test_a_deeply_nested_answer_is_a_clear_error_not_a_hang(
    network: Network, placement: str
) -> None:
    await network.deploy("deep", agent_bundle("ok", extra=FAILING_AGENTS), placement=placement)
    with pytest.raises(AgentError, match="nested deeper than 200 levels"):
        await asyncio.wait_for(network.call_agent("deep", "Deep"), 30)
    message = {"message": "still"}
    assert await asyncio.wait_for(network.call_agent("deep", "Notifier", message), 30) == "ok:still"


# -- agent names -------------------------------------------------------------------------

NAMED_IN_INIT = """
from agents.basic_agent import BasicAgent


class {cls}(BasicAgent):
    def __init__(self):
        self.name = {name!r}
        self.metadata = {{"name": self.name, "description": "answers", "parameters": {{}}}}
        super().__init__(name=self.name, metadata=self.metadata)

    def perform(self, **kwargs):
        return {answer!r}
"""


def _named(cls: str, name: str, answer: str) -> str:
    return NAMED_IN_INIT.format(cls=cls, name=name, answer=answer)


async def test_an_agent_is_called_by_the_name_its_instance_ends_with(
    network: Network, placement: str
) -> None:
    bundle = {
        "agents": [
            {"filename": "ping_agent.py", "source": _named("PingAgent", "Ping", "pong")},
            # A class name that is another agent's name leads to that agent, not to its class.
            {"filename": "echo_agent.py", "source": _named("EchoAgent", "PingAgent", "echo")},
            {"filename": "a/__init__.py", "source": ""},
            {"filename": "a/twin.py", "source": _named("Twin", "TwinA", "a")},
            {"filename": "b/__init__.py", "source": ""},
            {"filename": "b/twin.py", "source": _named("Twin", "TwinB", "b")},
        ]
    }
    await network.deploy("named", bundle, placement=placement)  # type: ignore[arg-type]
    listed = await network.list_agents("named")
    assert [info.name for info in listed] == ["Ping", "PingAgent", "TwinA", "TwinB"]
    assert [info.tool["function"]["name"] for info in listed] == [i.name for i in listed]
    assert await network.call_agent("named", "Ping") == "pong"
    assert await network.call_agent("named", "PingAgent") == "echo"
    assert await network.call_agent("named", "EchoAgent") == "echo"  # its class name
    assert await network.call_agent("named", "TwinB") == "b"
    with pytest.raises(UnknownAgentError):
        await network.call_agent("named", "Twin")  # two classes have it: no way to tell
    assert network.get_deployment("named").agents == ["Ping", "PingAgent", "TwinA", "TwinB"]


async def test_two_agents_that_end_with_one_name_are_a_deploy_error(
    network: Network, placement: str
) -> None:
    bundle = {
        "agents": [
            {"filename": "ping_agent.py", "source": _named("PingAgent", "Ping", "1")},
            {"filename": "tools/__init__.py", "source": ""},
            {"filename": "tools/other_ping.py", "source": _named("OtherPing", "Ping", "2")},
        ]
    }
    with pytest.raises(
        (DuplicateAgentError, WorkerStartFailed),
        match=r"'Ping' is defined twice: in ping_agent\.py and tools/other_ping\.py",
    ):
        await network.deploy("twice", bundle, placement=placement)  # type: ignore[arg-type]
    assert "twice" not in network.list_tenants()


# -- arguments -----------------------------------------------------------------------------

CHECKED = """
from agents.basic_agent import BasicAgent


class Greeter(BasicAgent):
    name = "Greeter"
    metadata = {
        "name": "Greeter",
        "parameters": {
            "type": "object",
            "properties": {"message": {"type": "string"}, "times": {"type": "integer"}},
            "required": ["message"],
        },
    }

    def perform(self, message, times=1):
        return message * times


class Loose(BasicAgent):
    name = "Loose"
    metadata = {"name": "Loose", "parameters": {"type": "not-a-type"}}

    def perform(self, **kwargs):
        return sorted(kwargs)
"""


async def test_arguments_are_checked_against_the_agents_schema_before_it_runs(
    network: Network, placement: str
) -> None:
    bundle = {"agents": [{"filename": "checked.py", "source": CHECKED}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await network.deploy("checked", bundle, placement=placement)  # type: ignore[arg-type]
    if placement == "inprocess":  # a worker's warnings go to its own log
        assert any(
            "'Loose' has a parameters schema that is not valid" in str(w.message) for w in caught
        )
    assert await network.call_agent("checked", "Greeter", {"message": "hi", "times": 2}) == "hihi"
    for args, problem in [
        ({"msg": "hi"}, r"arguments: 'message' is a required property"),
        ({"message": "hi", "msg": "x"}, r"arguments: Additional properties .*'msg' was unexpected"),
        ({"message": 5}, r"arguments\['message'\]: 5 is not of type 'string'"),
        ({"message": "hi", "times": "2"}, r"arguments\['times'\]: '2' is not of type 'integer'"),
    ]:
        with pytest.raises(InvalidArgumentsError, match=problem):
            await network.call_agent("checked", "Greeter", args)
    # An agent whose schema is not valid still runs, unchecked.
    assert await network.call_agent("checked", "Loose", {"anything": 1}) == ["anything"]
