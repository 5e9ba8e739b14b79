"""Ingest service settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pydantic import Field

from shared.imaging import DEFAULT_MAX_PIXELS
from shared.settings import CommonSettings, SplitSecretSettings


class IngestSettings(CommonSettings, SplitSecretSettings):
    """Limits the ingest service enforces on every upload, and how hard it retries the store."""

    metrics_port: int = Field(9101, description="Port of the ingest service's /metrics (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    heartbeat_s: float = Field(
        5.0, gt=0, description="Seconds between the service's heartbeats (status broadcasts).")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, gt=0,
        description="Most pixels of one image (width x height, read from the header before decoding; "
                    "the decompression-bomb bound): 40 MP fits the largest dermatoscope images (~30 MP).")
    clean_budget_bytes: int = Field(
        192 * 2**20, gt=0,
        description="Bytes of decoded pixels (4 a pixel) the cleaning of uploaded images may hold at once "
                    "(predictions' decoding has the workers' `DERMASCAN_DECODE_BUDGET_BYTES`): cleaning "
                    "holds three full-size copies, so 192 MiB is one 4096 x 4096 image; a larger one is "
                    "cleaned alone, others wait, and each large image's memory goes back to the system "
                    "after it.")
    max_member_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest file inside a zip archive.")
    max_zip_members: int = Field(10_000, gt=0, description="Most files in one zip archive.")
    max_zip_bytes: int = Field(
        512 * 1024**2, gt=0,
        description="Most bytes the members of one zip archive may expand to; later members are "
                    "rejected (archive_too_large) without being expanded.")
    max_job_zip_bytes: int = Field(
        2 * 1024**3, gt=0,
        description="Most bytes all zip archives of one upload may expand to together "
                    "(job_too_large past it).")
    progress_every_s: float = Field(
        1.0, ge=0,
        description="How often a running job saves its outcomes so far; the staged uploads of the files "
                    "handled are deleted once saved.")
    store_retry_s: float = Field(
        60.0, ge=0,
        description="How long one object-store call retries a transient failure (exponential backoff) "
                    "before the job's attempt gives up.")
    store_retry_first_s: float = Field(0.25, gt=0, description="First wait before retrying a store call.")
    store_retry_max_wait_s: float = Field(
        8.0, gt=0, description="Longest wait between two retries of a store call.")
    max_attempts: int = Field(
        3, ge=1,
        description="Attempts of an ingest job (requeued while the store is unavailable, or after its "
                    "process died); then it fails, listing the files it stored.")
