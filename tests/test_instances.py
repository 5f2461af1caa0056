"""The same modules for several robots, side by side: addressing, topics, restart, unload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plughost import (
    AgentError,
    AmbiguousNameError,
    BundleRejectedError,
    Event,
    InstanceConfigError,
    ModLoadError,
    ModNotLoadedError,
    Network,
    RpcError,
    UnknownAgentError,
    WorkerCrashed,
    WorkerStartFailed,
)
from plughost.placements.worker import WorkerUnit

from .conftest import PLACEMENTS, agent_bundle, namespace_keys

CAMERA = """
from plughost import Mod, rpc

VERSION = {version}


class CameraMod(Mod):
    def initialize(self):
        self.sent = 0

    @rpc
    async def shoot(self):
        self.sent += 1
        frame = f"{{self.tenant}}-v{{VERSION}}-{{self.sent}}"
        await self.publish("camera", {{"frame": frame}})
        await self.publish("status", {{"robot": self.tenant}})
        return frame

    @rpc
    def settings(self):
        return {{"config": self.config, "version": VERSION}}
"""

MAPPER = """
from plughost import Mod, on, rpc


class MapperMod(Mod):
    def initialize(self):
        self.frames = []

    @on("topic:camera")
    def frame(self, event):
        self.frames.append(event.payload["frame"])

    @rpc
    def seen(self):
        return list(self.frames)

    @rpc
    async def ask_camera(self):
        return await self.rpc("camera", "settings")
"""


def robot_bundle(fps: int, version: int = 1, camera: str | None = None) -> dict[str, object]:
    manifest = textwrap.dedent(
        f"""
        [[mods]]
        path = "camera_module"
        name = "camera"
        config = {{fps = {fps}}}
        expose = ["status"]

        [[mods]]
        path = "mapper_module:MapperMod"
        name = "mapper"
        """
    )
    return {
        "files": [
            {"filename": "camera_module.py", "source": camera or CAMERA.format(version=version)},
            {"filename": "mapper_module.py", "source": MAPPER},
            {"filename": "plughost.toml", "source": manifest},
        ]
    }


STATUS_WATCHER = """
from plughost import Mod, on, rpc


class WatcherMod(Mod):
    def initialize(self):
        self.robots = []

    @on("topic:/status")
    def status(self, event):
        self.robots.append(event.payload["robot"])

    @rpc
    def robots_seen(self):
        return list(self.robots)
