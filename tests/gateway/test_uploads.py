"""Bulk upload as a client sees it: 202 + job id, then one outcome per file."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.gateway.conftest import Client, MakeClient
from tests.support.http import files_form, wait_job
from tests.support.tokens import CONTRIBUTOR, OPERATOR

pytestmark = pytest.mark.timeout(60)
UPLOADS = FIXTURES / "uploads"


async def upload(client: Client, files: list[tuple[str, bytes]], label: str | None = None) -> dict[str, Any]:
    response = await client.post("/upload-bulk", data=files_form(files, label), headers=CONTRIBUTOR)
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert response.headers["Location"] == f"/jobs/{accepted['job_id']}"
    return await wait_job(client, accepted["job_id"])


def outcomes(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["filename"]: o for o in job["result"]["files"]}


async def test_every_file_gets_an_outcome_and_only_good_images_are_stored(
        make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    files = [(p.name, p.read_bytes()) for p in sorted(UPLOADS.iterdir())]
    files.append(("../../melanoma_x.jpg",
                  sorted((FIXTURES / "ham10000/melanoma").glob("*.jpg"))[0].read_bytes()))
    job = await upload(client, files)
    assert job["state"] == "succeeded" and job["kind"] == "ingest"
    got = outcomes(job)
    expected = {
        "melanoma_0001.jpg": ("stored", None),
        "basal_cell_carcinoma-12.jpg": ("stored", None),
        "melanocytic_nevi_wrong_extension.jpg": ("stored", None),
        "../../melanoma_x.jpg": ("stored", None),
        "melanoma_truncated.jpg": ("rejected", "corrupt_image"),
        "melanoma_corrupt.jpg": ("rejected", "corrupt_image"),
        "melanoma_empty.jpg": ("rejected", "empty_file"),
        "melanoma_notes.jpg": ("rejected", "not_an_image"),
        "melanoma_tiny.png": ("rejected", "too_small"),
        "lupus_0001.jpg": ("rejected", "unknown_class"),
    }
    assert {name: (o["status"], o.get("reason")) for name, o in got.items()} == expected
    assert got["basal_cell_carcinoma-12.jpg"]["label"] == "basal_cell_carcinoma"
    wrong_ext = got["melanocytic_nevi_wrong_extension.jpg"]
    assert wrong_ext["key"] == f"images/melanocytic_nevi/{wrong_ext['sha256']}.png"  # format from bytes
    stored = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*")
                    if p.is_file())
    assert stored == sorted(o["key"] for o in got.values() if o["status"] == "stored")
    assert not any(".." in key or "melanoma_x" in key for key in stored)
    assert job["result"]["stored"] == 4 and job["result"]["rejected"] == 6


async def test_the_same_file_twice_is_one_object(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    data = (UPLOADS / "melanoma_0001.jpg").read_bytes()
    first = outcomes(await upload(client, [("melanoma_a.jpg", data), ("melanoma_b.jpg", data)]))
    second = outcomes(await upload(client, [("melanoma_c.jpg", data)]))
    assert [first["melanoma_a.jpg"]["status"], first["melanoma_b.jpg"]["status"]] == ["stored", "duplicate"]
    assert second["melanoma_c.jpg"]["status"] == "duplicate"
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1


async def test_an_explicit_label_and_a_zip_of_class_folders(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, with_jobs=True)
    archive = io.BytesIO()
    nevi = sorted((FIXTURES / "ham10000/melanocytic_nevi").glob("*.jpg"))
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dataset/melanocytic_nevi/a.jpg", nevi[0].read_bytes())
        zf.writestr("dataset/vascular_lesion/b.jpg",
                    (FIXTURES / "ham10000/vascular_lesion").glob("*.jpg").__next__().read_bytes())
        zf.writestr("dataset/unknown_thing/c.jpg", nevi[1].read_bytes())
    job = await upload(client, [("batch.zip", archive.getvalue())])
    labels = {o["filename"]: (o["status"], o.get("label"), o.get("reason")) for o in job["result"]["files"]}
    assert labels == {
        "batch.zip:dataset/melanocytic_nevi/a.jpg": ("stored", "melanocytic_nevi", None),
        "batch.zip:dataset/vascular_lesion/b.jpg": ("stored", "vascular_lesion", None),
        "batch.zip:dataset/unknown_thing/c.jpg": ("rejected", None, "unknown_class"),
    }
    labelled = outcomes(await upload(client, [("IMG_0001.jpg", nevi[2].read_bytes())],
                                     label="dermatofibroma"))
    assert labelled["IMG_0001.jpg"]["label"] == "dermatofibroma"


async def test_upload_errors(make_client: MakeClient) -> None:
    client = await make_client(with_worker=False, with_jobs=True, max_file_bytes=10_000)
    response = await client.post("/upload-bulk", data=files_form([("x.jpg", b"1")], label="lupus"),
                                 headers=CONTRIBUTOR)
    assert response.status == 422 and (await response.json())["error"]["code"] == "unknown_label"
    response = await client.post("/upload-bulk", data=b"raw", headers=CONTRIBUTOR)
    assert response.status == 422
    big = (UPLOADS / "melanocytic_nevi_wrong_extension.jpg").read_bytes()  # 30 kB > 10 kB
    job = await upload(client,
                       [("melanoma_big.png", big),
                        ("melanoma_0001.jpg", (UPLOADS / "melanoma_0001.jpg").read_bytes())])
    assert [(o["status"], o.get("reason")) for o in job["result"]["files"]] == [("rejected", "too_large"),
                                                                                ("stored", None)]
    assert (await client.get("/jobs/doesnotexist")).status == 404


BOUNDARY = "refusal-test-boundary"


def multipart(files: list[tuple[str, bytes]], label: str | None = None, *,
              label_first: bool = False, then: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """A bulk-upload form as raw bytes (to send chunked, with no Content-Length, or cut short),
    `then` (field, value) after the files."""
    def field(name: str, data: bytes, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"

    parts = [field("files", data, name) for name, data in files]
    if label is not None:
        parts.insert(0 if label_first else len(parts), field("label", label.encode()))
    parts += [field(name, data) for name, data in then]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes) -> AsyncIterator[bytes]:
    """`body` sent chunked: the request declares no length."""
    for at in range(0, len(body), 4096):
        yield body[at:at + 4096]


def staged(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()]


_NONE: tuple[tuple[str, bytes], ...] = ()
REFUSALS = {  # refusal kind -> (settings, how the form is sent, files, label, label first, fields after)
    "too_many_files": ({"max_files_per_request": 2}, "length", 3, None, False, _NONE),
    "unknown_label": ({}, "length", 2, "lupus", False, _NONE),  # the label after the files
    "unknown_label first": ({}, "length", 2, "lupus", True, _NONE),  # refused before any file is staged
    "request_too_large": ({"max_request_bytes": 10_000}, "chunked", 3, None, False, _NONE),
    "upload_quota": ({"upload_bytes_per_hour": 10_000}, "chunked", 3, None, False, _NONE),
    "invalid_form other field": ({}, "length", 2, None, False, (("comment", b"from clinic 4"),)),
    "invalid_form second label": ({}, "chunked", 2, "melanoma", True, (("label", b"melanoma"),)),
}


@pytest.mark.parametrize("kind", REFUSALS)
async def test_a_refused_upload_leaves_no_staged_file(make_client: MakeClient, tmp_path: Path,
                                                       melanoma_jpeg: bytes, kind: str) -> None:
    settings, sent, count, label, label_first, then = REFUSALS[kind]
    client = await make_client(with_worker=False, **settings)
    body = multipart([(f"melanoma_{i}.jpg", melanoma_jpeg) for i in range(count)], label,
                     label_first=label_first, then=then)
    response = await client.post("/upload-bulk", data=chunked(body) if sent == "chunked" else body,
                                 headers={**CONTRIBUTOR,
                                          "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status in (413, 422, 429), await response.text()
    assert (await response.json())["error"]["code"] == kind.split()[0]
    assert staged(tmp_path) == []


@pytest.mark.parametrize(("disposition", "named"), [
    ('form-data; name="file"; filename="melanoma_2.jpg"', "'file'"),  # /predict's field, not this one's
    ('form-data; name="files[]"', "'files[]'"), ('form-data; name=""', "''"),
    ("form-data", "(a part with no name)")])
async def test_a_form_field_other_than_files_and_label_is_refused_by_name(
        make_client: MakeClient, tmp_path: Path, melanoma_jpeg: bytes, disposition: str, named: str) -> None:
    client = await make_client(with_worker=False)
    body = multipart([("melanoma_1.jpg", melanoma_jpeg)], then=(("other", melanoma_jpeg),))
    body = body.replace(b'form-data; name="other"', disposition.encode())
    response = await client.post("/upload-bulk", data=body, headers={
        **CONTRIBUTOR, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid_form" and f"unknown form field {named}:" in error["message"]
    assert staged(tmp_path) == []


async def test_a_client_that_leaves_mid_upload_leaves_no_staged_file_and_no_500(
        make_client: MakeClient, tmp_path: Path, melanoma_jpeg: bytes) -> None:
    client = await make_client(with_worker=False)
    body = multipart([(f"melanoma_{i}.jpg", melanoma_jpeg) for i in range(3)])
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST /upload-bulk HTTP/1.1\r\nHost: localhost\r\n"
                 f"Authorization: {CONTRIBUTOR['Authorization']}\r\n"
                 f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    for at in range(0, len(body) * 3 // 4, 500):  # until half-way through the third file
        writer.write(body[at:min(at + 500, len(body) * 3 // 4)])
        await writer.drain()
        await asyncio.sleep(0.02)
    for _ in range(50):  # the first two files are staged
        if len(staged(tmp_path)) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(staged(tmp_path)) == 2
    writer.close()  # gone, mid-way through the third file
    for _ in range(50):
        if not staged(tmp_path):
            break
        await asyncio.sleep(0.05)
    assert staged(tmp_path) == []
    audit = await (await client.get("/audit?limit=1", headers=OPERATOR)).json()
    assert [(e["action"], e["status"], e["outcome"]) for e in audit["events"]] == [
        ("upload", 400, "client_disconnected")]
    metrics = await (await client.get("/metrics")).text()
    assert 'status="500"' not in metrics


async def test_an_upload_the_broker_refuses_leaves_no_staged_file(make_client: MakeClient, tmp_path: Path,
                                                                  melanoma_jpeg: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.keys import BUS
    from shared.bus import BrokerUnavailable

    client = await make_client(with_worker=False)

    async def refuse(*_: object, **__: object) -> None:
        raise BrokerUnavailable("the message broker is not reachable")

    monkeypatch.setattr(client.app[BUS], "publish", refuse)
    response = await client.post("/upload-bulk", data=files_form([("melanoma_1.jpg", melanoma_jpeg)] * 2),
                                 headers=CONTRIBUTOR)
    assert response.status == 503, await response.text()
    assert staged(tmp_path) == []
    job_id = next((tmp_path / "jobs").rglob("*.json")).stem
    assert (await (await client.get(f"/jobs/{job_id}")).json())["state"] == "failed"
