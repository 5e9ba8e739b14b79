"""Ingest service settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pydantic import Field

from shared.imaging import DEFAULT_MAX_PIXELS
from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    """Limits the ingest service enforces on every uploaded image."""

    metrics_port: int = Field(9101, description="Port of the ingest service's /metrics (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Decompression-bomb bound per image.")
    max_member_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest file inside a zip archive.")
    max_zip_members: int = Field(10_000, gt=0, description="Most files in one zip archive.")
    max_zip_bytes: int = Field(2 * 1024**3, gt=0, description="Most uncompressed bytes in one zip archive.")
