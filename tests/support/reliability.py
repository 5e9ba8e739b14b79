"""What each fault test saw, counted: requests sent, answers by kind, accepted uploads and how many
were lost, hung requests. The rows of one pytest session are written to `var/reliability.md` at its
end (tests/conftest.py calls `write_doc`), never to a tracked file: `make reliability-doc` copies
the last run's into `docs/reliability.md`, committed on purpose. A scenario that did not run keeps
its row from the last file (the last run's, else the committed doc), with its date. Loop-only or
single-threaded use per scenario (counters are plain ints)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
#: Where a test run writes it (ignored by git); `make reliability-doc` copies it to DOC.
RUN_DOC = Path(__file__).resolve().parents[2] / "var" / "reliability.md"

#: Every fault scenario the suite knows, in the order the doc lists them, with the test that runs it.
SCENARIOS: dict[str, str] = {
    "kill -9 an inference worker under predict load": "tests/test_distributed_faults.py",
    "RabbitMQ cut during predict load": "tests/test_distributed_faults.py",
    "RabbitMQ cut during an upload": "tests/test_distributed_faults.py",
    "kill -9 the trainer mid-job": "tests/test_distributed_jobs.py",
    "SIGTERM an inference worker under load": "tests/inference_worker/test_drain.py",
    "S3 refused: the gateway's requests": "tests/gateway/test_store_outage.py",
    "S3 blackholed: the gateway's requests": "tests/gateway/test_store_outage.py",
    "S3 refused during an upload's ingest": "tests/ingest_service/test_store_outage.py",
    "S3 blackholed during an upload's ingest": "tests/ingest_service/test_store_outage.py",
    "kill -9 the embedded process with jobs queued": "tests/test_embedded_recovery.py",
    "concurrent retrains": "tests/gateway/test_retrain.py",
    "concurrent promotions": "tests/gateway/test_promotions.py",
    "30 slow clients hold /predict bodies": "tests/gateway/test_edge_slow_clients.py",
    "a flood of PNGs that decode to 16 and 40 MP": "tests/inference_worker/test_decode_flood.py",
}
#: What the fault tests found and do not yet cover, kept in the doc until fixed (then moved to CLOSED_GAPS).
KNOWN_GAPS = [
    "An ingest job whose store stays down through every attempt cannot save its failed record.",
]
#: Gaps the fault tests found and that are fixed: one line each on how, with the scenario that shows it.
CLOSED_GAPS = [
    "A broker that goes silent without closing the connection is noticed within a heartbeat "
    "(`DERMASCAN_BROKER_HEARTBEAT_S`, 5 s) and left for a new connection; the services are ready again "
    "within seconds of the network's return (`tests/test_broker_blackhole.py`: 3.1-3.4 s with a 2 s "
    "heartbeat).",
    "A worker told to stop exits within its drain timeout and a few seconds, whatever the broker does "
    "(`tests/inference_worker/test_drain.py`: 0.8-1.6 s after SIGTERM with RabbitMQ refused, 4.9-5.5 s "
    "black-holed; it stayed alive 60 s before).",
    "An image costs what it decodes to, not its file: PNG/WebP past 4096 x 4096 are refused from the header, "
    "decodes share a budget of bytes and give their memory back, and expired requests are not decoded "
    "(`tests/inference_worker/test_decode_flood.py`: after 48 large PNGs a normal request is answered in "
    "0.01 s; before, it timed out 504).",
    "Slow clients no longer lock everyone out: /predict and uploads hold the bytes that arrived, per caller, "
    "at a minimum pace (`tests/gateway/test_edge_slow_clients.py`: 75 of 75 normal predictions served while "
    "30 slow clients held connections; 0 of 75 before).",
    "A refused bulk upload leaves no staged file, whatever the refusal (`tests/gateway/test_uploads.py`, one "
    "test per kind; 15 refused requests left 5,085 files before).",
    "A DNS-rebinding page reads nothing: any Host but the allowed names is 421 "
    "(`tests/gateway/test_origins.py`), and the catalog's images need a view token.",
    "An audit flood cannot bury real events: 600 refused retrains are one event with a count "
    "(`tests/gateway/test_audit.py`).",
    "A broker outage longer than `DERMASCAN_JOB_STALE_S` no longer loses an upload: the gateway reports the "
    "paused job `failed` `worker_lost` (retryable), its staged files stay, and the ingest service the job is "
    "redelivered to resumes it after the files already handled (`RabbitMQ cut during an upload` runs with "
    "`DERMASCAN_JOB_STALE_S=2` and a 3 s cut).",
    "A gateway that stops between taking the training claim and publishing the job no longer blocks training "
    "for good: a training job still `queued` after `DERMASCAN_TRAINING_QUEUED_STALE_S` (15 min) is failed "
    "`not_started` by the next `POST /retrain`, which takes the claim (`tests/shared/test_jobs.py`).",
    "Concurrent promotions no longer leave a worker on an older version until its next periodic check: a "
    "reconcile reads the registry's pointer under the reload lock, so one whose read was overtaken cannot "
    "install what it read after a later version (`concurrent promotions` failed once under load; "
    "`tests/inference_worker/test_service.py` replays the overtaken read).",
]
COLUMNS = ("scenario", "sent", "answered", "answers by kind", "accepted uploads", "lost", "hung", "seconds",
           "result", "run", "notes")


@dataclass
class Scenario:
    """The counts of one scenario. `answered` takes a status and the JSON error body (if any);
    `hang` counts a request that got no answer within the client's timeout."""

    name: str
    answers: Counter[str] = field(default_factory=Counter)
    hung: int = 0
    accepted_uploads: int = 0
    accepted_images: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: str | None = None

    @property
    def answered(self) -> int:
        return sum(n for kind, n in self.answers.items() if not kind.startswith("connection "))

    @property
    def sent(self) -> int:
        return sum(self.answers.values()) + self.hung

    def answer(self, status: int, body: Any = None) -> None:
        """Count one answer: `200`, or `503 broker_unavailable` (the error code from the body)."""
        code = body.get("error", {}).get("code") if isinstance(body, dict) and status >= 400 else None
        self.answers[f"{status} {code}" if code else str(status)] += 1

    def replied(self, error_code: str | None) -> None:
        """Count one RPC reply (a test that calls the bus, not HTTP): a result, or an error's code."""
        self.answers[f"reply error {error_code}" if error_code else "reply with a result"] += 1

    def hang(self) -> None:
        self.hung += 1

    def refused(self, why: str) -> None:
        """A request the client could not send or whose connection broke (no HTTP status)."""
        self.answers[f"connection {why}"] += 1

    def accept_upload(self, images: int) -> None:
        """A `202` upload carrying `images` valid images: each must end catalogued."""
        self.accepted_uploads += 1
        self.accepted_images += images

    async def call(self, session: aiohttp.ClientSession, method: str, url: str, *, timeout: float = 30,
                   **kwargs: Any) -> tuple[int | None, Any]:
        """Send one request through `session` and count what came back; (status, JSON or None),
        status None when it hung past `timeout` or the connection failed."""
        try:
            async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout),
                                       **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:  # an empty or non-JSON body: counted by its status alone
                    body = None
                self.answer(response.status, body)
                return response.status, body
        except TimeoutError:
            self.hang()
        except aiohttp.ClientError as exc:
            self.refused(type(exc).__name__)
        return None, None

    def errors(self, *, allowed: Sequence[str] = ()) -> dict[str, int]:
        """Answers that are neither 2xx nor one of `allowed` (kinds, or a bare status like `503`)."""
        return {kind: n for kind, n in self.answers.items()
                if not kind.startswith("2") and kind not in allowed and kind.split()[0] not in allowed}

    def row(self) -> dict[str, str]:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.answers.items()))
        uploads = f"{self.accepted_uploads} ({self.accepted_images} images)" if self.accepted_uploads else "0"
        return {"scenario": self.name, "sent": str(self.sent), "answered": str(self.answered),
                "answers by kind": kinds or "-", "accepted uploads": uploads, "lost": str(self.lost),
                "hung": str(self.hung), "seconds": f"{self.seconds:.1f}",
                "result": "passed" if self.failed is None else f"FAILED ({self.failed})",
                "run": today(), "notes": "; ".join(self.notes) or "-"}


