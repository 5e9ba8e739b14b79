"""Trainer service settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import REPO_ROOT, CommonSettings


class TrainerSettings(CommonSettings):
    """How the trainer trains, and the promotion gate it applies."""

    metrics_port: int = Field(9102, description="Port of the trainer's /metrics (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    work_dir: Path = Field(REPO_ROOT / "var" / "trainer", description="Scratch space for training runs.")
    max_balanced_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Gate: most the held-out balanced accuracy may fall.")
    max_class_recall_drop: float = Field(
        0.05, ge=0, le=1, description="Gate: most any class's held-out recall may fall.")
    progress_interval_s: float = Field(2.0, gt=0, description="Seconds between job progress writes.")
    embed_batch_size: int = Field(64, ge=1, description="Images per forward pass when computing embeddings.")
    intra_op_threads: int = Field(2, ge=1, description="TensorFlow intra-op threads for training.")
