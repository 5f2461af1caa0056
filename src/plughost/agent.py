"""Agents: named, described, callable units of tenant code, and a namespace's loaded agents."""

from __future__ import annotations

import abc
import contextlib
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, overload

import fastjsonschema
import jsonschema
from jsonschema.protocols import Validator

from .errors import BundleWarning, DuplicateAgentError, PlughostError
from .events import handlers_of, is_topic_pattern
from .loader import Libraries, LoadedBundle, load_bundle, load_error
from .naming import Namespace
from .storage import Storage
from .storage import current as current_storage


class _CallStorage:
    """``Agent.storage``: the running call's state. Only read: an agent file written for
    another host that sets its own ``self.storage`` keeps what it set."""

    @overload
    def __get__(self, instance: None, owner: type) -> _CallStorage: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Storage: ...
    def __get__(self, instance: object, owner: type | None = None) -> Storage | _CallStorage:
        if instance is None:
            return self
        try:
            return current_storage()
        except RuntimeError as exc:  # so that hasattr() and getattr(..., default) hold
            raise AttributeError(str(exc)) from None


class Agent(abc.ABC):
    """An agent: a class in a bundle with ``name``, ``metadata`` and ``perform``.

    ``metadata`` follows the common tool shape: ``{"name", "description",
    "parameters": <JSON schema of the keyword arguments>}``. ``perform`` may be
    sync or async and returns a string or JSON-able data.

    Bundles written for other agent hosts call ``super().__init__(name=...,
    metadata=...)``; both keywords are accepted and override the class values.
    """

    name: ClassVar[str] = ""
    metadata: ClassVar[dict[str, Any]] = {}
    storage = _CallStorage()
    """The state of the call running now, a :class:`~plughost.storage.Storage`."""

    def __init__(self, name: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        if name is not None:
            self.name = name  # type: ignore[misc]
        if metadata is not None:
            self.metadata = metadata  # type: ignore[misc]

    @abc.abstractmethod
    def perform(self, **kwargs: Any) -> Any:
        """Run the agent with the keyword arguments its ``parameters`` describe."""

    def to_tool(self) -> dict[str, Any]:
        """Return the OpenAI-style tool description of this agent."""
        parameters = self.metadata.get("parameters") or {"type": "object", "properties": {}}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.metadata.get("description", ""),
                "parameters": parameters,
            },
        }


BasicAgent = Agent
"""The name existing agent files import (``from agents.basic_agent import BasicAgent``)."""


def agent_name(agent: Agent) -> str:
    """The name an agent is called and listed by: what its instance's ``name`` is once
    ``__init__`` has run (what :meth:`Agent.to_tool` says), else ``metadata["name"]``,
    else the class name."""
    name = agent.name if isinstance(agent.name, str) else ""
    return name or str(agent.metadata.get("name") or "") or type(agent).__name__


def find_agent_classes(modules: Mapping[str, ModuleType]) -> list[tuple[str, type[Agent]]]:
    """The agent classes that ``modules`` define, with the stem of the module of each.

    A class counts in the module that defines it, not in modules that import
    it; abstract classes (``Agent`` itself, ``BasicAgent``) do not count.
    """
    return [
        (stem, value)
        for stem, module in modules.items()
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Agent)
        and value.__module__ == module.__name__
        and not inspect.isabstract(value)
    ]


@dataclass(frozen=True)
class AgentInfo:
    """An agent as listed: its name, description and OpenAI-style tool description."""

    name: str
    description: str
    tool: dict[str, Any]


@dataclass(frozen=True)
class AgentInstance:
    """An agent of a loaded namespace, instantiated once and reused by every call.

    ``handlers`` are its ``@on`` event handlers, as ``(pattern, bound method)``;
    ``arguments`` checks a call's arguments against its ``parameters`` (``None``:
    it declares none, or its schema is not valid).
    """

    name: str
    instance: Agent
    is_async: bool
    handlers: list[tuple[str, Callable[..., Any]]]
    arguments: ArgumentsSchema | None = None
    check: Callable[[Mapping[str, Any]], str | None] = field(init=False, repr=False)
    """What is wrong with a call's arguments for this agent (the first problem), or
    ``None``: the schema's own check, one call less on every agent call."""

    def __post_init__(self) -> None:
        check = _no_problem if self.arguments is None else self.arguments.problem
        object.__setattr__(self, "check", check)


def _no_problem(args: Mapping[str, Any]) -> None:
    return None


# The drafts the compiled check implements; a schema of a later one is checked by jsonschema.
_COMPILED_DRAFTS = ("draft-04", "draft-06", "draft-07")


