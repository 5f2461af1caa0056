"""Shared fixtures: bundles written to real folders, and loads that are always unloaded."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import ray
from hypothesis import settings
from playwright.sync_api import Browser, sync_playwright
from ray.cluster_utils import Cluster

from plughost import Namespace, Network
from plughost.loader import LoadedBundle, load_bundle, loaded_namespaces
from plughost.naming import ROOT_PACKAGE

WriteBundle = Callable[..., Path]

PLACEMENTS = ["inprocess", "process", "sandbox", "ray"]
"""Every placement: each guarantee's test runs in each. A new placement joins by its name."""
STATEFUL_PLACEMENTS = [name for name in PLACEMENTS if name != "ray"]
"""The placements whose calls keep tenant state: a ray node shares no disk with the host,
where the state lives (``test_state`` shows what a ray tenant is told instead)."""
RAY_NODES = 2
"""The nodes of the tests' Ray cluster: its tenants must be seen on more than one."""
STALL_ATTEMPTS = 3
"""Runs a fairness check may take to see no stall over 100 ms. A stall the code causes shows in
every run; one the machine causes (another process on the core at that moment) seldom twice."""
Load = Callable[..., LoadedBundle]
RAY_OBJECT_STORE = 100 << 20  # bytes a node keeps bundles in: Ray's default is 30 % of RAM
CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium: Playwright's own browser download is not used (CI installs this one)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session", autouse=True)
def ray_cluster() -> Iterator[Cluster]:
    """A Ray cluster of :data:`RAY_NODES` nodes on this machine, which this process is
    connected to: a network here runs its ``ray`` tenants on it. Started once (it takes
    seconds), for every test, since tests of every module deploy ray tenants. One node has
    a custom resource, ``camera``, that a tenant may ask for."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": RAY_OBJECT_STORE},
        connect=False,
    )
    try:
        for _ in range(RAY_NODES - 1):
            cluster.add_node(
                num_cpus=1, object_store_memory=RAY_OBJECT_STORE, resources={"camera": 1}
            )
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        # Servers the tests start (``ServerProcess``) join it too, as Ray's own variable says.
        os.environ["RAY_ADDRESS"] = cluster.address
        yield cluster
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def write_bundle(tmp_path: Path) -> WriteBundle:
    """Write ``{relative path: source}`` into a fresh folder and return it."""
    counter = iter(range(1_000_000))

    def write(files: dict[str, str], name: str | None = None) -> Path:
        folder = tmp_path / (name or f"bundle{next(counter)}")
        for relative, source in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    return write


@pytest.fixture
def load() -> Iterator[Load]:
    """``load_bundle`` that unloads, at teardown, whatever the test left loaded."""
    handles: list[LoadedBundle] = []

    def do_load(namespace: Namespace, source: Path) -> LoadedBundle:
        loaded = load_bundle(namespace, source)
        handles.append(loaded)
        return loaded

    yield do_load
    for loaded in handles:
        loaded.unload(verify=False)


@pytest.fixture(autouse=True)
def no_namespace_outlives_a_test() -> Iterator[None]:
    yield
    left = [key for key in sys.modules if key.startswith(ROOT_PACKAGE + ".")]
    assert left == [], f"namespace modules left in sys.modules: {left}"
    assert loaded_namespaces() == []


def namespace_keys() -> set[str]:
    """The ``sys.modules`` keys that belong to any namespace."""
    return {key for key in sys.modules if key.startswith(ROOT_PACKAGE + ".")}


def agent_bundle(word: str, *, agent: str = "Notifier", extra: str = "") -> dict[str, object]:
    """A JSON bundle whose agent answers with ``word``, using a sibling helper module.

    ``extra`` is more module source appended to the agent file.
    """
    source = textwrap.dedent(
        f"""\
        from agents.basic_agent import BasicAgent
        from helpers import decorate

        class NotifierAgent(BasicAgent):
            name = {agent!r}
            metadata = {{
                "name": {agent!r},
                "description": "Posts a message",
                "parameters": {{
                    "type": "object",
                    "properties": {{"message": {{"type": "string"}}}},
                }},
            }}

            def perform(self, **kwargs):
                return decorate(kwargs.get("message", ""))
        """
    )
    return {
        "agents": [
            {"filename": "notifier_agent.py", "source": source + extra},
            {
                "filename": "helpers.py",
                "source": f"def decorate(m):\n    return {word!r} + ':' + m\n",
            },
        ]
    }


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """A started network on a fresh data folder, stopped at teardown."""
    async with Network(tmp_path / "data", network_id="test") as started:
        yield started


# The stateful test's budget: moderate in CI, large with --hypothesis-profile soak.
settings.register_profile("default", max_examples=100, stateful_step_count=25, deadline=None)
settings.register_profile("soak", max_examples=400, stateful_step_count=80, deadline=None)
settings.load_profile("default")


class SharedFolder:
    """A folder that a tenant's code and the test both use, in every placement.

    ``inside`` is the folder as the tenant's code sees it. A sandbox shows
    nothing of the host's files, so there it is the sandbox's own ``/tmp``,
    which the test, as root on the host, reaches through ``/proc/<pid>/root``
    of a process inside (:meth:`on_host`); elsewhere it is the test's
    ``tmp_path``.
    """

    def __init__(self, placement: str, tmp_path: Path) -> None:
        self.placement = placement
        self._tmp_path = tmp_path
        self.inside = "/tmp" if placement == "sandbox" else str(tmp_path)

    def on_host(self, network: Network, tenant: str) -> Path:
        """The folder as the host sees it, for the tenant's live worker as it runs now."""
        if self.placement != "sandbox":
            return self._tmp_path
        bwrap = network.health()["workers"][tenant]["pid"]
        children = Path(f"/proc/{bwrap}/task/{bwrap}/children").read_text().split()
        return Path(f"/proc/{children[0]}/root/tmp")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on its test (``item.rep_call``): a fixture that saves what a
    failed test saw (the operator page's screenshot) reads it at teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright. No skip when it is missing: a page
    nobody can load must fail the run."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
