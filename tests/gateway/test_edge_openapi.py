"""`GET /openapi.json` describes the API, and schemathesis, sending the gateway requests generated
from it (valid and invalid) with every check it has, finds nothing: no 500, no answer the document
does not declare, no valid request refused and no invalid one accepted."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import MakeClient
from tests.support.tokens import OPERATOR_TOKEN

pytestmark = pytest.mark.timeout(300)

#: Generated requests per operation in the fuzzing phase (the other phases add their own).
EXAMPLES = 20
#: What JSON Schema cannot say about some routes, for schemathesis.
CONFIG = Path(__file__).with_name("schemathesis.toml")


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
    file = upload["properties"]["file"]
    assert (file["type"], file["format"]) == ("string", "binary")
    assert spec["paths"]["/predict"]["post"]["responses"]["429"]["headers"]["Retry-After"]["required"]
    for path, operations in spec["paths"].items():  # a body may be slow, too large, unsupported or invalid
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert set(operation["responses"]) >= {"408", "413", "415", "422", "429"}, (method, path)
    for path in ("/predict", "/v2/models/{model_name}/infer"):  # the workers' own refusals
        responses = spec["paths"][path]["post"]["responses"]
        assert "`too_many_pixels`" in responses["413"]["description"]
        assert "`decoder_busy`" in responses["429"]["description"]
        assert "`body_too_slow`" in responses["408"]["description"]
    assert "422" not in spec["paths"]["/jobs/{job_id}"]["delete"]["responses"]  # an upload's id: 409


async def test_schemathesis_with_every_check_finds_nothing(make_client: MakeClient, tmp_path: Path) -> None:
    """`st run` with every check (its own process, over a real socket) against the document: no
    500, no undeclared answer, no valid request refused, no invalid one accepted, no resource found
    after a DELETE, every phase (examples, coverage, fuzzing, stateful). The gateway's own limits
    are off so the fuzzing reaches the handlers, and event streams end within 2 s;
    tests/gateway/schemathesis.toml says what JSON Schema cannot. Every check is on by default;
    `--checks all` is not passed because a check named on the command line overrides the file's
    per-operation settings (there, use_after_free is off on the two reads of a cancelled job)."""
    client = await make_client(with_jobs=True, predict_timeout_s=2, events_max_s=2, token_calls_per_min=0,
                               auth_failures_per_min=0, predict_rate_per_s=0)
    base_url = str(client.make_url("")).rstrip("/")
    command = [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "run",
               f"{base_url}/openapi.json",
               "-H", f"Authorization: Bearer {OPERATOR_TOKEN}",
               "--max-examples", str(EXAMPLES), "--seed", "1", "--workers", "1", "--no-color",
               "--request-timeout", "10", "--generation-database", "none"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=240,
                                   env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path)  # its cache there
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-8000:]
    generated = re.search(r"(\d+) generated", report)
    assert generated is not None and int(generated.group(1)) >= 200, report[-2000:]
    assert (await client.get("/livez")).status == 200  # and the gateway still serves
