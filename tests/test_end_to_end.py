"""The README's two ways to run, for real: separate processes on RabbitMQ + S3, and embedded (the
run's shared systems: tests.support.cluster and tests.support.embedded)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.embedded import Embedded
from tests.support.http import post_image
from tests.support.tokens import CONTRIBUTOR_TOKEN, bearer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
STRANGER = Path(__file__).parent / "fixtures" / "ood" / "circuit-00.png"  # not a skin image


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def worker_requests_ok(cluster: Cluster) -> float:
    """The worker's count of requests answered ok, from its /metrics."""
    text = urllib.request.urlopen(cluster.metrics("inference_worker"), timeout=10).read().decode()
    found = re.search(r'^dermascan_inference_worker_requests_total\{status="ok"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_distributed_gateway_and_worker_processes_on_rabbitmq_and_s3(
    distributed_system: Cluster, melanoma_jpeg: bytes
) -> None:
    base = distributed_system.base
    answered = worker_requests_ok(distributed_system)
    status, body = post_image(f"{base}/predict", melanoma_jpeg)
    assert status == 200, body
    health = get_json(f"{base}/health")
    assert body["model_version"] in health["model_versions"]  # type: ignore[operator]
    assert health["store"]["url"].startswith(distributed_system.store_url)  # type: ignore[index]
    status, body = post_image(f"{base}/predict", b"GIF89a" + b"\x00" * 100)
    assert status == 415
    status, body = post_image(f"{base}/predict", melanoma_jpeg[:500])
    assert status == 400 and body["error"]["code"] == "corrupt_image"  # type: ignore[index]
    assert worker_requests_ok(distributed_system) == answered + 1  # the worker answered the good one
    assert distributed_system.dead() == {}


def post_json(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, b"{}", headers), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_embedded_mode_serves_ui_and_api_in_one_process(embedded_system: Embedded, tmp_path: Path,
                                                        melanoma_jpeg: bytes) -> None:
    base = embedded_system.base
    status, body = post_image(f"{base}/predict", melanoma_jpeg)
    assert status == 200, body
    assert body["label"] in body["probabilities"]  # type: ignore[operator]
    assert (embedded_system.var / "models" / "current.json").is_file()  # registry bootstrapped
    # `make run` prints an operator token of its own when none is set (tests.support.embedded
    # started it so): it works, and nothing else does.
    token = embedded_system.operator_token
    assert post_json(f"{base}/models/rollback")[0] == 401
    assert get_status(f"{base}/audit", CONTRIBUTOR_TOKEN) == 403
    assert get_status(f"{base}/audit", token) == 200  # an operator's read, which changes nothing
    classify_in_the_browser(base, tmp_path / "lesion.jpg", melanoma_jpeg)


def get_status(url: str, token: str) -> int:
    """The status of GET `url` with `token` as its bearer token."""
    try:
        request = urllib.request.Request(url, headers=bearer(token))
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def classify_in_the_browser(base: str, image: Path, data: bytes) -> None:
    """What a person does: open the page, choose an image, read the result; upload with a
    token the page asks for (a wrong one first), and be told when the token's role is too low."""
    from playwright.sync_api import sync_playwright

    image.write_bytes(data)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_selector("#status .dot.ok", timeout=15_000)
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#answer .meta", timeout=15_000)
            shown = page.inner_text("#answer")
            assert "decision aid, not a diagnosis" in shown
            # this melanoma is referred, and the bundled model is not sure of it: no single label
            assert "Refer: melanoma" in page.inner_text("#referral")
            assert page.query_selector("#uncertain") is not None and page.query_selector("#label") is None
            assert "melanoma" in shown and "%" in shown  # the top classes with their probabilities
            page.set_input_files("#file", str(STRANGER))
            flagged = page.wait_for_selector("#ood", timeout=15_000)
            assert flagged is not None and "does not look like a dermoscopic" in flagged.inner_text()
            assert page.query_selector("#label") is None and page.query_selector("#referral") is None
            named = image.with_name("melanoma_from_the_browser.jpg")
            named.write_bytes(data[: len(data) // 2])  # truncated: the job must say why it was rejected
            page.set_input_files("#upload-files", [str(named)])

            def upload_with(token: str) -> None:
                page.click("#upload-button")
                page.wait_for_selector("#token-dialog[open]", timeout=5_000)  # asked before anything is sent
                page.fill("#token-input", token)
                page.click("#token-ok")

            upload_with("not-the-token-0123456789")
            refused = page.wait_for_selector("#auth-error", timeout=10_000)
            assert refused is not None and "not accepted (401)" in refused.inner_text()
            upload_with(CONTRIBUTOR_TOKEN)
            summary = page.wait_for_selector("#upload-summary", timeout=30_000)
            assert summary is not None and "1 rejected" in summary.inner_text()
            assert "corrupt_image" in page.inner_text("#upload-status")
            assert page.evaluate("sessionStorage.getItem('dermascan.token')") == CONTRIBUTOR_TOKEN
            page.click("#retrain-button")  # the kept contributor token is not enough
            refusal = page.wait_for_selector("#retrain-status #auth-error", timeout=10_000)
            assert refusal is not None
            assert "(403)" in refusal.inner_text() and "operator role" in refusal.inner_text()
            page.screenshot(path=str(image.with_suffix(".png")))
        finally:
            browser.close()
