"""Slow clients against a real gateway process: thirty connections that announce the largest
bodies and trickle them cannot lock anyone else out of `/predict` (the audit's 26 did: the
gateway reserved what they declared), and once they stall they are let go within a window.

The gateway runs as `python -m gateway` on RabbitMQ; a stub worker in the test answers its
predictions, so what is measured is the gateway's edge, not a model."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from gateway.settings import GatewaySettings
from shared.bus import Delivery, connect_bus
from shared.bus.topology import Topology, declare
from shared.messages import ClassScore, Prediction, PredictReply, encode
from tests.support.http import form
from tests.support.processes import free_port, python_module, running, wait_http
from tests.support.reliability import scenario
from tests.support.tokens import TOKEN_ENV

pytestmark = pytest.mark.timeout(90)
BOUNDARY = "slow-client-boundary"
SLOW_CLIENTS = 30
#: What each slow client announces: 26 of these fill the default 256 MiB bytes-in-flight budget
#: when a declared length is reserved (each is within the 10 MiB + framing a /predict may send).
ANNOUNCED = 256 * 1024 * 1024 // 26
WINDOW_S = 2.0
CANNED = PredictReply(result=Prediction(label="melanoma", confidence=0.9,
                                        probabilities={"melanoma": 0.9, "melanocytic_nevi": 0.1},
                                        top_k=[ClassScore(label="melanoma", probability=0.9)],
                                        model_version="stub"), worker_id="stub")


def announce(port: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {ANNOUNCED}\r\n\r\n"
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n\r\n'
            "\xff\xd8\xff").encode("latin-1")


class SlowClient:
    """A connection from its own address that announces ANNOUNCED bytes and sends 10 KiB a
    second of them (above the default minimum of 4 KiB) until `stall()`."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.trickling = True
        self.broken: str | None = None

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                                 local_addr=(self.source, 0))
        self.writer.write(announce(self.port))
        self.task = asyncio.ensure_future(self._trickle())

    async def _trickle(self) -> None:
        try:
            while self.trickling:
                self.writer.write(b"\x00" * 1024)
                await self.writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError as exc:
            self.broken = repr(exc)

    def stall(self) -> None:
        self.trickling = False

    async def answer(self) -> str:
        """The status line and the error code of the gateway's answer, as soon as it comes."""
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = int(head.lower().split("content-length:", 1)[1].split("\r\n", 1)[0])
        error = json.loads(await self.reader.readexactly(length))["error"]
        return f"{head.split(chr(13), 1)[0]} {error['code']}"


async def normal_client(base: str, image: bytes, until: float, statuses: Counter[str],
                        latencies: list[float]) -> None:
    """Five predictions a second, each its own request, as a page would send them."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                async with session.post(f"{base}/predict", data=form(image)) as response:
                    body = await response.json()
                    statuses[str(response.status) if response.status == 200
                             else f"{response.status} {body['error']['code']}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - started)))


async def test_thirty_slow_clients_do_not_lock_out_predictions(rabbit_url: str, unique: str, tmp_path: Path,
                                                               melanoma_jpeg: bytes) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    names = {"predict_queue": f"{unique}.predict", "ingest_queue": f"{unique}.ingest",
             "train_queue": f"{unique}.train", "status_exchange": f"{unique}.status",
             "models_exchange": f"{unique}.models"}
    env = {**TOKEN_ENV, "DERMASCAN_BROKER_URL": rabbit_url,
           "DERMASCAN_STORE_URL": (tmp_path / "store").as_uri(), "DERMASCAN_HTTP_PORT": str(port),
           "DERMASCAN_RECEIVE_RATE_WINDOW_S": str(WINDOW_S),
           "DERMASCAN_LOG_LEVEL": "WARNING", **{f"DERMASCAN_{k.upper()}": v for k, v in names.items()}}
    stub = await connect_bus(rabbit_url)
    try:
        await stub.wait_connected(10)
        predict = Topology.of(GatewaySettings(**names)).predict  # type: ignore[arg-type]
        await declare(stub, predict)

        async def answer(delivery: Delivery) -> None:
            await stub.reply(delivery, encode(CANNED))

        await stub.consume(predict.name, answer, prefetch=32)
        with running(python_module("gateway"), env=env, log=tmp_path / "gateway.log") as gateway:
            await asyncio.to_thread(wait_http, f"{base}/livez", timeout=30, proc=gateway)
            slow = [SlowClient(port, f"127.0.0.{10 + i}") for i in range(SLOW_CLIENTS)]
            for client in slow:
                await client.start()
            await asyncio.sleep(1.0)  # every slow client is in and holding on

            statuses: Counter[str] = Counter()
            latencies: list[float] = []
            with scenario("30 slow clients hold /predict bodies") as counts:
                until = time.monotonic() + 5
                await asyncio.gather(*(normal_client(base, melanoma_jpeg, until, statuses, latencies)
                                       for _ in range(3)))
                counts.answers.update(statuses)
                sent = sum(statuses.values())
                served = statuses["200"] / sent
                median = sorted(latencies)[len(latencies) // 2] * 1000
                counts.notes.append(
                    f"a real gateway process on RabbitMQ; {SLOW_CLIENTS} slow clients from {SLOW_CLIENTS} "
                    f"addresses announce {ANNOUNCED:,} bytes each and send 10 KiB/s; normal predictions "
                    f"from 3 clients for 5 s: median {median:.0f} ms "
                    "(before: all 429 upload_bytes_in_flight)")
                print(f"\nslow clients: {SLOW_CLIENTS} x {ANNOUNCED:,} bytes announced; normal requests: "
                      f"{sent} sent, {dict(statuses)}; median {median:.0f} ms")
                assert sent >= 50 and served >= 0.95, statuses
            assert [c.broken for c in slow] == [None] * SLOW_CLIENTS  # all held their connections throughout

            stalled = time.monotonic()
            for client in slow:
                client.stall()
            answers = await asyncio.wait_for(asyncio.gather(*(c.answer() for c in slow)), 3 * WINDOW_S + 5)
            let_go = time.monotonic() - stalled
            print(f"stalled: all {SLOW_CLIENTS} let go in {let_go:.1f} s: {Counter(answers)}")
            assert answers == ["HTTP/1.1 408 Request Timeout body_too_slow"] * SLOW_CLIENTS
            assert let_go < 2 * WINDOW_S + 1  # a window or two, not DERMASCAN_BODY_TIMEOUT_S (30 s)
            assert gateway.poll() is None
            for client in slow:  # closed before the gateway is stopped (which blocks this loop)
                client.writer.close()
                await client.writer.wait_closed()
    finally:
        await stub.close()
