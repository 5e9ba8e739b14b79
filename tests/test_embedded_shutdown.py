"""`make run` stopped with Ctrl-C / SIGTERM under load: it stops taking requests before its
services drain, so every request it took is answered (none waits out the predict deadline for a
504), and it exits cleanly."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.support.processes import embedded_env, free_port, python_module, running, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
IMAGE = next((Path(__file__).parent / "fixtures" / "ham10000" / "melanoma").glob("*.jpg")).read_bytes()
BOUNDARY = "dermascan-shutdown"
BODY = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="lesion.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n").encode() + IMAGE + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_sigterm_under_load_answers_what_it_took_and_exits_cleanly(tmp_path: Path,
                                                                  tiny_model_dir: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = embedded_env(tmp_path, tiny_model_dir, DERMASCAN_INFERENCE_ENGINE="tensorflow",
                       DERMASCAN_HTTP_PORT=str(port), DERMASCAN_PREDICT_RATE_PER_S="10000")
    outcomes: Counter[str] = Counter()
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            request = urllib.request.Request(
                f"{base}/predict", BODY, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    outcomes[str(response.status)] += 1
            except urllib.error.HTTPError as exc:
                outcomes[str(exc.code)] += 1
            except (urllib.error.URLError, ConnectionError):
                outcomes["not taken"] += 1  # refused or reset: the client knows to retry
                time.sleep(0.05)

    with running(python_module("embedded"), env=env, log=tmp_path / "embedded.log") as proc:
        wait_http(f"{base}/readyz", timeout=120, proc=proc)
        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(2)
        answered_before = outcomes["200"]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(30)
        stopped_in = time.monotonic() - started
        done.set()
        for thread in clients:
            thread.join(35)
    assert answered_before > 0, outcomes
    assert code == 0, (tmp_path / "embedded.log").read_text()[-2000:]
    assert set(outcomes) <= {"200", "not taken"}, outcomes  # no 504 for a request taken during the drain
    assert stopped_in < 10, stopped_in
