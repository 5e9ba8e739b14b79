"""Gateway settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class GatewaySettings(CommonSettings):
    """How the HTTP gateway listens and how long it waits."""

    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    http_port: int = Field(8080, description="Port of the API, the UI and /metrics.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest image accepted by /predict.")
    max_file_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest file in a bulk upload.")
    max_request_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest bulk-upload request (all files together)."
    )
    max_files_per_request: int = Field(5000, ge=1, description="Most files in one bulk upload.")
    job_stale_s: float = Field(
        60.0, gt=0, description="A running job without progress for this long is reported failed."
    )
    predict_timeout_s: float = Field(10.0, gt=0, description="Deadline for a prediction (then 504).")
    max_in_flight: int = Field(
        128, ge=1, description="Predictions one gateway waits on at once; past it: 429."
    )
    queue_poll_s: float = Field(5.0, gt=0, description="Seconds between queue-depth samples for /metrics.")
    worker_ttl_factor: float = Field(
        3.0, gt=1, description="A worker silent for this many heartbeat intervals counts as gone."
    )
