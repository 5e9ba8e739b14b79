"""Studies on saved logits: what another temperature rule or a two-model ensemble would do, without
retraining or re-running the networks.

    python tools/logit_study.py dump ARTIFACT OUT.npz --eval ../shared/data/ham10000/eval \
        ../shared/data/isic2017/val
    python tools/logit_study.py temperatures OUT.npz
    python tools/logit_study.py ensemble A.npz B.npz [C.npz ...]
    python tools/logit_study.py dump ARTIFACT OUT-flip.npz --view flip_lr ...   (for test-time augmentation)
    python tools/logit_study.py metadata OUT.npz --csv ../shared/data/ham10000/metadata.csv \
        ../shared/data/isic2017/metadata.csv

`dump` saves an artifact's logits (the validation split its recipe names, then each `--eval`
set) and OOD scores, of the images as they are or turned by `--view` (so an `ensemble` of one
model's views is its test-time augmentation). `temperatures` prints each set's ECE under the
model's own temperature and under temperatures fitted on one source's validation, on both
weighted equally, and growing with the OOD score. `ensemble` prints balanced accuracy, melanoma
AUC and ECE of each study and of the mean of their calibrated probabilities. `metadata` asks
whether patient age and sex would pay: a logistic regression on the model's log-probabilities is
fitted on the pooled validation sets with and without them, and both are scored on every set.
Choices are fitted on `val_*` sets only.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.taxonomy import admissible
from trainer_service.ml.calibration import expected_calibration_error, negative_log_likelihood, softmax
from trainer_service.ml.evaluation import classification_metrics

#: Turns of an (N, H, W, 3) batch a lesion's label does not depend on (training augments with them).
VIEWS = {
    "identity": lambda images: images,
    "flip_lr": lambda images: images[:, :, ::-1],
    "flip_ud": lambda images: images[:, ::-1],
    "rot180": lambda images: images[:, ::-1, ::-1],
}


def dump(artifact: Path, out: Path, evals: list[Path], view: str = "identity",
         cache_dir: Path | None = None) -> None:
    import keras

    from trainer_service.commands.refit import recipe_sources
    from trainer_service.ml.artifacts import load_artifact
    from trainer_service.ml.evaluation import predict
    from trainer_service.ml.network import LOGITS
    from trainer_service.ml.sources import cached_image_set, source_name

    model, manifest = load_artifact(artifact)
    classes, sources = recipe_sources(manifest, cache_dir=cache_dir)
    logits = keras.Model(model.input, model.get_layer(LOGITS).output)
    sets = {f"val_{s.name}": (s.validation.images, s.validation.labels) for s in sources}
    hashes = {f"val_{s.name}": s.validation.sha256 for s in sources}
    for root in evals:
        data = cached_image_set(root, manifest.input_size, classes, manifest.preprocessing, cache_dir)
        sets[f"eval_{source_name(root)}"] = (data.images, data.labels)
        hashes[f"eval_{source_name(root)}"] = data.sha256
    arrays: dict[str, Any] = {"classes": np.array(classes), "temperature": manifest.temperature}
    for name, (images, labels) in sets.items():
        images = np.ascontiguousarray(VIEWS[view](images))
        arrays[f"{name}.logits"] = predict(logits, images)
        arrays[f"{name}.ood"] = predict(model, images, output=1).reshape(-1)
        arrays[f"{name}.labels"] = labels
    for name, digests in hashes.items():
        arrays[f"{name}.sha256"] = np.array(digests)
    np.savez(out, **arrays)
    print(f"wrote {out}: {', '.join(f'{k} ({len(v[1])})' for k, v in sets.items())}")


def _sets(study: np.lib.npyio.NpzFile) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    names = sorted({key.rsplit(".", 1)[0] for key in study.files if "." in key})
    return {n: (study[f"{n}.logits"], study[f"{n}.labels"], study[f"{n}.ood"]) for n in names}


def temperatures(path: Path) -> None:
    study = np.load(path)
    allowed = admissible([str(c) for c in study["classes"]])
    sets = _sets(study)
    validation = {n: v for n, v in sets.items() if n.startswith("val_")}

    def nll(logits: np.ndarray, labels: np.ndarray, t: np.ndarray) -> float:
        p = softmax(logits / t[:, None])
        return float(-np.log(np.maximum((p * allowed[labels]).sum(axis=1), 1e-300)).mean())

    rules: dict[str, tuple[float, float]] = {"model's own": (np.log(float(study["temperature"])), 0.0)}
    for name, (logits, labels, _) in validation.items():
        rules[f"fitted on {name}"] = (np.log(_fit(lambda t, lg=logits, lb=labels: negative_log_likelihood(
            lg, lb, t, allowed))), 0.0)
    rules["both sources weighted equally"] = (np.log(_fit(lambda t: sum(
        negative_log_likelihood(lg, lb, t, allowed) for lg, lb, _ in validation.values()))), 0.0)
    fit = minimize(lambda w: sum(nll(lg, lb, np.exp(w[0] + w[1] * o)) for lg, lb, o in validation.values()),
                   [0.0, 0.0], method="Nelder-Mead").x
    rules["log T linear in the OOD score, sources equal"] = (float(fit[0]), float(fit[1]))
    print("ECE (top label, 15 bins) per set; T = exp(a + b * ood score)")
    for rule, (a, b) in rules.items():
        cells = [f"{n} {_ece(lg / np.exp(a + b * o)[:, None], lb, allowed):.3f}"
                 for n, (lg, lb, o) in sets.items()]
        print(f"  {rule} (a {a:.3f}, b {b:.3f}): " + ", ".join(cells))


def _ece(scaled_logits: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> float:
    return expected_calibration_error(softmax(scaled_logits), labels, allowed)


def _fit(objective: object) -> float:
    result = minimize_scalar(lambda lt: objective(np.exp(lt)), bounds=(-3.0, 3.0), method="bounded")  # type: ignore[operator]
    return float(np.exp(result.x))


def ensemble(paths: list[Path]) -> None:
    studies = [np.load(path) for path in paths]
    classes = tuple(str(c) for c in studies[0]["classes"])
    if any(classes != tuple(str(c) for c in study["classes"]) for study in studies[1:]):
        raise SystemExit("the studies have different classes")
    sets = [_sets(study) for study in studies]

    def figures(p: np.ndarray, labels: np.ndarray) -> str:
        m = classification_metrics(p, labels, classes)
        mel = m["per_class"]["melanoma"]["auc"]
        return f"balanced accuracy {m['balanced_accuracy']:.3f}, melanoma AUC {mel:.3f}, ECE {m['ece']:.3f}"

    for name in sets[0]:
        labels = sets[0][name][1]
        if any(not np.array_equal(labels, other[name][1]) for other in sets[1:]):
            raise SystemExit(f"{name}: the studies hold different images")
        probabilities = [softmax(s[name][0] / float(study["temperature"]))
                         for s, study in zip(sets, studies, strict=True)]
        lines = [f"  {path.stem}: {figures(p, labels)}" for path, p in zip(paths, probabilities, strict=True)]
        print("\n".join([name, *lines, f"  mean of all: {figures(np.mean(probabilities, axis=0), labels)}"]))


def _patients(csvs: list[Path]) -> dict[str, tuple[float, str]]:
    """sha256 -> (age in years or NaN, sex) from the sources' metadata.csv files."""
    out: dict[str, tuple[float, str]] = {}
    for path in csvs:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                age = row.get("age") or row.get("age_approximate") or ""
                try:
                    years = float(age)
                except ValueError:
                    years = float("nan")
                out[row["sha256"]] = (years, (row.get("sex") or "").strip().lower())
    return out


