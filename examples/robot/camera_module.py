"""A robot's camera: each shot is published to its tenant's "camera" topic."""

from plughost import Mod, rpc


class CameraMod(Mod):
    def initialize(self):
        self.shots = 0

    @rpc
    async def shoot(self):
        self.shots += 1
        frame = f"{self.tenant}-frame-{self.shots}"
        await self.publish("camera", {"frame": frame})  # /robot1/camera in tenant robot1
        await self.publish("status", {"robot": self.tenant, "shots": self.shots})  # exposed
        return frame

    @rpc
    def settings(self):
        return {"fps": self.config["fps"], "shots": self.shots}
