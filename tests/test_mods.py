"""Mods load and unload at runtime, atomically, and come back after a restart."""

from __future__ import annotations

import asyncio
import gc
import sys
import textwrap
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from plughost import (
    AmbiguousNameError,
    Event,
    InvalidNameError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    ModPathRefusedError,
    Network,
    NotStartedError,
    RpcError,
    UnknownRpcError,
)
from plughost.config import ConfigError, load_config

from .conftest import agent_bundle, namespace_keys

WriteMod = Callable[[str, str], Path]


@pytest.fixture
def journal() -> Iterator[list[str]]:
    """A list mods append lifecycle steps to, through a shared module."""
    module = ModuleType("plughost_test_journal")
    module.entries = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.entries  # type: ignore[attr-defined]
    del sys.modules[module.__name__]


@pytest.fixture
def write_mod(network: Network) -> WriteMod:
    """Write a mod file below the network's ``mods/`` root; return its path."""

    def write(relative: str, source: str) -> Path:
        path = network.data_dir / "mods" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


WIKI = """
    import plughost_test_journal as journal
    from plughost import Mod, on, rpc

    class WikiMod(Mod):
        def initialize(self):
            journal.entries.append(f"init {self.mod_id} {self.config}")
            self.pages = {}

        def shutdown(self):
            journal.entries.append(f"shutdown {self.mod_id}")

        @on("wiki.*")
        async def handle(self, event):
            self.pages[event.payload["title"]] = event.payload.get("text", "")
            return {"pages": len(self.pages), "version": VERSION}

        @rpc
        def page(self, title):
            return self.pages.get(title)

    VERSION = 1
"""


def _event(name: str, destination: str | None = None, **payload: object) -> Event:
    return Event(event_name=name, destination_id=destination, payload=payload)


async def test_load_use_unload(network: Network, write_mod: WriteMod, journal: list[str]) -> None:
    write_mod("wiki.py", WIKI)
    mod = await network.load_mod("wiki", config={"lang": "en"})
    assert mod.mod_id == "wiki" and mod.config == {"lang": "en"} and mod.tenant is None
    assert network.get_loaded_mods() == ["wiki"]
    response = await network.send_event(_event("wiki.edit", "mod:wiki", title="Home", text="hi"))
    assert response.success and response.data == {"pages": 1, "version": 1}
    assert await network.rpc("wiki", "page", "Home") == "hi"
    details = network.health()["mods"]["details"]["wiki"]
    assert details["mod_id"] == "wiki" and details["mod_path"] == "wiki"
    assert isinstance(details["loaded_at"], int)

    del mod  # otherwise the report rightly names this local as holding the mod's module
    report = await network.unload_mod("wiki", verify=True)
    assert report.verified and report.leaked == [] and report.shutdown_error is None
    assert journal == ["init wiki {'lang': 'en'}", "shutdown wiki"]
    assert network.get_loaded_mods() == [] and network.health()["mods"]["count"] == 0
    assert namespace_keys() == set()
    gone = await network.send_event(_event("wiki.edit", "mod:wiki", title="x"))
    assert not gone.success and "not loaded" in gone.message


