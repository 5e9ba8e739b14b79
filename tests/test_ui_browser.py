"""The whole product in the browser: Debian's Chromium on the embedded system (`make run`, the run's
shared one: tests.support.embedded), used as a new user would, at 1280 and at 390 px wide. One page
for the module; the tests run in order and build on each other (upload, then retrain on what was
uploaded, then promote and roll back, leaving the model served as it was).

`DERMASCAN_UPDATE_SCREENSHOTS=1` also writes each section's screenshot to docs/screenshots/
(the README shows them); otherwise they go to a temporary folder.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gateway.events import frame
from shared.jobs import WORKER_LOST, IngestResult, Job
from tests.support.embedded import GRAFANA_URL, Embedded
from tests.support.processes import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
FIXTURES = Path(__file__).parent / "fixtures"
UPLOADS = FIXTURES / "uploads"
SECTIONS = ("status", "predict", "upload", "train", "data")
#: What the page is allowed to see fail: promoting a version the gate rejected is a 409 (shown).
EXPECTED_FAILURES = ("/promote",)
#: Uploaded by the bulk-upload test: file -> (outcome, reason).
BULK = {
    "melanoma_0001.jpg": ("stored", None),
    "basal_cell_carcinoma-12.jpg": ("stored", None),
    "melanoma_truncated.jpg": ("rejected", "corrupt_image"),
    "melanoma_notes.jpg": ("rejected", "not_an_image"),
    "lupus_0001.jpg": ("rejected", "unknown_class"),
}
SEEDED = sorted((REPO / "data" / "sample").rglob("*.jpg"))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_until(page: Any, expression: str, timeout_s: float = 20) -> None:
    """Wait until the JavaScript `expression` is true in `page`, asking from here every 100 ms.
    (Playwright's wait_for_function polls inside the page with eval, which the UI's
    Content-Security-Policy forbids: it fails whenever the first check is false.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s:.0f} s: {expression}"
        page.wait_for_timeout(100)


