"""Load test of the DermaScan HTTP API (Locust).

Most users are clinicians: they send a real dermoscopic image to POST /predict, read the answer
for a few seconds, now and then look at /health. A smaller share are curators who bulk-upload
labelled images (POST /upload-bulk) and poll the ingest job until it ends.

    locust -f locustfile.py --host http://127.0.0.1:8080                 # web UI on :8089
    locust -f locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8080 --csv out

Images come from DERMASCAN_LOCUST_IMAGES (a class-per-folder directory; default: the committed
HAM10000 fixtures). Curators send DERMASCAN_LOCUST_TOKEN (a token of the `contribute` or
`operator` role) as a Bearer token; without it their uploads are refused (401). Requests are
named by route ("/jobs/[id]") so the statistics stay grouped.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, task

FINAL_STATES = {"succeeded", "failed", "rejected", "cancelled"}
IMAGE_ROOT = Path(os.environ.get("DERMASCAN_LOCUST_IMAGES",
                                 Path(__file__).parent / "tests" / "fixtures" / "ham10000"))
#: (class label, JPEG bytes) of every image, read once per Locust process.
IMAGES = [(path.parent.name, path.read_bytes()) for path in sorted(IMAGE_ROOT.glob("*/*.jpg"))]
if not IMAGES:
    raise SystemExit(f"no <class>/*.jpg images under {IMAGE_ROOT} (set DERMASCAN_LOCUST_IMAGES)")
JOB_TIMEOUT_S = float(os.environ.get("DERMASCAN_LOCUST_JOB_TIMEOUT_S", "120"))
TOKEN = os.environ.get("DERMASCAN_LOCUST_TOKEN", "")


class Clinician(HttpUser):
    """Predicts one image at a time, with a person's pause between images."""

    weight = 9
    wait_time = between(2, 6)
    host = os.environ.get("DERMASCAN_URL", "http://127.0.0.1:8080")

    @task(10)
    def predict(self) -> None:
        _, data = random.choice(IMAGES)
        with self.client.post("/predict", files={"file": ("lesion.jpg", data, "image/jpeg")},
                              name="/predict", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif "label" not in response.json():
                response.failure("no label in the answer")

    @task(1)
    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as response:
            if response.status_code != 200 or response.json().get("status") != "ok":
                response.failure(f"{response.status_code}: {response.text[:200]}")
        self.client.get("/readyz", name="/readyz")


class Curator(HttpUser):
    """Uploads a handful of labelled images, then follows the ingest job to its end."""

    weight = 1
    wait_time = between(10, 30)
    host = Clinician.host

    @task
    def upload(self) -> None:
        batch = random.sample(IMAGES, k=min(4, len(IMAGES)))
        files = [("files", (f"{label}_{random.randrange(10_000):04d}.jpg", data, "image/jpeg"))
                 for label, data in batch]
        with self.client.post("/upload-bulk", files=files, name="/upload-bulk", catch_response=True,
                              headers={"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            job_id = response.json()["job_id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.client.get(f"/jobs/{job_id}", name="/jobs/[id]", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code}: {response.text[:200]}")
                    return
                state = response.json()["state"]
                if state in FINAL_STATES:
                    if state != "succeeded":
                        response.failure(f"ingest job {job_id} ended {state}: {response.text[:300]}")
                    return
            time.sleep(1)  # gevent-patched: other users keep running
        self.environment.events.request.fire(
            request_type="JOB", name="/jobs/[id] (timeout)", response_time=JOB_TIMEOUT_S * 1000,
            response_length=0,
            exception=TimeoutError(f"ingest job {job_id} not final after {JOB_TIMEOUT_S} s"))
