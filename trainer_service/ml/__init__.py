"""The ML library: everything a model is made of and judged by, imported by the service and the
offline commands alike; it imports neither.

- the graph: `backbones` (EfficientNet-Lite, MobileNetV2), `network` (backbone -> embedding ->
  logits -> temperature -> softmax), `head` (a head fitted on cached embeddings);
- data: `dataset` (class-per-folder sets), `sources` (several sources, split by lesion),
  `pipeline` (tf.data sampling and augmentation), `embeddings` (cached per backbone), `evidence`
  (a model's training evidence);
- fitting: `training` (head, then fine-tune), `checkpoint` (resumable runs);
- calibration and operating points: `calibration`, `operating`, `steps` (what every training run
  does after fitting);
- figures: `proportions` (recall, balanced accuracy, specificity, the Wilson and percentile
  intervals), `evaluation`, `metric_intervals` (bootstrap), `ood` (the out-of-distribution
  detector), `gate` (the promotion gate);
- models on disk and in the store: `artifacts` (`python -m trainer_service.ml.artifacts DIR`
  converts one to LiteRT), `current_model` (the served model and its embeddings of the catalog);
- the head retrain a training job runs: `retrain.retrain_head`, its data (`retrain_data`) and its
  fine-tuning variant (`fine_tune`).
"""
