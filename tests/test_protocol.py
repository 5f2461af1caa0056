"""The worker protocol over a real socket pair: frames, checked messages, large frames, the spec."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plughost import bounded_json, protocol
from plughost.protocol import (
    MAX_DEPTH,
    MAX_FRAME,
    OFF_LOOP_BYTES,
    Connection,
    ProtocolError,
    RemoteError,
    Requests,
    WireError,
    WorkerSpec,
    check_message,
    encode,
    encode_async,
    write,
)

from .conftest import STALL_ATTEMPTS


class Inbox:
    """What one connection read, in order: messages, then None (closed) or the error."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[list[Any] | WireError | None] = asyncio.Queue()

    def received(self, message: list[Any]) -> None:
        self.items.put_nowait(message)

    def closed(self, error: WireError | None) -> None:
        self.items.put_nowait(error)


@dataclass
class Pipe:
    """Both ends of a socket pair as connections: the host's and the worker's."""

    host_in: Inbox
    host_out: Connection
    worker_in: Inbox
    worker_out: Connection


async def connected(sock: socket.socket) -> tuple[Inbox, Connection]:
    inbox = Inbox()
    return inbox, await protocol.connect(sock, inbox.received, inbox.closed)


@pytest.fixture
async def pipe() -> AsyncIterator[Pipe]:
    host_end, worker_end = socket.socketpair()
    host_in, host_out = await connected(host_end)
    worker_in, worker_out = await connected(worker_end)
    yield Pipe(host_in, host_out, worker_in, worker_out)
    host_out.close()
    worker_out.close()


