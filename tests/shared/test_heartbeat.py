"""Heartbeats: the ingest and trainer services beat on the status exchange from `start()` and
stop on `stop()`; the status exchange's bodies are told apart by their shape."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydantic
import pytest

from embedded.system import build_system
from ingest_service.settings import IngestSettings
from shared.bus import Delivery
from shared.bus.memory import MemoryBus
from shared.fine_tune_policy import FineTunePolicy
from shared.messages import ServiceStatus, WorkerStatus, encode, parse_status
from shared.store import open_store
from trainer_service.settings import TrainerSettings

pytestmark = pytest.mark.timeout(60)


async def test_the_job_services_beat_while_started_and_not_after_stop(tmp_path: Path,
                                                                      tiny_model_dir: Path) -> None:
    bus, store = MemoryBus(), await open_store(tmp_path.as_uri())
    common: dict[str, Any] = {"store_url": tmp_path.as_uri(), "metrics_port": 0,
                              "bundled_model_dir": tiny_model_dir,
                              "heartbeat_s": 0.05}
    system = build_system(bus, store, ingest=IngestSettings(**common),
                          trainer=TrainerSettings(**common, work_dir=tmp_path / "trainer"))
    heard: list[ServiceStatus] = []

    async def on_status(delivery: Delivery) -> None:
        status = parse_status(delivery.body)
        assert isinstance(status, ServiceStatus)
        heard.append(status)

    await bus.subscribe("dermascan.status", on_status)
    await system.start()
    assert system.ingest is not None and system.trainer is not None
    try:
        assert system.ingest.status_beat.running and system.trainer.status_beat.running
        await asyncio.sleep(0.3)
        assert {s.service for s in heard} == {"ingest_service", "trainer_service"}
        assert sum(s.service == "ingest_service" for s in heard) >= 3  # it keeps beating
        assert all(s.interval_s == 0.05 and s.started_at <= s.sent_at for s in heard)
        # the trainer says what a fine-tune needs (its settings), so a gateway can refuse one at once
        policy = FineTunePolicy(min_training_images=200, min_held_out_malignant=10,
                                unjudged_malignant_blocks=True)
        assert all(s.fine_tune == policy for s in heard if s.service == "trainer_service")
        assert all(s.fine_tune is None for s in heard if s.service == "ingest_service")
    finally:
        await system.stop()
    assert not system.ingest.status_beat.running and not system.trainer.status_beat.running
    await asyncio.sleep(0.05)
    count = len(heard)
    await asyncio.sleep(0.3)  # six intervals: a beat still running would have been heard
    assert len(heard) == count
    await bus.close()
    await store.close()


def test_a_status_body_is_read_as_the_heartbeat_its_shape_says() -> None:
    worker = parse_status(encode(WorkerStatus(worker_id="w1", model_version="v1")))
    service = parse_status(encode(ServiceStatus(service="ingest_service", instance_id="h-1", started_at=1.0)))
    assert isinstance(worker, WorkerStatus) and worker.worker_id == "w1"
    assert isinstance(service, ServiceStatus) and service.service == "ingest_service"
    newer = parse_status(b'{"service": "ingest_service", "instance_id": "h-1", "started_at": 1, "new": 1}')
    assert isinstance(newer, ServiceStatus)  # a field from a newer sender is ignored (shared/wire.py)
    with pytest.raises(pydantic.ValidationError):
        parse_status(b'{"service": "ingest_service", "instance_id": "h-1", "started_at": "at dawn"}')


def test_a_trainers_heartbeat_is_read_with_its_fine_tune_policy_or_without_one() -> None:
    older = parse_status(b'{"schema_version": 1, "message_id": "m", "service": "trainer_service", '
                         b'"instance_id": "t-1", "started_at": 1, "sent_at": 2, "interval_s": 5}')
    assert isinstance(older, ServiceStatus) and older.fine_tune is None  # a trainer older than the field
    newer = parse_status(b'{"service": "trainer_service", "instance_id": "t-1", "started_at": 1, '
                         b'"fine_tune": {"min_training_images": 50, "min_held_out_malignant": 5, '
                         b'"unjudged_malignant_blocks": false, "max_training_images": 9}}')
    assert isinstance(newer, ServiceStatus) and newer.fine_tune == FineTunePolicy(  # unknown fields ignored
        min_training_images=50, min_held_out_malignant=5, unjudged_malignant_blocks=False)
    with pytest.raises(pydantic.ValidationError):  # a policy that is none is no heartbeat
        parse_status(b'{"service": "trainer_service", "instance_id": "t-1", "started_at": 1, '
                     b'"fine_tune": {"min_training_images": 0}}')
