"""Each namespace runs its own code and its own siblings, in any load order."""

from __future__ import annotations

import importlib
import importlib.resources
import itertools
import json
import sys
import tarfile
import threading
import types
import warnings
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

import plughost
import plughost.agent
from plughost import Agent, BasicAgent, BundleWarning, ForeignModulesError, Namespace
from plughost.loader import LoadedBundle, code_cache

from .conftest import Load, WriteBundle


def _swarm(write_bundle: WriteBundle, word: str) -> Path:
    return write_bundle(
        {
            "notifier_agent.py": f"""
                from agents.basic_agent import BasicAgent
                from helpers import decorate

                class NotifierAgent(BasicAgent):
                    name = "Notifier"
                    def perform(self, **kwargs):
                        return decorate({word!r} + ":" + kwargs["message"])
            """,
            "helpers.py": f"""
                CALLS = []
                def decorate(text):
                    CALLS.append(text)
                    return "<" + {word!r} + ">" + text
            """,
        }
    )


def _notify(loaded_module: object, message: str = "hi") -> str:
    agent = loaded_module.NotifierAgent()  # type: ignore[attr-defined]
    return str(agent.perform(message=message))


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_two_swarms_with_the_same_file_names_run_their_own_code(
    write_bundle: WriteBundle, load: Load, order: str
) -> None:
    sources = {"A": _swarm(write_bundle, "alpha"), "B": _swarm(write_bundle, "beta")}
    loaded = {tenant: load(Namespace(f"swarm-{tenant}"), sources[tenant]) for tenant in order}

    assert _notify(loaded["A"].modules["notifier_agent"]) == "<alpha>alpha:hi"
    assert _notify(loaded["B"].modules["notifier_agent"]) == "<beta>beta:hi"
    helpers_a, helpers_b = loaded["A"].modules["helpers"], loaded["B"].modules["helpers"]
    assert helpers_a is not helpers_b
    assert helpers_a.CALLS == ["alpha:hi"] and helpers_b.CALLS == ["beta:hi"]
    assert "notifier_agent" not in sys.modules and "helpers" not in sys.modules


def test_live_and_two_snapshots_load_side_by_side(write_bundle: WriteBundle, load: Load) -> None:
    versions = {None: "live", "jan": "january", "jun": "june"}
    loaded = {
        snapshot: load(Namespace("acme", snapshot=snapshot), _swarm(write_bundle, word))
        for snapshot, word in versions.items()
    }
    for snapshot, word in versions.items():
        module = loaded[snapshot].modules["notifier_agent"]
        assert _notify(module, "x") == f"<{word}>{word}:x"
        assert module.decorate.__module__ == loaded[snapshot].modules["helpers"].__name__
    assert len({id(b.modules["helpers"]) for b in loaded.values()}) == 3


@pytest.mark.parametrize("names", list(itertools.permutations(["aa", "mm", "zz"])))
def test_a_chain_of_sibling_imports_loads_whatever_the_file_order(
    write_bundle: WriteBundle, load: Load, names: tuple[str, str, str]
) -> None:
    first, middle, last = names
    folder = write_bundle(
        {
            f"{first}.py": f"import {middle}\nVALUE = {middle}.VALUE + 1\n",
            f"{middle}.py": f"from {last} import VALUE as BASE\nVALUE = BASE * 10\n",
            f"{last}.py": "VALUE = 4\n",
        }
    )
    loaded = load(Namespace("chain"), folder)
    assert loaded.modules[first].VALUE == 41