def frame_of(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def nested(depth: int, inner: Any = None) -> Any:
    """``depth`` lists, one in the other, around ``inner`` (none: the innermost is empty)."""
    value: Any = [] if inner is None else [inner]
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


async def read_soon(inbox: Inbox, seconds: float = 10) -> list[Any]:
    """The next message read; raises the error that ended the connection, or EOFError
    if the peer closed it."""
    item = await asyncio.wait_for(inbox.items.get(), seconds)
    if item is None:
        raise EOFError("the connection closed")
    if isinstance(item, WireError):
        raise item
    return item


# -- requests and replies ------------------------------------------------------------------


async def test_requests_round_trip_out_of_order(pipe: Pipe) -> None:
    requests = Requests()
    first, answered_first = requests.open("call", "notifier", {"message": "hi"})
    second, answered_second = requests.open("rpc", "mapper", "locate", [1, 2], {})
    await write(pipe.host_out, first)
    await write(pipe.host_out, second)

    got = [await read_soon(pipe.worker_in), await read_soon(pipe.worker_in)]
    assert got == [first, second]
    assert got[0][1] != got[1][1]
    await write(pipe.worker_out, ["reply", got[1][1], False, ["rpc", "KeyError", "no robot"]])
    await write(pipe.worker_out, ["reply", got[0][1], True, {"said": "hi"}])

    for _ in range(2):
        requests.settle(await read_soon(pipe.host_in))
    assert await answered_first == {"said": "hi"}
    with pytest.raises(RemoteError) as failed:
        await answered_second
    assert (failed.value.kind, failed.value.error_type, failed.value.message) == (
        "rpc",
        "KeyError",
        "no robot",
    )


async def test_a_dropped_request_ignores_its_reply_and_fail_all_fails_the_rest(
    pipe: Pipe,
) -> None:
    requests = Requests()
    dropped, dropped_future = requests.open("call", "a", {})
    waiting, waiting_future = requests.open("call", "b", {})
    requests.drop(dropped)

    await write(pipe.worker_out, ["reply", dropped[1], True, "late"])
    await write(pipe.worker_out, ["reply", 999, True, "never asked"])
    requests.settle(await read_soon(pipe.host_in))
    requests.settle(await read_soon(pipe.host_in))
    assert not dropped_future.done()
    assert not waiting_future.done()

    requests.fail_all(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        await waiting_future
    requests.settle(["reply", waiting[1], True, "after the end"])  # ignored
    dropped_future.cancel()


async def test_a_closed_peer_ends_the_connection_midway_through_a_frame(pipe: Pipe) -> None:
    pipe.worker_out.write(b"\x00\x00")
    pipe.worker_out.close()
    with pytest.raises(EOFError):
        await read_soon(pipe.host_in)
    with pytest.raises(ConnectionResetError):
        pipe.host_out.write(encode(["stop", 1]))


async def test_frames_sent_in_one_write_are_read_in_order(pipe: Pipe) -> None:
    messages = [["call", n, "notifier", {"n": n}] for n in range(1, 101)]
    pipe.worker_out.write(b"".join(encode(message) for message in messages))
    assert [await read_soon(pipe.host_in) for _ in messages] == messages


async def test_frames_after_a_large_frame_wait_for_it(pipe: Pipe) -> None:
    # The large frame is decoded in a thread; the small ones, sent in the same write,
    # are not handed on before it.
    large = ["reply", 1, True, ["x" * 100 for _ in range(OFF_LOOP_BYTES // 50)]]
    small = [["reply", n, True, n] for n in range(2, 12)]
    frames = [encode(small[0]), encode(large), *(encode(message) for message in small[1:])]
    pipe.worker_out.write(b"".join(frames))
    got = [await read_soon(pipe.host_in) for _ in range(len(small) + 1)]
    assert got == [small[0], large, *small[1:]]


# -- frames that break the protocol ---------------------------------------------------------


async def test_a_frame_over_max_frame_is_refused_before_it_is_read(pipe: Pipe) -> None:
    pipe.worker_out.write((MAX_FRAME + 1).to_bytes(4, "big") + b"abc")
    with pytest.raises(WireError, match="over the"):
        await read_soon(pipe.host_in)  # at once: its body never came
    with pytest.raises(ConnectionResetError):  # the peer broke the protocol: no more of it
        pipe.host_out.write(encode(["stop", 1]))


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2",
        b'["reply", 1, true, "x"] extra',
        b"\xff\xfe\xfa\x00\x01",
        b"",
        b"[" + b"1," * (OFF_LOOP_BYTES // 2) + b"]",  # large, and a trailing comma
        b'["reply", 1, true, "' + b"\xc3" * (OFF_LOOP_BYTES + 1) + b'"]',  # large, not UTF-8
    ],
    ids=["object", "unclosed", "extra", "bytes", "empty", "large", "large-not-utf8"],
)
async def test_a_frame_that_is_not_json_is_a_wire_error(pipe: Pipe, payload: bytes) -> None:
    pipe.worker_out.write(frame_of(payload))
    with pytest.raises(WireError, match="not JSON") as raised:
        await read_soon(pipe.host_in)
    assert not isinstance(raised.value, ProtocolError)


@pytest.mark.parametrize(
    "text",
    [
        deep_text(100_000),  # 200 KB: decoded on the loop
        deep_text(300_000),  # 600 KB: decoded in a thread
        '["reply", 1, true, ' + deep_text(100_000) + "]",
        '["reply", 1, true, ["' + "x" * OFF_LOOP_BYTES + '", ' + deep_text(100_000) + "]]",
        '["reply", 1, true, {"a": ' * 50_000 + "0" + "}]" * 50_000,
    ],
    ids=["small", "large", "in-a-reply", "in-a-large-reply", "objects"],
)
async def test_deep_nesting_is_a_protocol_error_not_a_recursion_error(
    pipe: Pipe, text: str
) -> None:
    pipe.worker_out.write(frame_of(text.encode()))
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH}"):
        await read_soon(pipe.host_in)


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
async def test_nesting_is_allowed_up_to_max_depth(pipe: Pipe, large: bool) -> None:
    padding = ["x" * (OFF_LOOP_BYTES + 1)] if large else []
    # The message is a level, and so is the list that holds the padding.
    allowed = ["reply", 1, True, [*padding, nested(MAX_DEPTH - 2, 7)]]
    too_deep = ["reply", 2, True, [*padding, nested(MAX_DEPTH - 1, 7)]]
    assert bounded_json.too_deep(allowed) is False
    assert bounded_json.too_deep(too_deep) is True

    pipe.worker_out.write(encode(allowed))
    assert await read_soon(pipe.host_in) == allowed
    pipe.worker_out.write(frame_of(json.dumps(too_deep).encode()))
    with pytest.raises(ProtocolError):
        await read_soon(pipe.host_in)


WRONG_SHAPES: list[tuple[Any, str]] = [
    ({"kind": "call", "id": 1}, "is a list, not dict"),
    ("call", "is a list, not str"),
    ([], "begins with a kind and an id"),
    (["call"], "begins with a kind and an id"),
    ([1, 1], "kind is a str, not int"),
    (["call", True], "id is an int, not bool"),
    (["call", 1.0], "id is an int, not float"),
    (["call", "1"], "id is an int, not str"),
    (["reply", 1, True], "reply has 4 items, not 3"),
    (["reply", 1, True, None, None], "reply has 4 items, not 5"),
    (["reply", 1, 1, "x"], "ok is a bool, not int"),
    (["reply", 1, False, "boom"], "3 strings"),
    (["reply", 1, False, ["a", "b"]], "3 strings"),
    (["reply", 1, False, ["a", "b", 3]], "3 strings"),
    (["reply", 1, False, ["a", "b", "c", "d"]], "3 strings"),
    (["reply", 1, False, None], "3 strings"),
]


@pytest.mark.parametrize(("message", "why"), WRONG_SHAPES, ids=[w for _, w in WRONG_SHAPES])
def test_check_message_names_what_is_wrong(message: Any, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        check_message(message)


@pytest.mark.parametrize(
    "message",
    [
        ["call", 1, "notifier", {"message": "hi"}],
        ["stop", 2],
        ["ready", 0, {}, []],
        ["reply", 3, True, None],
        ["reply", 4, True, [1, "two"]],
        ["reply", 5, False, ["rpc", "KeyError", "no robot"]],
    ],
)
def test_check_message_returns_messages_as_they_are(message: list[Any]) -> None:
    assert check_message(message) is message


@pytest.mark.parametrize(("message", "why"), WRONG_SHAPES[::3])
async def test_read_returns_only_checked_messages(pipe: Pipe, message: Any, why: str) -> None:
    pipe.worker_out.write(frame_of(json.dumps(message).encode()))
    with pytest.raises(ProtocolError, match=why):
        await read_soon(pipe.host_in)


# -- large frames ---------------------------------------------------------------------------


async def test_a_30_mb_frame_is_decoded_in_a_thread_while_the_loop_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Records of scalars: the shape of a big result, and one that sets off few collections
    # (millions of new lists would: a full collection holds the GIL, in whatever thread).
    records = [
        {"id": i, "name": f"record {i}", "score": i / 7, "even": i % 2 == 0, "note": None}
        for i in range(450_000)
    ]
    frame = encode(["reply", 7, True, records])
    del records
    assert len(frame) > 30_000_000

    decoded_in: list[int] = []
    decode_large = protocol.decode_large

    def spy(parts: list[bytes]) -> Any:
        decoded_in.append(threading.get_ident())
        return decode_large(parts)

    monkeypatch.setattr(protocol, "decode_large", spy)

    async def longest_stall() -> tuple[float, list[Any]]:
        host_end, worker_end = socket.socketpair()
        inbox, connection = await connected(host_end)
        gaps: list[float] = []
        reading = True

        async def tick() -> None:
            last = time.perf_counter()
            while reading:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        # What earlier tests left on the heap is not part of this scenario, but a full
        # collection walks all of it while holding the GIL: set it aside, as a server does
        # after its start.
        gc.collect()
        gc.freeze()
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        sending = asyncio.create_task(asyncio.to_thread(worker_end.sendall, frame))
        try:
            message = await read_soon(inbox, 60)
        finally:
            reading = False
            await ticker
            await sending
            connection.close()
            worker_end.close()
            gc.unfreeze()
        return max(gaps), message

    stalls = []
    for _ in range(STALL_ATTEMPTS):
        stall, message = await longest_stall()
        stalls.append(stall)
        if stall < 0.1:
            break

    assert decoded_in and decoded_in[0] != threading.get_ident()
    assert min(stalls) < 0.1, f"the loop stalled for {[round(s * 1000) for s in stalls]} ms"
    assert encode(message) == frame


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.sampled_from('[]{}",:\\ aé😀\n\x00'), max_size=8)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(st.sampled_from('[]{}",:\\ ak'), max_size=4), inner, max_size=6)
    ),
    max_leaves=30,
)


