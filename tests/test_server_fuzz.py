"""Property-based fuzzing of the API from its own OpenAPI schema: no 500, responses conform.

Each operation's cases come from schemathesis' Hypothesis strategy for it,
sent to a real server three times over: with the admin token, with a tenant's
token and with none. The checks are the ones the API promises: no server
error, and status code, content type, headers and body as the schema
documents them, for schema-valid and schema-invalid input alike. Schema-valid
input may still be refused (a bundle whose code does not compile is valid
JSON), so acceptance is not required.

``PLUGHOST_FUZZ_EXAMPLES`` sets the examples per operation, mode and token
(40 by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .server import ServerProcess

ADMIN = "admin-token-for-fuzzing"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_PER_OPERATION = int(os.environ.get("PLUGHOST_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(folder, admin_token=ADMIN, data_dir=folder / "data").start()
    with server.client() as client:
        tenant_token = client.deploy("t1", ROOT / "examples" / "alice")["token"]
        client.create_snapshot("t1", "jan")
    try:
        yield server, tenant_token
    finally:
        assert server.stop()


@pytest.mark.parametrize("principal", ["admin", "tenant", "anonymous"])
def test_no_route_answers_500_or_breaks_its_schema(
    fuzzed_server: tuple[ServerProcess, str], principal: str
) -> None:
    server, tenant_token = fuzzed_server
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    token = {"admin": ADMIN, "tenant": tenant_token, "anonymous": None}[principal]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16
    # The live feed is a stream that ends only when its client goes: a request of a case
    # would never return. test_feed and test_operator_page follow it.
    operations = [operation for operation in operations if operation.path != "/api/feed"]
    problems: list[str] = []
    statuses: dict[int, int] = {}
    runs = [(op, mode) for op in operations for mode in schemathesis.GenerationMode]
    for operation, mode in runs:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.path, response.text)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # takes no input to break
        except Exception as exc:
            problems.append(f"{operation.label} ({mode.value}): {exc}")
    assert problems == []
    print(f"fuzzed {len(operations)} operations with {sum(statuses.values())} requests: {statuses}")
    assert sum(statuses.values()) >= 10 * len(runs)
    assert any(200 <= status < 300 for status in statuses)
    if principal == "anonymous":
        assert statuses.get(401, 0) > 0
    with server.client() as client:
        assert client.health()["status"] == "healthy"
