"""Every message that crosses the broker, one pydantic model per type.

How they travel is `shared.wire`: a JSON body, or for `PredictRequest` the image raw in the body
and the other fields as AMQP headers; fields a reader does not know are ignored, and a
`schema_version` newer than the reader's is refused there, before anything else is read. The
models stay `extra="forbid"` for what code builds and what the API accepts (`TrainOptions` is
also `POST /retrain`'s body). `Message`, `new_id`, `encode` and `decode` are `shared.wire`'s,
named here too so that a service imports its messages and their codec from one place.
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.errors import DermaScanError, error_for_status
from shared.fine_tune_policy import FineTunePolicy
from shared.wire import Message as Message  # named here for every service (see above)
from shared.wire import decode as decode
from shared.wire import encode as encode
from shared.wire import new_id as new_id


class ErrorInfo(BaseModel):
    """A failure reported as data instead of an exception."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable machine-readable error name, e.g. 'corrupt_image'.")
    message: str = Field(description="Human-readable reason.")
    status: int = Field(500, description="HTTP status the gateway answers with.")
    retryable: bool = Field(False, description="Whether the same request may succeed later.")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, DermaScanError):
            return cls(code=exc.code, message=exc.message, status=exc.status, retryable=exc.retryable)
        return cls(code="internal_error", message=f"{type(exc).__name__}: {exc}", status=500)

    def to_exception(self) -> DermaScanError:
        return error_for_status(self.status, self.message, self.code)


class PredictRequest(Message):
    """gateway -> inference worker (RPC over the predict queue): the image is the body, the rest
    headers (`shared.wire.to_wire`)."""

    PAYLOAD: ClassVar[str | None] = "image"

    image: bytes = Field(description="The encoded image exactly as uploaded.")
    image_format: str = Field(description="Format sniffed by the gateway: jpeg, png or webp.")
    sent_at: float = Field(default_factory=time.time, description="Unix time it was published.")
    deadline: float = Field(description="Unix time after which nobody waits for the answer.")
    top_k: int = Field(3, ge=1, description="How many best classes to list.")
    want_input: bool = Field(False, description="Also send back the model's input (the image after crop, "
                                                "resize and colour normalisation) as a PNG.")


class ClassScore(BaseModel):
    """One class and its calibrated probability (its own plus its descendants')."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Class name.")
    probability: float = Field(description="Calibrated probability in [0, 1].")
    parent: str | None = Field(None, description="The class this one is a kind of, if any.")


class Referral(BaseModel):
    """A malignant class whose probability reached its referral threshold."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="The malignant class, e.g. 'melanoma'.")
    probability: float = Field(description="Its calibrated probability (with any descendants').")
    threshold: float = Field(
        description="The model's threshold for it, chosen on validation for a recall target.")