def outcome(read_it: Callable[[], Any]) -> tuple[str, str]:
    try:
        return "message", json.dumps(read_it())
    except ProtocolError:
        return "not a message", ""
    except (WireError, ValueError):
        return "not json", ""


@given(
    value=JSON,
    indent=st.sampled_from([None, 0, 2, "\t"]),
    ensure_ascii=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32"]),
    damage=st.none() | st.tuples(st.integers(0, 10**6), st.sampled_from(list(',]}["x 1\\:'))),
    large=st.booleans(),
    slice_size=st.integers(2, 64),
    read_size=st.integers(1, 16),
)
def test_frames_decode_as_json_loads_decodes_them(
    value: Any,
    indent: int | str | None,
    ensure_ascii: bool,
    encoding: str,
    damage: tuple[int, str] | None,
    large: bool,
    slice_size: int,
    read_size: int,
) -> None:
    """Both decoders, the one on the loop and the one in slices, against json.loads.

    Tiny slices and reads make every item straddle a slice and every character
    of UTF-16 a read; ``large`` sends even small frames down the large path.
    """
    text = json.dumps(["reply", 1, True, value], indent=indent, ensure_ascii=ensure_ascii)
    if damage is not None:
        at = damage[0] % (len(text) + 1)
        text = text[:at] + damage[1] + text[at + 1 :]
    payload = text.encode(encoding, "surrogatepass")
    expected = outcome(lambda: check_message(json.loads(payload)))

    async def send_and_read() -> list[Any]:
        inbox = Inbox()
        connection = Connection(inbox.received, inbox.closed)
        connection.connection_made(mock.Mock(spec=asyncio.Transport))
        frame = frame_of(payload)
        for start in range(0, len(frame), read_size):
            connection.data_received(frame[start : start + read_size])
        return await read_soon(inbox)

    off_loop = 0 if large else protocol.OFF_LOOP_BYTES
    with (
        mock.patch.object(bounded_json, "_SLICE", slice_size),
        mock.patch.object(protocol, "OFF_LOOP_BYTES", off_loop),
    ):
        got = outcome(lambda: asyncio.run(send_and_read()))
    assert got == expected