#: The rows recorded in this pytest session, by scenario name.
RECORDED: dict[str, Scenario] = {}
#: The soak's figures of this session (test_soak.py fills it): section lines.
SOAK_FIGURES: list[str] = []
#: Rows that pytest-xdist workers recorded (`take`), by scenario name: the controller writes the doc.
FROM_WORKERS: dict[str, dict[str, str]] = {}


def session_rows() -> dict[str, Any]:
    """This session's rows and soak lines as plain data: what a pytest-xdist worker hands the
    controller (`take`), which alone writes the doc."""
    return {"rows": {name: counts.row() for name, counts in RECORDED.items()}, "soak": list(SOAK_FIGURES)}


def take(part: dict[str, Any]) -> None:
    """Add the rows and soak lines of another process's session (`session_rows`) to this one's."""
    FROM_WORKERS.update(part["rows"])
    if part["soak"]:
        SOAK_FIGURES[:] = part["soak"]


def recorded_rows() -> dict[str, dict[str, str]]:
    """Every row this session recorded, its workers' included, by scenario name."""
    return {**FROM_WORKERS, **{name: counts.row() for name, counts in RECORDED.items()}}


@contextmanager
def scenario(name: str) -> Iterator[Scenario]:
    """Count one scenario for the block, then record its row and assert that nothing accepted was
    lost and no request hung. The row is recorded (marked FAILED) even when the block raises."""
    assert name in SCENARIOS, f"add {name!r} to SCENARIOS"
    counts = Scenario(name)
    started = time.monotonic()
    try:
        yield counts
    except BaseException as exc:
        counts.failed = type(exc).__name__
        raise
    finally:
        counts.seconds = time.monotonic() - started
        if counts.failed is None and (counts.lost or counts.hung):
            counts.failed = "lost or hung"
        RECORDED[name] = counts
    assert counts.lost == 0, f"{counts.lost} accepted images lost: {counts.row()}"
    assert counts.hung == 0, f"{counts.hung} requests hung: {counts.row()}"


