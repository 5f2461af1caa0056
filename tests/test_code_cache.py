"""Compiled code kept on disk by source digest: read by a new process, never stale."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from plughost._codecache import CodeCache

SOURCE = b"VALUE = 41 + 1\ndef answer():\n    return VALUE\n"


def _run(code: object) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(code, namespace)  # type: ignore[call-overload]
    return namespace


def test_a_new_cache_on_the_same_folder_reads_the_code_instead_of_compiling(
    tmp_path: Path,
) -> None:
    first = CodeCache()
    first.keep_on_disk(tmp_path)
    first.code_for(SOURCE, "/bundle/a.py")
    assert (first.misses, first.disk_hits) == (1, 0)

    second = CodeCache()
    second.keep_on_disk(tmp_path)
    code = second.code_for(SOURCE, "/elsewhere/a.py")
    assert (second.misses, second.disk_hits) == (0, 1)
    assert code.co_filename == "/elsewhere/a.py"
    assert _run(code)["answer"]() == 42  # type: ignore[operator]


def test_changed_source_is_compiled_again_never_served_stale(tmp_path: Path) -> None:
    cache = CodeCache()
    cache.keep_on_disk(tmp_path)
    cache.code_for(SOURCE, "/bundle/a.py")
    fresh = CodeCache()
    fresh.keep_on_disk(tmp_path)
    code = fresh.code_for(SOURCE.replace(b"41", b"57"), "/bundle/a.py")
    assert (fresh.misses, fresh.disk_hits) == (1, 0)
    assert _run(code)["VALUE"] == 58


def test_a_damaged_entry_is_removed_and_the_source_compiled(tmp_path: Path) -> None:
    CodeCache().code_for(SOURCE, "/bundle/a.py")  # memory only: writes nothing
    assert list(tmp_path.iterdir()) == []
    writer = CodeCache()
    writer.keep_on_disk(tmp_path)
    writer.code_for(SOURCE, "/bundle/a.py")
    [entry] = [path for path in tmp_path.glob("*/*")]
    for damage in (entry.read_bytes()[:-5], b"x" * 40 + entry.read_bytes()[40:]):
        entry.write_bytes(damage)
        reader = CodeCache()
        reader.keep_on_disk(tmp_path)
        code = reader.code_for(SOURCE, "/bundle/a.py")
        assert (reader.misses, reader.disk_hits) == (1, 0)
        assert _run(code)["VALUE"] == 42
        assert entry.exists()  # written again by the compile


def test_past_its_bound_the_folder_keeps_the_newest_half(tmp_path: Path) -> None:
    writer = CodeCache(max_files=1000)
    writer.keep_on_disk(tmp_path)
    for n in range(12):
        writer.code_for(f"X = {n}\n".encode(), "/bundle/a.py")
    assert len(list(tmp_path.glob("*/*"))) == 12
    CodeCache(max_files=10).keep_on_disk(tmp_path)  # at start
    assert len(list(tmp_path.glob("*/*"))) == 5

    running = CodeCache(max_files=10)
    running.keep_on_disk(tmp_path)
    for n in range(100, 140):  # while it runs, too
        running.code_for(f"X = {n}\n".encode(), "/bundle/a.py")
        assert len(list(tmp_path.glob("*/*"))) <= 10 + 10 // 2


def test_a_restarted_network_loads_its_tenants_from_compiled_code(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "greeter_agent.py").write_text(
        "from agents.basic_agent import BasicAgent\n"
        "class Greeter(BasicAgent):\n"
        "    name = 'Greeter'\n"
        "    def perform(self, **kwargs):\n"
        "        return 'hello'\n"
    )
    child = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.dont_write_bytecode = True
        from plughost import Network
        from plughost.loader import code_cache

        async def main():
            async with Network({str(tmp_path / "data")!r}) as network:
                if sys.argv[1] == "deploy":
                    await network.deploy("acme", {str(bundle)!r})
                output = await network.call_agent("acme", "Greeter", {{}})
            print(json.dumps({{"output": output, "misses": code_cache.misses,
                               "disk_hits": code_cache.disk_hits}}))

        asyncio.run(main())
        """
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", child, step], capture_output=True, text=True, check=True
            ).stdout
        )
        for step in ("deploy", "restart")
    ]
    assert runs[0]["output"] == runs[1]["output"] == "hello"
    assert runs[0]["misses"] >= 1
    assert (runs[1]["misses"], runs[1]["disk_hits"]) == (0, runs[0]["misses"])
