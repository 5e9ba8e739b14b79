"""The offline commands, run as `python -m trainer_service COMMAND` (`trainer_service/__main__.py`
dispatches; each module's `main` or `*_main` is the entry point):

- `train`, `evaluate`: `cli.train_main`, `cli.evaluate_main` read their options (and `cli` holds
  the options the commands share); their work is `train.train` (its body `train.run_job`) and
  `evaluate.evaluate`;
- `refit`: `refit.main` (operating points chosen again on a model's own validation split);
- `soup`: `soup.main` (the greedy mean of the weights of models of one lineage);
- `evaluate-ood`: `ood_report.main`;
- `evidence`: `evidence_build.main` (the embeddings a model was trained, validated and judged on);
- `import`: `importer.import_dataset` (a labelled dataset into the store's catalog).
"""
