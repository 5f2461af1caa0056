"""One bundle (examples/robot) deployed as robot1 and robot2; robot1's camera restarted alone."""

import asyncio
import tempfile
from pathlib import Path

from plughost import Network

ROBOT = Path(__file__).resolve().parent.parent / "robot"


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        async with Network(data) as network:
            for robot in ("robot1", "robot2"):
                await network.deploy(robot, ROBOT)
            print("instances:", sorted(i["rpc_name"] for i in network.instances()))
            for robot in ("robot1", "robot2"):
                print(f"{robot}/camera shoots:", await network.rpc(f"{robot}/camera", "shoot"))
            # Each mapper hears its own robot's "camera" topic only.
            print("robot1/mapper saw:", await network.rpc("robot1/mapper", "seen"))
            print("robot2/mapper saw:", await network.rpc("robot2/mapper", "seen"))

            await network.restart("robot1/camera")  # a fresh instance; robot2 is not touched
            print("robot1/camera after restart:", await network.rpc("robot1/camera", "settings"))
            print("robot2/camera:", await network.rpc("robot2/camera", "settings"))
            # Inside robot2, the bare name "camera" is robot2's camera.
            print("robot2/mapper:", await network.rpc("robot2/mapper", "camera_settings"))


asyncio.run(main())
