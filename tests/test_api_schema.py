"""schemathesis against the served OpenAPI document: bounded examples for every operation,
no 5xx, and responses that keep to the schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api_fixtures import Api


def test_every_operation_keeps_its_schema_and_never_fails(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.endpoint_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # invoke, functions, aliases, versions, configs, mappings

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        run()
