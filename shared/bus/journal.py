"""Where the in-memory bus keeps persistent messages, so queued work survives a restart.

RabbitMQ keeps a persistent message on a durable queue until a consumer acks it, across broker
restarts; the embedded mode's in-memory bus does the same with a journal: one file per message
under `<root>/<queue>/`, written (fsynced, then renamed into place) before `publish` returns and
removed once a handler has finished with it (returned, or raised and dead-lettered). A process
killed with messages queued or in a handler finds them again at its next start, marked
redelivered, oldest first.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from shared.atomic_file import is_temporary, write_whole
from shared.bus.base import Delivery
from shared.wire import new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One journalled message: its delivery, its expiry (wall clock, None: never) and its file."""

    delivery: Delivery
    expires_at: float | None
    path: Path


class Journal:
    """The files of persistent messages under `root`. Thread-safe (plain file operations)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, queue: str, delivery: Delivery, expires_at: float | None) -> Path:
        """Keep `delivery` of `queue` until `remove`; returns its file. Raises OSError."""
        folder = self.root / quote(queue, safe="")
        folder.mkdir(exist_ok=True)
        record = {"body": base64.b64encode(delivery.body).decode(), "correlation_id": delivery.correlation_id,
                  "reply_to": delivery.reply_to, "headers": delivery.headers, "expires_at": expires_at}
        name = f"{time.time_ns():020d}-{new_id()}.json"  # names sort in publishing order
        write_whole(folder / name, json.dumps(record).encode(), durable=True)
        return folder / name

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    def load(self) -> dict[str, list[Entry]]:
        """Every message kept, by queue, oldest first, as redelivered deliveries. An unreadable
        file is logged and set aside as `<name>.bad`, never silently dropped."""
        queues: dict[str, list[Entry]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            entries = queues.setdefault(unquote(folder.name), [])
            for path in sorted(folder.iterdir()):
                if is_temporary(path.name):
                    path.unlink(missing_ok=True)  # a write that never finished: publish had not returned
                    continue
                if path.suffix != ".json":
                    continue
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                    delivery = Delivery(base64.b64decode(record["body"]), record["correlation_id"],
                                        record["reply_to"], dict(record["headers"]), redelivered=True)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.error("journalled message %s is unreadable (%s); set aside as .bad", path, exc)
                    path.rename(path.with_suffix(".bad"))
                    continue
                entries.append(Entry(delivery, record["expires_at"], path))
        return queues