# -- writing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("items", [10, 5_000, 50_000], ids=["inline", "one-call", "pure"])
async def test_write_encodes_large_messages_in_a_thread(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch, items: int
) -> None:
    encoded_in: list[int] = []
    encode_off_loop = bounded_json._dumps_off_loop

    def spy(message: Any) -> bytes:
        encoded_in.append(threading.get_ident())
        return encode_off_loop(message)

    monkeypatch.setattr(bounded_json, "_dumps_off_loop", spy)
    message = ["reply", 1, True, [{"n": n, "s": "é" * (n % 5)} for n in range(items)]]
    assert await encode_async(message) == encode(message)
    reading = asyncio.create_task(read_soon(pipe.worker_in))  # a large frame fills the socket
    await write(pipe.host_out, message)
    assert await reading == message
    if items == 10:
        assert encoded_in == []
    else:
        assert encoded_in and threading.get_ident() not in encoded_in


@pytest.mark.parametrize("off_loop", [False, True], ids=["encode", "encode_async"])
async def test_encoding_refuses_what_reading_would_refuse(off_loop: bool) -> None:
    padding = list(range(100_000)) if off_loop else []

    async def encoded(value: Any) -> bytes:
        message = ["reply", 1, True, [padding, value]]
        return await encode_async(message) if off_loop else encode(message)

    assert await encoded(nested(MAX_DEPTH - 2))
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        await encoded(nested(MAX_DEPTH - 1))
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        await encoded(nested(100_000))  # not RecursionError
    with pytest.raises(ValueError):
        await encoded(math.nan)
    with pytest.raises(TypeError):
        await encoded(object())
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        await encoded(cycle)


def test_encode_refuses_a_frame_over_max_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME", 100)
    assert encode(["reply", 1, True, "x" * 50])
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        encode(["reply", 1, True, "x" * 100])


# -- the worker's spec ------------------------------------------------------------------------

SPEC = WorkerSpec(
    "acme",
    3,
    "/data/bundles/acme-3",
    "/data",
    (
        ("mods/mapper.py:Mapper", "mapper", {"size": 4, "tags": ["a"]}, ("locate",)),
        ("mods/cache.py", "cache", {}, ()),
    ),
    5.0,
    30.0,
)


def test_worker_spec_keeps_its_positional_fields_and_defaults() -> None:
    assert (SPEC.unload_timeout, SPEC.start_timeout) == (5.0, 30.0)
    assert SPEC.call_timeout == 60.0
    assert SPEC.snapshot is None
    spec = WorkerSpec("acme", 3, "/f", "/d", (), 1.0, 2.0, 3.0, snapshot="jan")
    assert (spec.call_timeout, spec.snapshot) == (3.0, "jan")


@pytest.mark.parametrize(
    "spec",
    [SPEC, WorkerSpec("acme", 3, "/f", "/d", (), 1.0, 2.0, 0.5, snapshot="jan")],
)
def test_worker_spec_round_trips_through_a_frame(spec: WorkerSpec) -> None:
    # As the worker reads it: at its start, before it has an event loop.
    host_end, worker_end = socket.socketpair()
    with host_end, worker_end, worker_end.makefile("rb") as stream:
        host_end.sendall(encode(spec.to_message()))
        size = int.from_bytes(stream.read(4), "big")
        fields = json.loads(stream.read(size))
    assert WorkerSpec.from_message(fields) == spec


