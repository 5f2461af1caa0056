"""Events, their responses, handler declarations and topic names.

An event names what happened (``shared_cache.set``) and where it should go
(``destination_id``): ``system:system``, ``mod:<mod_id>``,
``agent:<tenant>/<agent>``, ``topic:<name>``, or nothing, which delivers it
to every handler whose pattern matches ``event_name``, except that a
``system.*`` event without a destination goes to the network itself, as with
``system:system``.

Handlers are methods marked with :func:`on`. A pattern is matched against
``event_name`` with shell wildcards (``*`` also matches dots:
``shared_cache.*`` matches ``shared_cache.set``). A pattern ``topic:<name>``
subscribes to a topic instead.

Topics are resolved against a namespace path: ``camera`` published by a mod
of tenant ``robot1`` is ``/robot1/camera``; a name starting with ``/`` is
absolute; a global mod's ``camera`` is ``/camera``. A tenant's mods reach
their own tenant's topics and the shared topics the admin allows, and may
also publish to the ones their manifest entry exposes; nothing else
(:func:`topic_allowed`).
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import OutsideTenantError
from .naming import TENANT_NAME_PATTERN

EVENT_NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_TOPIC_PREFIX = "topic:"
_ON_ATTRIBUTE = "__plughost_on__"

F = TypeVar("F", bound=Callable[..., Any])


class Event(BaseModel):
    """A message between agents, mods and the network."""

    model_config = ConfigDict(extra="forbid")

    event_name: str = Field(
        pattern=EVENT_NAME_PATTERN,
        max_length=256,
        description="dotted words of letters, digits, '_' or '-', e.g. shared_cache.set",
    )
    source_id: str = Field(default="system", max_length=256)
    destination_id: str | None = Field(default=None, max_length=512)
    payload: dict[str, Any] = Field(default_factory=dict)
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, max_length=128)
    timestamp: float = Field(default_factory=time.time)
    tenant: str | None = Field(default=None, pattern=TENANT_NAME_PATTERN)


class EventResponse(BaseModel):
    """The answer to one event: whether it succeeded, a message, and data."""

    success: bool
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


def on(pattern: str) -> Callable[[F], F]:
    """Mark a method as the handler of events matching ``pattern`` (or of ``topic:<name>``).

    The method takes the :class:`Event` and returns an :class:`EventResponse`,
    a dict (the response data), or ``None`` (success); it may be async.

    Raises:
        ValueError: the pattern is empty.
    """
    if not pattern or pattern == _TOPIC_PREFIX:
        raise ValueError("a handler pattern must not be empty")

    def mark(method: F) -> F:
        patterns: list[str] = getattr(method, _ON_ATTRIBUTE, [])
        setattr(method, _ON_ATTRIBUTE, [*patterns, pattern])
        return method

    return mark


def handlers_of(obj: object) -> list[tuple[str, Callable[..., Any]]]:
    """Return ``(pattern, bound method)`` for every handler ``obj``'s class declares."""
    found = []
    for name in dir(type(obj)):
        function = getattr(type(obj), name, None)
        for pattern in getattr(function, _ON_ATTRIBUTE, ()):
            found.append((pattern, getattr(obj, name)))
    return found


def is_topic_pattern(pattern: str) -> bool:
    return pattern.startswith(_TOPIC_PREFIX)


def topic_of(pattern: str) -> str:
    """The topic name of a ``topic:<name>`` pattern."""
    return pattern[len(_TOPIC_PREFIX) :]


def matches(pattern: str, event_name: str) -> bool:
    """Whether an event named ``event_name`` goes to a handler of ``pattern``."""
    return not is_topic_pattern(pattern) and fnmatch.fnmatchcase(event_name, pattern)


def resolve_topic(topic: str, namespace_path: str | None) -> str:
    """Return the absolute topic name of ``topic`` as seen from ``namespace_path``.

    Raises:
        ValueError: the topic is empty.
    """
    if not topic.strip("/"):
        raise ValueError("a topic name must not be empty")
    if topic.startswith("/"):
        return topic
    return f"/{namespace_path}/{topic}" if namespace_path else f"/{topic}"


def topic_allowed(
    topic: str, tenant: str | None, exposed: Iterable[str], shared: Collection[str]
) -> bool:
    """Whether a mod of ``tenant`` may subscribe or publish to the absolute ``topic``.

    A global mod (``tenant`` None) may use any; a tenant's mod those under
    ``/<tenant>/``, ``/<name>`` for each name its manifest entry ``exposed``,
    and the ``shared`` topics.
    """
    if tenant is None or topic.startswith(f"/{tenant}/") or topic in shared:
        return True
    return any(topic == f"/{name}" for name in exposed)


def as_response(result: object) -> EventResponse:
    """Turn what a handler returned into an :class:`EventResponse`."""
    if isinstance(result, EventResponse):
        return result
    if result is None:
        return EventResponse(success=True)
    if isinstance(result, dict):
        return EventResponse(success=True, data=result)
    return EventResponse(success=True, data={"result": result})


def check_shared_topics(topics: list[str]) -> list[str]:
    """``topics``, each checked to be an absolute topic name.

    Raises:
        ValueError: one is not.
    """
    for topic in topics:
        if not (isinstance(topic, str) and topic.startswith("/") and topic.strip("/")):
            raise ValueError(
                f"a shared topic is an absolute topic name like '/clock', not {topic!r}"
            )
    return topics


def confine_event(event: Event, tenant: str, shared_topics: frozenset[str]) -> Event:
    """The event as ``tenant`` may send it: acting in that tenant, reaching nothing outside.

    Raises:
        OutsideTenantError: it names another tenant's tenant, agent, mod or topic.
    """
    if event.tenant not in (None, tenant):
        raise OutsideTenantError(tenant, str(event.tenant))
    destination = event.destination_id or ""
    kind, _, target = destination.partition(":")
    if kind == "agent" and target.partition("/")[0] != tenant:
        raise OutsideTenantError(tenant, destination)
    if kind == "mod" and "/" in target and target.partition("/")[0] != tenant:
        raise OutsideTenantError(tenant, destination)
    if (
        kind == "topic"
        and target
        and not topic_allowed(resolve_topic(target, tenant), tenant, (), shared_topics)
    ):
        raise OutsideTenantError(tenant, destination)
    payload = dict(event.payload)
    if kind == "system" or event.event_name.startswith("system."):
        named = payload.get("tenant", event.tenant)
        if named != tenant:
            # A tenant names itself: a system event without a tenant acts on the whole network.
            raise OutsideTenantError(tenant, "the network" if named is None else str(named))
        payload["tenant"] = tenant
    return event.model_copy(update={"tenant": tenant, "payload": payload})
