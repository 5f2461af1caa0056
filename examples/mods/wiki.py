"""A wiki mod: events edit its pages, RPC reads them, and it listens to the /status topic."""

from plughost import Event, EventResponse, Mod, on, rpc


class WikiMod(Mod):
    def initialize(self):  # sync or async; False or raising fails the load
        self.pages = {}
        self.statuses = []

    @on("wiki.*")  # events whose name matches
    async def edit(self, event: Event) -> EventResponse:
        self.pages[event.payload["title"]] = event.payload["text"]
        return EventResponse(success=True, data={"pages": len(self.pages)})

    @on("topic:status")  # a topic, resolved against the mod's tenant: /status for a global mod
    def status(self, event: Event) -> None:
        self.statuses.append(event.payload)

    @rpc
    def page(self, title):
        return self.pages.get(title)

    @rpc
    def statuses_seen(self):
        return list(self.statuses)
