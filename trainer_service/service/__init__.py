"""The trainer service, `python -m trainer_service serve`: training jobs from the train queue.

- `consumer.TrainerService`: consumes train requests one at a time, runs each job
  (`trainer_service.ml.retrain.retrain_head`), publishes and promotes what passes the gate;
- `lease.JobLease`: the job record as this trainer holds it (heartbeat, cancel, time limit);
- `apart.retrain_apart`: a job's computation in a child process at a lower priority;
- `metrics.TrainerMetrics`: its Prometheus metrics (`dermascan_trainer_service_*`).
"""
