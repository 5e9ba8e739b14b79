"""Zip archives of class-named folders, expanded one member at a time within byte budgets.

A zip's central directory is read first (cheap, whatever the archive claims); members are then
decompressed one by one, so memory holds at most one member (`max_member_bytes`) whatever the
archive expands to. Expanded bytes are counted against a budget per archive and one per job: a
member that would cross either is rejected and so is every later member of that archive, each
with the reason, without being expanded. A member whose first bytes are not a supported image is
rejected after reading those bytes only. No member name is ever used as a path.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from shared.errors import BadRequest, DermaScanError, PayloadTooLarge
from shared.imaging import check_format
from shared.taxonomy import class_from_filename, is_known

ZIP_MAGIC = b"PK\x03\x04"
_HEAD = 16  # bytes enough to tell the format (shared.imaging.sniff_format)


@dataclass(frozen=True)
class Member:
    """One file of an archive: its bytes, or why it was not read (`error`)."""

    name: str
    label: str | None
    data: bytes | None
    error: DermaScanError | None = None


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on one archive (from the service's settings)."""

    max_members: int
    max_member_bytes: int
    max_archive_bytes: int


@dataclass
class JobBudget:
    """Expanded bytes the archives of one job may still produce; shared by all of them."""

    limit: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.limit - self.used


def is_zip(data: bytes) -> bool:
    return data[:4] == ZIP_MAGIC


def label_for_path(path: str) -> str | None:
    """The innermost folder named after a class, else the file name's class prefix."""
    parts = [p.lower() for p in path.replace("\\", "/").split("/") if p]
    for folder in reversed(parts[:-1]):
        if is_known(folder):
            return folder
    return class_from_filename(parts[-1]) if parts else None


def _is_file(info: zipfile.ZipInfo) -> bool:
    if not info.filename:  # a corrupted directory entry can name nothing (zipfile's is_dir() then raises)
        return False
    base = info.filename.rsplit("/", 1)[-1]
    return not info.is_dir() and not info.filename.startswith("__MACOSX/") and not base.startswith(".")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
          limit: int) -> tuple[bytes | None, int, DermaScanError | None]:
    """(bytes, bytes expanded, None), or (None, bytes expanded, why not): a member that is not a
    supported image is refused after `_HEAD` bytes; one that fails later is charged its declared
    size (all that can have been expanded), so failing members cannot expand for free."""
    expanded = 0
    try:
        with archive.open(info) as handle:
            head = cast(zipfile.ZipExtFile, handle).peek(_HEAD)[:_HEAD]  # not consumed: the read starts at 0
            if not head:
                return None, 0, BadRequest("the file is empty", code="empty_file")
            expanded = len(head)
            check_format(head)
            expanded = info.file_size
            content = handle.read(limit + 1)
    except DermaScanError as exc:
        return None, expanded, exc
    except Exception as exc:  # noqa: BLE001 - CRC errors, encryption, unknown methods, zlib errors
        return None, expanded, BadRequest(f"unreadable archive member: {exc}", code="corrupt_archive")
    if len(content) > limit:
        return None, len(content), PayloadTooLarge(f"the file expands past {limit:,} bytes", code="too_large")
    return content, len(content), None


def members(data: bytes, limits: ArchiveLimits, job: JobBudget) -> Iterator[Member]:
    """The files of a zip archive with their folder-derived labels, one at a time.

    A member that cannot be used comes back with an `error` (too_large, archive_too_large,
    job_too_large, not_an_image, corrupt_archive...) instead of data. Raises BadRequest
    (corrupt_archive) for an archive whose directory cannot be read and PayloadTooLarge
    (too_many_files) for one with more than `limits.max_members` files, before expanding any.
    Blocking (it decompresses): advance it in a worker thread, one thread at a time.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # a hostile directory raises more than BadZipFile
        raise BadRequest(f"broken zip archive: {exc}", code="corrupt_archive") from exc
    with archive:
        infos = [i for i in archive.infolist() if _is_file(i)]
        if len(infos) > limits.max_members:
            raise PayloadTooLarge(f"the archive holds {len(infos)} files; the limit is {limits.max_members}",
                                  code="too_many_files")
        archive_used = 0
        stopped: DermaScanError | None = None
        for info in infos:
            label = label_for_path(info.filename)
            if stopped is None and info.file_size > limits.max_member_bytes:
                yield Member(info.filename, label, None, PayloadTooLarge(
                    f"{info.file_size:,} bytes; the limit is {limits.max_member_bytes:,}", code="too_large"))
                continue
            if stopped is None and archive_used + info.file_size > limits.max_archive_bytes:
                stopped = PayloadTooLarge(
                    f"the archive expands past {limits.max_archive_bytes:,} bytes; this file and the "
                    "ones after it were not read", code="archive_too_large")
            if stopped is None and info.file_size > job.left:
                stopped = PayloadTooLarge(
                    f"the upload's archives expand past {job.limit:,} bytes; this file and the ones "
                    "after it were not read", code="job_too_large")
            if stopped is not None:
                yield Member(info.filename, label, None, stopped)
                continue
            content, expanded, error = _read(archive, info, limits.max_member_bytes)
            archive_used += expanded
            job.used += expanded
            yield Member(info.filename, label, content, error)
