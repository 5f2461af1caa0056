"""What just happened in a network: a bounded record of its changes, and who follows it live.

Deploys and swaps, snapshots, seals, removals, mod loads and unloads,
instance restarts, worker state changes (a crash, a restart, a failure) and
refused requests each become an :class:`Entry`. The feed keeps the latest
ones and hands each new one to every follower (the operator page's live
feed, ``GET /api/feed``).

Every entry says who may see it: a tenant's own entries are seen by the
tenant and the admin; a global mod's by everyone with a token (as health
shows global mods to every tenant); the network's own (a request refused
without a valid token) by the admin only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

KEEP = 1000
"""Entries kept, newest last; a follower that joins late replays from them."""
KEEP_REFUSALS = 200
"""Refused requests kept, apart: a flood of them pushes out no other entry."""
_FOLLOWER_BACKLOG = 1000  # entries a slow follower may fall behind before it is cut off


class Seen(enum.Enum):
    """Who may see an entry."""

    TENANT = "tenant"  # its tenant and the admin
    EVERYONE = "everyone"  # every token: global mods
    ADMIN = "admin"  # the admin only


@dataclass(frozen=True)
class Entry:
    """One change: its number in the feed, when, what kind, whose, and what, in words."""

    id: int
    at: float
    kind: str
    tenant: str | None
    message: str
    seen: Seen

    def visible_to(self, confine_to: str | None) -> bool:
        """Whether the caller (``None``: the admin; else a tenant) may see it."""
        if confine_to is None:
            return True
        if self.seen is Seen.TENANT:
            return self.tenant == confine_to
        return self.seen is Seen.EVERYONE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "tenant": self.tenant,
            "message": self.message,
        }


REFUSED = "refused"
"""The kind of a refused request's entry."""

Publish = Callable[[str, str | None, str], None]
"""How a part of the network tells the feed of a change: ``(kind, tenant, message)``."""


class Feed:
    """The latest entries of one network, and its live followers.

    Only the event loop's thread publishes and follows.
    """

    def __init__(self, keep: int = KEEP) -> None:
        self._entries: deque[Entry] = deque(maxlen=keep)
        self._refusals: deque[Entry] = deque(maxlen=KEEP_REFUSALS)
        # From the clock: a page that follows across a restart of the server asks for the
        # entries past its last one, and the new ones are past it.
        self._ids = itertools.count(time.time_ns() // 1000)
        self._followers: dict[asyncio.Queue[Entry | None], str | None] = {}

    def publish(self, kind: str, tenant: str | None, message: str) -> None:
        """Record a change of ``tenant``'s (``None``: a global mod's, seen by everyone)."""
        self._add(kind, tenant, message, Seen.TENANT if tenant is not None else Seen.EVERYONE)

    def publish_for_admin(self, kind: str, tenant: str | None, message: str) -> None:
        """Record a change only the admin sees (and ``tenant``, if named)."""
        self._add(kind, tenant, message, Seen.TENANT if tenant is not None else Seen.ADMIN)

    def _add(self, kind: str, tenant: str | None, message: str, seen: Seen) -> None:
        entry = Entry(next(self._ids), time.time(), kind, tenant, message, seen)
        (self._refusals if kind == REFUSED else self._entries).append(entry)
        for follower, confine_to in list(self._followers.items()):
            if not entry.visible_to(confine_to):
                continue
            if follower.qsize() >= _FOLLOWER_BACKLOG:
                # Too far behind: it is ended (the end has a place of its own in its queue),
                # and its client reconnects from the last entry it read.
                del self._followers[follower]
                follower.put_nowait(None)
            else:
                follower.put_nowait(entry)

    def forget(self, tenant: str) -> None:
        """A removed tenant, or one whose token was replaced: its entries go, and whoever
        follows it now stops (a new token, or a new tenant of the name, starts afresh)."""
        for kept in (self._entries, self._refusals):
            mine = [entry for entry in kept if entry.tenant == tenant]
            for entry in mine:
                kept.remove(entry)
        for follower, confine_to in list(self._followers.items()):
            if confine_to == tenant:
                del self._followers[follower]
                with contextlib.suppress(asyncio.QueueFull):
                    follower.put_nowait(None)

    def following(self, confine_to: str | None) -> int:
        """How many follow the feed as the caller (``None``: the admin) now."""
        return sum(1 for each in self._followers.values() if each == confine_to)

    def recent(self, confine_to: str | None, after: int = 0) -> list[Entry]:
        """The kept entries the caller may see, numbered past ``after``, oldest first."""
        kept = heapq.merge(self._entries, self._refusals, key=lambda entry: entry.id)
        return [e for e in kept if e.id > after and e.visible_to(confine_to)]

    async def follow(self, confine_to: str | None, after: int = 0) -> AsyncGenerator[Entry, None]:
        """The kept entries past ``after`` the caller may see, then each new one as it comes;
        ends when the follower falls too far behind."""
        queue: asyncio.Queue[Entry | None] = asyncio.Queue(_FOLLOWER_BACKLOG + 1)
        self._followers[queue] = confine_to
        try:
            last = after
            for entry in self.recent(confine_to, after):
                last = entry.id
                yield entry
            while True:
                coming = await queue.get()
                if coming is None:
                    return
                if coming.id > last and coming.visible_to(confine_to):
                    yield coming
        finally:
            self._followers.pop(queue, None)