class Prediction(BaseModel):
    """What a model said about one image."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Most probable class: the finest the model can tell.")
    parent: str | None = Field(None, description="The class `label` is a kind of (e.g. benign_keratosis "
                                                 "for seborrheic_keratosis), or None.")
    confidence: float = Field(description="Probability of `label`.")
    probabilities: dict[str, float] = Field(
        description="Every class the model knows -> probability; a parent's includes its children's, "
                    "so the classes without a parent sum to 1.")
    top_k: list[ClassScore] = Field(description="The best classes, most probable first.")
    referral: list[Referral] = Field(
        default_factory=list, description="Malignant classes above their referral threshold, whatever the "
                                          "top label (empty when none): see a clinician.")
    out_of_distribution: bool = Field(
        False, description="True when the image does not look like the dermoscopic images the model was "
                           "trained on: the label then means nothing.")
    ood_score: float | None = Field(
        None, description="The model's out-of-distribution score (None for a model without a detector).")
    ood_threshold: float | None = Field(None, description="Scores above this are out of distribution.")
    uncertain: bool = Field(
        False, description="True when the confidence is below the model's calibrated threshold: read the "
                           "top classes, not the label, and see a dermatologist.")
    model_version: str = Field(description="Registry version of the model that answered.")


class PredictReply(Message):
    """inference worker -> gateway: either a prediction or an error, never both."""

    result: Prediction | None = Field(None, description="The prediction, when it succeeded.")
    error: ErrorInfo | None = Field(None, description="Why it failed, when it did.")
    worker_id: str = Field(description="Worker that handled the request.")
    queue_ms: float = Field(0.0, description="Time the request waited in the broker.")
    compute_ms: float = Field(0.0, description="Time of the batched model call.")
    batch_size: int = Field(0, description="Size of the batch the image was part of.")
    input_png: bytes | None = Field(None,
                                    description="The model's input as a PNG, when the request asked for it.")


class WorkerStatus(Message):
    """inference worker -> everyone (fanout), sent periodically: who serves which model."""

    worker_id: str = Field(description="Unique id of the worker process.")
    model_version: str | None = Field(description="Version being served, None while loading.")
    classes: list[str] = Field(default_factory=list, description="Classes of that model.")
    sent_at: float = Field(default_factory=time.time, description="Unix time it was sent.")
    interval_s: float = Field(5.0, description="How often the worker sends this.")
    engine: str | None = Field(None, description="The engine serving the model: litert or tensorflow.")
    started_at: float | None = Field(None, description="Unix time the worker started.")


class ServiceStatus(Message):
    """ingest or trainer service -> everyone (fanout), sent periodically: this instance is up.

    The inference worker's heartbeat is `WorkerStatus` (it also says which model it serves);
    both travel on the status exchange and `parse_status` tells them apart.
    """

    service: str = Field(description="Which service: ingest_service or trainer_service.")
    instance_id: str = Field(description="Unique id of the service process.")
    started_at: float = Field(description="Unix time the instance started.")
    sent_at: float = Field(default_factory=time.time, description="Unix time it was sent.")
    interval_s: float = Field(5.0, gt=0, description="How often the instance sends this.")
    fine_tune: FineTunePolicy | None = Field(
        None, description="The trainer's: the least catalog it fine-tunes on (its settings), so that a "
                          "gateway refuses a fine-tune it would refuse; None from the ingest service and "
                          "from trainers that predate it.")


StatusMessage = WorkerStatus | ServiceStatus
_STATUS: TypeAdapter[StatusMessage] = TypeAdapter(StatusMessage)


def parse_status(body: bytes) -> StatusMessage:
    """A status-exchange body as the heartbeat it is (fields it does not know ignored, as
    `shared.wire.decode` does); raises pydantic.ValidationError otherwise."""
    return _STATUS.validate_json(body, extra="ignore")


class ModelPromoted(Message):
    """trainer or operator -> every worker (fanout): serve this version now."""

    version: str = Field(description="The registry version now current.")


class StagedFile(BaseModel):
    """One uploaded file, staged in the object store by the gateway."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Object key of the staged bytes.")
    filename: str = Field(description="Name the client gave the file (never used as a path).")
    size: int = Field(description="Bytes staged.")


class IngestRequest(Message):
    """gateway -> ingest service: validate and store the staged files of one upload job."""

    job_id: str = Field(description="The ingest job to report into.")
    files: list[StagedFile] = Field(description="Staged files, in upload order.")
    label: str | None = Field(None, description="Explicit class for every file of the request.")


class TrainOptions(BaseModel):
    """What a training run may do; the JSON body of `POST /retrain`."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1, le=500, description="Epochs of head training.")
    fine_tune: bool = Field(False, description="Also fine-tune the backbone (much slower).")
    fine_tune_epochs: int = Field(3, ge=1, le=100,
                                  description="Passes over the training set when fine-tuning.")
    max_minutes: float = Field(30.0, gt=0,
                               description="Time budget of fine-tuning; the best epoch so far is kept.")
    promote: bool = Field(True, description="Promote automatically when the gate passes.")
    # No gate margins here: they are policy, so they come from the trainer's settings only
    # (a body naming one is refused, extra="forbid").


class TrainRequest(Message):
    """gateway -> trainer: run one training job."""

    job_id: str = Field(description="The training job to report into.")
    options: TrainOptions = Field(default_factory=TrainOptions, description="Run options.")