def test_worker_spec_from_message_fills_in_what_an_older_host_left_out() -> None:
    fields = json.loads(json.dumps(SPEC.to_message()))
    del fields["call_timeout"], fields["snapshot"], fields["unload_timeout"], fields["limits"]
    spec = WorkerSpec.from_message(fields)
    assert spec.call_timeout == 60.0
    assert spec.unload_timeout == 10.0
    assert spec.instances == SPEC.instances


def with_field(name: str, value: Any) -> dict[str, Any]:
    fields = SPEC.to_message()
    fields[name] = value
    return fields


def with_instance(item: Any) -> dict[str, Any]:
    return with_field("instances", [item])


BAD_SPECS: list[tuple[Any, str]] = [
    (["acme"], "is an object, not list"),
    ({k: v for k, v in SPEC.to_message().items() if k != "tenant"}, "missing .*tenant"),
    (with_field("sandbox", True), "unknown .*sandbox"),
    (with_field("limits", []), "limits should be whole numbers, not"),
    (with_field("limits", {"memory_mb": "1"}), "limits should be whole numbers, not"),
    (with_field("tenant", None), "tenant should be str, not NoneType"),
    (with_field("version", "3"), "version should be int, not str"),
    (with_field("version", True), "version should be int, not bool"),
    (with_field("folder", 3), "folder should be str"),
    (with_field("instances", {"a": 1}), "instances should be list or tuple, not dict"),
    (with_instance(["mods/a.py", "a", {}]), "instance 0 should be"),
    (with_instance(["mods/a.py", "a", [], []]), "instance 0 should be"),
    (with_instance(["mods/a.py", "a", {1: 2}, []]), "instance 0 should be"),
    (with_instance(["mods/a.py", "a", {}, "locate"]), "instance 0 should be"),
    (with_instance(["mods/a.py", "a", {}, [1]]), "instance 0 should be"),
    (with_instance("mods/a.py"), "instance 0 should be"),
    (with_field("call_timeout", "5"), "call_timeout should be seconds"),
    (with_field("start_timeout", True), "start_timeout should be seconds"),
    (with_field("unload_timeout", 0), "unload_timeout should be seconds"),
    (with_field("unload_timeout", -1), "unload_timeout should be seconds"),
    (with_field("call_timeout", math.nan), "call_timeout should be seconds"),
    (with_field("call_timeout", math.inf), "call_timeout should be seconds"),
    (with_field("snapshot", 3), "snapshot should be str, not int"),
]


@pytest.mark.parametrize(("fields", "why"), BAD_SPECS, ids=[w for _, w in BAD_SPECS])
def test_worker_spec_from_message_refuses_bad_fields(fields: Any, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        WorkerSpec.from_message(fields)


INSTANCE = {
    "name": "camera",
    "mod_path": "camera_module",
    "class": "CameraMod",
    "config": {"fps": 30},
    "expose": ["status"],
    "handlers": ["camera.*"],
    "topics": ["/robot1/camera"],
    "rpcs": ["shoot"],
}


def test_what_a_worker_says_of_itself_is_checked() -> None:
    agents = {"Notifier": ["Posts a message", {"type": "function"}]}
    assert protocol.check_ready(["ready", 0, agents, [INSTANCE]]) == (agents, [INSTANCE])
    assert protocol.check_failed(["failed", 0, "load", "ImportError", "no"]) == (
        "load",
        "ImportError",
        "no",
    )
    bad_ready = [
        ["ready", 0, agents],
        ["ready", 0, [], []],
        ["ready", 0, {"Notifier": "no list"}, []],
        ["ready", 0, agents, [{**INSTANCE, "class": "not a class"}]],
        ["ready", 0, agents, [{**INSTANCE, "rpcs": [1]}]],
        ["ready", 0, agents, [{**INSTANCE, "extra": 1}]],
        ["ready", 0, agents, ["camera"]],
    ]
    for message in bad_ready:
        with pytest.raises(ProtocolError):
            protocol.check_ready(message)
    for message in (["failed", 0, "load"], ["failed", 0, "load", 1, "text"]):
        with pytest.raises(ProtocolError):
            protocol.check_failed(message)
