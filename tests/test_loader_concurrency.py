"""Concurrent loads: one load per namespace, and no waiting across namespaces."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from plughost import Namespace, NamespaceConflictError
from plughost.loader import LoadedBundle, load_bundle

from .conftest import Load, WriteBundle

COUNTING_MODULE = """
from pathlib import Path
import time
time.sleep(0.05)  # widen the window in which other threads ask for the same namespace
with open(Path(__file__).parent / "executions.log", "a") as log:
    log.write("run\\n")
"""


def test_many_threads_loading_one_namespace_load_it_once(write_bundle: WriteBundle) -> None:
    folder = write_bundle({"counted.py": COUNTING_MODULE})
    start = threading.Barrier(50)

    def load_once() -> LoadedBundle:
        start.wait()
        return load_bundle(Namespace("single"), folder)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: load_once(), range(50)))

    assert len({id(loaded) for loaded in results}) == 1
    assert (folder / "executions.log").read_text().count("run") == 1
    results[0].unload(verify=False)


@pytest.fixture
def gate() -> ModuleType:
    """A module bundle code can import to block until the test opens it."""
    module = ModuleType("plughost_test_gate")
    module.opened = threading.Event()  # type: ignore[attr-defined]
    module.entered = threading.Event()  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    module.opened.set()  # type: ignore[attr-defined]
    del sys.modules[module.__name__]


def test_a_slow_namespace_does_not_block_loads_of_others(
    write_bundle: WriteBundle, load: Load, gate: ModuleType
) -> None:
    slow = write_bundle(
        {"slow.py": "import plughost_test_gate as g\ng.entered.set()\ng.opened.wait()\n"}
    )
    fast = write_bundle({"fast.py": "X = 1\n"})
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_bundle, Namespace("slow"), slow)
        assert gate.entered.wait(timeout=30)
        assert load(Namespace("fast"), fast).modules["fast"].X == 1
        assert not pending.done()
        gate.opened.set()
        pending.result().unload(verify=False)


def test_loading_a_loaded_namespace_again(write_bundle: WriteBundle, load: Load) -> None:
    first = write_bundle({"m.py": "X = 1\n"})
    loaded = load(Namespace("again"), first)
    assert load_bundle(Namespace("again"), write_bundle({"m.py": "X = 1\n"})) is loaded
    with pytest.raises(NamespaceConflictError, match="already loaded") as caught:
        load_bundle(Namespace("again"), write_bundle({"m.py": "X = 2\n"}))
    assert caught.value.loaded_digest == loaded.digest


def test_concurrent_loads_of_different_namespaces_each_get_their_own(
    write_bundle: WriteBundle,
) -> None:
    folders: list[Path] = [write_bundle({"who.py": f"WHO = {i}\n"}) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda i: load_bundle(Namespace(f"par{i}"), folders[i]), range(16)))
    assert [b.modules["who"].WHO for b in loaded] == list(range(16))
    for bundle in loaded:
        assert bundle.unload().leaked == []
