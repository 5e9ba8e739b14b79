"""`GET /openapi.json` describes the API, and schemathesis, sending the gateway requests generated
from it (valid and invalid), finds no 500 and no answer the document does not declare."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.gateway.conftest import MakeClient
from tests.support.tokens import OPERATOR

pytestmark = pytest.mark.timeout(120)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
#: Generated requests per operation and mode: 16 operations x 2 modes x this, a few hundred in all.
EXAMPLES = 20


async def test_the_document_lists_every_route_with_its_role_and_the_error_shape(
        make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, open_predict=False)
    response = await client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.")
    routes = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    documented = {(method, path) for path, operations in spec["paths"].items() for method in operations}
    assert documented == routes
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    retrain = spec["paths"]["/retrain"]["post"]
    assert retrain["x-role"] == "operator" and retrain["security"] == [{"bearer": []}]
    assert spec["paths"]["/predict"]["post"]["x-role"] == "predict"  # closed in this gateway
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert set(retrain["responses"]) >= {"202", "401", "403", "409", "415", "422", "429", "500"}
    options = spec["components"]["schemas"]["TrainOptions"]
    assert options["additionalProperties"] is False and "epochs" in options["properties"]
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "retryable"}
    upload = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["file"] == {"type": "string", "format": "binary"}
    assert spec["paths"]["/predict"]["post"]["responses"]["429"]["headers"]["Retry-After"]["required"]


def fuzz(base_url: str) -> int:
    """Send every operation of the gateway's document generated requests; raises the first
    check that fails. Returns how many requests were sent."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    sent = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document parsed into operations
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                nonlocal sent
                sent += 1
                case.call_and_validate(base_url=base_url, headers=OPERATOR, checks=CHECKS, timeout=10)

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid: no parameters, no body
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return sent


async def test_generated_requests_never_get_a_500_or_an_undeclared_answer(make_client: MakeClient) -> None:
    client = await make_client(predict_timeout_s=2)
    base_url = str(client.make_url("")).rstrip("/")
    sent = await asyncio.to_thread(fuzz, base_url)
    assert sent >= 200
    # and the gateway still serves
    assert (await client.get("/livez")).status == 200
