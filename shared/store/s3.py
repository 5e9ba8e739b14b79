"""An `ObjectStore` on S3 or MinIO (boto3, every call in a worker thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import NotFound, ServiceUnavailable
from shared.store.base import check_key

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    """Objects in one bucket, created on `open()` if missing. Credentials and region come
    from the standard AWS_* variables."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32),
        )

    async def open(self) -> None:
        """Make sure the bucket exists. Raises ServiceUnavailable if S3 cannot be reached."""
        try:
            await asyncio.to_thread(self._ensure_bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"object store {self.url} unreachable: {exc}") from exc

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            self._client.create_bucket(Bucket=self.bucket)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def _get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise NotFound(f"no object {key!r}") from None
            raise
        body: bytes = response["Body"].read()
        return body

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    def _exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)

    async def list(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
            return True
        except (BotoCoreError, ClientError):
            return False

    async def close(self) -> None:
        self._client.close()