def test_every_import_form_resolves_to_the_namespace_copy(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle(
        {
            "main.py": """
                import helpers
                import pkg.sub
                from helpers import WHO
                from . import helpers as relative_helpers
                from pkg.sub import deep
                from pkg import sub as sub_module
                from agents.helpers import WHO as COMPAT_WHO
                import agents

                def lazy():
                    import helpers as again
                    from pkg.sub import deep as deep_again
                    return again.WHO, deep_again()

                SAME = (helpers is relative_helpers, sub_module is pkg.sub,
                        agents.helpers is helpers)
            """,
            "helpers.py": "WHO = __name__\n",
            "pkg/__init__.py": "from . import sub\n",
            "pkg/sub.py": "from ..helpers import WHO\ndef deep():\n    return 'deep:' + WHO\n",
        }
    )
    ns = Namespace("forms", env="test")
    main = load(ns, folder).modules["main"]
    helpers_key = ns.module_name("helpers")
    assert helpers_key == main.WHO == main.COMPAT_WHO
    assert main.deep() == "deep:" + helpers_key
    assert main.lazy() == (helpers_key, "deep:" + helpers_key)
    assert main.SAME == (True, True, True)
    assert main.pkg.__name__ == ns.module_name("pkg")


@pytest.mark.parametrize("order", [("one", "two"), ("two", "one")])
def test_imports_by_name_resolve_to_the_namespace_copy_at_load_and_in_a_call(
    write_bundle: WriteBundle, load: Load, order: tuple[str, str]
) -> None:
    def bundle(word: str) -> Path:
        return write_bundle(
            {
                "main.py": """
                    import importlib

                    BASIC = importlib.import_module("agents.basic_agent").BasicAgent
                    BY_DUNDER = __import__("helpers").WHO
                    RELATIVE = importlib.import_module(".helpers", __package__).WHO
                    COMPAT = importlib.import_module("basic_agent").BasicAgent

                    def in_a_call():
                        return (
                            importlib.import_module("helpers").WHO,
                            importlib.import_module("agents.helpers").WHO,
                            __import__("helpers").WHO,
                        )
                """,
                "helpers.py": f"WHO = {word!r}\n",
            },
            name=word,
        )

    folders = {word: bundle(word) for word in ("one", "two")}
    before = set(sys.modules)
    mains = {word: load(Namespace(word), folders[word]).modules["main"] for word in order}
    for word, main in mains.items():
        assert main.BASIC is BasicAgent and main.COMPAT is BasicAgent
        assert main.BY_DUNDER == main.RELATIVE == word
        assert main.in_a_call() == (word, word, word)
    # Nothing but the namespaces' own keys: no bare 'helpers' or 'agents' for everyone.
    added = {key for key in set(sys.modules) - before if not key.startswith("plughost_ns")}
    assert added == set()
    # Outside a namespace, import_module is the standard one.
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("helpers")


def test_agent_files_written_for_other_hosts_load_unchanged(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle(
        {
            "one.py": "from agents.basic_agent import BasicAgent as B\n",
            "two.py": "from basic_agent import BasicAgent as B\nimport basic_agent\n",
            "three.py": "import agents.basic_agent\n",
        }
    )
    modules = load(Namespace("compat"), folder).modules
    assert modules["one"].B is BasicAgent is Agent
    assert modules["two"].B is BasicAgent
    assert modules["two"].basic_agent.BasicAgent is BasicAgent


def test_a_bundle_may_ship_its_own_basic_agent(write_bundle: WriteBundle, load: Load) -> None:
    folder = write_bundle(
        {
            "basic_agent.py": "class BasicAgent:\n    OWN = True\n",
            "user.py": "from basic_agent import BasicAgent\nfrom agents.basic_agent import "
            "BasicAgent as Again\n",
        }
    )
    user = load(Namespace("own"), folder).modules["user"]
    assert user.BasicAgent.OWN and user.Again is user.BasicAgent


def test_stdlib_and_installed_modules_are_shared(write_bundle: WriteBundle, load: Load) -> None:
    folder = write_bundle({"uses.py": "import json\nimport pytest\n"})
    uses = load(Namespace("shared"), folder).modules["uses"]
    assert uses.json is json and uses.pytest is pytest


def test_a_bundle_module_can_shadow_a_stdlib_name_for_itself_only(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle({"json.py": "OWN = True\n", "user.py": "import json\n"})
    user = load(Namespace("shadow"), folder).modules["user"]
    assert user.json.OWN is True
    assert sys.modules["json"] is json and not hasattr(json, "OWN")


def test_a_bundle_that_appends_to_sys_path_is_undone_with_a_warning(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle({"bad.py": "import sys\nsys.path.append('/somewhere')\n"})
    path_before = list(sys.path)
    with pytest.warns(BundleWarning, match=r"bad\.py changed sys\.path"):
        load(Namespace("pathy"), folder)
    assert sys.path == path_before


def test_data_files_are_readable_from_bundle_code(write_bundle: WriteBundle, load: Load) -> None:
    folder = write_bundle(
        {
            "reader.py": """
                import importlib.resources
                import json
                from pathlib import Path
                BY_RESOURCES = json.loads(
                    importlib.resources.files(__package__).joinpath("data/config.json").read_text()
                )
                BY_FILE = json.loads((Path(__file__).parent / "data/config.json").read_text())
                import pkg
                TEMPLATE = importlib.resources.files(pkg).joinpath("t.txt").read_text()
            """,
            "data/config.json": '{"answer": 42}',
            "pkg/__init__.py": "",
            "pkg/t.txt": "template",
        }
    )
    loaded = load(Namespace("data"), folder)
    reader = loaded.modules["reader"]
    assert reader.BY_RESOURCES == reader.BY_FILE == {"answer": 42}
    assert reader.TEMPLATE == "template"
    assert (loaded.bundle_path / "data/config.json").is_file()
    assert importlib.resources.files(loaded.package_name).joinpath("data").is_dir()


def test_files_that_are_not_identifiers_load_under_escaped_keys(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle({"my-agent.py": "X = 1\n", "2fast.py": "Y = 2\n"})
    ns = Namespace("odd")
    loaded = load(ns, folder)
    assert loaded.modules["my-agent"].__name__ == ns.module_name("my-agent")
    assert loaded.modules["2fast"].Y == 2
    assert Namespace.parse_module_name(loaded.modules["my-agent"].__name__) == (ns, "my-agent")


def test_a_top_level_init_is_the_namespace_package(write_bundle: WriteBundle, load: Load) -> None:
    folder = write_bundle({"__init__.py": "ROOT = True\n", "child.py": "from . import ROOT\n"})
    loaded = load(Namespace("initpkg"), folder)
    assert loaded.modules["child"].ROOT is True
    assert sys.modules[loaded.package_name].ROOT is True


def test_zip_and_tar_gz_bundles_load(write_bundle: WriteBundle, load: Load, tmp_path: Path) -> None:
    folder = _swarm(write_bundle, "packed")
    zip_path, tar_path = tmp_path / "b.zip", tmp_path / "b.tar.gz"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for file in folder.iterdir():
            zf.write(file, file.name)
    with tarfile.open(tar_path, "w:gz") as tf:
        for file in folder.iterdir():
            tf.add(file, file.name)
    by_zip = load(Namespace("zipped"), zip_path)
    by_tar = load(Namespace("tarred"), tar_path)
    assert _notify(by_zip.modules["notifier_agent"]) == "<packed>packed:hi"
    assert _notify(by_tar.modules["notifier_agent"]) == "<packed>packed:hi"
    assert by_zip.digest == by_tar.digest == load(Namespace("plain"), folder).digest
    extracted = by_zip.bundle_path
    by_zip.unload()
    assert not extracted.exists()


def test_the_same_file_is_compiled_once_for_many_namespaces(
    write_bundle: WriteBundle, load: Load
) -> None:
    source = {"unique_for_cache_test.py": "def where():\n    1 / 0\n"}
    first, second = write_bundle(source), write_bundle(source)
    misses = code_cache.misses
    loaded = [load(Namespace(f"cache{i}"), first if i % 2 else second) for i in range(6)]
    assert code_cache.misses == misses + 1
    modules = [b.modules["unique_for_cache_test"] for b in loaded]
    assert len({id(m) for m in modules}) == 6
    for bundle, module in zip(loaded, modules, strict=True):
        with pytest.raises(ZeroDivisionError) as caught:
            module.where()
        frame_files = [entry.path for entry in caught.traceback]
        assert bundle.bundle_path / "unique_for_cache_test.py" in frame_files
    del modules


def test_loading_writes_no_bytecode_into_the_bundle(write_bundle: WriteBundle, load: Load) -> None:
    folder = _swarm(write_bundle, "clean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(Namespace("nopyc"), folder)
    assert not (folder / "__pycache__").exists()


def test_a_single_file_is_a_bundle_of_one_module(write_bundle: WriteBundle, load: Load) -> None:
    folder = write_bundle({"alone.py": "X = 1\n", "sibling.py": "raise RuntimeError('not me')\n"})
    loaded = load(Namespace("single"), folder / "alone.py")
    assert list(loaded.modules) == ["alone"]
    assert loaded.modules["alone"].X == 1


def test_a_bundle_that_replaces_the_import_function_is_undone_with_a_warning(
    write_bundle: WriteBundle, load: Load
) -> None:
    import builtins

    folder = write_bundle(
        {"hijack.py": "import builtins\nbuiltins.__import__ = lambda *a, **k: None\n"}
    )
    real = builtins.__import__
    with pytest.warns(BundleWarning, match=r"changed builtins\.__import__"):
        load(Namespace("hijack"), folder)
    assert builtins.__import__ is real
    import json as reimported

    assert reimported is json


POLLUTERS = {
    "adds a module under another namespace": (
        "import sys, types\nsys.modules['plughost_ns.t_victim.extra'] = types.ModuleType('fake')\n"
    ),
    "removes another namespace's module and puts another in its place": (
        "import sys, types\n"
        "del sys.modules['plughost_ns.t_victim.helpers']\n"
        "sys.modules['plughost_ns.t_victim.helpers'] = types.ModuleType('fake')\n"
    ),
    "plants a module under a namespace not loaded yet": (
        "import sys, types\n"
        "sys.modules['plughost_ns.t_later.helpers'] = types.ModuleType('planted')\n"
    ),
    "replaces the root package": (
        "import sys, types\nsys.modules['plughost_ns'] = types.ModuleType('plughost_ns')\n"
    ),
    "plants a module, then moves its own load's marker past it": (
        "import sys, types\n"
        "sys.modules['plughost_ns.t_later.helpers'] = types.ModuleType('planted')\n"
        "marker = next(k for k in sys.modules if k.startswith('plughost_ns._x__load_'))\n"
        "sys.modules[marker] = sys.modules.pop(marker)\n"
    ),
}


@pytest.mark.parametrize("case", list(POLLUTERS))
def test_a_bundle_that_writes_other_namespaces_keys_is_undone_and_refused(
    write_bundle: WriteBundle, load: Load, case: str
) -> None:
    victim = load(Namespace("victim"), _swarm(write_bundle, "victim"))
    keys_before = dict(sys.modules)
    polluter = write_bundle({"polluter.py": POLLUTERS[case]})

    with pytest.raises(ForeignModulesError) as caught:
        load(Namespace("polluter"), polluter)

    assert caught.value.keys and all(k.startswith("plughost_ns") for k in caught.value.keys)
    assert caught.value.keys[0] in str(caught.value)
    assert dict(sys.modules) == keys_before
    assert all(sys.modules[key] is module for key, module in keys_before.items())
    assert _notify(victim.modules["notifier_agent"]) == "<victim>victim:hi"
    later = load(Namespace("later"), _swarm(write_bundle, "later"))
    assert _notify(later.modules["notifier_agent"]) == "<later>later:hi"


IN_PLACE = {
    "replaces another namespace's module": (
        "import sys, types\n"
        "sys.modules['plughost_ns.t_victim.helpers'] = types.ModuleType('fake')\n"
    ),
    "asks the finder for it first, then replaces it": (
        "import importlib.util, sys, types\n"
        "sys.meta_path[0].find_spec('plughost_ns.t_victim.helpers')\n"
        "sys.modules['plughost_ns.t_victim.helpers'] = types.ModuleType('fake')\n"
    ),
    "removes another namespace's module": (
        "import sys\ndel sys.modules['plughost_ns.t_victim.helpers']\n"
    ),
}


@pytest.mark.parametrize("case", list(IN_PLACE))
def test_a_namespace_gets_its_own_module_back_where_its_code_imports_it(
    write_bundle: WriteBundle, load: Load, case: str
) -> None:
    # A load compares the host's keys and the keys added, not every namespace's: a key of
    # another namespace changed in place is found, and put back, by that namespace.
    victim = load(
        Namespace("victim"),
        write_bundle(
            {
                "helpers.py": "WORD = 'own'\n",
                "agent.py": "def word():\n    import helpers\n    return helpers.WORD\n",
            }
        ),
    )
    own = victim.modules["helpers"]
    load(Namespace("polluter"), write_bundle({"polluter.py": IN_PLACE[case]}))

    with pytest.warns(BundleWarning, match=r"t_victim\.helpers'\] had been removed or bound"):
        assert victim.modules["agent"].word() == "own"
    assert sys.modules["plughost_ns.t_victim.helpers"] is own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert victim.modules["agent"].word() == "own"
    victim.unload()
    assert "plughost_ns.t_victim.helpers" not in sys.modules


def test_keys_planted_before_a_namespace_loads_are_dropped_with_a_warning(
    write_bundle: WriteBundle, load: Load
) -> None:
    import types

    planted = types.ModuleType("planted")
    sys.modules["plughost_ns.t_target.helpers"] = planted
    with pytest.warns(BundleWarning, match=r"dropped sys\.modules keys .*t_target\.helpers"):
        target = load(Namespace("target"), _swarm(write_bundle, "real"))
    assert target.modules["helpers"] is not planted
    assert _notify(target.modules["notifier_agent"]) == "<real>real:hi"


def test_namespaces_loading_side_by_side_are_not_taken_for_polluters(
    write_bundle: WriteBundle, load: Load
) -> None:
    # Each load imports a slow module, so that every load overlaps the others.
    slow = "import time\ntime.sleep(0.05)\n"
    folders = [
        write_bundle({"a_slow.py": slow, "b.py": "X = 1\n", "c.py": "from b import X\n"})
        for _ in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda i: load(Namespace(f"side{i}"), folders[i]), range(8)))
    assert [bundle.modules["c"].X for bundle in loaded] == [1] * 8


HOST_TAMPERING = {
    "replaces a host module": (
        "import sys, types\nsys.modules['plughost.agent'] = types.ModuleType('spy')\n",
        ["plughost.agent"],
    ),
    "removes the host package": ("import sys\ndel sys.modules['plughost']\n", ["plughost"]),
    "removes a host module and a stdlib one": (
        "import sys\ndel sys.modules['plughost.agent']\ndel sys.modules['json']\n",
        ["json", "plughost.agent"],
    ),
    "replaces a stdlib module with one that claims to equal it": (
        "import sys, types\n"
        "class Lookalike(types.ModuleType):\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __hash__ = types.ModuleType.__hash__\n"
        "sys.modules['json'] = Lookalike('json')\n",
        ["json"],
    ),
    "replaces a host module, then fails": (
        "import sys, types\nsys.modules['plughost.agent'] = types.ModuleType('spy')\n"
        "raise RuntimeError('covering its tracks')\n",
        ["plughost.agent"],
    ),
    "replaces a host module with an unhashable object": (
        "import sys\nsys.modules['plughost.agent'] = {}\n",
        ["plughost.agent"],
    ),
}


@pytest.mark.parametrize("case", list(HOST_TAMPERING))
def test_a_bundle_that_changes_host_or_stdlib_modules_is_undone_and_refused(
    write_bundle: WriteBundle, load: Load, case: str
) -> None:
    source, keys = HOST_TAMPERING[case]
    victim = load(Namespace("victim"), _swarm(write_bundle, "victim"))
    keys_before = dict(sys.modules)

    with pytest.raises(ForeignModulesError) as caught:
        load(Namespace("tamperer"), write_bundle({"tamperer.py": source}))

    assert caught.value.keys == keys
    assert ", ".join(keys) in str(caught.value)
    assert all(sys.modules[key] is module for key, module in keys_before.items())
    assert sys.modules["plughost"] is plughost and sys.modules["plughost.agent"] is plughost.agent
    assert _notify(victim.modules["notifier_agent"]) == "<victim>victim:hi"
    later = load(Namespace("later"), _swarm(write_bundle, "later"))
    assert _notify(later.modules["notifier_agent"]) == "<later>later:hi"


def test_a_bundle_that_imports_stdlib_modules_for_the_first_time_loads(
    write_bundle: WriteBundle, load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [key for key in sys.modules if key == "xml" or key.startswith("xml.")]:
        monkeypatch.delitem(sys.modules, key)
    folder = write_bundle({"reader.py": "import xml.dom.minidom\nimport wave\n"})

    reader = load(Namespace("firsts"), folder).modules["reader"]

    assert sys.modules["xml.dom.minidom"] is reader.xml.dom.minidom
    assert sys.modules["wave"] is reader.wave


def test_a_finder_a_bundle_puts_first_is_taken_out_with_a_warning(
    write_bundle: WriteBundle, load: Load
) -> None:
    finders = list(sys.meta_path)
    folder = write_bundle(
        {
            "finder.py": (
                "import sys\n"
                "class First:\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        return None\n"
                "sys.meta_path.insert(0, First())\n"
            )
        }
    )

    with pytest.warns(BundleWarning, match=r"changed sys\.meta_path while loading"):
        load(Namespace("finders"), folder)

    assert sys.meta_path == finders


def test_an_object_that_is_no_module_under_its_own_key_does_not_stop_its_unload(
    write_bundle: WriteBundle, load: Load
) -> None:
    folder = write_bundle({"own.py": "import sys\nsys.modules[__name__ + '_cfg'] = 5\n"})
    bundle = load(Namespace("odd"), folder)
    assert sys.modules[bundle.package_name + ".own_cfg"] == 5

    report = bundle.unload()

    assert report.leaked == [] and bundle.package_name + ".own_cfg" not in sys.modules


BUILTINS_TAMPERER = {
    "tamper.py": "__builtins__['__import__'] = lambda *a, **k: None\n"
    "__builtins__['len'] = lambda obj: 42\n",
    "uses_len.py": "LENGTH = len([1])\n",
}
BUILTINS_VICTIM = {
    "victim.py": """
        import json
        LENGTH = len([1, 2])

        def at_call():
            import json as again
            return len([1, 2, 3]), again
    """
}


@pytest.mark.parametrize("first", ["tamperer", "victim"])
def test_a_bundle_that_writes_its_builtins_changes_only_its_own_namespace(
    write_bundle: WriteBundle, load: Load, first: str
) -> None:
    sources = {"tamperer": BUILTINS_TAMPERER, "victim": BUILTINS_VICTIM}
    order = [first, *(name for name in sources if name != first)]
    loaded = {
        name: load(Namespace(f"builtins-{name}"), write_bundle(sources[name])) for name in order
    }

    victim = loaded["victim"].modules["victim"]
    assert victim.LENGTH == 2 and victim.json is json
    assert victim.at_call() == (3, json)
    # The namespace's own modules share one mapping, so the change is its own to keep.
    assert loaded["tamperer"].modules["uses_len"].LENGTH == 42
    assert len([1]) == 1


class _Gates(types.ModuleType):
    """Events that bundle code waits on, so that two loads overlap in a chosen order."""

    def __init__(self) -> None:
        super().__init__("plughost_test_gates")
        self.events = {
            name: threading.Event() for name in ("running", "tampered", "release", "finish")
        }

    def reached(self, name: str) -> None:
        self.events[name].set()

    def wait(self, name: str) -> None:
        assert self.events[name].wait(10), f"gate {name!r} never opened"


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> _Gates:
    opened = _Gates()
    monkeypatch.setitem(sys.modules, opened.__name__, opened)
    return opened


SPY = "import sys, types\nsys.modules['plughost.agent'] = types.ModuleType('spy')\n"


def _in_thread(
    pool: ThreadPoolExecutor, load: Load, name: str, folder: Path
) -> Future[LoadedBundle]:
    return pool.submit(load, Namespace(name), folder)


def test_a_tamperer_is_refused_even_when_an_overlapping_load_saw_the_change_first(
    write_bundle: WriteBundle, load: Load, gates: _Gates
) -> None:
    bystander = write_bundle(
        {"waits.py": "import plughost_test_gates as g\ng.reached('running')\ng.wait('tampered')\n"}
    )
    tamperer = write_bundle(
        {
            "spy.py": SPY
            + "import plughost_test_gates as g\ng.reached('tampered')\ng.wait('release')\n"
        }
    )
    with ThreadPoolExecutor(2) as pool:
        bystanding = _in_thread(pool, load, "bystander", bystander)
        gates.wait("running")
        tampering = _in_thread(pool, load, "tamperer", tamperer)
        # Under way when the module was replaced, the bystander cannot be told from the tamperer.
        with pytest.raises(ForeignModulesError, match=r"plughost\.agent"):
            bystanding.result(timeout=10)
        gates.reached("release")
        with pytest.raises(ForeignModulesError) as caught:
            tampering.result(timeout=10)
    assert caught.value.keys == ["plughost.agent"]
    assert sys.modules["plughost.agent"] is plughost.agent


def test_a_load_that_began_after_a_change_is_not_refused_and_does_not_bring_it_back(
    write_bundle: WriteBundle, load: Load, gates: _Gates
) -> None:
    tamperer = write_bundle(
        {
            "spy.py": SPY
            + "import plughost_test_gates as g\ng.reached('tampered')\ng.wait('release')\n"
        }
    )
    latecomer = write_bundle(
        {"waits.py": "import plughost_test_gates as g\ng.reached('running')\ng.wait('finish')\n"}
    )
    with ThreadPoolExecutor(2) as pool:
        tampering = _in_thread(pool, load, "tamperer", tamperer)
        gates.wait("tampered")
        arriving = _in_thread(pool, load, "latecomer", latecomer)
        gates.wait("running")
        gates.reached("release")
        with pytest.raises(ForeignModulesError):
            tampering.result(timeout=10)
        # The latecomer saw the spy from its start, then the real module put back.
        gates.reached("finish")
        assert arriving.result(timeout=10).is_loaded
    assert sys.modules["plughost.agent"] is plughost.agent