class Page:
    """The page under test, and every console error and failed request it had."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.problems: list[str] = []

        def console(message: Any) -> None:
            if message.type == "error":
                self.problems.append(f"console: {message.text}")

        def response(answer: Any) -> None:
            if answer.status >= 400 and not any(p in answer.url for p in EXPECTED_FAILURES):
                self.problems.append(f"HTTP {answer.status}: {answer.url}")

        page.on("console", console)
        page.on("response", response)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda req: self.problems.append(f"failed: {req.url} {req.failure}"))

    def clean(self) -> None:
        """No console error (but the expected 409's own line) and no failed request so far."""
        problems = [p for p in self.problems if not ("409" in p and "console" in p)]
        assert not problems, problems


@pytest.fixture(scope="module")
def base(embedded_system: Embedded) -> str:
    """The run's shared embedded system (tests.support.embedded)."""
    return embedded_system.base


@pytest.fixture(scope="module")
def catalogued_before(base: str) -> int:
    """Images in the catalog when this module starts (the seeded sample, and what earlier tests
    on the shared system stored)."""
    total: int = get_json(f"{base}/data/summary")["total"]
    return total


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("DERMASCAN_UPDATE_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def ui(base: str, catalogued_before: int) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(20_000)
            wrapped = Page(page, base)
            page.goto(base + "/")
            yield wrapped
        finally:
            browser.close()


def test_every_section_renders_with_no_console_errors_or_failed_requests(ui: Page, base: str) -> None:
    page = ui.page
    page.wait_for_selector("#status .dot.ok")
    page.wait_for_selector("#workers-table tbody tr")
    health = get_json(f"{base}/status")
    workers = page.inner_text("#workers-table")
    assert health["workers"][0]["id"] in workers and health["workers"][0]["engine"] in workers
    assert len(page.query_selector_all("#queues-table tbody tr")) == 3
    page.wait_for_selector("#services-table tbody tr:nth-child(2)")  # the ingest and trainer services
    services = page.inner_text("#services-table")
    assert "ingest service" in services and "trainer service" in services
    assert page.get_attribute("#grafana-link", "href") == GRAFANA_URL
    assert page.inner_text("#classes-predicted") == ", ".join(c.replace("_", " ")
                                                              for c in health["classes"]["predicted"])
    needing = health["classes"]["needs_data"]
    assert needing  # the taxonomy is wider than any model of the sample data
    assert page.inner_text("#classes-needing-data") == ", ".join(c.replace("_", " ") for c in needing)
    page.wait_for_selector("#data-counts rect")
    # the catalog's images are patients': asked for with a token, not one fetched without it
    page.wait_for_selector("#samples-button")
    assert page.query_selector("#data-samples img") is None
    with urllib.request.urlopen(base + "/", timeout=10) as response:  # the page under its policy
        policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    page.wait_for_selector("#history tbody tr")
    for section in SECTIONS:
        assert page.is_visible(f"#{section}-section h2")
    card = page.get_attribute("a[href='/model-card']", "href")
    assert card and "DermaScan" in urllib.request.urlopen(base + card, timeout=10).read().decode()
    ui.clean()


def test_predict_a_fixture_shows_the_label_and_the_image_as_the_model_sees_it(ui: Page, base: str) -> None:
    page = ui.page
    lesion = sorted((FIXTURES / "ham10000" / "melanocytic_nevi").glob("*.jpg"))[0]
    page.set_input_files("#file", str(lesion))
    page.wait_for_selector("#answer-meta")
    shown = page.inner_text("#answer")
    assert "decision aid, not a diagnosis" in shown.lower()
    label = page.query_selector("#label")
    top = page.query_selector_all("#answer .bar")
    assert top and (label is not None or page.query_selector("#uncertain") is not None)
    current = get_json(f"{base}/models")["current"]
    assert current in page.inner_text("#answer-meta")
    eye = page.wait_for_selector("#model-eye:not([hidden])")
    size = page.evaluate("[document.getElementById('model-eye').naturalWidth, "
                         "document.getElementById('model-eye').naturalHeight]")
    manifest = json.loads((REPO / "models" / "base" / "manifest.json").read_text())
    assert size == [manifest["input_size"][1], manifest["input_size"][0]]  # the model's input, not the upload
    assert eye is not None and "model sees" in (eye.get_attribute("alt") or "")
    ui.clean()


def test_bulk_upload_shows_each_files_outcome(ui: Page, embedded_system: Embedded) -> None:
    page = ui.page
    page.set_input_files("#upload-files", [str(UPLOADS / name) for name in BULK])
    page.click("#upload-button")
    page.wait_for_selector("#token-dialog[open]")  # asked once, before anything is sent
    page.fill("#token-input", embedded_system.operator_token)  # the one `make run` printed
    page.click("#token-ok")
    summary = page.wait_for_selector("#upload-summary", timeout=60_000)
    assert summary is not None and "2 stored, 0 duplicate, 3 rejected" in summary.inner_text()
    rows = page.query_selector_all("#upload-table tbody tr")
    seen = {}
    for row in rows:
        cells = [c.inner_text() for c in row.query_selector_all("td")]
        seen[cells[0]] = (cells[2], cells[3])
    for name, (outcome, reason) in BULK.items():
        assert seen[name][0] == outcome, seen
        assert reason is None or reason in seen[name][1], seen
    bars = page.eval_on_selector_all("#upload-table progress", "bars => bars.map(b => b.value)")
    assert bars == [1] * len(BULK)  # each file's bar followed its bytes to the end
    ui.clean()


def test_retraining_shows_live_progress_before_the_verdict(ui: Page) -> None:
    page = ui.page
    page.fill("#train-epochs", "40")
    page.uncheck("#train-promote")  # promoted from the history in the next test
    page.click("#retrain-button")  # the operator token is kept for the tab: no dialog
    page.wait_for_selector("#train-log li[data-state=running][data-phase=training]", state="attached",
                           timeout=150_000)
    verdict = page.wait_for_selector("#train-verdict", timeout=150_000)
    assert verdict is not None
    log = page.eval_on_selector_all("#train-log li", "items => items.map(i => "
                                    "[i.dataset.state, i.dataset.phase, Number(i.dataset.epoch)])")
    states = [state for state, _, _ in log]
    assert states[-1] in ("succeeded", "rejected") and states.count(states[-1]) == 1
    live = [entry for entry in log[:-1] if entry[0] == "running"]
    # phases as they came: embedding is seen only when the uploads hold images the evidence lacks
    assert "training" in {phase for _, phase, _ in live}, log
    assert any(epoch > 0 for _, phase, epoch in live if phase == "training"), log  # epochs as they came
    text = verdict.inner_text()
    assert ("The gate passed" in text) == (states[-1] == "succeeded") and "candidate" in text
    assert page.query_selector_all("#recall-chart rect[data-series=candidate]")
    assert page.query_selector("#confusion tbody tr") is not None
    assert page.query_selector("#gate-margins") is not None
    assert int(page.get_attribute("#loss-chart path[data-series='training loss']", "data-points") or 0) == 40
    ui.clean()


def test_promote_and_roll_back_from_the_history(ui: Page, base: str) -> None:
    page = ui.page
    before = get_json(f"{base}/models")
    candidate = next(v["version"] for v in before["versions"] if not v["current"])
    page.click(f"#history button.promote[data-version='{candidate}']")
    page.wait_for_selector("#history-done, #history-error")
    if page.query_selector("#force-reason"):  # the gate rejected it: serve it anyway, with a reason
        page.fill("#force-reason", "reviewed in the UI test")
        page.click("#force-button")
    page.wait_for_selector(f"#history tr[data-version='{candidate}'][data-current=true]")
    assert get_json(f"{base}/models")["current"] == candidate
    page.click("#rollback-button")
    page.wait_for_selector(f"#history tr[data-version='{before['current']}'][data-current=true]")
    assert before["current"] in page.inner_text("#history-done")
    assert get_json(f"{base}/models")["current"] == before["current"]
    ui.clean()


def test_the_data_section_charts_the_catalogs_real_counts(ui: Page, base: str,
                                                         catalogued_before: int) -> None:
    page = ui.page
    total = catalogued_before + 2  # and the two stored uploads
    wait_until(page, f"document.getElementById('data-total-count').textContent === '{total}'")
    # (redrawn after the upload)
    summary = get_json(f"{base}/data/summary")
    assert summary["total"] == total and total >= len(SEEDED) + 2
    assert page.inner_text("#data-total-count") == str(summary["total"])
    drawn = page.eval_on_selector_all("#data-counts rect", "bars => bars.map(b => "
                                      "[b.dataset.label, b.dataset.series, Number(b.dataset.value)])")
    expected = [[label, split, summary["counts"].get(split, {}).get(label, 0)]
                for label in summary["classes"] for split in ("train", "eval")]
    assert drawn == expected
    for chart, key in (("#data-sizes", "longest_side"), ("#data-aspect", "aspect_ratio")):
        bars = page.eval_on_selector_all(f"{chart} rect", "bars => bars.map(b => Number(b.dataset.value))")
        assert bars == [b["count"] for b in summary[key]["bins"]] and sum(bars) == summary["total"]
    page.wait_for_selector("#data-samples figure img")  # the tab has the upload's token now
    wait_until(page, "[...document.querySelectorAll('#data-samples img')].every(i => i.complete "
               "&& i.naturalWidth > 0)")
    assert len(page.query_selector_all("#data-samples figure")) == len(summary["classes"])
    # fetched with the token and shown from blob: URLs (an <img src> cannot send a token)
    assert page.eval_on_selector_all("#data-samples img", "all => all.every(i => i.src.startsWith('blob:'))")
    ui.clean()


def overflowing(page: Any) -> list[str]:
    """Elements that stick out of the viewport sideways (none may, at any width from 360 px)."""
    found: list[str] = page.evaluate("""() => {
        const width = document.documentElement.clientWidth, out = [];
        const page = document.documentElement.scrollWidth;
        if (page > width) out.push(`page ${page}`);
        for (const e of document.querySelectorAll('body *')) {
            const r = e.getBoundingClientRect();
            if (r.width && (r.right > width + 0.5 || r.left < -0.5) && !e.closest('.skip, dialog'))
                out.push(`${e.tagName}#${e.id}.${e.className} ${Math.round(r.left)}-${Math.round(r.right)}`);
        }
        return out.slice(0, 10);
    }""")
    return found


def save(page: Any, folder: Path, section: str, width: int) -> None:
    """The section's screenshot as a small palette PNG, `<section>-<width>.png`. The sticky nav is
    unstuck through the CSSOM: the page's Content-Security-Policy refuses an injected style sheet
    (Playwright's `screenshot(style=...)`), as it would any other."""
    page.evaluate("document.querySelector('nav').style.position = 'static'")
    try:
        raw = page.locator(f"#{section}-section").screenshot()
    finally:
        page.evaluate("document.querySelector('nav').style.position = ''")
    small = Image.open(io.BytesIO(raw)).convert("RGB").quantize(64)
    small.save(folder / f"{section}-{width}.png", optimize=True)


def test_sections_at_1280_and_at_phone_width_fit_and_are_photographed(ui: Page, shots: Path) -> None:
    page = ui.page
    # the predict and train sections still show their results from the tests above
    page.set_input_files("#file", str(sorted((FIXTURES / "ham10000" / "melanoma").glob("*.jpg"))[0]))
    page.wait_for_selector("#model-eye:not([hidden])")
    for width in (1280, 390, 360):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(400)  # charts redraw at the new width
        assert overflowing(page) == [], width
        if width != 360:
            for section in SECTIONS:
                save(page, shots, section, width)
    assert all((shots / f"{s}-{w}.png").stat().st_size < 400_000 for s in SECTIONS for w in (1280, 390))
    ui.clean()


def test_an_upload_is_followed_to_its_outcome_when_the_event_stream_is_refused(ui: Page) -> None:
    page = ui.page
    page.set_viewport_size({"width": 1280, "height": 900})
    seen = len(ui.problems)
    # a gateway with its most event streams open answers 429 (gateway/events.py): the page polls
    page.route("**/events", lambda route: route.fulfill(status=429, content_type="application/json",
                                                        body='{"error": {"code": "too_many_streams"}}'))
    try:
        page.set_input_files("#upload-files", [str(UPLOADS / "melanoma_0001.jpg")])  # stored above
        page.click("#upload-button")
        summary = page.wait_for_selector("#upload-summary >> text=1 duplicate", timeout=30_000)
        assert summary is not None and summary.inner_text().startswith("succeeded")
    finally:
        page.unroute("**/events")
    assert [p for p in ui.problems[seen:] if "/events" not in p and "(Too Many Requests)" not in p] == []


def test_an_upload_reported_worker_lost_is_followed_until_it_resumes(ui: Page, base: str) -> None:
    page = ui.page
    seen = len(ui.problems)
    # the page's event streams are answered here: first the record the gateway sends when an
    # upload went silent (worker_lost, retryable), then, on the reconnection, the real final one
    streams: list[Any] = []
    answer: dict[str, Any] = {}  # once set, every further stream gets it at once

    def stream(route: Any) -> None:
        if answer:
            route.fulfill(**answer)
        else:
            streams.append(route)

    def sse(event: str, job: Job) -> dict[str, Any]:
        body = b"retry: 200\n\n" + frame(event, job.model_dump(mode="json"), job.updated_at.isoformat())
        return {"status": 200, "content_type": "text/event-stream", "body": body}

    def wait_for_streams(count: int) -> None:
        for _ in range(150):
            if len(streams) >= count:
                return
            page.wait_for_timeout(100)  # the route handler runs while the page waits
        raise AssertionError(f"the page opened {len(streams)} event streams, not {count}")

    page.route("**/events", stream)
    try:
        page.set_input_files("#upload-files", [str(UPLOADS / "basal_cell_carcinoma-12.jpg")])  # stored above
        page.click("#upload-button")
        wait_for_streams(1)
        job_id = streams[0].request.url.rsplit("/", 2)[-2]
        for _ in range(300):
            final = Job.model_validate(get_json(f"{base}/jobs/{job_id}"))
            if final.final:
                break
            page.wait_for_timeout(100)
        assert final.state == "succeeded"
        lost = final.model_copy(update={"state": "running", "result": IngestResult(),
                                        "progress": {"files": 1, "done": 0}, "log": []})
        lost.fail(WORKER_LOST, "no progress for 61 s: the ingest service stopped", retryable=True)
        streams[0].fulfill(**sse("job", lost))
        paused = page.wait_for_selector("#upload-paused")
        assert paused is not None and "will resume when it comes back" in paused.inner_text()
        assert page.query_selector("#upload-summary") is None  # not shown as failed
        assert "waiting for the upload service" in page.inner_text("#upload-table tbody tr")
        wait_for_streams(2)  # the page follows it on
        answer.update(status=204)  # what the gateway tells a reconnection that has the final record
        streams[1].fulfill(**sse("end", final))
        summary = page.wait_for_selector("#upload-summary >> text=1 duplicate", timeout=30_000)
        assert summary is not None and summary.inner_text().startswith("succeeded")
        assert page.query_selector("#upload-paused") is None
    finally:
        for route in streams[2:]:
            route.fulfill(status=204)
        page.unroute("**/events")
    assert ui.problems[seen:] == []


def test_a_running_training_job_is_cancelled_from_its_cancel_button(ui: Page, base: str) -> None:
    page = ui.page
    current = get_json(f"{base}/models")["current"]
    page.fill("#train-epochs", "500")
    page.check("#train-promote")
    page.click("#retrain-button")
    page.wait_for_selector("#train-log li[data-state=running]", state="attached", timeout=60_000)
    button = page.wait_for_selector("#train-cancel:not([hidden])")
    assert button is not None
    job_id = button.get_attribute("data-job")
    button.click()
    page.wait_for_selector("#cancel-done")
    verdict = page.wait_for_selector("#train-verdict", timeout=30_000)
    assert verdict is not None and "The job was cancelled (cancelled by operator)" in verdict.inner_text()
    assert page.is_hidden("#train-cancel") and page.is_enabled("#retrain-button")
    job = get_json(f"{base}/jobs/{job_id}")
    assert job["state"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert get_json(f"{base}/models")["current"] == current
    # the streams the reconnection tests above left open may still fill the gateway's stream limit:
    # a 429 on /events is the page's cue to poll GET /jobs instead (as the test above shows)
    ui.problems[:] = [p for p in ui.problems if "/events" not in p and "(Too Many Requests)" not in p]
    ui.clean()