"""


@pytest.fixture(params=PLACEMENTS)
async def robots(network: Network, request: pytest.FixtureRequest) -> Network:
    """Two robots deployed from the same modules, in process or in worker processes."""
    (network.data_dir / "mods" / "watcher.py").write_text(STATUS_WATCHER)
    await network.load_mod("watcher")
    await network.deploy("robot1", robot_bundle(fps=30), placement=request.param)
    await network.deploy("robot2", robot_bundle(fps=10), placement=request.param)
    return network


def _placement(network: Network, tenant: str) -> str:
    return network.get_deployment(tenant).placement


async def test_two_robots_run_the_same_modules_isolated(robots: Network) -> None:
    assert sorted(i["rpc_name"] for i in robots.instances()) == [
        "robot1/camera",
        "robot1/mapper",
        "robot2/camera",
        "robot2/mapper",
        "watcher",
    ]
    assert await robots.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    assert await robots.rpc("robot1/camera", "shoot") == "robot1-v1-2"
    assert await robots.rpc("robot2/camera", "shoot") == "robot2-v1-1"
    assert await robots.rpc("robot1/mapper", "seen") == ["robot1-v1-1", "robot1-v1-2"]
    assert await robots.rpc("robot2/mapper", "seen") == ["robot2-v1-1"]
    assert (await robots.rpc("robot1/camera", "settings"))["config"] == {"fps": 30}
    assert (await robots.rpc("robot2/camera", "settings"))["config"] == {"fps": 10}
    assert (await robots.rpc("robot1/mapper", "ask_camera"))["config"] == {"fps": 30}
    assert (await robots.rpc("robot2/mapper", "ask_camera"))["config"] == {"fps": 10}
    # Only the exposed stream leaves the robot's namespace.
    assert await robots.rpc("watcher", "robots_seen") == ["robot1", "robot1", "robot2"]
    details = robots.health()["mods"]["details"]
    assert (
        details["robot1/camera"]["origin"] == "bundle"
        and details["robot1/camera"]["tenant"] == "robot1"
    )


async def test_a_bare_or_class_name_matching_two_robots_is_refused(robots: Network) -> None:
    for name in ("camera", "CameraMod", "MapperMod"):
        with pytest.raises(AmbiguousNameError) as caught:
            await robots.rpc(name, "settings")
        assert len(caught.value.matches) == 2 and caught.value.matches[0].startswith("robot1/")
    assert await robots.rpc("WatcherMod", "robots_seen") == []


async def test_new_code_for_one_robot_and_restarts_keep_config_and_streams(
    robots: Network,
) -> None:
    await robots.deploy(
        "robot1", robot_bundle(fps=30, version=2), placement=_placement(robots, "robot1")
    )
    assert (await robots.rpc("robot1/camera", "settings"))["version"] == 2
    assert (await robots.rpc("robot2/camera", "settings"))["version"] == 1
    assert await robots.rpc("robot1/camera", "shoot") == "robot1-v2-1"
    assert await robots.rpc("robot1/mapper", "seen") == ["robot1-v2-1"]

    for round_number in range(10):
        camera = await robots.restart("robot1/camera")
        assert camera.config == {"fps": 30}
        assert await robots.rpc("robot1/camera", "shoot") == "robot1-v2-1"
        assert len(await robots.rpc("robot1/mapper", "seen")) == round_number + 2
    assert (await robots.rpc("robot1/camera", "settings")) == {"config": {"fps": 30}, "version": 2}
    assert (await robots.rpc("robot2/camera", "settings"))["version"] == 1
    assert len([i for i in robots.instances() if i["rpc_name"] == "robot1/camera"]) == 1


async def test_unloading_one_instance_leaves_the_others_running(robots: Network) -> None:
    report = await robots.unload("robot2/mapper")
    assert report.mod_id == "mapper"
    assert await robots.rpc("robot2/camera", "shoot") == "robot2-v1-1"
    assert await robots.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    assert await robots.rpc("robot1/mapper", "seen") == ["robot1-v1-1"]
    with pytest.raises(ModNotLoadedError):
        await robots.rpc("robot2/mapper", "seen")
    assert "robot2/mapper" not in robots.get_loaded_mods()
    # A bare name that now matches one instance only is that instance.
    assert await robots.rpc("mapper", "seen") == ["robot1-v1-1"]


COUNTER = "from plughost import Mod, rpc\nclass CounterMod(Mod):\n    @rpc\n    def v(self):\n"


async def test_a_restart_whose_new_code_fails_keeps_the_old_instance(network: Network) -> None:
    path = network.data_dir / "mods" / "counter.py"
    path.write_text(COUNTER + "        return 1\n")
    await network.load_mod("counter", tenant="robot1")
    path.write_text("def broken(:\n")
    with pytest.raises(ModLoadError, match="failed at import"):
        await network.restart("robot1/counter")
    assert await network.rpc("robot1/counter", "v") == 1
    path.write_text(COUNTER + "        return 2\n")
    await network.restart("robot1/counter")
    assert await network.rpc("robot1/counter", "v") == 2


async def test_a_deploy_whose_instance_fails_changes_nothing(robots: Network) -> None:
    failing = CAMERA.format(version=9).replace(
        "self.sent = 0", "raise RuntimeError('no camera attached')"
    )
    with pytest.raises((ModLoadError, WorkerStartFailed), match="no camera attached"):
        placement = _placement(robots, "robot1")
        await robots.deploy("robot1", robot_bundle(fps=30, camera=failing), placement=placement)
    assert robots.get_deployment("robot1").version == 1
    assert (await robots.rpc("robot1/camera", "settings"))["version"] == 1
    assert sum(1 for i in robots.instances() if i["tenant"] == "robot1") == 2


async def test_instance_events_and_bad_manifests(robots: Network) -> None:
    restarted = await robots.send_event(
        Event(
            event_name="system.instance.restart",
            destination_id="system:system",
            payload={"rpc_name": "robot2/camera"},
        )
    )
    assert restarted.success, restarted.message
    unloaded = await robots.send_event(
        Event(
            event_name="system.instance.unload",
            destination_id="system:system",
            payload={"rpc_name": "robot2/camera"},
        )
    )
    assert unloaded.success and "robot2/camera" not in robots.get_loaded_mods()
    missing = await robots.send_event(
        Event(event_name="system.instance.restart", destination_id="system:system")
    )
    assert (missing.success, missing.message) == (False, "rpc_name is required")
    for manifest, message in [
        ("[[mods]]\npath = 'x'\n", "name"),
        ("[[mods]]\npath = '../x'\nname = 'a'\n", "bundle module"),
        ("[[mods]]\npath = 'x'\nname = 'a'\n[[mods]]\npath = 'y'\nname = 'a'\n", "repeated: a"),
        ("placement = 'everywhere'\n", "placement"),
        ("not toml = = 1\n", "not valid TOML"),
    ]:
        bundle = {"files": [{"filename": "plughost.toml", "source": manifest}]}
        with pytest.raises(BundleRejectedError, match=message):
            await robots.deploy("robot3", bundle)
    assert "robot3" not in robots.list_tenants()


async def _wait_for_restart(network: Network, tenant: str, restarts: int) -> None:
    for _ in range(3000):  # bounded: the supervisor restarts with a short backoff
        worker = network.health()["workers"][tenant]
        if worker["state"] == "ready" and worker["restarts"] >= restarts:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"worker of {tenant} did not come back: {worker}")


SLOW_CAMERA = (
    CAMERA.format(version=1)
    + """

    @rpc
    async def linger(self):
        import asyncio
        await asyncio.sleep(30)
