"""Trainer service settings (env prefix `DERMASCAN_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.fine_tune_policy import FineTunePolicy
from shared.operating_policy import OperatingPolicy, policy_field
from shared.settings import REPO_ROOT, CommonSettings, SplitSecretSettings
from shared.taxonomy import MALIGNANT
from shared.verdict import GatePolicy


class TrainerSettings(CommonSettings, SplitSecretSettings):
    """How the trainer trains, and the promotion gate it applies."""

    metrics_port: int = Field(9102, description="Port of the trainer's /metrics (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    heartbeat_s: float = Field(
        5.0, gt=0, description="Seconds between the service's heartbeats (status broadcasts).")
    work_dir: Path = Field(REPO_ROOT / "var" / "trainer", description="Scratch space for training runs.")
    max_balanced_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Gate: most the held-out balanced accuracy may fall.")
    max_class_recall_drop: float = Field(
        0.05, ge=0, le=1,
        description="Gate: most a benign class's held-out recall may fall (beyond its noise).")
    gate_malignant_max_recall_drop: float = Field(
        0.0, ge=0, le=1,
        description="Gate: most a malignant class's recall may fall beyond its noise (0: not at all).")
    gate_min_class_support: int = Field(
        10, ge=1, description="Gate: held-out images a class needs before its recall is judged.")
    gate_unjudged_malignant_blocks: bool = Field(
        True, description="Gate: a malignant class that no held-out set has enough images of to judge blocks "
                          "automatic promotion (absence of evidence is not a pass). Turn off only for demos "
                          "and tests on toy data.")
    gate_accept_benign_for_malignant: bool = Field(
        True,
        description="Gate: accept a benign class's drop when a malignant class's recall rose beyond its "
                    "noise.")
    gate_confidence: float = Field(0.95, gt=0.5, lt=1,
                                   description="Gate: confidence of the bootstrap intervals.")
    gate_resamples: int = Field(2000, ge=100, description="Gate: paired bootstrap resamples.")
    # The operating policy's targets: default, bounds and description from shared.operating_policy.
    referral_recall: float = policy_field("referral_recall")
    referral_confidence: float = policy_field("referral_confidence")
    uncertain_below_accuracy: float = policy_field("uncertain_below_accuracy")
    ood_refit_min_images: int = Field(
        1000, ge=2, description="Head retrains refit the OOD detector from this many catalog images; "
                                "below, the current model's (same backbone) is kept.")
    head_anchor_strength: float = Field(
        0.1, ge=0, description="Head retrains: pull towards the current head's weights (L2-SP strength; "
        "a new class's column is free): what keeps a retrain with little new data close to the served head.")
    fine_tune_min_images: int = Field(
        200, ge=1,
        description="Fine-tuning retrains are refused unless the catalog holds this many training images "
                    "of each class it trains (it changes the backbone, so it trains on images alone).")
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking server every training job is logged to as a run (MLflow's own "
                    "variable); unset: nothing is logged and MLflow is not imported. A server that does not "
                    "answer never fails a training (counted in "
                    "`dermascan_trainer_service_tracking_failures_total`).")
    mlflow_ui_url: str | None = Field(
        None, description="Address of the MLflow UI, to link each model version to its run (UI history).")
    progress_interval_s: float = Field(2.0, gt=0, description="Seconds between job progress writes.")
    training_time_limit_s: float = Field(
        3600.0, gt=0,
        description="A training job still training after this many seconds is stopped and failed "
                    "(`time_limit_exceeded`), freeing the training claim; the current model is unchanged.")
    train_in_subprocess: bool = Field(
        True, description="Run each training job's computation in a child process at a lower priority "
        "(`trainer_service/service/apart.py`): in `make run` the trainer shares its process with /predict, "
        "which TensorFlow would otherwise stall; a cancelled job's child is killed at once.")
    train_niceness: int = Field(
        10, ge=0, le=19, description="How much lower the training child's CPU priority is (`os.nice`): at "
        "10, Linux gives it about a tenth of a core that a process at 0 (serving) also wants; 0 shares "
        "alike (a machine that only trains).")
    embed_batch_size: int = Field(64, ge=1, description="Images per forward pass when computing embeddings.")
    intra_op_threads: int = Field(2, ge=1, description="TensorFlow intra-op threads for training.")

    def gate_policy(self) -> GatePolicy:
        """The promotion gate's policy, as recorded with every verdict."""
        return GatePolicy(
            max_balanced_accuracy_drop=self.max_balanced_accuracy_drop,
            max_class_recall_drop=self.max_class_recall_drop,
            malignant_max_recall_drop=self.gate_malignant_max_recall_drop, malignant=list(MALIGNANT),
            min_class_support=self.gate_min_class_support,
            unjudged_malignant_blocks=self.gate_unjudged_malignant_blocks,
            accept_benign_for_malignant=self.gate_accept_benign_for_malignant,
            confidence=self.gate_confidence, resamples=self.gate_resamples)

    def fine_tune_policy(self) -> FineTunePolicy:
        """The least catalog a fine-tune retrain needs, as checked by its job and sent in the
        trainer's heartbeat (the gateway refuses a thin fine-tune with it)."""
        return FineTunePolicy(min_training_images=self.fine_tune_min_images,
                              min_held_out_malignant=self.gate_min_class_support,
                              unjudged_malignant_blocks=self.gate_unjudged_malignant_blocks)

    def operating_policy(self) -> OperatingPolicy:
        """The targets head retrains and fine-tunes fit their operating points to (the share of
        validation flagged out of distribution is the policy's default: not a setting)."""
        return OperatingPolicy(referral_recall=self.referral_recall,
                               referral_confidence=self.referral_confidence,
                               uncertain_below_accuracy=self.uncertain_below_accuracy)