def metadata(path: Path, csvs: list[Path]) -> None:
    from sklearn.linear_model import LogisticRegression

    study = np.load(path)
    classes = tuple(str(c) for c in study["classes"])
    patients = _patients(csvs)
    sets = _sets(study)

    def features(name: str, with_patient: bool) -> np.ndarray:
        logp = np.asarray(log_softmax(sets[name][0] / float(study["temperature"]), axis=1))
        if not with_patient:
            return logp
        rows = [patients.get(str(h), (float("nan"), "")) for h in study[f"{name}.sha256"]]
        age = np.array([r[0] for r in rows])
        extra = np.stack([np.nan_to_num(age / 100.0), np.isnan(age),
                          [r[1] == "male" for r in rows], [r[1] == "female" for r in rows]], axis=1)
        return np.concatenate([logp, extra.astype(np.float64)], axis=1)

    validation = [n for n in sets if n.startswith("val_")]
    labels = np.concatenate([sets[n][1] for n in validation])
    for with_patient in (False, True):
        x = np.concatenate([features(n, with_patient) for n in validation])
        fit = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(x, labels)
        print("stacked on validation, " + ("with age and sex" if with_patient else "log-probabilities only"))
        for name in sets:
            p = np.zeros((len(sets[name][1]), len(classes)))
            p[:, fit.classes_] = fit.predict_proba(features(name, with_patient))
            m = classification_metrics(p, sets[name][1], classes)
            print(f"  {name}: balanced accuracy {m['balanced_accuracy']:.3f}, "
                  f"melanoma AUC {m['per_class']['melanoma']['auc']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("artifact", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--eval", type=Path, nargs="*", default=[])
    d.add_argument("--view", choices=sorted(VIEWS), default="identity")
    d.add_argument("--cache-dir", type=Path, help="decoded images, kept between dumps (as train's work dir)")
    sub.add_parser("temperatures").add_argument("study", type=Path)
    e = sub.add_parser("ensemble")
    e.add_argument("studies", type=Path, nargs="+")
    m = sub.add_parser("metadata")
    m.add_argument("study", type=Path)
    m.add_argument("--csv", type=Path, nargs="+", required=True)
    args = p.parse_args(argv)
    if args.command == "dump":
        dump(args.artifact, args.out, args.eval, args.view, args.cache_dir)
    elif args.command == "temperatures":
        temperatures(args.study)
    elif args.command == "ensemble":
        if len(args.studies) < 2:
            p.error("ensemble needs two studies or more")
        ensemble(args.studies)
    else:
        metadata(args.study, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
