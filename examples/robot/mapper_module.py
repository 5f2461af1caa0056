"""A robot's mapper: it keeps the frames of its own robot's camera."""

from plughost import Mod, on, rpc


class MapperMod(Mod):
    def initialize(self):
        self.frames = []

    @on("topic:camera")  # /<tenant>/camera: only this robot's camera
    def frame(self, event):
        self.frames.append(event.payload["frame"])

    @rpc
    def seen(self):
        return list(self.frames)

    @rpc
    async def camera_settings(self):
        return await self.rpc("camera", "settings")  # this robot's camera, by its bare name
