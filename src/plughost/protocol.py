"""The worker protocol: frames, the messages in them, and what a worker is told to run.

Both ends use this module, so what one side sends is what the other accepts.
A frame is a 4-byte length, then that many bytes of JSON. JSON, not pickle:
the worker runs tenant code, and nothing it sends may run code in the host.
Each end is a :class:`Connection`, an asyncio protocol, so a slow or silent peer
never blocks the event loop, and a frame larger than ``MAX_FRAME`` is refused
before it is read.

Both sides send requests ``[kind, id, *args]`` and answer each with
``["reply", id, ok, value]``, where ``value`` is the result when ``ok`` and
``[kind, error type, message]`` when not; :class:`Requests` keeps one side's
account of them. A connection hands on only messages of that shape
(:func:`check_message`), so a peer that breaks the protocol is a
:class:`ProtocolError` at the boundary, not an ``IndexError`` deep in a handler.

Nesting is bounded by ``MAX_DEPTH``: json's C decoder recurses, so a frame of
100,000 brackets would otherwise end in ``RecursionError``, which no caller
expects, and anything that walks a message recursively has the same limit.
:func:`encode` refuses what a connection would refuse, so a sender gets a
``ValueError`` it can answer with, rather than the peer dropping the connection.

Large frames are decoded in a thread, but a thread alone would not help: the C
decoder holds the GIL from the first byte to the last, so the loop would stall
as long as it runs (about a second for 25 MB of small objects). A frame over
``OFF_LOOP_BYTES`` is gathered as it arrives and decoded in a thread that hands
the C scanner a slice of a few thousand characters at a time (a run of items
in one call; what does not fit, item by item: :mod:`plughost.bounded_json`), so the
GIL changes hands between calls and the loop keeps running, for some 10-50% more time in all. Small
frames, almost all of them, are decoded at once on the loop: a thread costs
more than they do. Two things still hold the GIL however long they take: one
JSON string (about 1 ms per MB), and the garbage collector's full passes,
which millions of new lists set off in any thread.

A message's size is not known before it is encoded, so :func:`write` (and
:func:`encode_async`) first count its items and characters, stopping at 512
items or ``OFF_LOOP_BYTES`` characters (a couple of microseconds for a small
message). A small message is encoded at once on the loop; a larger one in a
thread: with the C encoder if it is small enough to take a few milliseconds,
else with json's pure-Python encoder, which gives up the GIL as it goes, about
three times slower. The message must not change meanwhile. :func:`encode`
always encodes at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import json.scanner
import math
import reprlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .bounded_json import (
    MAX_DEPTH,
    OFF_LOOP_BYTES,
    TooDeepError,
    dumps,
    dumps_async,
    loads_in_parts,
    may_be_deep,
    too_deep,
)

MAX_FRAME = 64 * 1024 * 1024
# The C scanner (typeshed asks for a scanner as its context; a decoder is what it reads).
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_SPACE = " \t\n\r"
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


class WireError(Exception):
    """A frame that is too large or not JSON: the peer broke the protocol."""


class ProtocolError(WireError):
    """A frame that is JSON but no message: nested too deeply, or of the wrong shape."""


class RemoteError(Exception):
    """A failure to send back: which kind of error, its type name and message."""

    def __init__(self, kind: str, error_type: str, message: str) -> None:
        self.kind = kind
        self.error_type = error_type
        self.message = message
        super().__init__(message)


class Requests:
    """The requests one side has sent and still waits for, by id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    def open(self, kind: str, *args: Any) -> tuple[list[Any], asyncio.Future[Any]]:
        """Return a new request's message and the future its reply settles."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return [kind, request_id, *args], future

    def drop(self, message: list[Any]) -> None:
        """Forget a request that could not be sent."""
        self._waiting.pop(message[1], None)

    def settle(self, reply: list[Any]) -> None:
        """Settle the future of the request a reply answers: its value or a RemoteError.

        A reply to no request waiting (answered already, or never asked) is ignored.
        """
        future = self._waiting.pop(reply[1], None)
        if future is None or future.done():
            return
        if reply[2]:
            future.set_result(reply[3])
        else:
            future.set_exception(RemoteError(*reply[3]))

    def fail_all(self, error: BaseException) -> None:
        """Fail every request still waiting with ``error``."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()


