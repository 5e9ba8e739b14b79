"""`python -m trainer_service [serve|import|train|evaluate|evaluate-ood|refit|soup|evidence]`.

- `serve` (default): consume training jobs from the train queue.
- `import PATH`: load a labelled dataset into the store (the training set and its held-out part)
  and cache its embeddings under the current model.
- `train` / `evaluate`: offline commands on class-per-folder datasets (their options:
  trainer_service/commands/cli.py; their work: trainer_service/commands/train.py, evaluate.py).
- `evaluate-ood`: the out-of-distribution detector on in- and out-of-distribution folders.
- `refit ARTIFACT`: a model's operating points chosen again on its own validation split
  (trainer_service/commands/refit.py).
- `soup ARTIFACT ARTIFACT ...`: the greedy mean of the weights of models of one lineage, made a
  model version (trainer_service/commands/soup.py).
- `evidence ARTIFACT --reference EVAL --out FILE`: the embeddings a model was trained, validated
  and is judged on, which head retrains append to (trainer_service/commands/evidence_build.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.registry import ModelRegistry
from shared.runtime import run, serve_service, service_parser, setup_logging
from shared.store import open_store_for
from trainer_service.settings import TrainerSettings


async def import_and_embed(settings: TrainerSettings, root: Path, embed: bool) -> None:
    from trainer_service.commands.importer import import_dataset
    from trainer_service.ml.current_model import Progress, ensure_embeddings, load_current

    store = await open_store_for(settings)
    try:
        summary = await import_dataset(store, root, split_secret=settings.split_secret)
        print(f"imported: {summary}", flush=True)
        if embed:
            from shared.catalog import Catalog

            registry = ModelRegistry(store)
            await registry.bootstrap(settings.bundled_model_dir)
            current = await load_current(registry, settings.work_dir)
            records = await Catalog(store).records()
            await ensure_embeddings(store, current, records, batch_size=settings.embed_batch_size,
                                    progress=Progress(), log=lambda line: print(line, flush=True))
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "serve"
    if command in ("train", "evaluate"):
        from trainer_service.commands import cli

        return int((cli.train_main if command == "train" else cli.evaluate_main)(argv))
    if command == "evaluate-ood":
        from trainer_service.commands import ood_report

        return ood_report.main(argv)
    if command == "refit":
        from trainer_service.commands import refit

        return refit.main(argv)
    if command == "soup":
        from trainer_service.commands import soup

        return soup.main(argv)
    if command == "evidence":
        from trainer_service.commands import evidence_build

        return evidence_build.main(argv)
    if command == "serve":
        service_parser("python -m trainer_service [serve]", __doc__).parse_args(argv)
    settings = TrainerSettings()
    setup_logging(settings.log_level)
    if command == "import":
        parser = argparse.ArgumentParser(prog="python -m trainer_service import")
        parser.add_argument("path", type=Path, help="class-per-folder dataset, or one with train/ and eval/")
        parser.add_argument("--no-embed", action="store_true", help="skip caching embeddings")
        args = parser.parse_args(argv)
        run(lambda: import_and_embed(settings, args.path, not args.no_embed))
        return 0
    if command == "serve":
        from trainer_service.service.consumer import TrainerService
        from trainer_service.service.metrics import TrainerMetrics

        run(lambda: serve_service(
            settings, lambda bus, store,
            registry: TrainerService(settings, bus, store, TrainerMetrics(registry))))
        return 0
    print(f"unknown command {command!r}; "
          "use serve, import, train, evaluate, evaluate-ood, refit, soup or evidence",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