"""
)


async def test_a_killed_worker_is_restarted_and_the_other_robot_never_notices(
    network: Network,
) -> None:
    await network.deploy("robot1", robot_bundle(30, camera=SLOW_CAMERA), placement="process")
    await network.deploy("robot2", robot_bundle(10), placement="process")
    first_pid = network.health()["workers"]["robot1"]["pid"]
    in_flight = asyncio.create_task(network.rpc("robot1/camera", "linger"))
    await asyncio.sleep(0.1)
    answers, failures = [], []
    stop_calling = asyncio.Event()

    async def keep_calling_robot2() -> None:
        while not stop_calling.is_set():
            try:
                answers.append(await network.rpc("robot2/camera", "settings"))
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(0)

    caller = asyncio.create_task(keep_calling_robot2())
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed):
        await in_flight
    await _wait_for_restart(network, "robot1", 1)
    stop_calling.set()
    await caller
    assert failures == [] and len(answers) > 10
    health = network.health()["workers"]
    assert health["robot1"]["restarts"] == 1 and health["robot1"]["pid"] != first_pid
    assert health["robot2"]["restarts"] == 0
    assert await network.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    assert await network.rpc("robot1/mapper", "seen") == ["robot1-v1-1"]


async def test_agents_run_in_the_worker_and_errors_keep_their_types(network: Network) -> None:
    bundle = agent_bundle(
        "remote",
        extra=(
            "import os\n"
            "class Pid(BasicAgent):\n    name = 'Pid'\n"
            "    def perform(self, **kwargs):\n        return os.getpgid(0)\n"
            "class Fails(BasicAgent):\n    name = 'Fails'\n"
            "    async def perform(self, **kwargs):\n        raise KeyError('lost')\n"
        ),
    )
    await network.deploy("remote", bundle, placement="process")
    assert await network.call_agent("remote", "Notifier", {"message": "m"}) == "remote:m"
    # Health shows the worker's process group: its keeper's pid.
    assert await network.call_agent("remote", "Pid") == network.health()["workers"]["remote"]["pid"]
    assert await network.call_agent("remote", "Pid") != os.getpgid(0)
    with pytest.raises(AgentError) as caught:
        await network.call_agent("remote", "Fails")
    assert caught.value.error_type == "KeyError"
    with pytest.raises(UnknownAgentError, match="'Fails', 'Notifier', 'Pid'"):
        await network.call_agent("remote", "Nope")
    assert [a.name for a in await network.list_agents("remote")] == ["Fails", "Notifier", "Pid"]
    assert namespace_keys() == set()  # nothing of the tenant's code is loaded in the host


async def test_a_redeploy_that_names_no_placement_keeps_the_tenant_where_it_runs(
    network: Network,
) -> None:
    await network.deploy("remote", agent_bundle("v1"), placement="process")
    first_pid = network.health()["workers"]["remote"]["pid"]

    await network.deploy("remote", agent_bundle("v2"))

    assert network.get_deployment("remote").placement == "process"
    assert await network.call_agent("remote", "Notifier", {"message": "m"}) == "v2:m"
    assert network.health()["workers"]["remote"]["pid"] != first_pid
    assert namespace_keys() == set()

    await network.deploy("remote", agent_bundle("v3"), placement="inprocess")
    assert network.get_deployment("remote").placement == "inprocess"
    assert "remote" not in network.health()["workers"]
    assert await network.call_agent("remote", "Notifier", {"message": "m"}) == "v3:m"


async def test_no_worker_outlives_its_network_or_its_killed_host(tmp_path: Path) -> None:
    async with Network(tmp_path / "data") as network:
        await network.deploy("w", agent_bundle("w"), placement="process")
        pid = network.health()["workers"]["w"]["pid"]
        assert _alive(pid)
    assert not _alive(pid)

    script = (
        "import asyncio, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from plughost import Network\n"
        "from tests.conftest import agent_bundle\n"
        "async def main():\n"
        "    async with Network(sys.argv[1]) as n:\n"
        "        await n.deploy('w', agent_bundle('w'), placement='process')\n"
        "        print(n.health()['workers']['w']['pid'], flush=True)\n"
        "        await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    host = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data2"), root],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        worker_pid = int(host.stdout.readline())
        assert _alive(worker_pid)
        host.kill()
        host.wait()
        for _ in range(1000):
            if not _alive(worker_pid):
                break
            await asyncio.sleep(0.01)
        assert not _alive(worker_pid)
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()


SPAWNER = """
import subprocess
from agents.basic_agent import BasicAgent


