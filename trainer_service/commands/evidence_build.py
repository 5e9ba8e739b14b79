"""`python -m trainer_service evidence ARTIFACT --reference EVAL --out FILE`: a trained model's
training evidence (`trainer_service.ml.evidence`), written beside it so head retrains can append to it.

The fit and validation rows are the images its recipe trained and validated on, split again as it
split them (`refit.recipe_sources`); their image hashes are checked against the digests its
manifest recorded, so the evidence is exactly what the model saw. The reference rows are the
`gate` half (by lesion, `evidence.reference_part`) of the held-out set `--reference`; its `report`
half is only listed (`reserved`): its images give the model card's figures and judge nothing.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from shared.classifier import configure_threads
from trainer_service.commands.cli import log_line
from trainer_service.ml.dataset import ImageSet
from trainer_service.ml.evidence import Evidence, Role, reference_part


def _check_digest(name: str, part: str, hashes: tuple[str, ...], recorded: dict[str, object]) -> None:
    digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    if recorded.get("images_sha256") not in (None, digest):
        raise SystemExit(f"{name} {part}: the images differ from the ones the model was trained on "
                         f"(digest {digest[:12]} vs {str(recorded['images_sha256'])[:12]})")


def parser() -> argparse.ArgumentParser:
    """The command line of `evidence`."""
    p = argparse.ArgumentParser(prog="python -m trainer_service evidence",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path, help="directory with model.keras and manifest.json")
    p.add_argument("--reference", type=Path, required=True,
                   help="held-out class-per-folder set with lesion ids (HAM10000 eval/); "
                        "its gate half judges retrains")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write (models/base/evidence.npz)")
    p.add_argument("--data", type=Path, nargs="+", default=None, help="the recipe's sources, if moved")
    p.add_argument("--work-dir", type=Path, default=None, help="cache of decoded images")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_threads(args.threads, 1)
    from trainer_service.commands.refit import recipe_sources
    from trainer_service.ml.artifacts import load_artifact
    from trainer_service.ml.current_model import embedder
    from trainer_service.ml.dataset import load_image_set
    from trainer_service.ml.sources import source_name

    model, manifest = load_artifact(args.artifact)
    classes, sources = recipe_sources(manifest, data=args.data, cache_dir=args.work_dir)
    reference = load_image_set(args.reference, manifest.input_size, classes=classes,
                               policy=manifest.preprocessing)
    embed = embedder(model, args.artifact / "model.keras", args.work_dir, log_line)
    gate = np.array([reference_part(g) == "gate" for g in reference.groups])
    parts: list[tuple[str, Role, ImageSet]] = []
    for source in sources:
        recorded = manifest.training_data.get("sources", {}).get(source.name, {})
        shares: tuple[tuple[Role, ImageSet], ...] = (("fit", source.fit), ("validation", source.validation))
        for role, data in shares:
            _check_digest(source.name, role, data.sha256, recorded.get(role, {}))
            parts.append((source.name, role, data))
    parts.append((source_name(args.reference), "reference", reference.subset(np.flatnonzero(gate))))
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    names: list[str] = []
    roles: list[Role] = []
    groups: list[str] = []
    hashes: list[str] = []
    for name, role, data in parts:
        log_line(f"embedding {name} {role}: {len(data.labels)} images")
        vectors += [embed(data.images[start:start + 64]) for start in range(0, len(data.labels), 64)]
        labels += [classes[i] for i in data.labels]
        names += [name] * len(data.labels)
        roles += [role] * len(data.labels)
        groups += [f"{name}/{g}" for g in data.groups]
        hashes += list(data.sha256)
    reserved = [h for h, g in zip(reference.sha256, gate, strict=True) if not g]
    evidence = Evidence.build(manifest.backbone_version or manifest.version, np.concatenate(vectors), labels,
                              names, roles, groups, hashes, reserved=reserved)
    if args.work_dir is not None:  # unquantised, to measure what quantisation costs
        np.save(args.work_dir / "evidence-float32.npy", np.concatenate(vectors))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(evidence.to_bytes())
    log_line(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {evidence.summary()}; "
             f"{len(reserved)} report images reserved")
    return 0
