"""JSON within bounds: nesting no deeper than ``MAX_DEPTH``, and large text parsed in slices.

json's C decoder and encoder recurse, so 100,000 brackets would end in
``RecursionError``; and the C decoder holds the GIL from the first byte to
the last, so a large text decoded in a thread would still stall the event
loop. :func:`loads_in_parts` decodes as ``json.loads`` does, but hands the C
scanner a slice of a few thousand characters at a time (a run of items in
one call; what does not fit, item by item), so the GIL changes hands between
calls. :func:`dumps_async` encodes a large value in a thread with json's
pure-Python encoder, which gives up the GIL as it goes. :func:`too_deep` and
:func:`may_be_deep` tell, cheaply, whether a value or its text nests too
deeply. The worker protocol (:mod:`plughost.protocol`) frames what these
encode, and the HTTP API answers with it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import json
import json.scanner
import re
from collections.abc import Iterable
from typing import Any

MAX_DEPTH = 200
OFF_LOOP_BYTES = 256 * 1024
"""Text past this size is encoded or decoded off the event loop."""

_SLICE = 8 * 1024  # characters the C scanner gets at a time in a large text
_CONTAINERS = (list, tuple, dict)
_CLOSERS = {"[": "]", "{": "}"}
_QUOTES_AND_BRACKETS = {code: None for code in range(128) if chr(code) not in '[]{}"'}
_BATCH = 8 * 1024  # items too_deep takes in one C call
_PASSES = 16  # passes _within() makes before it leaves the question to a walk
# The C scanner (typeshed asks for a scanner as its context; a decoder is what it reads).
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_WHITESPACE = re.compile(r"[ \t\n\r]+")
_SPACE = " \t\n\r"
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_INLINE_ITEMS = 512  # items of a value dumps_async() encodes on the loop at most...
_ONE_CALL_ITEMS = 32 * 1024  # ...and in one C call in a thread (else with pure Python)
_JOIN_RUN = 16 * 1024  # pieces of encoded text joined in one C call
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class TooDeepError(ValueError):
    """JSON text nested deeper than ``MAX_DEPTH`` levels."""


def may_be_deep(data: bytes | bytearray) -> bool:
    """Whether ``data`` has room for more than ``MAX_DEPTH`` levels: cheap, often enough.

    Short frames have no room (a level is two bytes), and neither have frames with
    few brackets. In UTF-16 or UTF-32 every bracket still has its byte.
    """
    return len(data) > 2 * MAX_DEPTH and data.count(b"[") + data.count(b"{") > MAX_DEPTH


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests deeper than ``limit`` levels (``[]`` is one).

    Level by level, and a level with no containers (the types of its items are
    taken at C speed) ends the walk, so flat values cost little. Items are taken
    ``_BATCH`` at a time, so that no one C call holds the GIL for long.
    """
    if not isinstance(value, _CONTAINERS):
        return False
    level = [value]
    for _ in range(limit):
        below: list[Any] = []
        items = itertools.chain.from_iterable(
            each.values() if isinstance(each, dict) else each for each in level
        )
        while batch := list(itertools.islice(items, _BATCH)):
            if any(issubclass(kind, _CONTAINERS) for kind in set(map(type, batch))):
                below += [item for item in batch if isinstance(item, _CONTAINERS)]
        if not below:
            return False
        level = below
    return True


def _within(valid: str, limit: int) -> bool | None:
    """Whether the JSON text ``valid`` nests at most ``limit`` levels; None: not found cheaply.

    Few brackets say yes at once. Else, in ASCII text (what :func:`encode` makes),
    the brackets outside strings are kept and empty pairs taken away, a level at
    most a pass; if that leaves none within ``limit`` passes, the text nests no
    deeper. A few passes at C speed, where walking the decoded value would take
    a Python step an item.
    """
    if valid.count("[") + valid.count("{") <= limit:
        return True
    if not valid.isascii():
        return None
    if "\\" in valid:  # what is left of strings is then just their quotes
        valid = valid.replace("\\\\", "").replace('\\"', "")
    brackets = "".join(valid.translate(_QUOTES_AND_BRACKETS).split('"')[::2])
    for done in range(min(limit, _PASSES)):
        brackets = brackets.replace("[]" if done % 2 else "{}", "")
        if not brackets:
            return True
    return None