class SpawnerAgent(BasicAgent):
    name = "Spawner"
    metadata = {"name": "Spawner", "parameters": {"type": "object", "properties": {}}}

    def perform(self, **kwargs):
        # One in the worker's process group, one in a group of its own.
        return [subprocess.Popen(["sleep", "600"], process_group=group).pid for group in (None, 0)]
"""


async def test_what_a_worker_started_dies_with_the_worker_and_with_its_killed_host(
    tmp_path: Path,
) -> None:
    bundle = {"agents": [{"filename": "spawner_agent.py", "source": SPAWNER}]}
    async with Network(tmp_path / "data") as network:
        await network.deploy("w", bundle, placement="process")
        children = await network.call_agent("w", "Spawner")
        os.kill(network.health()["workers"]["w"]["pid"], signal.SIGKILL)
        assert [await _gone(child) for child in children] == [True, True]
        await _wait_for_restart(network, "w", 1)
        children = await network.call_agent("w", "Spawner")
    assert [await _gone(child) for child in children] == [True, True]

    script = (
        "import asyncio, json, sys\n"
        "from plughost import Network\n"
        "async def main():\n"
        "    async with Network(sys.argv[1]) as n:\n"
        "        await n.deploy('w', json.loads(sys.argv[2]), placement='process')\n"
        "        print(json.dumps(await n.call_agent('w', 'Spawner')), flush=True)\n"
        "        await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    host = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data2"), json.dumps(bundle)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        children = json.loads(host.stdout.readline())
        assert all(_alive(child) for child in children)
        host.kill()
        host.wait()
        assert [await _gone(child) for child in children] == [True, True]
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()


async def _gone(pid: int) -> bool:
    for _ in range(1000):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # not left behind by the test, whatever it found
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


SPY = """
from plughost import Mod, rpc