# -- messages --------------------------------------------------------------------------


def check_message(message: Any) -> list[Any]:
    """Return ``message`` if it is one: ``[kind, id, ...]``, a reply ``["reply", id, ok, value]``.

    Raises:
        ProtocolError: it is not, and the text says why.
    """
    if not isinstance(message, list):
        raise ProtocolError(f"a message is a list, not {type(message).__name__}")
    if len(message) < 2:
        raise ProtocolError(f"a message begins with a kind and an id, not {_brief(message)}")
    kind, request_id = message[0], message[1]
    if not isinstance(kind, str):
        raise ProtocolError(f"a message's kind is a str, not {type(kind).__name__}")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ProtocolError(f"a message's id is an int, not {type(request_id).__name__}")
    if kind == "reply":
        if len(message) != 4:
            raise ProtocolError(f"a reply has 4 items, not {len(message)}")
        if not isinstance(message[2], bool):
            raise ProtocolError(f"a reply's ok is a bool, not {type(message[2]).__name__}")
        failure = message[3]
        if not message[2] and not (
            isinstance(failure, list)
            and len(failure) == 3
            and all(isinstance(part, str) for part in failure)
        ):
            raise ProtocolError(
                f"a failed reply's value is 3 strings, [kind, error type, message], "
                f"not {_brief(failure)}"
            )
    return message


def _brief(value: Any) -> str:
    """``value`` shown in an error: briefly, whatever its size."""
    return reprlib.repr(value)


# -- writing ---------------------------------------------------------------------------


def encode(message: Any) -> bytes:
    """Return ``message`` as one frame, encoded at once (see :func:`write` for large ones).

    Raises:
        TypeError, ValueError: the message holds something JSON cannot carry, is
            nested deeper than ``MAX_DEPTH`` or is over ``MAX_FRAME``.
    """
    return _frame(dumps(message))


async def encode_async(message: Any) -> bytes:
    """Return ``message`` as one frame; a large one is encoded in a thread.

    The message must not change until this returns.

    Raises:
        TypeError, ValueError: as :func:`encode`.
    """
    return _frame(await dumps_async(message))


async def write(connection: Connection, message: Any) -> None:
    """Send ``message`` as one frame (encoded in a thread if large) and wait for the buffer.

    Raises:
        TypeError, ValueError: as :func:`encode`; nothing was sent.
        ConnectionError: the peer is gone.
    """
    connection.write(await encode_async(message))
    await connection.drain()


