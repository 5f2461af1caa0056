"""An agent's parameters schema: checked fast, worded by jsonschema, never fetched from afar."""

from __future__ import annotations

import socket

import jsonschema
import pytest

from plughost.agent import ArgumentsSchema

SCHEMA = {
    "type": "object",
    "properties": {"message": {"type": "string"}, "times": {"type": "integer"}},
    "required": ["message"],
    "additionalProperties": False,
}


def test_arguments_that_fit_pass_and_others_get_jsonschemas_words() -> None:
    check = ArgumentsSchema(SCHEMA)
    assert check.problem({"message": "hi", "times": 2}) is None
    assert check.problem({"message": 5}) == "arguments['message']: 5 is not of type 'string'"
    assert check.problem({}) == "arguments: 'message' is a required property"


def test_a_format_only_the_fast_check_enforces_does_not_refuse_arguments() -> None:
    check = ArgumentsSchema({"type": "object", "properties": {"to": {"format": "email"}}})
    # jsonschema does not check formats unless asked, and its verdict is the one that counts.
    assert check.problem({"to": "not an address"}) is None


def test_a_schema_that_points_elsewhere_is_refused_and_nothing_is_fetched() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        for ref in (f"http://127.0.0.1:{port}/schema.json", "file:///etc/passwd"):
            schema = {"type": "object", "properties": {"x": {"$ref": ref}}}
            with pytest.raises(jsonschema.SchemaError, match="points outside the schema"):
                ArgumentsSchema(schema)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    local = {"$defs": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}
    assert (
        ArgumentsSchema(local).problem({"x": "one"})
        == "arguments['x']: 'one' is not of type 'integer'"
    )