class SpyMod(Mod):
    @rpc
    async def attempt(self):
        results = {}
        for label, call in [
            ("lie about tenant", self.network.publish("camera", {"frame": "spy"}, tenant="robot2")),
            ("absolute topic", self.network.publish("/robot2/camera", {"frame": "spy"})),
            ("other rpc", self.network.rpc("robot2/camera", "settings")),
        ]:
            try:
                results[label] = await call
            except Exception as exc:
                results[label] = type(exc).__name__ + ": " + str(exc)
        return results
"""


async def test_a_worker_cannot_reach_outside_its_tenant(network: Network) -> None:
    spy_bundle = robot_bundle(30)
    spy_bundle["files"].append({"filename": "spy_module.py", "source": SPY})  # type: ignore[attr-defined]
    spy_bundle["files"][2]["source"] += '\n[[mods]]\npath = "spy_module"\nname = "spy"\n'  # type: ignore[index]
    await network.deploy("robot1", spy_bundle, placement="process")
    await network.deploy("robot2", robot_bundle(10), placement="process")
    results = await network.rpc("robot1/spy", "attempt")
    assert results["lie about tenant"] == 1  # it landed in robot1's own camera topic
    assert "outside tenant 'robot1'" in results["absolute topic"]
    assert "outside tenant 'robot1'" in results["other rpc"]
    assert await network.rpc("robot2/mapper", "seen") == []
    assert await network.rpc("robot1/mapper", "seen") == ["spy"]


HOSTILE = """
import os
import socket
import subprocess
import sys
import threading
import time
from plughost import Mod, rpc


class HostileMod(Mod):
    @rpc
    def half_frame(self):
        # A length header saying 1000 bytes, then 2: a host that read it blocking would hang.
        sock = socket.socket(fileno=int(sys.argv[1]))
        sock.sendall((1000).to_bytes(4, "big") + b"{}")
        sock.detach()
        return "sent"

    @rpc
    def lock(self):
        return threading.Lock()

    @rpc
    def spawn(self):
        return subprocess.Popen(["sleep", "300"]).pid

    @rpc
    def busy(self):
        time.sleep(300)
