"""Trainer service: builds, trains, calibrates and evaluates DermaScan models.

Three rooms, each importing only from the ones before it and from `shared/`:

- `trainer_service.ml`: the library (the Keras graph, data, fitting, calibration, operating points,
  metrics, the OOD detector, the promotion gate, artifacts, the head retrain).
- `trainer_service.service`: the running service (`python -m trainer_service serve`): the consumer
  of the train queue and a training job's lifecycle (lease, child process, metrics).
- `trainer_service.commands`: the offline commands (`python -m trainer_service train|evaluate|refit|
  soup|evaluate-ood|evidence|import`).

At the top: `__main__` (dispatches the commands), `settings` (the service's settings, which the
library's head retrain also reads) and `tracking` (MLflow, for the service and the commands).
"""