async def lost_images(store: Any, outcomes: list[dict[str, Any]], *, sent: int) -> int:
    """Of `sent` valid images whose upload finished with `outcomes` (its job's `result.files`),
    how many the store's catalog does not hold: no outcome saying stored or duplicate, or no
    catalog record (`hashes/<sha256>.json`) and image bytes behind one that does."""
    from shared.catalog import Catalog

    catalog, kept = Catalog(store), set()
    for outcome in outcomes:
        if outcome["status"] in ("stored", "duplicate"):
            record = await catalog.find(outcome["sha256"])
            if record is not None and await store.exists(record.key):
                kept.add(outcome["index"])
    return sent - len(kept)


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cores} cores ({model}), {system}"


def _previous(text: str) -> tuple[dict[str, str], list[str]]:
    """The scenario rows (by name, the line as it was) and the soak section of the last doc."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in SCENARIOS:
            rows[cells[0]] = line
    soak = re.search(r"^## Soak\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return rows, (soak.group(1).strip("\n").splitlines() if soak else [])


def render(command: str, previous: str = "") -> str:
    """The whole doc: this session's rows, and the last doc's for scenarios that did not run."""
    old_rows, old_soak = _previous(previous)
    recorded = recorded_rows()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    not_run = [name for name in SCENARIOS if name not in recorded]
    lines = [
        "# Reliability: what the fault tests counted",
        "",
        "<!-- Written by the tests to var/reliability.md (tests/support/reliability.py, at the end of a",
        "     pytest session that ran any fault test) and copied here by `make reliability-doc`.",
        "     Do not edit by hand: run the tests. -->",
        "",
        f"Written by `{command}` on {now}, on {_machine()}.",
        "",
        "Each fault test drives real processes or real services (RabbitMQ, the S3 server; the cuts are a TCP",
        "proxy that refuses or blackholes) and counts every request it sent: the answers by status and",
        "error code, the uploads answered `202` and how many of their images are missing from the catalog",
        "at the end (**lost**, asserted 0), and requests with no answer within the client's timeout",
        "(**hung**, asserted 0). Numbers vary from run to run; the test asserts the outcome, not the count.",
        "",
        "Not run this time (their rows are from the run dated in `run`): "
        + (", ".join(not_run) if not_run else "none") + ("." if not_run else "; every scenario ran."),
        "",
        "## Fault scenarios",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for name, test in SCENARIOS.items():
        if name in recorded:
            row = recorded[name]
            lines.append("| " + " | ".join(row[c].replace("|", "/") for c in COLUMNS) + " |")
        elif name in old_rows:
            lines.append(old_rows[name])
        else:
            lines.append(f"| {name} |" + " - |" * (len(COLUMNS) - 3) + f" never run | `{test}` |")
    lines += ["", "Where each scenario lives:", ""]
    lines += [f"- {name}: `{test}`" for name, test in SCENARIOS.items()]
    lines += ["", "## Known gaps", ""]
    lines += [f"- {gap}" for gap in KNOWN_GAPS]
    lines += ["", "Closed, and how:", ""] + [f"- {gap}" for gap in CLOSED_GAPS]
    lines += ["", "## Soak", ""]
    lines += SOAK_FIGURES or old_soak or ["Not run yet (`tests/test_soak.py`)."]
    return "\n".join(lines) + "\n"


def write_doc(command: str, path: Path = RUN_DOC, *, baseline: Path = DOC) -> bool:
    """Write the doc to `path` if this session recorded anything (a run without fault tests leaves
    it); rows of scenarios that did not run come from `path`, else from `baseline`."""
    if not recorded_rows() and not SOAK_FIGURES:
        return False
    earlier = path if path.exists() else baseline
    previous = earlier.read_text() if earlier.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # renamed over it: never a torn file
    partial.write_text(render(command, previous))
    partial.replace(path)
    return True
