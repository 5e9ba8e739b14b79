"""What another web page can read: a page whose name was re-pointed at the gateway's address (DNS
rebinding) sends its own name as `Host` and reads nothing; the gateway's own page sees the
catalog's images only with a token; every answer tells browsers not to frame or sniff it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.keys import STORE
from shared.catalog import Catalog, ImageRecord, image_key
from shared.registry import ModelRegistry
from shared.store import open_store
from tests.gateway.conftest import Client, MakeClient
from tests.support.tokens import CONTRIBUTOR, OPERATOR, bearer

pytestmark = pytest.mark.timeout(60)
#: What a DNS-rebinding page reads with fetch() once its name resolves to the gateway's address.
READS = ["/", "/status", "/models", "/data/summary", "/data/samples", "/classes", "/openapi.json"]


async def one_image(client: Client, jpeg: bytes) -> str:
    """Catalogue `jpeg` as a melanoma; its hash."""
    sha = hashlib.sha256(jpeg).hexdigest()
    catalog = Catalog(client.app[STORE])
    await catalog.add_image(ImageRecord(sha256=sha, label="melanoma", key=image_key("melanoma", sha, "jpeg"),
                                        split="train", source="upload", job_id="b1", width=600, height=450),
                            jpeg)
    await catalog.write_batch("upload", "b1")
    return sha


async def test_a_page_at_a_rebound_name_reads_nothing(
        make_client: MakeClient, tmp_path: Path, tiny_model_dir: Path, melanoma_jpeg: bytes) -> None:
    await ModelRegistry(await open_store(tmp_path.as_uri())).bootstrap(tiny_model_dir)
    client = await make_client(with_worker=False)
    sha = await one_image(client, melanoma_jpeg)
    port = client.server.port
    rebound = f"attacker.example:{port}"
    for path in [*READS, f"/data/thumbnails/{sha}"]:
        # the page's fetch() is same-origin in the browser's eyes: its Origin is its own name
        response = await client.get(path, headers={"Host": rebound, "Origin": f"http://{rebound}",
                                                   **CONTRIBUTOR})
        assert response.status == 421, (path, response.status)
        assert (await response.json())["error"]["code"] == "host_not_allowed"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}"):
        assert (await client.get("/status", headers={"Host": host})).status == 200, host
    for path in ("/livez", "/metrics"):  # probes and scrapers reach pods by address or service name
        assert (await client.get(path, headers={"Host": f"gateway:{port}"})).status == 200


async def test_the_public_name_is_allowed_when_listed(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, allowed_hosts="dermascan.clinic.example")
    assert (await client.get("/classes", headers={"Host": "dermascan.clinic.example"})).status == 200
    assert (await client.get("/classes", headers={"Host": "dermascan.clinic.example:8443"})).status == 200
    assert (await client.get("/classes", headers={"Host": "clinic.example"})).status == 421
    anywhere = await make_client(with_worker=False, allowed_hosts="*")
    assert (await anywhere.get("/classes", headers={"Host": "whatever.example"})).status == 200


async def test_the_catalogs_images_need_a_view_token_and_stay_out_of_shared_caches(
        make_client: MakeClient, tmp_path: Path, melanoma_jpeg: bytes) -> None:
    viewer, predictor = "viewer-token-0123456789", "predictor-token-0123456789"
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("".join(
        f'{{"name": "{name}", "role": "{role}", "sha256": "{hashlib.sha256(token.encode()).hexdigest()}"}}\n'
        for name, role, token in (("vera", "view", viewer), ("pat", "predict", predictor))))
    client = await make_client(with_worker=False, api_tokens_file=tokens)
    sha = await one_image(client, melanoma_jpeg)
    thumbnail = f"/data/thumbnails/{sha}"
    for path in ("/data/samples", thumbnail):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=bearer(predictor))).status == 403, path
        for headers in (bearer(viewer), CONTRIBUTOR, OPERATOR):  # view, and the roles above it
            assert (await client.get(path, headers=headers)).status == 200, (path, headers)
    image = await client.get(thumbnail, headers=bearer(viewer))
    assert image.content_type == "image/jpeg"
    caching = image.headers["Cache-Control"]
    assert caching.startswith("private") and "immutable" not in caching  # was public, for a year
    summary = await client.get("/data/summary")  # counts and charts stay open
    assert summary.status == 200 and (await summary.json())["total"] == 1


async def test_every_answer_forbids_framing_sniffing_and_foreign_scripts(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False)
    for path in ("/", "/static/app.js", "/nope", "/data/samples"):
        response = await client.get(path)
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        parts = response.headers["Content-Security-Policy"].split(";")
        policy = dict(part.strip().split(" ", 1) for part in parts)
        assert policy["frame-ancestors"] == "'none'" and policy["script-src"] == "'self'", path
        assert policy["default-src"] == "'self'" and "blob:" in policy["img-src"], path
