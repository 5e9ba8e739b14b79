"""The Grafana dashboard: its JSON is well formed, and every query in it returns data from a real
Prometheus scraping a running distributed DermaScan (four service processes on RabbitMQ + S3: the
run's shared cluster)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from inference_worker.metrics import WorkerMetrics
from ingest_service.metrics import IngestMetrics
from tests.support.cluster import SERVICES, Cluster
from tests.support.processes import REPO, free_port, running, wait_http
from tests.support.tokens import CONTRIBUTOR, OPERATOR
from trainer_service.service.metrics import TrainerMetrics

DASHBOARD = REPO / "deploy/grafana/dashboards/dermascan.json"
DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
#: Grafana's built-in variables, as Grafana would expand them for a 5-minute view.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
#: Scrape jobs of prometheus.yml that this test cannot serve: the RabbitMQ the tests share has no
#: rabbitmq_prometheus plugin enabled (docker-compose enables it through deploy/rabbitmq).
NOT_SCRAPED_HERE = {"rabbitmq", "rabbitmq_queues"}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, PromQL with Grafana's variables expanded) for every target."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"{panel['title']} / {target['refId']}", expr))
    return found


def exported_names() -> set[str]:
    """Every sample name the four services export (fresh registries, as each service builds them)."""
    registry = CollectorRegistry()
    for metrics in (GatewayMetrics, WorkerMetrics, IngestMetrics, TrainerMetrics):
        metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


@pytest.mark.timeout(30)
def test_dashboard_json_is_a_valid_provisioned_dashboard() -> None:
    dashboard = load_dashboard()
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    panels = dashboard["panels"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid and target["expr"].strip()


@pytest.mark.timeout(30)
def test_dashboard_covers_the_issue_and_names_only_exported_metrics() -> None:
    expressions = [expr for _, expr in queries(load_dashboard())]
    text = "\n".join(expressions)
    assert "$" not in text, "a Grafana variable the tests do not expand"
    exported = exported_names()
    used = set(re.findall(r"\bdermascan_\w+", text)) - {"dermascan_"}
    assert sorted(used - exported) == [], "the dashboard queries metrics no service exports"
    required = [
        "_uptime_seconds", "dermascan_gateway_requests_total", "dermascan_gateway_predict_seconds_bucket",
        "dermascan_inference_worker_compute_seconds_bucket", "dermascan_inference_worker_batch_size",
        "dermascan_gateway_queue_depth", "dermascan_inference_worker_predictions_total",
        "dermascan_inference_worker_confidence_bucket", "dermascan_ingest_service_files_total",
        "dermascan_trainer_service_jobs_total", "dermascan_trainer_service_training_seconds",
        "dermascan_trainer_service_last_balanced_accuracy", "dermascan_trainer_service_last_class_recall",
        "dermascan_inference_worker_model_info", "dermascan_trainer_service_current_model_info",
    ]
    assert [name for name in required if name not in text] == []
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(dermascan_gateway_predict_seconds" in text


# --- against a running system -------------------------------------------------------------------

def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "dermascan-deploy-test"
    body = b""
    for field, filename, data in files:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def call(url: str, body: bytes | None = None, content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, body, {**({"Content-Type": content_type} if body is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_job(base: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = call(f"{base}/jobs/{job_id}")
        assert status == 200, job
        if job["state"] in {"succeeded", "failed", "rejected"}:
            return dict(job)
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['log']}")


def prometheus_config(ports: dict[str, int], path: Path) -> Path:
    """deploy/prometheus/prometheus.yml with loopback targets and a 1 s scrape interval."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in NOT_SCRAPED_HERE:
            continue
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports.pop(job['job_name'])}"]}]
        jobs.append(job)
    assert not ports, f"prometheus.yml has no job for {sorted(ports)}"
    config["scrape_configs"] = jobs
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (histogram_quantile over no observations gives NaN)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.fixture
def system(distributed_system: Cluster, tmp_path: Path) -> Iterator[tuple[str, Prometheus]]:
    """The run's distributed DermaScan (four service processes on RabbitMQ + S3,
    tests.support.cluster) and a Prometheus of this test scraping them every second."""
    prometheus_binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(prometheus_binary).is_file():
        pytest.fail("Prometheus is not installed: run `make system-deps`")
    prometheus_port = free_port()
    config = prometheus_config({name: distributed_system.metrics_ports[name] for name in SERVICES},
                               tmp_path / "prometheus.yml")
    with running([prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                 log=tmp_path / "prometheus.log") as prometheus:
        wait_http(f"http://127.0.0.1:{prometheus_port}/-/ready", timeout=30, proc=prometheus)
        yield distributed_system.base, Prometheus(f"http://127.0.0.1:{prometheus_port}")
        assert prometheus.poll() is None, f"Prometheus exited with {prometheus.returncode}"
        assert distributed_system.dead() == {}, "a service exited"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_dashboard_query_returns_data_from_a_running_system(
    system: tuple[str, Prometheus], fixture_images: dict[str, list[Path]]
) -> None:
    base, prometheus = system
    images = [(label, path.read_bytes()) for label, paths in fixture_images.items() for path in paths]

    def predict(data: bytes) -> int:
        body, content_type = multipart([("file", "lesion.jpg", data)])
        return call(f"{base}/predict", body, content_type)[0]

    deadline = time.monotonic() + 30
    while {s["metric"]["job"] for s in prometheus.query("up == 1")} != set(SERVICES):
        assert time.monotonic() < deadline, prometheus.query("up")
        time.sleep(0.5)

    # A user's traffic: predictions, a file that is no image, a bulk upload, a retrain.
    for _, data in images[::4]:
        assert predict(data) == 200
    assert predict(b"GIF89a" + b"\x00" * 64) == 415
    uploads = [("files", f"{label}_{n:04d}.jpg", data) for n, (label, data) in enumerate(images)]
    uploads.append(("files", "melanoma_corrupt.jpg", b"\xff\xd8 not really a jpeg"))
    status, accepted = call(f"{base}/upload-bulk", *multipart(uploads), headers=CONTRIBUTOR)
    assert status == 202, accepted
    ingest_job = wait_job(base, accepted["job_id"], timeout=60)
    assert ingest_job["state"] == "succeeded", ingest_job
    status, accepted = call(f"{base}/retrain", json.dumps({"epochs": 2}).encode(), headers=OPERATOR)
    assert status == 202, accepted
    train_job = wait_job(base, accepted["job_id"], timeout=120)
    assert train_job["state"] in {"succeeded", "rejected"}, train_job  # rejected: the gate said no

    # Rates need two scrapes that saw the traffic: keep a trickle going while Prometheus catches up.
    # A promoted model starts new (label, model_version) series, and increase() needs two samples
    # of a series, so predictions must go on until the new series have grown too.
    expressions = queries(load_dashboard())
    by_panel = {name: expr for name, expr in expressions}

    def predicted() -> float:
        return sum(float(s["value"][1]) for s in prometheus.query(by_panel["Predictions by label / A"]))

    deadline = time.monotonic() + 30
    while True:
        predict(images[int(time.monotonic()) % len(images)][1])
        predict(b"not an image")
        missing = [(name, expr) for name, expr in expressions if not has_data(prometheus.query(expr))]
        if (not missing and predicted() > 0) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert missing == [], "dashboard queries without data:\n" + "\n".join(f"{n}: {e}" for n, e in missing)
    uptime_jobs = {s["metric"]["job"] for s in prometheus.query(by_panel["Uptime per service / A"])}
    assert uptime_jobs == set(SERVICES)
    # What the traffic above must show, not just "some series".
    requests = prometheus.query(by_panel["Request rate by route and status / A"])
    predictions = {"method": "POST", "route": "/predict", "status": "200"}
    # The series exists once answered predictions were scraped (its instant rate can read 0
    # when the last two scrapes straddle a pause in the trickle, so the value is not checked).
    assert any(s["metric"] == predictions for s in requests), requests
    assert "/metrics" not in {s["metric"]["route"] for s in requests}
    assert predicted() > 0
    recall = prometheus.query(by_panel["Last trained model: held-out metrics / B"])
    assert {s["metric"]["label"]: float(s["value"][1]) for s in recall} == {
        label: value for label, value in train_job["result"]["per_class_recall"].items() if value is not None}
