"""Unload removes every module of a namespace and proves they were freed."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from types import ModuleType

import pytest

from plughost import Namespace
from plughost.loader import load_bundle, loaded_namespaces

from .conftest import WriteBundle, namespace_keys

BUNDLE = {
    "agent.py": """
        import helpers
        from pkg.sub import thing
        class Thing:
            def method(self):
                return helpers.value() + thing()
        INSTANCE = Thing()
        CACHE = {"self": INSTANCE}
    """,
    "helpers.py": "def value():\n    return 1\n",
    "pkg/__init__.py": "",
    "pkg/sub.py": "def thing():\n    return 2\n",
}


def test_unload_removes_every_module_and_frees_them(write_bundle: WriteBundle) -> None:
    ns = Namespace("unload")
    loaded = load_bundle(ns, write_bundle(BUNDLE))
    assert loaded.modules["agent"].INSTANCE.method() == 3
    watched = [weakref.ref(module) for module in loaded.modules.values()]

    report = loaded.unload()

    assert report.leaked == [] and report.verified
    assert sorted(report.modules) == sorted(
        [ns.package_name] + [ns.module_name(s) for s in ("agent", "helpers", "pkg", "pkg.sub")]
    )
    assert namespace_keys() == set()
    assert all(ref() is None for ref in watched)
    assert loaded.modules == {} and not loaded.is_loaded
    assert loaded_namespaces() == []
    assert not hasattr(sys.modules["plughost_ns"], ns.package_name.split(".")[1])


def test_unload_takes_the_keys_a_load_added_by_hand_and_leaves_every_other(
    write_bundle: WriteBundle,
) -> None:
    other = load_bundle(Namespace("bystander"), write_bundle({"agent.py": "X = 1\n"}))
    planting = {
        "agent.py": """
            import sys, types
            sys.modules[__package__ + ".made_by_hand"] = types.ModuleType("made_by_hand")
        """
    }
    ns = Namespace("planter")
    loaded = load_bundle(ns, write_bundle(planting))
    assert ns.module_name("made_by_hand") in sys.modules

    report = loaded.unload()

    assert ns.module_name("made_by_hand") in report.modules and report.leaked == []
    assert namespace_keys() == {other.package_name, other.package_name + ".agent"}
    assert other.is_loaded and sys.modules[other.package_name + ".agent"].X == 1
    other.unload()


def test_a_key_its_code_set_by_hand_during_a_call_goes_at_the_next_sweep(
    write_bundle: WriteBundle,
) -> None:
    late = {
        "agent.py": """
            import sys, types
            def plant():
                sys.modules[__package__ + ".late"] = types.ModuleType("late")
        """
    }
    ns = Namespace("late_planter")
    loaded = load_bundle(ns, write_bundle(late))
    loaded.modules["agent"].plant()
    loaded.unload()
    for n in range(32):  # the sweep comes after as many unloads (32 at least)
        load_bundle(Namespace(f"passer{n}"), write_bundle({"a.py": "X = 1\n"})).unload()
    assert namespace_keys() == set()


def test_unloading_twice_returns_an_empty_report(write_bundle: WriteBundle) -> None:
    loaded = load_bundle(Namespace("twice"), write_bundle(BUNDLE))
    assert loaded.unload().modules
    again = loaded.unload()
    assert again.modules == [] and again.leaked == []


def test_after_unload_the_namespace_loads_the_new_code(write_bundle: WriteBundle) -> None:
    ns = Namespace("reload")
    old = load_bundle(ns, write_bundle({"m.py": "X = 'old'\n"}))
    old.unload()
    new = load_bundle(ns, write_bundle({"m.py": "X = 'new'\n"}))
    assert new.modules["m"].X == "new"
    new.unload()


@pytest.fixture
def registry() -> Iterator[ModuleType]:
    """A shared, non-bundle module with a global list: where leaked objects get stashed."""
    module = ModuleType("plughost_test_registry")
    module.REGISTRY = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_an_object_stashed_in_a_global_registry_is_reported(
    write_bundle: WriteBundle, registry: ModuleType
) -> None:
    folder = write_bundle(
        {
            "leaky.py": """
                import plughost_test_registry
                class Handler:
                    pass
                plughost_test_registry.REGISTRY.append(Handler())
            """,
            "clean.py": "X = 1\n",
        }
    )
    ns = Namespace("leaky")
    loaded = load_bundle(ns, folder)
    handler_class = weakref.ref(loaded.modules["leaky"].Handler)

    report = loaded.unload()

    assert [leak.module_name for leak in report.leaked] == [ns.module_name("leaky")]
    holders = report.leaked[0].holders
    assert "global 'REGISTRY' of module plughost_test_registry" in holders, holders
    assert namespace_keys() == set()

    registry.REGISTRY.clear()  # type: ignore[attr-defined]
    gc.collect()
    assert handler_class() is None


def test_a_running_thread_of_bundle_code_is_reported(write_bundle: WriteBundle) -> None:
    folder = write_bundle(
        {
            "threaded.py": """
                import threading
                STOP = threading.Event()
                def work():
                    STOP.wait()
                WORKER = threading.Thread(target=work, name="bundle-worker", daemon=True)
                WORKER.start()
            """
        }
    )
    loaded = load_bundle(Namespace("threaded"), folder)
    stop, worker = loaded.modules["threaded"].STOP, loaded.modules["threaded"].WORKER

    report = loaded.unload()

    assert len(report.leaked) == 1
    holders = report.leaked[0].holders
    assert any("work()" in h and "'bundle-worker'" in h for h in holders), holders
    stop.set()
    worker.join()


def test_a_module_kept_by_the_caller_is_reported(write_bundle: WriteBundle) -> None:
    loaded = load_bundle(Namespace("kept"), write_bundle({"m.py": "X = 1\n"}))
    kept = loaded.modules["m"]
    report = loaded.unload()
    assert [leak.module_name for leak in report.leaked] == [kept.__name__]
    holders = report.leaked[0].holders
    assert any(h.startswith("local 'kept' of test_a_module_kept_by_the_caller") for h in holders)


def test_unload_without_verification_skips_the_check(write_bundle: WriteBundle) -> None:
    loaded = load_bundle(Namespace("quick"), write_bundle({"m.py": "X = 1\n"}))
    kept = loaded.modules["m"]
    report = loaded.unload(verify=False)
    assert report.verified is False and report.leaked == []
    assert kept.X == 1 and namespace_keys() == set()
