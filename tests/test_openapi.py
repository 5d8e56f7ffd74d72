"""schemathesis against the running daemon's /openapi.json: every status an endpoint
answers is documented, no input makes a server error, answers match their schemas.

Driven through schemathesis's strategies inside one test (its ``from_fixture`` helper
reads a pytest attribute that pytest 9 no longer has), one Hypothesis run per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.consul_target import ConsulTarget
from tests.doubles.consul import ConsulDouble
from tests.push_daemon import PushDaemon


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushDaemon]:
    with ConsulDouble() as double:
        target = ConsulTarget(double.address, double)
        proc = PushDaemon(target, Path(tmp_path_factory.mktemp("openapi"))).started()
        try:
            yield proc
        finally:
            assert proc.stop() == 0
        assert not [line for line in proc.lines if "Traceback" in line or "level=error" in line]


# Invalid data may also be refused for its size (a 413 is a 4xx like the others).
CONFIG = {
    "checks": {
        "negative_data_rejection": {
            "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
        }
    }
}


def operations(running: PushDaemon) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(
        f"http://{running.address}/openapi.json", config=schemathesis.Config.from_dict(CONFIG)
    )
    return [result.ok() for result in schema.get_all_operations()]


def test_every_route_is_documented(running: PushDaemon) -> None:
    documented = {f"{op.method.upper()} {op.path}" for op in operations(running)}
    assert documented >= {
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /status",
        "POST /workers/register",
        "POST /workers/find",
        "GET /workers",
        "GET /workers/{worker_id}",
        "DELETE /workers/{worker_id}",
    }


# Every check but "schema-valid data is accepted": JSON Schema cannot say every rule of a
# declaration (duplicate tools, Consul's size limits), so valid-looking data may get 422,
# which is documented.
# schemathesis's own strategies draw from the `random` module in places, which Hypothesis
# deprecates; that is the library's, not something these tests can change.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
@pytest.mark.parametrize(
    ("mode", "authorized"),
    [
        (GenerationMode.POSITIVE, True),
        (GenerationMode.NEGATIVE, True),
        (GenerationMode.POSITIVE, False),
    ],
    ids=["valid", "invalid", "no-token"],
)
def test_api_conforms(running: PushDaemon, mode: GenerationMode, authorized: bool) -> None:
    headers = running.auth() if authorized else {}
    for operation in operations(running):
        if mode is GenerationMode.NEGATIVE and not (
            operation.get_request_payload_content_types()
            or any(p.location == "query" for p in operation.iter_parameters())
        ):
            continue  # nothing to get wrong: no body, no query (any path string is valid)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        check()
