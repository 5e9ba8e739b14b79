"""A retrain that fine-tunes the backbone too, on the catalog's images.

Fine-tuning changes the backbone, so the served model's training evidence (embeddings under the
old backbone) no longer describes the candidate: it trains, calibrates and is judged on images
only, the catalog's, and is refused (`check_catalog`, 422) unless the catalog holds enough of
them: `fine_tune_min_images` training images of each class it trains, and
`gate_min_class_support` held-out images of each malignant class (`shared.fine_tune_policy`; a
gateway that heard this trainer's policy refuses such a retrain at `POST /retrain` already). The
evidence it leaves is the catalog's images under its new backbone.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np

from shared import fine_tune_policy
from shared.catalog import Catalog, ImageRecord, counts, digest, lesion_group, validation_share
from shared.errors import Unprocessable
from shared.manifest import OodDetector
from shared.messages import TrainOptions
from shared.split_secret import load_split_secret
from shared.store import ObjectStore
from shared.taxonomy import admissible
from trainer_service.ml.artifacts import export_litert_apart, save_artifact
from trainer_service.ml.calibration import softmax
from trainer_service.ml.current_model import CurrentModel, Log, Progress, ensure_embeddings, load_images
from trainer_service.ml.evaluation import classification_metrics, predict
from trainer_service.ml.evidence import Evidence, Role
from trainer_service.ml.gate import combine, judge_set
from trainer_service.ml.head import fit_head
from trainer_service.ml.network import (
    LOGITS,
    build_classifier,
    embedding_model,
    temperature_of,
    with_temperature,
)
from trainer_service.ml.ood import fit_ood, threshold_for, with_ood_output
from trainer_service.ml.retrain import Outcome, _expand, _scored, _warm_start, answers
from trainer_service.ml.retrain_data import Rows
from trainer_service.ml.steps import describe, operating_points
from trainer_service.ml.training import Recipe, fine_tune, held_out_logits
from trainer_service.settings import TrainerSettings


def check_catalog(train: list[ImageRecord], held: list[ImageRecord], classes: list[str],
                  settings: TrainerSettings) -> None:
    """Raise Unprocessable (422, not_enough_images_to_fine_tune) unless every class the catalog
    trains has `fine_tune_min_images` training images and every malignant class of `classes`
    `gate_min_class_support` held-out images to judge the candidate on (`shared.fine_tune_policy`,
    the check the gateway makes at `POST /retrain` with the policy of this trainer's heartbeat)."""
    fine_tune_policy.check(Counter(r.label for r in train), Counter(r.label for r in held), classes,
                           settings.fine_tune_policy())


async def fine_tune_candidate(store: ObjectStore, current: CurrentModel, options: TrainOptions, *,
                              version: str, settings: TrainerSettings, progress: Progress,
                              log: Log) -> Outcome:
    """A candidate whose head is fitted on the catalog's embeddings and whose backbone is then
    fine-tuned on its images, calibrated on its validation share and judged on its held-out images.
    Raises Unprocessable when the catalog holds too few images (`check_catalog`)."""
    started = time.monotonic()
    model, parent = current.model, current.manifest
    records = await Catalog(store).records()
    classes = sorted(set(parent.classes) | {r.label for r in records if r.split == "train"})
    train = [r for r in records if r.split == "train"]
    held = [r for r in records if r.split == "eval" and r.label in classes]
    check_catalog(train, held, classes, settings)
    secret = await load_split_secret(store, settings.split_secret)
    chosen = [validation_share(lesion_group(r.sha256, r.group), secret) for r in train]
    fit = [r for r, v in zip(train, chosen, strict=True) if not v]
    validation = [r for r, v in zip(train, chosen, strict=True) if v]
    if not fit or not validation:
        raise Unprocessable("the catalog's training images fall all on one side of the validation share",
                            code="no_validation_data")
    _, cache = await ensure_embeddings(store, current, train + held, batch_size=settings.embed_batch_size,
                                       progress=progress, log=log, cache_dir=settings.work_dir / "litert")
    index = {name: i for i, name in enumerate(classes)}

    def rows(subset: list[ImageRecord]) -> Rows:
        return Rows(np.stack([cache[r.sha256] for r in subset]).astype(np.float32),
                    np.array([index[r.label] for r in subset], np.int64),
                    np.array([r.source for r in subset]))

    fitted, validating, judged = rows(fit), rows(validation), rows(held)
    old_kernel, old_bias = model.get_layer(LOGITS).get_weights()
    progress.update(phase="training")
    kernel, bias = await asyncio.to_thread(
        fit_head, fitted.x, fitted.y, len(classes), epochs=options.epochs,
        init=_warm_start(old_kernel, old_bias, parent.classes, classes), strata=fitted.strata(),
        admissible=admissible(classes),
        anchor_strength=settings.head_anchor_strength)
    network = build_classifier(model.get_layer("backbone"), len(classes))
    network.get_layer(LOGITS).set_weights([kernel, bias])
    progress.update(phase="fine-tuning")
    sets = [await load_images(store, subset, classes, parent.input_size, parent.preprocessing)
            for subset in (fit, validation, held)]
    recipe = Recipe(epochs=options.fine_tune_epochs, max_minutes=options.max_minutes,
                    steps_per_epoch=max(1, len(fit) // Recipe.batch_size),
                    first_trainable=(Recipe.first_trainable if parent.backbone.startswith("efficientnet_lite")
                                     else None))
    log(f"fine-tuning the backbone of {parent.version} on {len(fit)} catalog images")
    await asyncio.to_thread(fine_tune, network, sets[0], sets[1], recipe, log, admissible=admissible(classes))
    progress.update(phase="calibrating")

    def finish() -> Outcome:
        allowed = admissible(classes)
        val_logits, held_logits = (held_out_logits(network, s) for s in sets[1:])
        points = operating_points(_scored(validating, val_logits), classes, allowed,
                                  policy=settings.operating_policy())
        temperature = points.calibration.temperature
        served = _expand(softmax(judged.x @ old_kernel + old_bias, temperature_of(model)),
                         parent.classes, classes)
        candidate = softmax(held_logits + points.class_bias, temperature)
        gate = combine([judge_set("uploads",
                                  "the catalog's held-out images (a fine-tune is judged on images only)",
                                  judged.y,
                                  answers(candidate, judged.y, classes, points.calibration.referral),
                                  answers(served, judged.y, classes, parent.referral), classes,
                                  settings.gate_policy(), sources=judged.sources)],
                       classes, settings.gate_policy())
        dense = network.get_layer(LOGITS)
        k, b = dense.get_weights()
        dense.set_weights([k, b + points.class_bias.astype(np.float32)])
        embed = embedding_model(network)
        vectors = [predict(embed, s.images) for s in sets]
        ood = fit_ood(vectors[0], fitted.y)
        scores = ood.scores(vectors[1])
        flagged = settings.operating_policy().ood_flagged
        threshold = threshold_for(scores, flagged=flagged)
        detector = OodDetector(dims=ood.projection.shape[1], threshold=threshold, flagged=flagged,
                               validation_flagged={"catalog": float((scores > threshold).mean())})
        final = with_ood_output(with_temperature(network, temperature), ood)
        roles: list[Role] = ["fit"] * len(fit)
        roles += ["validation"] * len(validation)
        roles += ["reference"] * len(held)
        everything = fit + validation + held
        evidence = Evidence.build(version, np.concatenate(vectors), [r.label for r in everything],
                                  [r.source for r in everything], roles,
                                  [lesion_group(r.sha256, r.group) for r in everything],
                                  [r.sha256 for r in everything])
        snapshot = sorted(r.sha256 for r in train)
        manifest = describe(
            version, classes, temperature=temperature, referral=points.calibration.referral,
            uncertainty=points.calibration.uncertainty, input_size=parent.input_size,
            preprocessing=parent.preprocessing, backbone=parent.backbone, parent_version=parent.version,
            training_data={"images": len(fit), "held_out": len(held), "evidence": evidence.summary(),
                           "counts": counts(records), "snapshot_sha256": digest(snapshot),
                           "snapshot_key": f"models/{version}/snapshot.json"},
            metrics={"eval_set": "uploads",
                     "eval": classification_metrics(candidate, judged.y, tuple(classes)),
                     "current_on_same_eval": {
                         k: v for k, v in classification_metrics(served, judged.y, tuple(classes)).items()
                         if k in ("balanced_accuracy", "accuracy", "per_class", "ece")}},
            ood=detector, backbone_version=version, gate=gate, class_bias=points.class_bias.tolist(),
            recipe={"kind": "fine_tune", **options.model_dump()},
            training_seconds=round(time.monotonic() - started, 2))
        directory = save_artifact(final, manifest, settings.work_dir / "versions" / version, litert=False)
        return Outcome(manifest, directory, gate, snapshot, evidence.to_bytes())

    outcome = await asyncio.to_thread(finish)
    await export_litert_apart(outcome.directory, outcome.manifest)
    return outcome