class ArgumentsSchema:
    """An agent's ``parameters`` schema, ready to check the arguments of every call.

    A call's arguments are checked by code compiled from the schema once
    (fastjsonschema: about a microsecond); only arguments it refuses are
    checked again by jsonschema, whose verdict is the one that counts and
    whose best match names the problem.

    Raises:
        jsonschema.SchemaError: the schema itself is not valid.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        remote = _remote_ref(schema)
        if remote is not None:
            # Both libraries would fetch it, at load or at a call: the host reaches out for
            # a tenant, and may hang on it.
            raise jsonschema.SchemaError(f"$ref {remote!r} points outside the schema")
        kind = jsonschema.validators.validator_for(schema)
        kind.check_schema(schema)
        self._full: Validator = kind(schema)
        self._fast: Callable[[Any], Any] | None = None
        declared = schema.get("$schema", "draft-07")
        if isinstance(declared, str) and any(draft in declared for draft in _COMPILED_DRAFTS):
            # One it cannot compile (a pattern in another regex dialect) is checked
            # by jsonschema alone.
            with contextlib.suppress(Exception):
                self._fast = fastjsonschema.compile(schema)

    def problem(self, args: Mapping[str, Any]) -> str | None:
        """The first thing wrong with ``args``, or ``None``."""
        if self._fast is not None:
            try:
                self._fast(args)
                return None
            except fastjsonschema.JsonSchemaValueException:
                pass
        error = jsonschema.exceptions.best_match(self._full.iter_errors(dict(args)))
        if error is None:
            return None
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        return f"arguments{where}: {error.message}"


def _remote_ref(schema: object) -> str | None:
    """The first ``$ref`` of ``schema`` that is not a pointer into the schema itself."""
    pending = [schema]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return None


def arguments_validator(agent: Agent) -> ArgumentsSchema | None:
    """The check of the keyword arguments ``agent``'s ``parameters`` schema describes.

    An object schema that lists ``properties`` and says nothing of
    ``additionalProperties`` refuses other names: ``perform(**kwargs)`` would
    take a misspelled argument silently.

    Raises:
        jsonschema.SchemaError: the schema itself is not valid.
    """
    schema = agent.metadata.get("parameters") if isinstance(agent.metadata, dict) else None
    if not isinstance(schema, dict) or not schema:
        return None
    if "properties" in schema and "additionalProperties" not in schema:
        schema = {**schema, "additionalProperties": False}
    return ArgumentsSchema(schema)


@dataclass(eq=False)
class LoadedNamespace:
    """A bundle loaded into a namespace, with its agents instantiated.

    ``agents`` are keyed by their names; ``class_names`` lead from an agent's
    class name to its name, where no other agent is called by it.
    """

    namespace: Namespace
    bundle: LoadedBundle
    agents: dict[str, AgentInstance]
    class_names: dict[str, str] = field(default_factory=dict)

    def find(self, name: str) -> AgentInstance | None:
        """The agent called ``name``, or whose class is (its second name)."""
        found = self.agents.get(name)
        if found is None and name in self.class_names:
            found = self.agents.get(self.class_names[name])
        return found

    def describe(self) -> list[AgentInfo]:
        """The agents, by name, as listed."""
        return [
            AgentInfo(
                name, str(slot.instance.metadata.get("description", "")), slot.instance.to_tool()
            )
            for name, slot in sorted(self.agents.items())
        ]

    def unload(self) -> None:
        """Drop the agents and unload the code (not waiting for the garbage check)."""
        self.agents.clear()
        self.bundle.unload(verify=False)


def _file_of(bundle: LoadedBundle, stem: str) -> str:
    path = Path(str(bundle.modules[stem].__file__))
    return path.relative_to(bundle.bundle_path).as_posix()


def load_namespace(
    namespace: Namespace, folder: Path, libraries: Libraries | None = None
) -> LoadedNamespace:
    """Load the bundle in ``folder`` into ``namespace`` and instantiate its agents;
    ``libraries`` are the tenant's own (see :func:`plughost.loader.load_bundle`).

    Raises:
        BundleRejectedError, BundleLoadError: as :func:`plughost.loader.load_bundle`.
        DuplicateAgentError: two agents share a name (the namespace is unloaded again).
        BundleLoadError: also when an agent's constructor or class attributes fail.
    """
    bundle = load_bundle(namespace, folder, libraries)
    try:
        agents: dict[str, AgentInstance] = {}
        where: dict[str, str] = {}
        class_names: dict[str, str] = {}
        for stem, cls in find_agent_classes(bundle.modules):
            instance = cls()
            name = agent_name(instance)
            if name in agents:
                files = [_file_of(bundle, where[name]), _file_of(bundle, stem)]
                raise DuplicateAgentError(name, files)
            where[name] = stem
            try:
                arguments = arguments_validator(instance)
            except jsonschema.SchemaError as exc:
                # The agent still runs, unchecked; the deploy goes on with a warning.
                warnings.warn(
                    BundleWarning(
                        f"{namespace!r}: agent {name!r} has a parameters schema that is not "
                        f"valid, so its arguments are not checked: {exc.message}"
                    ),
                    stacklevel=2,
                )
                arguments = None
            agents[name] = AgentInstance(
                name,
                instance,
                inspect.iscoroutinefunction(instance.perform),
                [h for h in handlers_of(instance) if not is_topic_pattern(h[0])],
                arguments,
            )
            class_names[cls.__name__] = "" if cls.__name__ in class_names else name
        # A class name leads to its agent only where it is unambiguous: one class has it,
        # and no agent is called by it.
        class_names = {
            cls_name: name
            for cls_name, name in class_names.items()
            if name and cls_name not in agents
        }
    except PlughostError:
        bundle.unload(verify=False)
        raise
    except Exception as exc:  # an agent's constructor or class attributes
        bundle.unload(verify=False)
        raise load_error(namespace, folder.resolve(), exc) from exc
    return LoadedNamespace(namespace, bundle, agents, class_names)