def _parse(text: str, step: int) -> Any:
    """Decode ``text`` as ``json.loads`` does, giving the C scanner ``step`` characters at most
    for anything but one string or number.

    Inside a container, a run of items that ends in the slice is one call; an item
    that does not fit is one call if it fits a slice of its own, else it is opened
    here and its items are decoded the same way. What a call returned is checked
    for nesting on the text it read (:func:`_within`), and walked only when that
    cannot tell.

    Raises:
        ValueError: ``text`` is not JSON.
        TooDeepError: it is nested deeper than ``MAX_DEPTH``.
    """
    scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    size, half = len(text), step // 2
    stack: list[Any] = []  # the containers being filled, innermost last
    keys: dict[str, str] = {}  # one object per distinct key, as json.loads does
    root: Any = None
    key = ""
    base, window = 0, text[:step]  # the slice the scanner gets, from ``base``
    runs = True  # whether to try a run of items in this slice (not after one failed)
    spare = size + step  # characters the scanner may read in vain on containers
    pos = _skip(text, 0)
    at_item = False  # pos is at an item of stack[-1], else at a value
    while True:
        if at_item:
            top = stack[-1]
            in_list = type(top) is list
            if pos - base > len(window) - half and base + len(window) < size:
                base, window, runs = pos, text[pos : pos + step], True
            if runs and pos < size:
                off = pos - base
                # The run ends at the last comma after what its first item (its value, in
                # an object) ends with; a wrong guess only costs a failed call.
                if in_list:
                    first = text[pos]
                    comma = ","
                else:
                    colon = window.find('":', off + 1) + 2
                    first = window[colon] if 1 < colon < len(window) else ""
                    comma = ',"'
                mark = _CLOSERS.get(first, '"' if first == '"' else "")
                found = window.rfind(mark + comma, off)
                cut = found + len(mark) if found >= 0 else -1
                end = -1
                if cut > off:
                    run = ("[" if in_list else "{") + window[off:cut] + ("]" if in_list else "}")
                    with contextlib.suppress(ValueError, StopIteration, RecursionError):
                        items, end = scan(run, 0)
                if end > 0 and end == len(run):
                    within = _within(run, MAX_DEPTH + 1 - len(stack))
                    if within is None:
                        within = not too_deep(items, MAX_DEPTH + 1 - len(stack))
                    if not within:
                        raise TooDeepError(_TOO_DEEP)
                    if in_list:
                        top.extend(items)
                    else:
                        top.update(items)
                    pos = base + cut
                    at_item = False
                else:
                    runs = False
            if at_item and not in_list:
                if pos >= size or text[pos] != '"':
                    raise json.JSONDecodeError(
                        "Expecting property name enclosed in double quotes", text, pos
                    )
                key, pos = scan(text, pos)
                key = keys.setdefault(key, key)
                if pos < size and text[pos] in _SPACE:
                    pos = _skip(text, pos)
                if pos >= size or text[pos] != ":":
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
                pos += 1
                if pos < size and text[pos] in _SPACE:
                    pos = _skip(text, pos)
        if at_item or not stack:  # a value starts at pos
            at_item = False
            first = text[pos] if pos < size else ""
            value: Any = _closed
            if first in _CLOSERS:
                if spare > 0:
                    if pos - base > len(window) - half and base + len(window) < size:
                        base, window, runs = pos, text[pos : pos + step], True
                    off = pos - base
                    try:
                        value, end = scan(window, off)
                    except (ValueError, StopIteration, RecursionError):
                        spare -= len(window) - off
                        value = _closed
                    else:
                        within = _within(window[off:end], MAX_DEPTH - len(stack))
                        if within is None:
                            within = not too_deep(value, MAX_DEPTH - len(stack))
                        if not within:
                            raise TooDeepError(_TOO_DEEP)
                        pos = base + end
                opened = value is _closed
                if opened:
                    if len(stack) == MAX_DEPTH:
                        raise TooDeepError(_TOO_DEEP)
                    value = [] if first == "[" else {}
            else:
                opened = False
                try:
                    value, pos = scan(text, pos)
                except StopIteration:
                    raise json.JSONDecodeError("Expecting value", text, pos) from None
            if not stack:
                root = value
            elif type(stack[-1]) is list:
                stack[-1].append(value)
            else:
                stack[-1][key] = value
            if opened:
                stack.append(value)
                pos += 1
                if pos < size and text[pos] in _SPACE:
                    pos = _skip(text, pos)
                if pos >= size or text[pos] != _CLOSERS[first]:
                    at_item = True
                    continue
                stack.pop()
                pos += 1
        # After a value: a comma and the next item, or the end of containers.
        while stack:
            if pos < size and text[pos] in _SPACE:
                pos = _skip(text, pos)
            here = text[pos] if pos < size else ""
            if here == ",":
                pos += 1
                if pos < size and text[pos] in _SPACE:
                    pos = _skip(text, pos)
                at_item = True
                break
            if here != ("]" if type(stack[-1]) is list else "}"):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
            stack.pop()
            pos += 1
        else:
            if _skip(text, pos) != size:
                raise json.JSONDecodeError("Extra data", text, _skip(text, pos))
            return root


