"""Gateway settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings

#: Shortest token accepted from the environment: refuses placeholders like "change-me".
MIN_TOKEN_LENGTH = 16
#: Names of this machine's loopback interface: always allowed by default (DERMASCAN_ALLOWED_HOSTS).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class GatewaySettings(CommonSettings):
    """How the HTTP gateway listens, how long it waits, and whom it lets change things."""

    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    http_port: int = Field(8080, description="Port of the API, the UI and /metrics.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest image accepted by /predict.")
    max_file_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest file in a bulk upload.")
    max_request_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest bulk-upload request (all files together)."
    )
    max_files_per_request: int = Field(5000, ge=1, description="Most files in one bulk upload.")
    job_stale_s: float = Field(
        60.0, gt=0,
        description="A running job without progress for this long is reported failed (`worker_lost`); an "
                    "upload resumes if its message comes again."
    )
    training_queued_stale_s: float = Field(
        900.0, gt=0, description="A training job no trainer started in this long is failed by the next "
                                 "POST /retrain, which then takes its place.")
    predict_timeout_s: float = Field(10.0, gt=0, description="Deadline for a prediction (then 504).")
    max_in_flight: int = Field(
        128, ge=1, description="Predictions one gateway waits on at once; past it: 429."
    )
    queue_poll_s: float = Field(5.0, gt=0, description="Seconds between queue-depth samples for /metrics.")
    worker_ttl_factor: float = Field(
        3.0, gt=1,
        description="A worker or service instance silent for this many heartbeat intervals counts as gone.",
    )
    operator_token: SecretStr | None = Field(
        None, description="Bearer token of the `operator` role (named `operator` in the audit log): "
        f"uploads, retraining, promotion, rollback, forced promotion, /audit. At least {MIN_TOKEN_LENGTH} "
        "characters; unset or empty: none (the embedded mode then generates one and prints it).")
    contributor_token: SecretStr | None = Field(
        None, description="Bearer token of the `contribute` role (named `contributor`): bulk uploads. "
        f"At least {MIN_TOKEN_LENGTH} characters; unset or empty: none.")
    api_tokens_file: Path | None = Field(
        None, description="JSON Lines file of named tokens stored as SHA-256 digests, "
        '`{"name": ..., "role": ..., "sha256": ...}` per line (`python -m gateway token` writes one); '
        "read at start; unset: none.")
    open_predict: bool = Field(
        True, description="`POST /predict` needs no token; false: a token of any role is needed.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, json_schema_extra={"default_text": "none"},
        description="Comma-separated browser origins (`https://host[:port]`) besides the gateway's own "
        "that may send state-changing requests; CORS headers are sent only to these (none: CORS off).")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(LOCAL_HOSTS), json_schema_extra={"default_text": ", ".join(LOCAL_HOSTS)},
        description="Comma-separated host names (the `Host` header, port ignored) this gateway answers to, "
        "besides `DERMASCAN_HTTP_HOST` when it names one address; any other is refused with 421, so a page "
        "whose name was re-pointed at this address (DNS rebinding) reads nothing. List the public name a "
        "browser uses behind a proxy or a DNS name; `*`: any. `/livez`, `/readyz` and `/metrics` answer "
        "any host (probes and scrapers).")
    token_calls_per_min: int = Field(
        120, ge=0, description="Calls a minute per API token to the routes that need the `contribute` or "
        "`operator` role (uploads, retraining, promotion, rollback, /audit), bursts of as many, per gateway "
        "process; past it: 429 with Retry-After. 0: no limit.")
    auth_failures_per_min: int = Field(
        30, ge=0, description="Unknown or malformed tokens a minute per client address; past it every "
        "token from that address is refused (429 with Retry-After) until the minute is over, so guessing "
        "is slow. Counted in `dermascan_gateway_auth_failures_total`. 0: no limit.")
    header_timeout_s: float = Field(
        15.0, gt=0, description="Seconds a connection may take to send a request's headers, or stay idle "
        "between requests, before the gateway closes it.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="Seconds `/predict` and the JSON routes wait for the whole request body "
        "(then 408); the prediction's in-flight slot is taken only after it arrived.")
    upload_timeout_s: float = Field(
        900.0, gt=0, description="Seconds a bulk upload may take to arrive and be staged (then 408).")
    max_upload_bytes_in_flight: int = Field(
        256 * 1024 * 1024, gt=0, description="File bytes one gateway holds at once over `/predict` and bulk "
        "uploads, counted as they arrive (never as declared); past it: 429.")
    max_upload_bytes_in_flight_per_caller: int = Field(
        32 * 1024 * 1024, gt=0, description="Of `DERMASCAN_MAX_UPLOAD_BYTES_IN_FLIGHT`, what one caller (API "
        "token, or client address without one) holds at once; past it: 429. At least the largest file "
        "(`DERMASCAN_MAX_UPLOAD_BYTES`, `DERMASCAN_MAX_FILE_BYTES`).")
    min_receive_rate_bytes_per_s: int = Field(
        4096, ge=0, description="Slowest pace at which `/predict` and bulk-upload bodies may arrive, "
        "measured over each `DERMASCAN_RECEIVE_RATE_WINDOW_S`; slower: 408 `body_too_slow`. 0: no minimum.")
    receive_rate_window_s: float = Field(
        10.0, gt=0, description="Window of `DERMASCAN_MIN_RECEIVE_RATE_BYTES_PER_S`: a body must bring that "
        "rate's worth of bytes in every such window (a stalled client is let go after one).")
    predict_rate_per_s: float = Field(
        50.0, ge=0, description="Predictions a second per caller (API token, or client address without "
        "one), per gateway process; past it: 429 with Retry-After. 0: no limit.")
    predict_burst: int = Field(
        100, ge=1, description="Predictions a caller may send at once before `DERMASCAN_PREDICT_RATE_PER_S` "
        "applies.")
    upload_bytes_per_hour: int = Field(
        4 * 1024**3, ge=0, description="Bulk-upload bytes per API token per hour, charged as they arrive, "
        "per gateway process; past it: 429 with Retry-After. 0: no quota.")

    grafana_url: str | None = Field(
        None, description="Grafana's address, linked from the UI's Status section "
        "(e.g. http://127.0.0.1:3000); unset: no link.")
    events_poll_s: float = Field(
        0.25, gt=0, le=10, description="How often a job's live event stream (`GET /jobs/{id}/events`) "
        "reads the job record for changes.")
    events_max_s: float = Field(
        3600.0, gt=0, description="Longest a job's event stream stays open; the page reconnects past it.")
    events_max_streams: int = Field(
        256, ge=1, description="Job event streams one gateway keeps open at once (each reads its job record "
        "every `DERMASCAN_EVENTS_POLL_S`); past it: 429, and the page polls `GET /jobs/{id}` instead.")
    page_size: int = Field(
        50, ge=1, description="Items a page of `GET /models` and `GET /audit` holds when the request names "
        "no `limit`; the answer's `next` asks for the page after it.")
    max_page_size: int = Field(
        1000, ge=1, description="Most items a page of `GET /models` or `GET /audit` may hold (`?limit=`; "
        "more: 400). Each item is one or two store reads.")
    job_retention_s: float = Field(
        30 * 86400.0, ge=0, description="A job that ended longer ago is forgotten: `GET /jobs/{id}` answers "
        "404 and the gateway's hourly sweep deletes its record (a day of endings at a time). 0: keep every "
        "job.")
    audit_retention_s: float = Field(
        365 * 86400.0, ge=0, description="Audit events older than this are left out of `GET /audit` and "
        "deleted by the gateway's hourly sweep (a day at a time). 0: keep every event.")

    @field_validator("operator_token", "contributor_token", mode="before")
    @classmethod
    def _token(cls, value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or (isinstance(text, str) and not text.strip()):
            return None
        if isinstance(text, str) and len(text.strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters "
                             "(`python -m gateway token` makes one)")
        return text.strip() if isinstance(text, str) else text

    @field_validator("api_tokens_file", "grafana_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("max_page_size")
    @classmethod
    def _page_fits(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("page_size", 1):
            raise ValueError(f"{value} is less than DERMASCAN_PAGE_SIZE ({info.data['page_size']})")
        return value

    @field_validator("max_upload_bytes_in_flight_per_caller")
    @classmethod
    def _share_fits_a_file(cls, value: int, info: ValidationInfo) -> int:
        largest = max(info.data.get("max_upload_bytes", 0), info.data.get("max_file_bytes", 0))
        if value < largest:
            raise ValueError(f"{value:,} bytes cannot hold the largest file accepted ({largest:,} bytes)")
        return value

    @field_validator("grafana_url")
    @classmethod
    def _grafana(cls, value: str | None) -> str | None:
        parts = urlsplit(value) if value is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return items
        hosts = []
        for item in (str(i).strip().lower().rstrip(".") for i in items):
            if not item:
                continue
            port_or_url = any(c in item for c in "/@?# ") or (":" in item and not item.startswith("["))
            if item != "*" and port_or_url:
                raise ValueError(f"{item!r} is not a host name like clinic.example.org (no scheme, no port)")
            hosts.append(item)
        return hosts

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return items
        origins = []
        for item in (str(i).strip().rstrip("/").lower() for i in items):
            if not item:
                continue
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"{item!r} is not an origin like https://example.org[:port]")
            origins.append(item)
        return origins
