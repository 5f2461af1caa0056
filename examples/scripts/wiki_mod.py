"""The wiki mod (examples/mods/wiki.py): load it, edit by event, read by RPC, feed its topic."""

import asyncio
import tempfile
from pathlib import Path

from plughost import Event, Network

MODS = Path(__file__).resolve().parent.parent / "mods"


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        # Mods load only from the mod roots; this adds the examples' mods to the built-in ones.
        async with Network(data, mod_roots=["plughost.mods", MODS]) as network:
            await network.load_mod("wiki")
            edit = Event(
                event_name="wiki.edit",
                destination_id="mod:wiki",
                payload={"title": "Home", "text": "Welcome"},
            )
            response = await network.send_event(edit)
            print("edit:", response.success, response.data)
            print("page Home:", await network.rpc("wiki", "page", "Home"))
            await network.publish("/status", {"robot": "robot1", "shots": 1})
            print("statuses:", await network.rpc("wiki", "statuses_seen"))
            report = await network.unload_mod("wiki")
            print("unloaded:", report.message)


asyncio.run(main())
