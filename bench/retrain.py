"""A head retrain as a `make run` user starts it: how long it takes, and what it costs `/predict`.

    .venv/bin/python bench/retrain.py [--upload FOLDER --label CLASS] [--seconds 15]

Starts the embedded system (`python -m embedded`, bundled model and its training evidence, sample
catalog) in a fresh store, optionally uploads FOLDER's images as CLASS through `/upload-bulk`, then
sends `/predict` requests one after another (one client, a fixture image) for `--seconds` while
idle, presses Retrain (`POST /retrain`, head only, no promotion) and keeps predicting until the job
ends. Prints the job's time and the latency percentiles idle and during the retrain, and their
ratio (target: p99 during a retrain within 2x idle; the retrain under 60 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "tests" / "fixtures" / "ham10000" / "melanoma"
OPERATOR = "bench-operator-token-0123456789"
CONTRIBUTOR = "bench-contributor-token-0123456789"


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def multipart(field: str, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def predict_once(base: str, body: bytes, content_type: str) -> float:
    started = time.perf_counter()
    call("POST", f"{base}/predict", body, {"Content-Type": content_type})
    return (time.perf_counter() - started) * 1000


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def wait_job(base: str, job_id: str) -> dict[str, Any]:
    while (job := call("GET", f"{base}/jobs/{job_id}"))["state"] in ("queued", "running"):
        time.sleep(0.5)
    return dict(job)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upload", type=Path, default=None,
                        help="folder of images to upload before retraining")
    parser.add_argument("--label", default=None, help="their class")
    parser.add_argument("--seconds", type=float, default=15.0, help="idle measuring window")
    parser.add_argument("--port", type=int, default=8093)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dermascan-bench-retrain-"))
    base = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "DERMASCAN_HTTP_PORT": str(args.port),
           "DERMASCAN_STORE_URL": (work / "var").as_uri(), "DERMASCAN_MODEL_CACHE_DIR": str(work / "cache"),
           "DERMASCAN_WORK_DIR": str(work / "trainer"),
           "DERMASCAN_OPERATOR_TOKEN": OPERATOR, "DERMASCAN_CONTRIBUTOR_TOKEN": CONTRIBUTOR,
           "DERMASCAN_PREDICT_RATE_PER_S": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (work / "embedded.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "embedded"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                call("GET", f"{base}/readyz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the embedded system did not start; see {work}/embedded.log") from None
                time.sleep(1)
        if args.upload is not None:
            files = [(f"{args.label}_{p.name}", p.read_bytes()) for p in sorted(args.upload.iterdir())]
            body, kind = multipart("files", files)
            accepted = call("POST", f"{base}/upload-bulk", body,
                            {"Content-Type": kind, "Authorization": f"Bearer {CONTRIBUTOR}"})
            upload = wait_job(base, accepted["job_id"])
            print(f"upload: {upload['result']['stored']} of {len(files)} images stored as {args.label}")
        image = sorted(IMAGE.iterdir())[0]
        body, kind = multipart("file", [(image.name, image.read_bytes())])
        for _ in range(20):  # warm up
            predict_once(base, body, kind)
        idle: list[float] = []
        stop = time.monotonic() + args.seconds
        while time.monotonic() < stop:
            idle.append(predict_once(base, body, kind))
        started = time.perf_counter()
        accepted = call("POST", f"{base}/retrain", json.dumps({"promote": False}).encode(),
                        {"Content-Type": "application/json", "Authorization": f"Bearer {OPERATOR}"})
        during: list[float] = []
        job: dict[str, Any] = {"state": "queued"}
        while job["state"] in ("queued", "running"):
            during.append(predict_once(base, body, kind))
            if len(during) % 10 == 0:
                job = call("GET", f"{base}/jobs/{accepted['job_id']}")
        seconds = time.perf_counter() - started
        job = wait_job(base, accepted["job_id"])
        a, b = percentiles(idle), percentiles(during)
        gate = (job.get("result") or {}).get("gate") or {}
        print(f"head retrain: {job['state']} in {seconds:.1f} s wall "
              f"(training_seconds {(job.get('result') or {}).get('training_seconds')}; target < 60 s)")
        print(f"gate: {'passed' if gate.get('passed') else 'rejected'}: {'; '.join(gate.get('reasons', []))}")
        print(f"/predict idle:   n={a['n']} p50 {a['p50']:.1f} ms p99 {a['p99']:.1f} ms")
        print(f"/predict during: n={b['n']} p50 {b['p50']:.1f} ms p99 {b['p99']:.1f} ms")
        print(f"p99 during / idle: {b['p99'] / a['p99']:.2f} (target <= 2)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
