"""Settings every service reads. Each service subclasses `CommonSettings` in its own
`settings.py`; all variables use the `DERMASCAN_` prefix (plus boto3's standard AWS_* ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class CommonSettings(BaseSettings):
    """Where the broker and the object store are, and the names the services meet under."""

    model_config = SettingsConfigDict(env_prefix="DERMASCAN_", extra="ignore")

    broker_url: str = Field(
        "memory://",
        description="`amqp://guest:guest@127.0.0.1:5672/` for RabbitMQ or `memory://` (embedded only).",
    )
    store_url: str = Field(
        "file://./var/store",
        description="`s3://bucket[/prefix]` or `file:///path` for the object store.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO or another S3 server; unset for AWS."
    )
    store_connect_timeout_s: float = Field(
        2.0, gt=0, description="Seconds an S3 call may take to connect before the try fails.")
    store_read_timeout_s: float = Field(
        5.0, gt=0, description="Seconds S3 may stay silent on an open connection before the try fails "
        "(an upload waits twice: for `100 Continue`, then for the answer).")
    store_max_attempts: int = Field(
        2, ge=1, description="Tries per S3 call, the first included; a store that refuses or never answers "
        "costs a request about this many tries of the timeouts above, then a 503 with Retry-After.")
    broker_publish_timeout_s: float = Field(
        5.0, gt=0, description="Longest a publish waits for RabbitMQ's confirm before it fails as "
        "unavailable (503); the message may still have arrived.")
    broker_heartbeat_s: int = Field(
        5, ge=1, le=600, description="AMQP heartbeat in seconds: RabbitMQ drops a client it has not heard "
        "from for about this long (requeuing what it held), and a service probes the broker every half "
        "of it, so a broker gone silent without closing the connection (a dropped route) is reported "
        "not connected (/readyz 503) within it and a new connection made; RabbitMQ advises 5-20 s.")
    log_level: str = Field("INFO", description="Python logging level.")
    predict_queue: str = Field("dermascan.predict", description="Queue of prediction requests.")
    ingest_queue: str = Field("dermascan.ingest", description="Queue of bulk-upload jobs.")
    train_queue: str = Field("dermascan.train", description="Queue of training jobs.")
    max_queue_length: int = Field(
        1024, ge=1, description="Requests the predict queue may hold; past it the gateway answers 429."
    )
    status_exchange: str = Field(
        "dermascan.status", description="Fanout exchange of the services' heartbeats."
    )
    models_exchange: str = Field(
        "dermascan.models", description="Fanout exchange announcing model promotions."
    )
    bundled_model_dir: Path = Field(
        REPO_ROOT / "models" / "base",
        description="Model (model.keras + manifest.json) that seeds an empty registry.",
    )


class SplitSecretSettings(BaseSettings):
    """The secret that draws each lesion group's split (`shared.split_secret`). Mixed into the
    settings of every service that assigns splits: the ingest service and the trainer (its
    `import`, and the validation share of a retrain)."""

    model_config = SettingsConfigDict(env_prefix="DERMASCAN_", extra="ignore")

    split_secret: SecretStr | None = Field(
        None, min_length=16,
        description="Secret (16 characters or more) that draws which lesion groups are held out "
        "(`eval`) and which validate a retrain. Unset: a random one is created once in the object "
        "store (`secrets/split.json`) and shared by every service on that store. Set it on every "
        "service that assigns splits (ingest and trainer) or on none; changing it changes the draws "
        "of images stored afterwards only.")
