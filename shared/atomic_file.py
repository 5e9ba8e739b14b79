"""Files written whole or not at all: the one way every service writes a file others may read.

A reader (another thread, another process sharing the folder, the next start after a crash) sees
the old file or the new one, never half of one: the bytes go into a temporary file beside the
target, which is then renamed over it (or, `exclusive`, linked to a name that must not exist yet).
The temporary's name is hidden, starts with `TEMP_PREFIX` (so listings and recoveries skip or
sweep it: `is_temporary`) and ends with random hex, so two writers of one target, threads or
processes, never share or rename each other's; workers sharing a model cache once did.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: How the name of a file still being written begins.
TEMP_PREFIX = ".tmp-"


def is_temporary(name: str) -> bool:
    """Whether `name` is a file `replacing` is still writing, or left when its writer died."""
    return name.startswith(TEMP_PREFIX)


@contextmanager
def replacing(path: Path, *, durable: bool = False, exclusive: bool = False) -> Iterator[BinaryIO]:
    """An open binary file whose content becomes `path` when the block ends without an error.

    `durable`: synced to disk first, so the new content survives a power cut once the block has
    ended. `exclusive`: `path` must not exist (FileExistsError otherwise, and nothing is written:
    the O_EXCL of whole files). On any error the temporary file is removed and `path` is as it
    was. The folder must exist. The file gets the permissions of any new file (0666 less umask).
    """
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if exclusive:
            os.link(temporary, path)  # atomic, and refuses an existing name
        else:
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # after a link, or after an error; gone after a rename


def write_whole(path: Path, data: bytes, *, durable: bool = False, exclusive: bool = False) -> None:
    """Write `data` as `path`, whole or not at all (see `replacing`)."""
    with replacing(path, durable=durable, exclusive=exclusive) as handle:
        handle.write(data)
