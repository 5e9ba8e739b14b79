"""Zip archives of class-named folders, opened with limits (no zip bombs, no path use)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from shared.errors import BadRequest, PayloadTooLarge
from shared.taxonomy import class_from_filename, is_known

ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Member:
    name: str
    label: str | None
    data: bytes | None
    error: Exception | None = None


def is_zip(data: bytes) -> bool:
    return data[:4] == ZIP_MAGIC


def label_for_path(path: str) -> str | None:
    """The innermost folder named after a class, else the file name's class prefix."""
    parts = [p.lower() for p in path.replace("\\", "/").split("/") if p]
    for folder in reversed(parts[:-1]):
        if is_known(folder):
            return folder
    return class_from_filename(parts[-1]) if parts else None


def members(data: bytes, *, max_members: int, max_member_bytes: int, max_total_bytes: int) -> Iterator[Member]:
    """The files of a zip archive with their folder-derived labels. A member over the size
    limit comes back with an error instead of data. Raises BadRequest for a broken archive and
    PayloadTooLarge when the archive as a whole is over the limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BadRequest(f"broken zip archive: {exc}", code="corrupt_archive") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
                 and not i.filename.rsplit("/", 1)[-1].startswith(".")]
        if len(infos) > max_members:
            raise PayloadTooLarge(f"the archive holds {len(infos)} files; the limit is {max_members}",
                                  code="too_many_files")
        if sum(i.file_size for i in infos) > max_total_bytes:
            raise PayloadTooLarge("the archive expands past the size limit", code="archive_too_large")
        for info in infos:
            label = label_for_path(info.filename)
            if info.file_size > max_member_bytes:
                yield Member(info.filename, label, None,
                             PayloadTooLarge(f"{info.file_size:,} bytes; the limit is {max_member_bytes:,}",
                                             code="too_large"))
                continue
            try:
                with archive.open(info) as handle:
                    content = handle.read(max_member_bytes + 1)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # e.g. CRC error
                yield Member(info.filename, label, None, BadRequest(str(exc), code="corrupt_archive"))
                continue
            if len(content) > max_member_bytes:
                yield Member(info.filename, label, None, PayloadTooLarge("member too large", code="too_large"))
                continue
            yield Member(info.filename, label, content)
