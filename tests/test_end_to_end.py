"""The README's two ways to run, for real: separate processes on RabbitMQ + S3, and embedded."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import AWS_ENV
from tests.support.http import post_image
from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.tokens import CONTRIBUTOR_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
STRANGER = Path(__file__).parent / "fixtures" / "ood" / "circuit-00.png"  # not a skin image


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def test_distributed_gateway_and_worker_processes_on_rabbitmq_and_s3(
    rabbit_url: str, s3_endpoint: str, unique: str, tmp_path: Path, melanoma_jpeg: bytes
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **AWS_ENV,
        "DERMASCAN_BROKER_URL": rabbit_url,
        "DERMASCAN_STORE_URL": f"s3://{unique}",
        "DERMASCAN_S3_ENDPOINT_URL": s3_endpoint,
        "DERMASCAN_PREDICT_QUEUE": f"{unique}.predict",
        "DERMASCAN_STATUS_EXCHANGE": f"{unique}.status",
        "DERMASCAN_MODELS_EXCHANGE": f"{unique}.models",
        "DERMASCAN_HTTP_PORT": str(port),
        "DERMASCAN_METRICS_PORT": str(metrics_port),
        "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "DERMASCAN_HEARTBEAT_S": "1",
    }
    base = f"http://127.0.0.1:{port}"
    with running(python_module("gateway"), env=env, log=tmp_path / "gateway.log") as gateway, \
         running(python_module("inference_worker"), env=env, log=tmp_path / "worker.log") as worker:
        wait_http(f"{base}/livez", proc=gateway)
        wait_http(f"{base}/readyz", timeout=120, proc=worker)
        status, body = post_image(f"{base}/predict", melanoma_jpeg)
        assert status == 200, body
        health = get_json(f"{base}/health")
        assert body["model_version"] in health["model_versions"]  # type: ignore[operator]
        assert health["store"]["url"].startswith(f"s3://{unique}")  # type: ignore[index]
        status, body = post_image(f"{base}/predict", b"GIF89a" + b"\x00" * 100)
        assert status == 415
        status, body = post_image(f"{base}/predict", melanoma_jpeg[:500])
        assert status == 400 and body["error"]["code"] == "corrupt_image"  # type: ignore[index]
        worker_metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert 'dermascan_inference_worker_requests_total{status="ok"} 1.0' in worker_metrics
        assert worker.poll() is None and gateway.poll() is None


def post_json(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, b"{}", headers), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_embedded_mode_serves_ui_and_api_in_one_process(tmp_path: Path, melanoma_jpeg: bytes) -> None:
    port = free_port()
    env = {"DERMASCAN_HTTP_PORT": str(port), "DERMASCAN_STORE_URL": (tmp_path / "var").as_uri(),
           "DERMASCAN_MODEL_CACHE_DIR": str(tmp_path / "cache"), "DERMASCAN_OPERATOR_TOKEN": "",
           "DERMASCAN_CONTRIBUTOR_TOKEN": CONTRIBUTOR_TOKEN}
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "embedded.log"
    with running(python_module("embedded"), env=env, log=log) as proc:
        wait_http(f"{base}/readyz", timeout=120, proc=proc)
        status, body = post_image(f"{base}/predict", melanoma_jpeg)
        assert status == 200, body
        assert body["label"] in body["probabilities"]  # type: ignore[operator]
        assert (tmp_path / "var" / "models" / "current.json").is_file()  # registry bootstrapped
        # `make run` prints an operator token of its own when none is set; it works, and nothing else does.
        printed = re.search(r"operator token for this run.*: (dsk_\S+)", log.read_text())
        assert printed, log.read_text()[-2000:]
        assert post_json(f"{base}/models/rollback")[0] == 401
        status, body = post_json(f"{base}/models/rollback", printed.group(1))
        assert status == 409 and body["error"]["code"] == "nothing_to_roll_back", body  # type: ignore[index]
        classify_in_the_browser(base, tmp_path / "lesion.jpg", melanoma_jpeg)


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
