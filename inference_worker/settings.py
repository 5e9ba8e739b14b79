"""Inference worker settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.classifier import Engine
from shared.host import usable_cpus
from shared.imaging import DEFAULT_MAX_DECODED_PIXELS
from shared.settings import REPO_ROOT, CommonSettings


class WorkerSettings(CommonSettings):
    """How one inference worker process runs."""

    model_config = SettingsConfigDict(populate_by_name=True)  # `streams=` as well as its variable

    metrics_port: int = Field(9100, description="Port of the service's /metrics endpoint (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    model_path: Path | None = Field(
        None, description="Serve this .keras file (manifest.json beside it) instead of the registry."
    )
    model_cache_dir: Path = Field(
        REPO_ROOT / "var" / "model-cache", description="Where registry versions are downloaded."
    )
    litert_cache_dir: Path = Field(
        default_factory=lambda data: data["model_cache_dir"] / "litert",
        json_schema_extra={"default_text": "DERMASCAN_MODEL_CACHE_DIR/litert"},
        description="Where the worker's own LiteRT conversions of versions saved without a LiteRT file "
        "are kept, named by the model file's SHA-256 (safe to share between workers and hosts: a volume "
        "here spares each worker the conversion).",
    )
    inference_engine: Engine = Field(
        "litert", description="`litert`: the version's LiteRT file (XNNPACK kernels, 1.5-2x faster per "
        "core), made and checked against Keras when the version was saved, served without TensorFlow; a "
        "version saved without one is converted at load (TensorFlow) and served on LiteRT if its outputs "
        "match Keras, else on TensorFlow. `tensorflow`: the Keras model in a compiled tf.function. Both "
        "need TensorFlow where they load a Keras file: the worker image has none (requirements-worker.txt).",
    )
    # Defaults measured with bench/serve.py on a 2-core host (README, "Serving fast"): on LiteRT a
    # MobileNetV2 serves 32 clients fastest with 2 single-thread streams of at most 8 images
    # (batches of 4: 7 % slower, as the worker wakes up twice as often per image).
    max_batch_size: int = Field(8, ge=1, description="Largest batch given to the model.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a batch waits for images still being decoded."
    )
    streams: int = Field(2, ge=1, description="Model calls run at once (also `--concurrency`).",
                         validation_alias="DERMASCAN_WORKER_STREAMS")
    decode_threads: int = Field(2, ge=1, description="Threads decoding and resizing images.")
    # A PNG of 131 KB may decode to 40 MP (160 MB and 0.25-1.4 s of a core); a JPEG decodes at 1/2,
    # 1/4 or 1/8 of its size when the model needs no more, so its cost stays small at any size.
    max_decoded_pixels: int = Field(
        DEFAULT_MAX_DECODED_PIXELS, gt=0, description="Most pixels one image may decode to, refused from its "
        "header (413 `too_many_pixels`): the model sees 224 px, and a dermoscopic image is judged on far "
        "fewer than the 40 MP a JPEG may have. A JPEG decodes at the smallest of 1/2, 1/4, 1/8 of its size "
        "that still covers the model's input, so this bounds PNG and WebP (decoded whole): 4096 x 4096 costs "
        "~0.1 s and 64 MiB to decode. The gateway refuses a PNG or WebP over the default from its header.")
    decode_budget_bytes: int = Field(
        96 * 2**20, gt=0, description="Bytes of decoded pixels (4 a pixel) all decode threads may hold at "
        "once: one image of `max_decoded_pixels` and smaller ones beside it. An image that does not "
        "fit is answered 429 `decoder_busy` (retryable) at once, so a flood of large images is "
        "refused in microseconds each instead of queueing in front of everyone else.")
    intra_op_threads: int = Field(
        default_factory=lambda data: max(1, usable_cpus() // data["streams"]),
        ge=1,
        json_schema_extra={"default_text": "CPUs ÷ streams"},
        description="Threads per model call, LiteRT's or TensorFlow's intra-op (streams running at once then "
        "share the CPUs instead of fighting over them; CPUs: affinity mask capped by the cgroup quota).",
    )
    inter_op_threads: int = Field(
        2, ge=1, description="TensorFlow inter-op threads; the worker uses at least `streams`, "
        "since streams sharing one inter-op thread run one after the other.",
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="Seconds between the service's heartbeats (status broadcasts).")
    model_reconcile_s: float = Field(
        10.0, gt=0, description="Seconds between checks of the registry's current model: a promotion "
        "broadcast that was missed or overtaken by another heals within this.")
    drain_timeout_s: float = Field(
        10.0, ge=0, description="Grace period for in-flight work on stop; the whole stop, broker steps "
        "included, is bounded by it (and a few seconds more to release), broker or no broker.")
    worker_id: str | None = Field(None, description="Name in /health; default host-pid.")
