"""docs/reliability.md as the fault tests write it: a scenario's row asserts what it counted, a
partial run keeps the rows it did not rerun (with their date), and a run without fault tests
leaves the file alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import reliability

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def own_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's rows, not the session's (which the real fault tests fill)."""
    monkeypatch.setattr(reliability, "RECORDED", {})
    monkeypatch.setattr(reliability, "SOAK_FIGURES", [])


def test_a_scenario_counts_answers_and_fails_on_a_lost_image_or_a_hung_request() -> None:
    with reliability.scenario("concurrent retrains") as counts:
        counts.answer(202, {"job_id": "x"})
        counts.answer(409, {"error": {"code": "training_in_progress"}})
        counts.answer(409, {"error": {"code": "training_in_progress"}})
    assert counts.row()["answers by kind"] == "202: 1, 409 training_in_progress: 2"
    assert (counts.sent, counts.answered, counts.row()["result"]) == (3, 3, "passed")

    with pytest.raises(AssertionError, match="1 accepted images lost"), \
            reliability.scenario("RabbitMQ cut during an upload") as counts:
        counts.accept_upload(30)
        counts.lost = 1
    with pytest.raises(AssertionError, match="2 requests hung"), \
            reliability.scenario("RabbitMQ cut during predict load") as counts:
        counts.hang()
        counts.hang()
    row = reliability.RECORDED["RabbitMQ cut during predict load"].row()
    assert (row["hung"], row["result"]) == ("2", "FAILED (lost or hung)")


def test_a_partial_run_keeps_the_rows_it_did_not_rerun_and_says_which(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    with reliability.scenario("concurrent promotions") as counts:
        counts.answer(200)
    assert reliability.write_doc("python -m pytest -k first", doc)
    first = doc.read_text()
    old_row = next(line for line in first.splitlines() if line.startswith("| concurrent promotions |"))

    reliability.RECORDED.clear()
    with reliability.scenario("concurrent retrains") as counts:
        counts.answer(202)
    assert reliability.write_doc("python -m pytest -k second", doc)
    second = doc.read_text()

    assert old_row in second.splitlines()  # kept as it was, with its run date
    assert "Written by `python -m pytest -k second`" in second
    not_run = next(line for line in second.splitlines() if line.startswith("Not run this time"))
    assert "concurrent promotions" in not_run and "concurrent retrains" not in not_run
    rows = [line for line in second.splitlines()
            if line.startswith("| ") and not line.startswith("| scenario")]
    table = rows[:len(reliability.SCENARIOS)]
    assert [row.split("|")[1].strip() for row in table] == list(reliability.SCENARIOS)  # same order every run


def test_a_run_without_fault_tests_leaves_the_doc_alone(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("the last full run's figures\n")
    assert not reliability.write_doc("python -m pytest tests/shared", doc)
    assert doc.read_text() == "the last full run's figures\n"
