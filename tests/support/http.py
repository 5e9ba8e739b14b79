"""HTTP helpers the API tests share: multipart forms, a job poller, a raw image post."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient


def form(data: bytes, name: str = "file", filename: str = "image.jpg") -> aiohttp.FormData:
    """A multipart form with one file field, as the UI's `POST /predict` sends it."""
    payload = aiohttp.FormData()
    payload.add_field(name, data, filename=filename, content_type="application/octet-stream")
    return payload


def files_form(files: list[tuple[str, bytes]], label: str | None = None) -> aiohttp.FormData:
    """A multipart form for `POST /upload-bulk`: one `files` field per (name, bytes), and an
    optional `label`."""
    payload = aiohttp.FormData()
    for name, data in files:
        payload.add_field("files", data, filename=name, content_type="application/octet-stream")
    if label is not None:
        payload.add_field("label", label)
    return payload


async def wait_job(client: TestClient[web.Request, web.Application], job_id: str,
                   timeout: float = 30) -> dict[str, Any]:
    """Poll `GET /jobs/{job_id}` until the job is final and return it; raises AssertionError
    after `timeout` s."""
    for _ in range(int(timeout / 0.1)):
        job: dict[str, Any] = await (await client.get(f"/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "rejected", "cancelled"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def post_image(url: str, data: bytes, filename: str = "lesion.jpg") -> tuple[int, dict[str, object]]:
    """POST `data` as the `file` field of a multipart form to `url` with the standard library
    only (for tests that drive separate server processes); returns (status, JSON body)."""
    boundary = "dermascan-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
