"""Who may change things, as a client sees it: tokens and roles, forced promotions and the audit
log, JSON-only bodies, and browser origins."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.manifest import ModelManifest
from shared.registry import ModelRegistry
from shared.store import open_store
from shared.verdict import GateResult
from tests.gateway.conftest import Client, MakeClient
from tests.support.http import files_form, form
from tests.support.processes import REPO, python_module
from tests.support.tokens import CONTRIBUTOR, OPERATOR, bearer

pytestmark = pytest.mark.timeout(60)
#: Every route that changes something, with the least role it needs.
STATE_CHANGING = [("/upload-bulk", "contribute"), ("/retrain", "operator"),
                  ("/models/rollback", "operator"), ("/models/tiny-v1/promote", "operator")]
OPERATOR_ONLY = [path for path, role in STATE_CHANGING if role == "operator"]


async def bootstrapped(make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path,
                       **settings: Any) -> Client:
    """A gateway without workers whose registry holds the tiny model (tiny-v1, current)."""
    await ModelRegistry(await open_store(tmp_path.as_uri())).bootstrap(tiny_model_dir)
    return await make_client(with_worker=False, **settings)


async def audit(client: Client, limit: int = 50) -> list[dict[str, Any]]:
    response = await client.get("/audit", params={"limit": str(limit)}, headers=OPERATOR)
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


def body_for(path: str) -> dict[str, Any]:
    if path == "/upload-bulk":
        return {"data": files_form([("melanoma_1.jpg", b"not checked before the token")])}
    return {"json": {}}


@pytest.mark.parametrize("path", [p for p, _ in STATE_CHANGING] + ["GET /audit"])
async def test_no_token_or_an_unknown_one_is_401(make_client: MakeClient, path: str) -> None:
    client = await make_client(with_worker=False)
    method, _, path = path.rpartition(" ")

    async def send(headers: dict[str, str]) -> aiohttp.ClientResponse:
        if method == "GET":
            return await client.get(path, headers=headers)
        return await client.post(path, headers=headers, **body_for(path))

    for headers, code in (({}, "missing_token"), (bearer("not-a-token-anyone-issued"), "invalid_token"),
                          ({"Authorization": "Basic b3BlcmF0b3I6cw=="}, "invalid_token")):
        response = await send(headers)
        assert response.status == 401, (headers, await response.text())
        assert (await response.json())["error"]["code"] == code
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("path", OPERATOR_ONLY)
async def test_a_contributor_token_on_an_operator_route_is_403_and_audited(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path, path: str) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir)
    response = await client.post(path, json={}, headers=CONTRIBUTOR)
    assert response.status == 403
    error = (await response.json())["error"]
    assert error["code"] == "insufficient_role" and "operator role" in error["message"]
    assert "WWW-Authenticate" not in response.headers
    assert (await client.get("/audit", headers=CONTRIBUTOR)).status == 403
    (event,) = await audit(client)
    assert (event["actor"], event["role"], event["status"], event["outcome"]) == \
        ("contributor", "contribute", 403, "insufficient_role")


async def test_the_right_tokens_work_and_operator_implies_contribute(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path, melanoma_jpeg: bytes) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir)
    for headers in (CONTRIBUTOR, OPERATOR):
        response = await client.post("/upload-bulk", data=files_form([("melanoma_1.jpg", melanoma_jpeg)]),
                                     headers=headers)
        assert response.status == 202, await response.text()
    promoted = await client.post("/models/tiny-v1/promote", headers=OPERATOR)
    assert promoted.status == 200 and (await promoted.json())["current"] == "tiny-v1"
    rolled = await client.post("/models/rollback", headers=OPERATOR)  # past auth: nothing earlier
    assert rolled.status == 409 and (await rolled.json())["error"]["code"] == "nothing_to_roll_back"
    events = await audit(client)
    assert [(e["action"], e["actor"], e["outcome"]) for e in events] == [
        ("rollback", "operator", "nothing_to_roll_back"), ("promote", "operator", "ok"),
        ("upload", "operator", "ok"), ("upload", "contributor", "ok")]
    assert events[3]["target"] and events[3]["detail"]["files"] == 1 and events[1]["target"] == "tiny-v1"
    assert events[0]["at"] > events[1]["at"] > events[3]["at"]


async def test_reading_stays_open(make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir)
    for path in ("/", "/health", "/livez", "/classes", "/models", "/metrics"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/jobs/nope")).status == 404  # a job id is its own capability


async def publish_rejected_candidate(tmp_path: Path, tiny_model_dir: Path) -> str:
    base = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    candidate = ModelManifest(**{**base.model_dump(), "version": "tiny-v2", "parent_version": base.version,
                                 "gate": GateResult(passed=False, reasons=["balanced accuracy fell 0.080"],
                                                    candidate_balanced_accuracy=0.4,
                                                    current_balanced_accuracy=0.48)})
    await ModelRegistry(await open_store(tmp_path.as_uri())).publish(tiny_model_dir / "model.keras",
                                                                     candidate)
    return candidate.version


async def test_promoting_a_gate_rejected_version_needs_force_and_a_reason_and_is_audited(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir)
    version = await publish_rejected_candidate(tmp_path, tiny_model_dir)
    url = f"/models/{version}/promote"

    refused = await client.post(url, headers=OPERATOR)
    assert refused.status == 409
    error = (await refused.json())["error"]
    assert error["code"] == "gate_rejected" and "balanced accuracy fell" in error["message"]
    for body in ({"force": True}, {"force": True, "reason": "  "}, {"force": True, "why": "x"}):
        response = await client.post(url, json=body, headers=OPERATOR)
        assert response.status == 422, body
    forced_by_contributor = await client.post(url, json={"force": True, "reason": "please"},
                                              headers=CONTRIBUTOR)
    assert forced_by_contributor.status == 403
    models = await (await client.get("/models")).json()
    assert models["current"] == "tiny-v1"  # nothing changed yet
    assert [v["gate"]["passed"] for v in models["versions"] if v["version"] == version] == [False]

    reason = "dermatology board accepted the melanoma recall trade-off (ticket 42)"
    forced = await client.post(url, json={"force": True, "reason": reason}, headers=OPERATOR)
    assert forced.status == 200 and (await forced.json())["current"] == version
    assert (await (await client.get("/models")).json())["current"] == version

    newest, *older = await audit(client)
    assert (newest["action"], newest["actor"], newest["role"], newest["target"]) == \
        ("promote", "operator", "operator", version)
    assert newest["forced"] is True and newest["reason"] == reason and newest["outcome"] == "ok"
    assert newest["detail"]["gate"] == "rejected"
    assert [e["outcome"] for e in older] == ["insufficient_role", "invalid_options", "invalid_options",
                                             "invalid_options", "gate_rejected"]
    assert [e["event_id"] for e in await audit(client, limit=2)] == [newest["event_id"], older[0]["event_id"]]


@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1e3", "1001", "9" * 5000])
async def test_a_bad_audit_limit_is_400(make_client: MakeClient, limit: str) -> None:
    client = await make_client(with_worker=False)
    response = await client.get("/audit", params={"limit": limit}, headers=OPERATOR)
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_limit"


@pytest.mark.parametrize("path", ["/retrain", "/models/rollback", "/models/tiny-v1/promote"])
async def test_json_routes_refuse_other_content_types(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path, path: str) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir)
    for headers, data in (({"Content-Type": "text/plain"}, b"{}"),
                          ({"Content-Type": "application/x-www-form-urlencoded"}, b"epochs=1"),
                          ({}, b"{}")):  # a body without a Content-Type
        response = await client.post(path, data=data, headers={**OPERATOR, **headers})
        assert response.status == 415, headers
        error = (await response.json())["error"]
        assert error["code"] == "json_required" and "application/json" in error["message"]


@pytest.mark.parametrize("path", ["/retrain", "/models/rollback"])
async def test_a_foreign_origin_cannot_change_anything(make_client: MakeClient, path: str) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    # What a page on another site can send without a preflight: a text/plain form post. The
    # token is right, so only the origin stops it.
    response = await client.post(path, data=b'{"epochs": 1}', headers={
        **OPERATOR, "Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert response.status == 403 and (await response.json())["error"]["code"] == "foreign_origin"
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    null = await client.post(path, json={}, headers={**OPERATOR, "Origin": "null"})
    assert null.status == 403
    assert (await client.get("/models", headers={"Origin": "https://evil.example"})).status == 200  # reads


async def test_the_gateways_own_origin_and_listed_ones_pass_and_only_listed_ones_get_cors(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir,
                                allowed_origins="https://clinic.example, http://localhost:3000")
    own = f"http://{client.server.host}:{client.server.port}"
    for origin in (own, "https://clinic.example", "http://localhost:3000"):
        response = await client.post("/models/tiny-v1/promote", headers={**OPERATOR, "Origin": origin})
        assert response.status == 200, origin
    response = await client.post("/models/tiny-v1/promote",
                                 headers={**OPERATOR, "Origin": "https://clinic.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://clinic.example"
    assert "Origin" in response.headers.getall("Vary")
    preflight = await client.options("/retrain", headers={
        "Origin": "https://clinic.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    stranger = await client.options("/retrain", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
    refused = await client.post("/models/rollback", headers={**OPERATOR, "Origin": "https://evil.example"})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers


async def test_cors_is_off_by_default(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    preflight = await client.options("/retrain", headers={
        "Origin": "https://clinic.example", "Access-Control-Request-Method": "POST"})
    answers = [preflight, await client.get("/models", headers={"Origin": "https://clinic.example"})]
    for response in answers:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def make_token(name: str, role: str) -> tuple[str, str]:
    """`python -m gateway token`, as an operator runs it: (the token, the file line)."""
    done = subprocess.run(python_module("gateway", "token", "--name", name, "--role", role),
                          cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    return done.stderr.strip().rsplit(" ", 1)[-1], done.stdout.strip()


async def test_a_file_of_hashed_tokens_names_who_did_what(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path) -> None:
    alice, alice_line = make_token("alice", "operator")
    bob, bob_line = make_token("bob", "contribute")
    assert alice not in alice_line and alice.startswith("dsk_")  # the file holds digests only
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(f"# DermaScan API tokens\n{alice_line}\n\n{bob_line}\n")
    client = await bootstrapped(make_client, tmp_path, tiny_model_dir, api_tokens_file=tokens,
                                operator_token=None, contributor_token=None)
    assert (await client.post("/models/tiny-v1/promote", headers=bearer(alice))).status == 200
    assert (await client.post("/models/tiny-v1/promote", headers=bearer(bob))).status == 403
    assert (await client.post("/models/tiny-v1/promote", headers=OPERATOR)).status == 401  # not in this book
    events = (await (await client.get("/audit", headers=bearer(alice))).json())["events"]
    assert [(e["actor"], e["role"], e["status"]) for e in events] == [("bob", "contribute", 403),
                                                                       ("alice", "operator", 200)]


@pytest.mark.parametrize("lines", [
    ['{"name": "alice", "role": "admin", "sha256": "' + "0" * 64 + '"}'],
    ['{"name": "alice", "role": "operator", "sha256": "secret-in-the-clear"}'],
    ['{"name": "alice", "role": "operator", "sha256": "' + "0" * 64 + '"}',
     '{"name": "alice", "role": "predict", "sha256": "' + "1" * 64 + '"}'],
    ["alice operator 0000"],
])
def test_a_malformed_token_file_stops_the_gateway_at_start(tmp_path: Path, lines: list[str]) -> None:
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="tokens.jsonl"):
        create_app(GatewaySettings(api_tokens_file=tokens))


def test_short_tokens_are_refused_and_empty_means_none() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        GatewaySettings(operator_token="change-me")
    assert GatewaySettings(operator_token="", contributor_token=" ").operator_token is None


async def test_predict_is_open_by_default_and_closed_by_a_setting(
        make_client: MakeClient, melanoma_jpeg: bytes) -> None:
    client = await make_client()
    assert (await client.post("/predict", data=form(melanoma_jpeg))).status == 200
    closed = await make_client(open_predict=False)
    response = await closed.post("/predict", data=form(melanoma_jpeg))
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await closed.post("/predict", data=form(melanoma_jpeg),
                              headers=bearer("wrong-token-0123456789"))).status == 401
    assert (await closed.post("/predict", data=form(melanoma_jpeg), headers=CONTRIBUTOR)).status == 200