def _frame(data: bytes) -> bytes:
    if len(data) > MAX_FRAME:
        raise ValueError(f"message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return len(data).to_bytes(4, "big") + data


# -- reading ---------------------------------------------------------------------------

MessageHandler = Callable[[list[Any]], None]
"""Takes each message a connection reads, in order; it may raise :class:`WireError` to
say that the message breaks the protocol, and the connection then closes."""
ClosedHandler = Callable[[WireError | None], None]
"""Told once that a connection ended: None when the peer closed it (or :meth:`Connection.close`
did), else the error of the frame or message that broke the protocol."""


class Connection(asyncio.Protocol):
    """One end of a stream of frames: the messages read, in order; the frames written.

    asyncio hands it what the socket holds, and every complete frame of one read is
    decoded and handed on in that one callback: no task, no stream reader and no
    loop iteration a frame. A frame over ``OFF_LOOP_BYTES`` is gathered as it comes
    and decoded in a thread; reading pauses meanwhile, so the frames after it wait
    and are handed on after it, in order.
    """

    def __init__(
        self, on_message: MessageHandler, on_closed: ClosedHandler, max_frame: int = MAX_FRAME
    ) -> None:
        self._max_frame = max_frame
        self._on_message = on_message
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._large: list[bytes] = []  # the parts of a large frame read so far...
        self._large_missing = 0  # ...and the bytes still to come
        self._decoding = False  # a large frame is being decoded in a thread
        self._writable: asyncio.Future[None] | None = None  # set while the peer's buffer is full
        self._ended = False

    # -- asyncio's side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, whatever its class: uvloop's do not derive from asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._large_missing:
            data = self._gather(data)
        self._buffer += data
        self._take_frames()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._end(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- the user's side -----------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        """Send ``frame`` (made by :func:`encode`); frames written while the peer's buffer
        is full are sent together when it has room.

        Raises:
            ConnectionResetError: the connection has ended.
        """
        if self._transport is None or self._ended:
            raise ConnectionResetError("the connection has ended")
        self._transport.write(frame)

    async def drain(self) -> None:
        """Wait while the peer's buffer is full.

        Raises:
            ConnectionResetError: the connection has ended.
        """
        if self._writable is not None:
            await self._writable
        if self._transport is None or self._ended:
            raise ConnectionResetError("the connection has ended")

    def close(self) -> None:
        """End the connection; frames written already are still sent."""
        if self._transport is not None:
            self._transport.close()
        self._end(None)

    # -- frames --------------------------------------------------------------------------

    def _take_frames(self) -> None:
        buffer, start = self._buffer, 0
        try:
            while not self._ended and not self._decoding and len(buffer) - start >= 4:
                size = int.from_bytes(buffer[start : start + 4], "big")
                if size > self._max_frame:
                    raise WireError(
                        f"frame of {size} bytes is over the {self._max_frame}-byte limit"
                    )
                end = start + 4 + size
                if size > OFF_LOOP_BYTES:
                    first = bytes(buffer[start + 4 : end])
                    self._large = [first] if first else []  # decode_large reads 4 parts' bytes
                    self._large_missing = size - len(first)
                    start = min(end, len(buffer))
                    if not self._large_missing:
                        self._decode_large()
                    break
                if len(buffer) < end:
                    break
                message = check_message(_decode(buffer[start + 4 : end]))
                start = end
                self._on_message(message)
        except WireError as exc:
            self._fail(exc)
        finally:
            del buffer[:start]

    def _gather(self, data: bytes) -> bytes:
        """Add what ``data`` holds of the large frame to it; return the rest."""
        part, rest = data[: self._large_missing], data[self._large_missing :]
        self._large.append(part)
        self._large_missing -= len(part)
        if not self._large_missing:
            self._decode_large()
        return rest

    def _decode_large(self) -> None:
        assert self._transport is not None
        self._decoding = True
        self._transport.pause_reading()
        parts, self._large = self._large, []
        decoding = asyncio.ensure_future(asyncio.to_thread(decode_large, parts))
        decoding.add_done_callback(self._decoded)

    def _decoded(self, decoding: asyncio.Future[Any]) -> None:
        self._decoding = False
        if self._ended:
            return
        try:
            self._on_message(check_message(decoding.result()))
        except WireError as exc:
            self._fail(exc)
            return
        self.data_received(b"")  # the frames that came after it
        if not self._decoding and self._transport is not None:
            self._transport.resume_reading()

    def _fail(self, error: WireError) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._end(error)

    def _end(self, error: WireError | None) -> None:
        if not self._ended:
            self._ended = True
            self._on_closed(error)


async def connect(
    sock: socket.socket,
    on_message: MessageHandler,
    on_closed: ClosedHandler,
    max_frame: int = MAX_FRAME,
) -> Connection:
    """A :class:`Connection` over the connected socket ``sock``, reading frames of up to
    ``max_frame`` bytes (a larger one is a :class:`WireError`)."""
    _, connection = await asyncio.get_running_loop().create_connection(
        lambda: Connection(on_message, on_closed, max_frame), sock=sock
    )
    return connection


def _decode(data: bytes | bytearray) -> Any:
    try:
        try:
            # What json.loads does, less its Python steps, for UTF-8 text of a list.
            if not (len(data) > 1 and data[0] == 0x5B and data[1]):
                raise ValueError("not a list in UTF-8")
            text = data.decode("utf-8", "surrogatepass")
            value, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_SPACE):
                raise ValueError("extra data")
        except (ValueError, StopIteration):
            value = json.loads(data)  # the general case, and json's account of what is wrong
    except RecursionError:
        raise ProtocolError(f"frame is {_TOO_DEEP}") from None
    except ValueError as exc:
        raise WireError(f"frame is not JSON: {exc}") from None
    if len(data) > 2 * MAX_DEPTH and may_be_deep(data) and too_deep(value):
        raise ProtocolError(f"frame is {_TOO_DEEP}")
    return value


def decode_large(parts: list[bytes]) -> Any:
    """Decode a large frame's text read in ``parts``, giving up the GIL as it goes
    (:func:`~plughost.bounded_json.loads_in_parts`): call it in a thread.

    Raises:
        WireError: it is not JSON.
        ProtocolError: it is nested deeper than ``MAX_DEPTH``.
    """
    try:
        return loads_in_parts(parts)
    except TooDeepError:
        raise ProtocolError(f"frame is {_TOO_DEEP}") from None
    except ValueError as exc:
        raise WireError(f"frame is not JSON: {exc}") from None


# -- the worker's spec ------------------------------------------------------------------

InstanceSpecTuple = tuple[str, str, dict[str, Any], tuple[str, ...]]  # path, name, config, expose

_REQUIRED = ("tenant", "version", "folder", "data_dir", "instances")
_TIMEOUTS = ("unload_timeout", "start_timeout", "call_timeout")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker runs: a tenant's deployment folder and its declared instances.

    The host sends it as the first frame, :meth:`to_message`; the worker checks
    it with :meth:`from_message` before it runs anything.
    """

    tenant: str
    version: int
    folder: str
    data_dir: str
    instances: tuple[InstanceSpecTuple, ...]
    unload_timeout: float = 10.0
    start_timeout: float = 60.0
    call_timeout: float = 60.0  # the deadline of one request to the worker
    snapshot: str | None = None
    shared_topics: tuple[str, ...] = ()  # besides its tenant's, the topics it may subscribe to
    limits: tuple[tuple[str, int], ...] = ()  # a sandbox's limits, by name: breaches are named
    libraries: str | None = None  # the tenant's own installed libraries, first on its path
    state: str | None = None  # the tenant's state folder, which a call's state is under

    def to_message(self) -> dict[str, Any]:
        """The spec as a JSON object, the first frame the host sends."""
        return {
            "tenant": self.tenant,
            "version": self.version,
            "folder": self.folder,
            "data_dir": self.data_dir,
            "instances": [[p, n, dict(c), list(e)] for p, n, c, e in self.instances],
            "unload_timeout": self.unload_timeout,
            "start_timeout": self.start_timeout,
            "call_timeout": self.call_timeout,
            "snapshot": self.snapshot,
            "shared_topics": list(self.shared_topics),
            "limits": dict(self.limits),
            "libraries": self.libraries,
            "state": self.state,
        }

    @classmethod
    def from_message(cls, fields: Any) -> WorkerSpec:
        """The spec in ``fields``, a decoded :meth:`to_message`; fields with defaults may be
        left out.

        Raises:
            ProtocolError: ``fields`` is not an object, lacks a field or has an
                unknown one, or a field is of the wrong type (a timeout that is
                not a positive number, an instance that is not
                ``[path, name, config, expose]``).
        """
        if not isinstance(fields, dict):
            raise ProtocolError(f"a worker spec is an object, not {type(fields).__name__}")
        unknown = set(fields) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ProtocolError(f"unknown worker spec fields: {sorted(map(str, unknown))}")
        missing = [name for name in _REQUIRED if name not in fields]
        if missing:
            raise ProtocolError(f"missing worker spec fields: {missing}")
        instances = _typed(fields, "instances", (list, tuple))
        snapshot = fields.get("snapshot")
        if snapshot is not None:
            snapshot = _typed(fields, "snapshot", str)
        timeouts = {name: _seconds(fields, name) for name in _TIMEOUTS if name in fields}
        shared = fields.get("shared_topics", [])
        if not isinstance(shared, list) or not all(isinstance(each, str) for each in shared):
            raise ProtocolError(
                f"worker spec shared_topics should be strings, not {_brief(shared)}"
            )
        limits = fields.get("limits", {})
        if not isinstance(limits, dict) or not all(
            isinstance(value, int) and not isinstance(value, bool) for value in limits.values()
        ):
            raise ProtocolError(f"worker spec limits should be whole numbers, not {_brief(limits)}")
        libraries = fields.get("libraries")
        if libraries is not None:
            libraries = _typed(fields, "libraries", str)
        state = fields.get("state")
        if state is not None:
            state = _typed(fields, "state", str)
        return cls(
            _typed(fields, "tenant", str),
            _typed(fields, "version", int),
            _typed(fields, "folder", str),
            _typed(fields, "data_dir", str),
            tuple(_instance(item, index) for index, item in enumerate(instances)),
            snapshot=snapshot,
            shared_topics=tuple(shared),
            limits=tuple(sorted(limits.items())),
            libraries=libraries,
            state=state,
            **timeouts,
        )


def _typed(fields: dict[Any, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = fields[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(each.__name__ for each in kinds)
        raise ProtocolError(f"worker spec {name} should be {expected}, not {type(value).__name__}")
    return value


def _seconds(fields: dict[Any, Any], name: str) -> float:
    value = fields[name]
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    raise ProtocolError(f"worker spec {name} should be seconds above 0, not {_brief(value)}")


def _instance(item: Any, index: int) -> InstanceSpecTuple:
    if isinstance(item, (list, tuple)) and len(item) == 4:
        path, name, config, expose = item
        if (
            isinstance(path, str)
            and isinstance(name, str)
            and isinstance(config, dict)
            and all(isinstance(key, str) for key in config)
            and isinstance(expose, (list, tuple))
            and all(isinstance(each, str) for each in expose)
        ):
            return path, name, dict(config), tuple(expose)
    raise ProtocolError(
        f"worker spec instance {index} should be [path, name, config, expose], not {_brief(item)}"
    )


# -- what a worker says about itself ---------------------------------------------------


def check_ready(message: list[Any]) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """The agents and instances of a ``["ready", 0, agents, instances]`` message.

    ``agents`` maps each name to ``[description, tool]``; each instance is as
    :func:`check_instance` accepts.

    Raises:
        ProtocolError: the message is not of that shape.
    """
    if len(message) != 4 or not isinstance(message[2], dict) or not isinstance(message[3], list):
        raise ProtocolError(
            f"a ready message is [ready, id, agents, instances], not {_brief(message)}"
        )
    agents = message[2]
    for name, described in agents.items():
        if not (
            isinstance(described, list)
            and len(described) == 2
            and isinstance(described[0], str)
            and isinstance(described[1], dict)
        ):
            raise ProtocolError(
                f"agent {name!r} should be [description, tool], not {_brief(described)}"
            )
    return agents, [check_instance(item) for item in message[3]]


def check_failed(message: list[Any]) -> tuple[str, str, str]:
    """The failure, error type and text of a ``["failed", 0, kind, type, text]`` message.

    Raises:
        ProtocolError: the message is not of that shape.
    """
    if len(message) != 5 or not all(isinstance(part, str) for part in message[2:]):
        raise ProtocolError(
            f"a failed message is [failed, id, kind, type, text], not {_brief(message)}"
        )
    return message[2], message[3], message[4]


_INSTANCE_FIELDS: dict[str, type[Any]] = {
    "name": str,
    "mod_path": str,
    "class": str,
    "config": dict,
    "expose": list,
    "handlers": list,
    "topics": list,
    "rpcs": list,
}


def check_instance(described: Any) -> dict[str, Any]:
    """An instance as a worker describes it: name, mod_path, class, config, expose, handlers,
    topics and rpcs; the lists hold strings and ``class`` is an identifier.

    Raises:
        ProtocolError: it is not of that shape.
    """
    if not isinstance(described, dict) or set(described) != set(_INSTANCE_FIELDS):
        raise ProtocolError(
            f"an instance has the fields {sorted(_INSTANCE_FIELDS)}, not {_brief(described)}"
        )
    for name, kind in _INSTANCE_FIELDS.items():
        value = described[name]
        if not isinstance(value, kind) or (
            kind is list and not all(isinstance(item, str) for item in value)
        ):
            raise ProtocolError(
                f"an instance's {name} should be a {kind.__name__}, not {_brief(value)}"
            )
    if not described["class"].isidentifier():
        raise ProtocolError(
            f"an instance's class should be a class name, not {_brief(described['class'])}"
        )
    return described
