"""An `ObjectStore` on S3 or MinIO (boto3, every call in a worker thread).

Calls have short timeouts and few tries (`S3Timeouts`), so a store that refuses connections or
never answers costs a request seconds, not minutes, and surfaces as StoreUnavailable (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import NotFound
from shared.store.base import AlreadyExists, S3Timeouts, StoreUnavailable, VersionMismatch, check_key

T = TypeVar("T")
_MISSING = {"404", "NoSuchKey", "NotFound"}
#: 412: the key exists (`create`) or is at another version (`put_if`); 409: a concurrent
#: conditional write of the key is under way.
_TAKEN = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """Objects in one bucket, created on `open()` if missing. Credentials and region come
    from the standard AWS_* variables."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, prefix: str = "",
                 timeouts: S3Timeouts | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        limits = timeouts or S3Timeouts()
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"total_max_attempts": limits.max_attempts, "mode": "standard"},
                          connect_timeout=limits.connect_s, read_timeout=limits.read_s,
                          max_pool_connections=32),
        )

    async def _run(self, call: Callable[[], T]) -> T:
        """`call` in a thread; every failure other than the DermaScan errors it raises itself
        becomes StoreUnavailable."""
        try:
            return await asyncio.to_thread(call)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"object store {self.url} failed: {exc}") from exc

    async def open(self) -> None:
        """Make sure the bucket exists. Raises StoreUnavailable if S3 cannot be reached."""
        await self._run(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise
            self._client.create_bucket(Bucket=self.bucket)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        name = self._key(key)
        await self._run(lambda: self._client.put_object(
            Bucket=self.bucket, Key=name, Body=data, ContentType=content_type))

    def _create(self, key: str, data: bytes, content_type: str) -> None:
        name = self._key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type,
                                    IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            try:
                if self._get(key) == data:  # our own write, whose answer a retry lost
                    return
            except NotFound:
                pass
            raise AlreadyExists(f"object {key!r} exists") from None

    async def create(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await self._run(lambda: self._create(key, data, content_type))

    def _put_if(self, key: str, data: bytes, version: str | None, content_type: str) -> str:
        # If-Match / If-None-Match on PutObject: S3 (since 2024), MinIO and moto's server check it
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            response = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                               ContentType=content_type, **condition)
        except ClientError as exc:
            if _code(exc) not in _TAKEN | _MISSING:  # 404: If-Match of a key deleted since
                raise
            try:
                stored, now = self._get_versioned(key)
                if stored == data:  # our own write, whose answer a retry lost
                    return now
            except NotFound:
                pass
            raise VersionMismatch(f"object {key!r} changed since version {version}") from None
        return str(response["ETag"])

    async def put_if(self, key: str, data: bytes, *, version: str | None,
                     content_type: str = "application/octet-stream") -> str:
        return await self._run(lambda: self._put_if(key, data, version, content_type))

    def _get_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise NotFound("no such object") from None
            raise
        body: bytes = response["Body"].read()
        return body, str(response["ETag"])

    def _get(self, key: str) -> bytes:
        return self._get_versioned(key)[0]

    async def get(self, key: str) -> bytes:
        return await self._run(lambda: self._get(key))

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        return await self._run(lambda: self._get_versioned(key))

    def _exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise

    async def exists(self, key: str) -> bool:
        return await self._run(lambda: self._exists(key))

    def _list_stamped(self, prefix: str) -> dict[str, str]:
        stamps: dict[str, str] = {}
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                stamps[item["Key"][len(self.prefix):]] = str(item["ETag"])
        return dict(sorted(stamps.items()))

    async def list(self, prefix: str = "") -> list[str]:
        return list(await self.list_stamped(prefix))

    async def list_stamped(self, prefix: str = "") -> dict[str, str]:
        return await self._run(lambda: self._list_stamped(prefix))

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await self._run(lambda: self._client.delete_object(Bucket=self.bucket, Key=name))

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._client.head_bucket(Bucket=self.bucket))
            return True
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        self._client.close()
