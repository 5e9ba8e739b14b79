"""The hostile corpus (tests/fixtures/hostile/, made by tools/make_hostile_corpus.py) uploaded
as one job: every file gets the outcome its manifest names, the job itself succeeds, and what is
stored carries nothing it should not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from shared.catalog import Catalog
from tests.conftest import FIXTURES
from tests.ingest_service.conftest import MakeIngest, make_hostile_corpus, result_of

pytestmark = pytest.mark.timeout(60)
HOSTILE = FIXTURES / "hostile"
MANIFEST: dict[str, Any] = json.loads((HOSTILE / "manifest.json").read_text())


def outcome(entry: dict[str, Any]) -> str:
    return entry["status"] if entry["status"] != "rejected" else f"rejected:{entry['reason']}"


def test_the_committed_corpus_is_what_the_generator_writes(tmp_path: Path) -> None:
    make_hostile_corpus.main([str(tmp_path)])
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST
    for entry in MANIFEST["files"]:
        written, committed = (tmp_path / entry["file"]).read_bytes(), (HOSTILE / entry["file"]).read_bytes()
        assert written == committed, entry["file"]


async def test_every_hostile_file_gets_its_expected_outcome_and_the_job_succeeds(
        make_ingest: MakeIngest) -> None:
    ingest = await make_ingest(**MANIFEST["settings"])
    files = [(entry["name"], (HOSTILE / entry["file"]).read_bytes()) for entry in MANIFEST["files"]]
    job = await ingest.wait(await ingest.submit(files))
    assert job.state == "succeeded", job.error
    got: dict[str, list[str]] = {}
    for entry in (o.model_dump(mode="json") for o in result_of(job).files):
        upload = str(entry["filename"]).split(".zip:",
                                              1)[0] + (".zip" if ".zip:" in entry["filename"] else "")
        got.setdefault(upload, []).append(outcome(entry))
    for entry in MANIFEST["files"]:
        expected = entry["expected"] if isinstance(entry["expected"], list) else [entry["expected"]]
        assert got.get(entry["name"]) == expected, (entry["name"], entry["why"])

    stored = {r.filename: await ingest.store.get(r.key) for r in await Catalog(ingest.store).records()}
    assert set(stored) == {"melanoma_valid.jpg", "melanoma_polyglot.jpg", "melanocytic_nevi_polyglot.jpg",
                           "eczema_trailing.png", "melanoma_passwd.jpg",
                           "melanoma_<img src=x onerror=alert(1)>.jpg",
                           "evil.jpg"}
    for name, data in stored.items():
        assert b"<html" not in data and b"PK\x03\x04" not in data, name
        if name.endswith(".jpg"):
            assert data.endswith(b"\xff\xd9"), name
    keys = await ingest.store.list()
    assert not [k for k in keys if ".." in k or "<" in k or "etc" in k.split("/")]
    # the service deletes the staged uploads once the job's final record is saved
    for _ in range(100):
        if not await ingest.store.list("uploads/"):
            break
        await asyncio.sleep(0.1)
    assert not await ingest.store.list("uploads/"), "staged uploads are deleted"


def zip_with_a_nameless_member() -> bytes:
    """A zip whose central directory names its one member with zero bytes (a corrupted entry)."""
    import io
    import struct
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a", b"not an image")
    data = bytearray(buffer.getvalue())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 28, 0)  # file name length
    del data[central + 46]  # the name "a"
    end = data.index(b"PK\x05\x06")
    size = struct.unpack_from("<I", data, end + 12)[0]
    struct.pack_into("<I", data, end + 12, size - 1)  # central directory size
    return bytes(data)


def test_a_member_without_a_name_is_skipped_not_a_crash() -> None:
    from ingest_service import archives

    data = zip_with_a_nameless_member()
    limits = archives.ArchiveLimits(max_members=10, max_member_bytes=1 << 20, max_archive_bytes=1 << 22)
    assert list(archives.members(data, limits, archives.JobBudget(1 << 22))) == []