def _skip(text: str, pos: int) -> int:
    space = _WHITESPACE.match(text, pos)
    return pos if space is None else space.end()


_closed = object()  # no value decoded: the container is opened instead


def loads_in_parts(parts: list[bytes]) -> Any:
    """Decode JSON text read in ``parts`` (emptied as they are decoded, to free them early),
    giving up the GIL between slices of it: call it in a thread, and the event loop keeps
    running.

    Raises:
        ValueError: it is not JSON.
        TooDeepError: it is nested deeper than ``MAX_DEPTH``.
    """
    encoding = json.detect_encoding(b"".join(parts[:4])[:4])  # it looks at 4 bytes
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    pieces = []
    parts.reverse()
    while parts:
        pieces.append(decoder.decode(parts.pop()))
    pieces.append(decoder.decode(b"", True))
    text = "".join(pieces)
    del pieces
    return _parse(text, _SLICE)


# -- writing ---------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, encoded at once.

    Raises:
        TypeError, ValueError: it holds something JSON cannot carry (NaN included)
            or is nested deeper than ``MAX_DEPTH``.
    """
    try:
        text = _ENCODER.encode(value)  # C; one encoder, not one a call as json.dumps makes
    except RecursionError:
        raise ValueError(f"the value is {_TOO_DEEP}") from None
    return _checked(value, text)


async def dumps_async(value: Any) -> bytes:
    """``value`` as :func:`dumps` encodes it; a large one in a thread, giving up the GIL
    as it goes. The value must not change until this returns.

    A value's size is not known before it is encoded, so its items and characters
    are counted first, stopping at 512 items or ``OFF_LOOP_BYTES`` characters.

    Raises:
        TypeError, ValueError: as :func:`dumps`.
    """
    if _small(value, _INLINE_ITEMS, OFF_LOOP_BYTES):
        return dumps(value)
    return await asyncio.to_thread(_dumps_off_loop, value)


def _dumps_off_loop(value: Any) -> bytes:
    if _small(value, _ONE_CALL_ITEMS, 4 * OFF_LOOP_BYTES):
        return dumps(value)  # a few milliseconds of GIL at most
    try:
        text = _join_in_runs(_ENCODER.iterencode(value))  # pure Python: not one-shot
    except RecursionError:
        raise ValueError(f"the value is {_TOO_DEEP}") from None
    except RuntimeError as exc:  # a dict changed size while it was encoded
        raise ValueError(f"the value changed while it was encoded: {exc}") from None
    return _checked(value, text)


def _checked(value: Any, text: str) -> bytes:
    data = text.encode("utf-8")
    if may_be_deep(data) and too_deep(value):
        raise ValueError(f"the value is {_TOO_DEEP}")
    return data


def _join_in_runs(pieces: Iterable[str]) -> str:
    # One join of millions of pieces would hold the GIL for tens of milliseconds.
    runs: list[str] = []
    run: list[str] = []
    for piece in pieces:
        run.append(piece)
        if len(run) == _JOIN_RUN:
            runs.append("".join(run))
            run.clear()
    runs.append("".join(run))
    return "".join(runs)


def _small(message: Any, most_items: int, most_chars: int) -> bool:
    """Whether ``message`` holds at most ``most_items`` items and ``most_chars`` of text.

    It stops at the first item over, so it costs what the message costs, up to a bound.
    """
    items = chars = 0
    pending = [message]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            chars += len(value)
            if chars > most_chars:
                return False
        elif isinstance(value, (list, tuple, dict)):
            items += len(value)
            if items > most_items:
                return False
            pending.extend(value)
            if isinstance(value, dict):
                pending.extend(value.values())
    return True
