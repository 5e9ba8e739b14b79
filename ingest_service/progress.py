"""What one ingest job has done so far, in the shape its job record keeps between attempts.

`job.result.files` holds the outcomes of the files already handled (the gateway puts its own
rejections there first) and `job.progress["handled"]` the staged slots they came from, so an
attempt that follows a failed one skips those files, whose staged uploads may be gone.
"""

from __future__ import annotations

from typing import Any

from shared.jobs import FileOutcome, IngestResult, Job
from shared.messages import StagedFile


def slot_of(staged: StagedFile) -> int:
    """The slot of a staged file: its position in the upload (`uploads/<job_id>/<slot>`)."""
    return int(staged.key.rsplit("/", 1)[-1])


class Progress:
    """Outcomes of handled files, of the file in hand, and the staged keys safe to delete once
    the outcomes are saved. Loop-only."""

    def __init__(self, outcomes: list[FileOutcome], handled: set[int], *, files: int, staged: int) -> None:
        self.outcomes, self.handled = outcomes, handled
        self.current: list[FileOutcome] = []
        self.stored = {o.sha256 for o in outcomes if o.status == "stored" and o.sha256 is not None}
        self._files, self._staged = files, staged
        self._next_index = max([files, staged] + [o.index + 1 for o in outcomes])
        self._deletable: list[str] = []

    @classmethod
    def resume(cls, job: Job, staged: int) -> Progress:
        """The progress saved in `job` (by the gateway, or by an earlier attempt)."""
        outcomes = list(job.result.files) if isinstance(job.result, IngestResult) else []
        handled = {int(slot) for slot in job.progress.get("handled", [])}
        return cls(outcomes, handled, files=int(job.progress.get("files", staged)), staged=staged)

    def unhandled(self, files: list[StagedFile]) -> list[StagedFile]:
        """The staged files of `files` no attempt has handled yet."""
        return [staged for staged in files if slot_of(staged) not in self.handled]

    def next_index(self) -> int:
        """A fresh outcome index, for a member of an archive (uploaded files keep their own)."""
        self._next_index += 1
        return self._next_index - 1

    def add(self, outcome: FileOutcome) -> None:
        self.current.append(outcome)
        if outcome.status == "stored" and outcome.sha256 is not None:
            self.stored.add(outcome.sha256)

    def file_done(self, slot: int, key: str) -> None:
        """The staged file `slot` is handled: its outcomes join the saved ones."""
        self.outcomes += self.current
        self.current = []
        self.handled.add(slot)
        self._deletable.append(key)

    def saved_state(self) -> dict[str, Any]:
        """The `job.progress` entries to save with the outcomes."""
        return {"handled": sorted(self.handled), "done": self._files - self._staged + len(self.handled)}

    def take_deletable(self) -> list[str]:
        """Staged keys of handled files; call after their outcomes are saved."""
        keys, self._deletable = self._deletable, []
        return keys

    def result(self, *, unfinished: bool = False) -> IngestResult:
        """The job result: every outcome by index and counts per status. `unfinished` (a failed
        job) includes the file in hand and counts the staged files never handled."""
        if unfinished:
            return IngestResult.of(self.outcomes + self.current, unprocessed=self._staged - len(self.handled))
        return IngestResult.of(self.outcomes)
