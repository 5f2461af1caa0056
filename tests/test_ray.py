"""What only the ``ray`` placement has: nodes, actors, files shipped through Ray, resources.

Its guarantees (isolation, hot swap, no failed call, restarts, instances, durability)
are the matrix's (``PLACEMENTS``); these run on the tests' cluster of two nodes too
(``ray_cluster`` in conftest).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import ray

from plughost import BundleRejectedError, Network, WorkerStartFailed

from .conftest import RAY_NODES, agent_bundle

WHERE = """\
import os
from agents.basic_agent import BasicAgent

class Where(BasicAgent):
    name = "Where"

    def perform(self, **kwargs):
        return {"file": __file__, "pid": os.getpid(), "keeper": os.getppid()}
"""


def where_bundle(toml: str = "") -> dict[str, Any]:
    files = [{"filename": "where_agent.py", "source": WHERE}]
    if toml:
        files.append({"filename": "plughost.toml", "source": textwrap.dedent(toml)})
    return {"files": files}


def alive_nodes() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def parent_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def until(condition: Any, what: str, tries: int = 2000) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {tries} polls: {what}")


async def test_tenants_spread_over_the_nodes_each_in_an_actor_of_its_own(
    network: Network,
) -> None:
    tenants = [f"t{i}" for i in range(4)]
    for tenant in tenants:
        await network.deploy(tenant, agent_bundle(tenant), placement="ray")
    workers = network.health()["workers"]
    assert {workers[t]["placement"] for t in tenants} == {"ray"}
    assert {workers[t]["state"] for t in tenants} == {"ready"}
    assert len({workers[t]["actor"] for t in tenants}) == len(tenants)
    assert {workers[t]["node"] for t in tenants} == alive_nodes()
    assert len(alive_nodes()) == RAY_NODES
    for tenant in tenants:
        assert await network.call_agent(tenant, "Notifier", {"message": "m"}) == f"{tenant}:m"

    # A snapshot is a namespace of its own: another actor, another worker.
    await network.deploy("snap", where_bundle(), placement="ray")
    await network.create_snapshot("snap", "jan")
    live = await network.call_agent("snap", "Where")
    kept = await network.call_agent("snap", "Where", snapshot="jan")
    assert live["pid"] != kept["pid"] and live["keeper"] != kept["keeper"]
    assert parent_of(live["keeper"]) != parent_of(kept["keeper"])  # the actors' processes


async def test_the_bundle_reaches_its_node_through_ray_not_by_a_host_path(
    network: Network,
) -> None:
    await network.deploy("far", where_bundle(), placement="ray")
    answer = await network.call_agent("far", "Where")
    file = Path(answer["file"])
    assert not file.is_relative_to(network.data_dir.resolve())
    assert file.parent.name == "bundle"
    assert file.parent.parent.name.startswith("plughost-ray-far-")
    # The worker's keeper is a child of the actor's process, on its node.
    assert answer["keeper"] == network.health()["workers"]["far"]["pid"]


async def test_a_lost_actor_is_replaced_by_the_supervisor_on_a_node_ray_chooses(
    network: Network,
) -> None:
    await network.deploy("fragile", where_bundle(), placement="ray")
    first = network.health()["workers"]["fragile"]
    folder = Path((await network.call_agent("fragile", "Where"))["file"]).parent.parent
    actor_process = parent_of(first["pid"])
    os.kill(actor_process, signal.SIGKILL)  # as when its node goes

    def replaced() -> bool:
        now = network.health()["workers"]["fragile"]
        return now["state"] == "ready" and now["actor"] != first["actor"]

    await until(replaced, "a new actor serves the tenant")
    now = network.health()["workers"]["fragile"]
    assert now["restarts"] == 1
    said = [entry.message for entry in network.feed.recent("fragile")]
    assert any("Ray actor was lost (ActorDiedError" in message for message in said), said
    assert (await network.call_agent("fragile", "Where"))["keeper"] == now["pid"]
    await until(lambda: not alive(first["pid"]), "the lost actor's worker is gone")
    # The lost actor could not remove its folder: the next actor on the node did.
    assert not folder.exists()


async def test_resources_asked_in_plughost_toml_decide_the_node(
    network: Network, tmp_path: Path
) -> None:
    camera_nodes = {
        node["NodeID"] for node in ray.nodes() if node["Alive"] and "camera" in node["Resources"]
    }
    assert len(camera_nodes) == 1
    asks = "[ray]\nnum_cpus = 0.25\nresources = {camera = 0.5}\n"
    # One tenant could take another's device: only the resources the operator lets them.
    with pytest.raises(BundleRejectedError, match=r"resources tenants may not ask for.*camera"):
        await network.deploy("cam0", where_bundle(asks), placement="ray")
    assert "cam0" not in network.list_tenants()

    async with Network(tmp_path / "cameras", ray_resources=["camera", "lidar"]) as cameras:
        for tenant in ("cam1", "cam2"):
            await cameras.deploy(tenant, where_bundle(asks), placement="ray")
            assert cameras.health()["workers"][tenant]["node"] in camera_nodes
        with pytest.raises(WorkerStartFailed, match=r"no node of the Ray cluster has .*lidar"):
            await cameras.deploy(
                "lidar", where_bundle("[ray]\nresources = {lidar = 1}\n"), placement="ray"
            )
        assert "lidar" not in cameras.list_tenants()
        with pytest.raises(BundleRejectedError, match="num_cpus"):
            await cameras.deploy("bad", where_bundle("[ray]\nnum_cpus = -1\n"), placement="ray")


async def test_an_actor_that_finds_no_free_node_fails_its_deploy_at_the_start_deadline(
    tmp_path: Path,
) -> None:
    whole_cpu = "[ray]\nnum_cpus = 1\n"  # each node of the tests' cluster has one
    async with Network(tmp_path / "data", worker_start_timeout=10) as network:
        for tenant in ("first", "second"):
            await network.deploy(tenant, where_bundle(whole_cpu), placement="ray")
        with pytest.raises(WorkerStartFailed, match=r"not placed and started within 10 s"):
            await network.deploy("third", where_bundle(whole_cpu), placement="ray")
        assert "third" not in network.list_tenants()
        await network.remove_tenant("first")  # its CPU is free again
        await network.deploy("third", where_bundle(whole_cpu), placement="ray")
        assert (await network.call_agent("third", "Where"))["keeper"] > 0


async def test_stopping_the_network_leaves_no_actor_worker_or_node_folder(tmp_path: Path) -> None:
    async with Network(tmp_path / "data") as network:
        await network.deploy("brief", where_bundle(), placement="ray")
        answer = await network.call_agent("brief", "Where")
        actor_process = parent_of(answer["keeper"])
    folder = Path(answer["file"]).parent.parent
    await until(lambda: not folder.exists(), "the node's folder is removed")
    for pid in (answer["pid"], answer["keeper"], actor_process):
        await until(lambda pid=pid: not alive(pid), f"process {pid} is gone")


def test_without_ray_a_ray_deploy_is_refused_naming_the_extra(tmp_path: Path) -> None:
    bundle = agent_bundle("t")
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["ray"] = None  # as where it is not installed
        from plughost import Network, PlacementUnavailableError

        async def main():
            async with Network({str(tmp_path / "data")!r}) as network:
                print(network.health()["placements"]["ray"])
                try:
                    await network.deploy("t", {bundle!r}, placement="ray")
                except PlacementUnavailableError as exc:
                    print(exc)
                print(network.list_tenants())

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "unavailable: Ray is not installed (pip install 'plughost[ray]')"
    assert "the 'ray' placement is unavailable here" in lines[1]
    assert "pip install 'plughost[ray]'" in lines[1]
    assert lines[2] == "[]"


def test_with_no_address_the_first_ray_deploy_starts_a_local_ray_and_says_so(
    tmp_path: Path,
) -> None:
    bundle = agent_bundle("local")
    script = textwrap.dedent(
        f"""
        import asyncio
        import ray
        from plughost import Network

        async def main():
            async with Network({str(tmp_path / "data")!r}) as network:
                print(ray.is_initialized())
                await network.deploy("t", {bundle!r}, placement="ray")
                print(await network.call_agent("t", "Notifier", {{"message": "m"}}))
                print(len(ray.nodes()))
            print(ray.is_initialized())

        asyncio.run(main())
        """
    )
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        env=environment,
    )
    assert done.stdout.splitlines()[-4:] == ["False", "local:m", "1", "False"]
    assert "no ray_address is set: starting a local Ray instance" in done.stderr