"""


def hostile_bundle() -> dict[str, object]:
    manifest = '[[mods]]\npath = "hostile_module"\nname = "hostile"\n'
    return {
        "files": [
            {"filename": "hostile_module.py", "source": HOSTILE},
            {"filename": "plughost.toml", "source": manifest},
        ]
    }


async def test_a_worker_cannot_stall_the_host(tmp_path: Path) -> None:
    async with Network(tmp_path / "data", unload_timeout=1) as network:
        await network.deploy("bad", hostile_bundle(), placement="process")
        await network.deploy("good", robot_bundle(10), placement="process")
        with pytest.raises(RpcError, match="not JSON"):
            await network.rpc("bad/hostile", "lock")
        stuck = asyncio.create_task(network.rpc("bad/hostile", "half_frame"))
        for _ in range(20):  # the host's loop keeps serving everyone else
            assert (await network.rpc("good/camera", "settings"))["config"] == {"fps": 10}
        stuck.cancel()


async def test_what_a_worker_started_dies_with_it(tmp_path: Path) -> None:
    async with Network(tmp_path / "data", unload_timeout=1) as network:
        await network.deploy("bad", hostile_bundle(), placement="process")
        child = await network.rpc("bad/hostile", "spawn")
        busy = asyncio.create_task(network.rpc("bad/hostile", "busy"))
        await asyncio.sleep(0.1)
        assert _alive(child)
    assert busy.done()
    for _ in range(500):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)


async def test_an_unloaded_instance_stays_unloaded_after_a_crash(network: Network) -> None:
    await network.deploy("robot1", robot_bundle(30), placement="process")
    await network.unload("robot1/mapper")
    os.kill(network.health()["workers"]["robot1"]["pid"], signal.SIGKILL)
    await _wait_for_restart(network, "robot1", 1)
    assert [i["rpc_name"] for i in network.instances()] == ["robot1/camera"]
    assert await network.rpc("robot1/camera", "shoot") == "robot1-v1-1"
    unit = network._runtime.get(network._catalog.live_namespace("robot1"))
    assert isinstance(unit, WorkerUnit)
    assert [i["name"] for i in unit.supervisor.ready[1]] == ["camera"]


async def test_a_module_that_exits_the_interpreter_at_import_is_contained_in_a_worker(
    network: Network,
) -> None:
    await network.deploy("steady", robot_bundle(10), placement="process")
    exiting = {"agents": [{"filename": "bye.py", "source": "import os\nos._exit(3)\n"}]}
    with pytest.raises(WorkerStartFailed, match="exited before it was ready"):
        await network.deploy("exits", exiting, placement="process")
    assert "exits" not in network.list_tenants()
    assert (await network.rpc("steady/camera", "settings"))["config"] == {"fps": 10}


async def test_an_import_that_never_returns_is_stopped_by_the_worker_start_deadline(
    tmp_path: Path,
) -> None:
    async with Network(tmp_path / "data", worker_start_timeout=2) as network:
        looping = {"agents": [{"filename": "loop.py", "source": "while True:\n    pass\n"}]}
        with pytest.raises(WorkerStartFailed, match="not ready after 2 s"):
            await network.deploy("loops", looping, placement="process")
        assert network.list_tenants() == [] and network.health()["workers"] == {}
        await network.deploy("fine", robot_bundle(10), placement="process")
        assert (await network.rpc("fine/camera", "settings"))["config"] == {"fps": 10}


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_one_bundle_with_config_of_its_own_for_each_robot(
    tmp_path: Path, placement: str
) -> None:
    bundle = robot_bundle(fps=30)
    data = tmp_path / "data"

    async def fps(network: Network, robot: str) -> int:
        value: int = (await network.rpc(f"{robot}/camera", "settings"))["config"]["fps"]
        return value

    async with Network(data) as network:
        fast = {"camera": {"fps": 60, "lens": "wide"}}
        await network.deploy("robot0", bundle, placement=placement, config=fast)  # type: ignore[arg-type]
        await network.deploy("robot1", bundle, placement=placement)  # type: ignore[arg-type]
        assert (await fps(network, "robot0"), await fps(network, "robot1")) == (60, 30)
        listed = {i["rpc_name"]: i["config"] for i in network.instances()}
        assert listed["robot0/camera"] == {"fps": 60, "lens": "wide"}
        assert listed["robot1/camera"] == {"fps": 30}
        await network.restart("robot0/camera")
        assert await fps(network, "robot0") == 60
        with pytest.raises(InstanceConfigError, match="no declared instance 'sensor'"):
            await network.deploy("robot0", bundle, config={"sensor": {"gain": 2}})
        assert network.get_deployment("robot0").version == 1
    async with Network(data) as network:
        assert await fps(network, "robot0") == 60  # kept by a restart of the network
        await network.deploy("robot0", robot_bundle(fps=30, version=2))  # a redeploy keeps it
        assert await fps(network, "robot0") == 60
        await network.deploy("robot0", robot_bundle(fps=30, version=2), config={})
        assert await fps(network, "robot0") == 30
