"""`python -m embedded`: DermaScan in one process, no servers needed.

It builds the whole system (`embedded.system.build_system`) on one in-memory bus and one
local-disk store, seeds an empty store with the committed sample dataset, and serves the UI,
the API and /metrics (of all services) on DERMASCAN_HTTP_PORT. Unless DERMASCAN_OPERATOR_TOKEN
is set, it makes an operator token for this run and prints it: the UI asks for it before an
upload or a retrain.

Queued work survives a crash (`kill -9` included): the in-memory bus journals its persistent
messages beside the store (DERMASCAN_QUEUE_DIR), so at the next start an upload that was queued
or half done is delivered again and resumes from its saved progress. What cannot resume is
failed with code `interrupted` before the services start: training jobs (which frees the
training claim, so /retrain is accepted again) and uploads whose queue entry was lost.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from gateway.settings import GatewaySettings
from gateway.tokens import new_token
from inference_worker.settings import WorkerSettings
from ingest_service.settings import IngestSettings
from shared.bus import MessageBus, connect_bus
from shared.bus.memory import MemoryBus
from shared.catalog import Catalog
from shared.jobs import JobStore, recover_unfinished
from shared.messages import IngestRequest, decode
from shared.runtime import run, service_parser, setup_logging, wait_for_shutdown
from shared.settings import REPO_ROOT, CommonSettings
from shared.store import ObjectStore, open_store_for
from trainer_service.commands.importer import import_dataset
from trainer_service.settings import TrainerSettings

log = logging.getLogger("embedded")


class EmbeddedSettings(CommonSettings):
    """What only the embedded mode reads."""

    seed_dataset: Path | None = Field(
        REPO_ROOT / "data" / "sample",
        description="Dataset imported into an empty store at start (embedded mode); empty: none.")
    queue_dir: Path | None = Field(
        None, description="Where the embedded mode's in-memory bus keeps queued jobs across restarts and "
        "crashes (as RabbitMQ keeps durable queues); unset: `<store folder>.queues` beside a file:// store, "
        "else ./var/queues.")

    @field_validator("seed_dataset", "queue_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    def journal_dir(self) -> Path:
        """`queue_dir`, or the folder beside the store's (`var/store` -> `var/store.queues`)."""
        if self.queue_dir is not None:
            return self.queue_dir
        parsed = urlparse(self.store_url)
        if parsed.scheme == "file":
            store = Path(unquote(parsed.netloc + parsed.path)).resolve()
            return store.with_name(f"{store.name}.queues")
        return REPO_ROOT / "var" / "queues"


async def seed(store: ObjectStore, dataset: Path | None, split_secret: SecretStr | None) -> None:
    if dataset is None or not await asyncio.to_thread(dataset.is_dir) or await Catalog(store).records():
        return
    summary = await import_dataset(store, dataset, batch="sample", split_secret=split_secret, log=log.debug)
    log.info("seeded the empty store with %s: %s", dataset, summary)


def with_operator_token(settings: GatewaySettings) -> GatewaySettings:
    """`settings`, with a fresh operator token printed on stdout when none is configured."""
    if settings.operator_token is not None:
        return settings
    token = new_token()
    print(f"DermaScan operator token for this run (uploads, retraining, promotion; the UI asks "
          f"for it): {token}\n  (set DERMASCAN_OPERATOR_TOKEN to choose your own)", flush=True)
    return settings.model_copy(update={"operator_token": SecretStr(token)})


async def open_bus(settings: GatewaySettings, embedded: EmbeddedSettings) -> MessageBus:
    """The in-memory bus with its journal (memory://), or the broker `settings` name."""
    if settings.broker_url.startswith("memory://"):
        return MemoryBus(journal=embedded.journal_dir())
    return await connect_bus(settings.broker_url, publish_timeout_s=settings.broker_publish_timeout_s,
                             heartbeat_s=settings.broker_heartbeat_s)


async def recover(store: ObjectStore, bus: MessageBus, ingest_queue: str) -> None:
    """On the in-memory bus, whose process ran every service: fail what the last run left
    unfinished and cannot resume (`shared.jobs.recover_unfinished`); uploads whose message the
    journal kept resume. (On RabbitMQ the queues are the broker's and other processes may be
    working on the jobs: nothing is touched.)"""
    if not isinstance(bus, MemoryBus):
        return
    queued = set()
    for delivery in bus.pending(ingest_queue):
        try:
            queued.add(decode(IngestRequest, delivery.body).job_id)
        except ValueError:
            continue  # the ingest service dead-letters it
    for job in await recover_unfinished(JobStore(store), still_queued=queued):
        log.warning("%s job %s, left unfinished by the last run, failed: %s", job.kind, job.job_id,
                    job.error.message if job.error else "interrupted")
    if queued:
        log.info("%d uploads queued before the last run stopped resume now", len(queued))


async def serve() -> None:
    # imported here, after the options are read: the system's trainer brings TensorFlow and Keras
    # (~10 s), which `--help` does not need
    from embedded.system import build_system

    gateway_settings = with_operator_token(GatewaySettings())
    embedded = EmbeddedSettings()
    bus = await open_bus(gateway_settings, embedded)
    store = await open_store_for(gateway_settings)
    trainer = TrainerSettings(metrics_port=0)
    system = build_system(bus, store, gateway=gateway_settings, worker=WorkerSettings(metrics_port=0),
                          ingest=IngestSettings(metrics_port=0), trainer=trainer)
    assert system.app is not None
    runner = web.AppRunner(system.app, access_log=None)
    try:
        await runner.setup()
        await recover(store, bus, gateway_settings.ingest_queue)
        await seed(store, embedded.seed_dataset, trainer.split_secret)
        async with system.running():
            site = web.TCPSite(runner, gateway_settings.http_host, gateway_settings.http_port)
            await site.start()
            log.info("DermaScan (embedded) on http://%s:%d/", gateway_settings.http_host,
                     gateway_settings.http_port)
            await wait_for_shutdown()
            # stop taking requests before the services drain: one that came in while the worker
            # drained would wait out the predict timeout for a 504
            await site.stop()
    finally:
        await runner.cleanup()
        await bus.close()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    service_parser("python -m embedded", __doc__).parse_args(argv)
    setup_logging(GatewaySettings().log_level)
    run(serve)


if __name__ == "__main__":
    main()