async def test_a_thousand_load_unload_cycles_leave_nothing_behind(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    write_mod("wiki.py", WIKI)
    modules_before = set(sys.modules)
    instances: list[weakref.ref[object]] = []
    for cycle in range(1000):
        mod = await network.load_mod("wiki")
        instances.append(weakref.ref(mod))
        assert network.health()["mods"]["loaded"] == ["wiki"]
        response = await network.send_event(_event("wiki.edit", "mod:wiki", title=str(cycle)))
        assert response.data["pages"] == 1
        del mod, response
        report = await network.unload_mod("wiki", verify=True)
        assert report.leaked == [], report.leaked
        mods = network.health()["mods"]
        assert (mods["loaded"], mods["count"], mods["failed"], mods["details"]) == ([], 0, [], {})
    gc.collect()
    assert set(sys.modules) == modules_before
    assert all(ref() is None for ref in instances)
    assert len(journal) == 2000


async def test_an_edited_file_runs_its_new_code_after_unload_and_load(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    path = write_mod("wiki.py", WIKI)
    await network.load_mod("wiki")
    first = await network.send_event(_event("wiki.edit", "mod:wiki", title="a"))
    await network.unload_mod("wiki")
    path.write_text(path.read_text().replace("VERSION = 1", "VERSION = 2"))
    await network.load_mod("wiki")
    second = await network.send_event(_event("wiki.edit", "mod:wiki", title="a"))
    assert (first.data["version"], second.data["version"]) == (1, 2)


FAILING_STEPS = {
    "import": ("broken.py", "def nope(:\n", "import"),
    "import error": ("broken.py", "import no_such_module_xyz\n", "import"),
    "no class": ("broken.py", "X = 1\n", "find class"),
    "several classes": (
        "broken.py",
        "from plughost import Mod\nclass A(Mod):\n    pass\nclass B(Mod):\n    pass\n",
        "find class",
    ),
    "instantiate": (
        "broken.py",
        "from plughost import Mod\nclass BrokenMod(Mod):\n"
        "    def __init__(self):\n        raise RuntimeError('ctor')\n",
        "instantiate",
    ),
    "initialize raises": (
        "broken.py",
        "import plughost_test_journal as j\nfrom plughost import Mod, on\n"
        "class BrokenMod(Mod):\n"
        "    def initialize(self):\n        raise RuntimeError('init failed')\n"
        "    def shutdown(self):\n        j.entries.append('shutdown')\n"
        "    @on('broken.*')\n    def h(self, e):\n        return None\n",
        "initialize",
    ),
    "initialize returns False": (
        "broken.py",
        "import plughost_test_journal as j\nfrom plughost import Mod\n"
        "class BrokenMod(Mod):\n"
        "    async def initialize(self):\n        return False\n"
        "    async def shutdown(self):\n        j.entries.append('shutdown')\n",
        "initialize",
    ),
}


@pytest.mark.parametrize("case", list(FAILING_STEPS))
async def test_a_failed_load_undoes_every_step(
    network: Network, write_mod: WriteMod, journal: list[str], case: str
) -> None:
    write_mod("wiki.py", WIKI)
    await network.load_mod("wiki")
    filename, source, step = FAILING_STEPS[case]
    write_mod(filename, source)
    modules_before = dict(sys.modules)
    health_before = network.health()

    with pytest.raises(ModLoadError) as caught:
        await network.load_mod("broken")

    assert caught.value.step == step
    assert f"failed at {step}" in str(caught.value)
    assert dict(sys.modules) == modules_before
    after = network.health()
    assert after["mods"] == health_before["mods"] and after["status"] == "healthy"
    assert network.get_loaded_mods() == ["wiki"]
    no_handler = await network.send_event(_event("broken.x"))
    assert not no_handler.success
    assert journal.count("shutdown") == (1 if step == "initialize" else 0)
    write_mod(filename, "from plughost import Mod\nclass BrokenMod(Mod):\n    pass\n")
    assert (await network.load_mod("broken")).mod_id == "broken"


async def test_refused_paths_are_never_imported(network: Network, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("raise SystemExit('imported!')\n")
    for mod_path in ["os", "../../etc/passwd", str(outside), "plughost.network", "", "a b", "x:1y"]:
        with pytest.raises(ModPathRefusedError):
            await network.load_mod(mod_path)
    response = await network.send_event(_event("system.mod.load", "system:system", mod_path="os"))
    assert not response.success and "refused" in response.message
    missing = await network.send_event(_event("system.mod.load", "system:system"))
    assert (missing.success, missing.message) == (False, "mod_path is required")
    assert network.get_loaded_mods() == []


async def test_same_last_segment_does_not_clobber(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    write_mod("a/b/wiki.py", WIKI.replace("VERSION = 1", "VERSION = 'ab'"))
    write_mod("c/d/wiki.py", WIKI.replace("VERSION = 1", "VERSION = 'cd'"))
    await network.load_mod("a.b.wiki")
    with pytest.raises(
        ModAlreadyLoadedError, match=r"'wiki' is already loaded \(from 'a\.b\.wiki'\)"
    ):
        await network.load_mod("c.d.wiki")
    await network.load_mod("c.d.wiki", mod_id="wiki2")
    assert network.get_loaded_mods() == ["wiki", "wiki2"]
    ab = await network.send_event(_event("wiki.edit", "mod:wiki", title="t"))
    cd = await network.send_event(_event("wiki.edit", "mod:wiki2", title="t"))
    assert (ab.data["version"], cd.data["version"]) == ("ab", "cd")

    with pytest.raises(ModNotLoadedError, match="'never' is not loaded"):
        await network.unload_mod("never")
    assert network.get_loaded_mods() == ["wiki", "wiki2"]
    await network.unload_mod("c.d.wiki")  # by exact path
    assert network.get_loaded_mods() == ["wiki"]
    await network.unload_mod("wiki")  # by id
    assert network.get_loaded_mods() == []


async def test_class_by_name_or_by_convention(network: Network, write_mod: WriteMod) -> None:
    write_mod(
        "multi.py",
        "from plughost import Mod\nclass First(Mod):\n    pass\nclass Second(Mod):\n    pass\n",
    )
    assert type(await network.load_mod("multi:Second")).__name__ == "Second"
    with pytest.raises(InvalidNameError):
        await network.load_mod("multi:First", mod_id="bad/id")
    folder = network.data_dir / "mods" / "pkgmod"
    folder.mkdir()
    (folder / "__init__.py").write_text(
        "from plughost import Mod\nclass PkgmodMod(Mod):\n    pass\n"
    )
    assert type(await network.load_mod(str(folder))).__name__ == "PkgmodMod"
    assert network.get_loaded_mods() == ["multi", "pkgmod"]


async def test_unload_waits_for_the_handler_calls_in_flight(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    write_mod(
        "slow.py",
        """
        import asyncio
        import plughost_test_journal as journal
        from plughost import Mod, on

        class SlowMod(Mod):
            def initialize(self):
                self.started = 0
                self.release = asyncio.Event()

            @on("slow.work")
            async def work(self, event):
                self.started += 1
                await self.release.wait()
                journal.entries.append(f"done {event.payload['n']}")
                return {"n": event.payload["n"]}

            def shutdown(self):
                journal.entries.append("shutdown")
        """,
    )
    slow = await network.load_mod("slow")
    calls = [
        asyncio.create_task(network.send_event(_event("slow.work", "mod:slow", n=n)))
        for n in range(20)
    ]
    while slow.started < 20:  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
    unloading = asyncio.create_task(network.unload_mod("slow"))
    await asyncio.sleep(0.05)
    assert not unloading.done() and network.get_loaded_mods() == []
    late = await network.send_event(_event("slow.work", "mod:slow", n=99))
    assert not late.success
    slow.release.set()  # type: ignore[attr-defined]
    del slow
    responses = await asyncio.gather(*calls)
    report = await unloading
    assert [r.data["n"] for r in responses] == list(range(20))
    assert all(r.success for r in responses)
    assert journal[-1] == "shutdown" and len(journal) == 21
    assert report.timed_out_handlers == 0


async def test_a_raising_shutdown_still_removes_the_mod(
    network: Network, write_mod: WriteMod
) -> None:
    write_mod(
        "grumpy.py",
        "from plughost import Mod\nclass GrumpyMod(Mod):\n"
        "    def shutdown(self):\n        raise RuntimeError('will not stop')\n",
    )
    await network.load_mod("grumpy")
    response = await network.send_event(
        _event("system.mod.unload", "system:system", mod_id="grumpy")
    )
    assert response.success
    assert "shutdown() raised RuntimeError: will not stop" in response.message
    assert response.data["shutdown_error"] == "RuntimeError: will not stop"
    assert network.get_loaded_mods() == []


async def test_loading_before_start_is_refused(tmp_path: Path) -> None:
    network = Network(tmp_path / "data")
    with pytest.raises(NotStartedError):
        await network.load_mod("plughost.mods.shared_cache")
    with pytest.raises(NotStartedError):
        await network.send_event(_event("system.mod.load", "system:system", mod_path="x"))


async def test_mods_come_back_after_a_restart_and_failures_show_in_health(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with Network(data) as network:
        await network.load_mod("plughost.mods.shared_cache", config={"max_items": 5})
        (data / "mods" / "fragile.py").write_text(
            "from plughost import Mod\nclass FragileMod(Mod):\n    pass\n"
        )
        await network.load_mod("fragile")
        await network.load_mod("plughost.mods.shared_artifact")
        await network.unload_mod("shared_artifact")
    (data / "mods" / "fragile.py").write_text("raise RuntimeError('broken now')\n")

    async with Network(data) as network:
        health = network.health()
        assert health["status"] == "degraded"
        assert health["mods"]["loaded"] == ["shared_cache"]
        assert health["mods"]["failed"] == ["fragile"]
        assert "broken now" in health["mods"]["details"]["fragile"]["error"]
        assert network.get_mod("shared_cache").config == {"max_items": 5}
        (data / "mods" / "fragile.py").write_text(
            "from plughost import Mod\nclass FragileMod(Mod):\n    pass\n"
        )
        await network.load_mod("fragile")
        assert network.health()["status"] == "healthy"


async def test_a_config_file_names_mods_to_load_at_start(tmp_path: Path) -> None:
    config_file = tmp_path / "network.yaml"
    text = (
        "network_id: from_file\n"
        "data_dir: data\n"
        "mods:\n"
        "  - mod_path: plughost.mods.shared_cache\n"
        "    config: {max_items: 3}\n"
    )
    config_file.write_text(text)
    config = load_config(config_file)
    assert config.data_dir == tmp_path / "data"
    async with config.network() as network:
        assert network.network_id == "from_file"
        assert network.get_loaded_mods() == ["shared_cache"]
        await network.unload_mod("shared_cache")
        await network.load_mod("plughost.mods.shared_artifact")
    assert config_file.read_text() == text
    async with load_config(config_file).network() as network:
        assert network.get_loaded_mods() == ["shared_artifact", "shared_cache"]

    config_file.write_text("network_id: x\nunknown_setting: 1\n")
    with pytest.raises(ConfigError, match="unknown_setting"):
        load_config(config_file)


async def test_the_same_mod_in_two_tenants_is_two_instances(
    network: Network, write_mod: WriteMod
) -> None:
    write_mod(
        "camera.py",
        """
        from plughost import Mod, on, rpc

        class CameraMod(Mod):
            def initialize(self):
                self.seen = []

            @on("topic:camera")
            def frame(self, event):
                self.seen.append(event.payload["frame"])

            @rpc
            async def shoot(self, n):
                return await self.publish("camera", {"frame": f"{self.tenant}-{n}"})

            @rpc
            def frames(self):
                return list(self.seen)
        """,
    )
    one = await network.load_mod("camera", tenant="robot1", config={"fps": 30})
    two = await network.load_mod("camera", tenant="robot2", config={"fps": 10})
    assert one is not two and (one.config, two.config) == ({"fps": 30}, {"fps": 10})
    assert network.get_loaded_mods() == ["robot1/camera", "robot2/camera"]
    assert await network.rpc("robot1/camera", "shoot", 1) == 1
    assert await network.rpc("camera", "shoot", 2, tenant="robot2") == 1
    assert await network.rpc("robot1/camera", "frames") == ["robot1-1"]
    assert await network.rpc("robot2/camera", "frames") == ["robot2-2"]
    assert await network.publish("/robot1/camera", {"frame": "abs"}) == 1
    assert await network.rpc("robot1/camera", "frames") == ["robot1-1", "abs"]
    with pytest.raises(AmbiguousNameError, match="'robot1/camera', 'robot2/camera'"):
        await network.rpc("camera", "frames")
    with pytest.raises(UnknownRpcError, match="methods: 'frames', 'shoot'"):
        await network.rpc("robot1/camera", "zoom")
    with pytest.raises(RpcError, match="TypeError"):
        await network.rpc("robot1/camera", "shoot")
    await network.unload_mod("camera", tenant="robot2")
    assert network.get_loaded_mods() == ["robot1/camera"]


async def test_agents_and_mods_hear_of_mod_loads_and_unloads(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    write_mod(
        "listener.py",
        """
        import plughost_test_journal as journal
        from plughost import Mod, on

        class ListenerMod(Mod):
            @on("system.mod.loaded")
            @on("system.mod.unloaded")
            def heard(self, event):
                journal.entries.append(f"mod {event.event_name} {event.payload['mod_id']}")
        """,
    )
    listening_agent = agent_bundle(
        "a",
        extra=(
            "from plughost import on\n"
            "import plughost_test_journal as journal\n"
            "class Listener(BasicAgent):\n"
            "    name = 'Listener'\n"
            "    def perform(self, **kwargs):\n        return 'ok'\n"
            "    @on('system.mod.*')\n"
            "    async def heard(self, event):\n"
            "        path = event.payload['mod_path']\n"
            "        journal.entries.append(f'agent {event.event_name} {path}')\n"
        ),
    )
    await network.deploy("listening", listening_agent)
    await network.call_agent("listening", "Listener")
    await network.load_mod("listener")
    journal.clear()
    await network.load_mod("plughost.mods.shared_cache")
    await network.unload_mod("shared_cache", verify=True)
    assert sorted(journal) == sorted(
        [
            "mod system.mod.loaded shared_cache",
            "agent system.mod.loaded plughost.mods.shared_cache",
            "mod system.mod.unloaded shared_cache",
            "agent system.mod.unloaded plughost.mods.shared_cache",
        ]
    )


async def test_an_unload_returns_before_the_proof_that_the_code_was_freed_which_follows(
    network: Network, write_mod: WriteMod, journal: list[str]
) -> None:
    write_mod(
        "listener.py",
        """
        import plughost_test_journal as journal
        from plughost import Mod, on

        class ListenerMod(Mod):
            @on("system.mod.unloaded")
            async def heard(self, event):
                journal.entries.append(event.payload)
        """,
    )
    write_mod(
        "hoarder.py",
        """
        import plughost_test_journal as journal
        from plughost import Mod

        class HoarderMod(Mod):
            def initialize(self):
                if self.config.get("leak"):
                    journal.kept.append(type(self))
        """,
    )
    kept: list[type] = []
    sys.modules["plughost_test_journal"].kept = kept  # type: ignore[attr-defined]
    await network.load_mod("listener")
    journal.clear()
    for mod_id, leak in (("tidy", False), ("leaky", True)):
        await network.load_mod("hoarder", {"leak": leak}, mod_id=mod_id)
        report = await network.unload_mod(mod_id)
        assert not report.verified and report.leaked == []  # the proof has not run yet
        assert network.get_loaded_mods() == ["listener"]
        for _ in range(500):  # the proof runs right after the unload; wait for its event
            if any(entry["mod_id"] == mod_id for entry in journal):
                break
            await asyncio.sleep(0.01)
        heard: list[dict[str, Any]] = [e for e in journal if e["mod_id"] == mod_id]  # type: ignore[index]
        assert [entry["verified"] for entry in heard] == [True]
        assert bool(heard[0]["leaked"]) is leak and report.verified
        assert report.leaked == heard[0]["leaked"]
    assert "global 'kept' of module plughost_test_journal" in " ".join(heard[0]["leaked"])
    shown = network.health()["mods"]["unloaded"]
    assert [(entry["mod_id"], entry["verified"], bool(entry["leaked"])) for entry in shown] == [
        ("leaky", True, True),
        ("tidy", True, False),
    ]
    # What holds a global mod's code is the admin's to see; others learn how many modules.
    for view in (network.health(counts_only=True), network.health(confine_to="someone")):
        assert [(e["mod_id"], e["leaked"]) for e in view["mods"]["unloaded"]] == [
            ("leaky", 1),
            ("tidy", 0),
        ]
    kept.clear()
