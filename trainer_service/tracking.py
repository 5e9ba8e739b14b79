"""MLflow tracking of training runs, when a tracking server is configured (`MLFLOW_TRACKING_URI`).

Every training job (API retrains, and the offline `train`, `refit` and `soup` commands) becomes
one MLflow run in the experiment `dermascan`: its parameters (options, recipe, parent version, data
counts per source and class), its metrics per epoch and its held-out figures, the gate's verdict
(tags, and its table as an artifact), the manifest as an artifact, and the version it produced
(tag `dermascan.version`); promotions and rollbacks tag the run of the version they serve.

Unset, nothing changes and MLflow is not imported (`tracker_for` returns `NoTracking`). A tracking
server that does not answer never fails a training: each failure is logged and counted
(`dermascan_trainer_service_tracking_failures_total`), and a run that failed once logs nothing
more, so a dead server costs one short timeout, not one per call. MLflow's client blocks: call
these from a thread (the trainer service does).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shared.manifest import ModelManifest

log = logging.getLogger(__name__)
EXPERIMENT = "dermascan"
#: Tag naming the registry version a run produced; promotions look runs up by it.
VERSION_TAG = "dermascan.version"
Counted = Callable[[], None]


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flat(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


class Run:
    """One MLflow run. Every method swallows (logs and counts) the client's errors."""

    def __init__(self, tracking: MlflowTracking, run_id: str | None) -> None:
        self.tracking, self.run_id = tracking, run_id

    @property
    def alive(self) -> bool:
        return self.run_id is not None

    def _call(self, what: str, action: Callable[[str], object]) -> None:
        if self.run_id is None:
            return
        try:
            action(self.run_id)
        except Exception as exc:  # noqa: BLE001 - a tracking server must never fail a training
            self.tracking.failed(what, exc)
            self.run_id = None  # a server that failed once: log nothing more to it

    def params(self, values: Mapping[str, Any]) -> None:
        """Log parameters (nested mappings flattened with dots; values as text, 500 characters)."""
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:500]) for k, v in _flat("", values)]
        self._call("params", lambda run: self.tracking.client.log_batch(run, params=flat))

    def metrics(self, values: Mapping[str, Any], *, step: int = 0) -> None:
        """Log the numeric entries of `values` (nested mappings flattened) at `step`."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = [Metric(k, float(v), now, step) for k, v in _flat("", values)
                   if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
        self._call("metrics", lambda run: self.tracking.client.log_batch(run, metrics=numbers))

    def tags(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, str(v)[:5000]) for k, v in values.items()]
        self._call("tags", lambda run: self.tracking.client.log_batch(run, tags=tags))

    def artifact(self, name: str, content: Any) -> None:
        """Log `content` (JSON-able) as the artifact `name`."""
        self._call(f"artifact {name}", lambda run: self.tracking.client.log_dict(run, content, name))

    def end(self, status: str) -> None:
        """End the run: FINISHED, FAILED or KILLED."""
        self._call("end", lambda run: self.tracking.client.set_terminated(run, status=status))


class MlflowTracking:
    """Runs on the MLflow tracking server at `uri`. Thread-safe (one client, stateless calls)."""

    def __init__(self, uri: str, *, ui_url: str | None = None, on_failure: Counted | None = None) -> None:
        # no retries with back-off, short timeouts: an unreachable server costs seconds, once
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        from mlflow.tracking import MlflowClient

        self.uri, self.ui_url, self.on_failure = uri, ui_url, on_failure
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment: str | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        log.warning("MLflow tracking at %s failed (%s): %s; the training goes on", self.uri, what, exc)
        if self.on_failure is not None:
            self.on_failure()

    def _experiment_id(self) -> str:
        if self._experiment is None:
            found = self.client.get_experiment_by_name(EXPERIMENT)
            self._experiment = (found.experiment_id if found is not None
                                else self.client.create_experiment(EXPERIMENT))
        return self._experiment

    def start(self, name: str, tags: Mapping[str, str]) -> Run:
        """A new run (a dead one, which logs nothing, when the server does not answer)."""
        try:
            run = self.client.create_run(self._experiment_id(), run_name=name, tags=dict(tags))
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self.failed("start", exc)
            return Run(self, None)
        return Run(self, run.info.run_id)

    def link(self, run: Run) -> str | None:
        """The run's page in the MLflow UI, when its address is configured."""
        if run.run_id is None or not self.ui_url or self._experiment is None:
            return None
        return f"{self.ui_url.rstrip('/')}/#/experiments/{self._experiment}/runs/{run.run_id}"

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None:
        """Tag the run that produced `version` (promotions and rollbacks)."""
        try:
            runs = self.client.search_runs([self._experiment_id()],
                                           filter_string=f"tags.`{VERSION_TAG}` = '{version}'", max_results=1)
            for found in runs:
                Run(self, found.info.run_id).tags(tags)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self.failed("tag version", exc)


class NoTracking:
    """No tracking server: every call does nothing, and MLflow is never imported."""

    ui_url = None

    def start(self, name: str, tags: Mapping[str, str]) -> None:
        return None

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None:
        return None

    def link(self, run: Run) -> str | None:
        return None


Tracking = MlflowTracking | NoTracking


def tracker_for(uri: str | None, *, ui_url: str | None = None, on_failure: Counted | None = None) -> Tracking:
    """MLflow tracking at `uri`, or `NoTracking` when it is unset or empty."""
    return MlflowTracking(uri, ui_url=ui_url, on_failure=on_failure) if uri else NoTracking()


def log_manifest(run: Run, manifest: ModelManifest, *, params: Mapping[str, Any] | None = None) -> None:
    """What a finished training leaves in its run: parameters (recipe, parent, data counts),
    metrics per epoch and the held-out figures, the gate's verdict as tags and its table, the
    manifest, and the version it produced."""
    run.params({"recipe": manifest.recipe, "parent_version": manifest.parent_version,
                "classes": ",".join(manifest.classes), "backbone": manifest.backbone, **(params or {})})
    data = manifest.training_data.get("evidence") or manifest.training_data.get("sources") or {}
    run.params({"data": data})
    for row in manifest.history:
        step = int(row.get("epoch", 0)) if isinstance(row.get("epoch"), int | float) else 0
        run.metrics({k: v for k, v in row.items() if k != "epoch"}, step=step)
    wanted = {"balanced_accuracy", "accuracy", "ece", "macro_auc_ovr", "recall", "auc", "caught"}
    run.metrics({key: value for key, value in _flat("", manifest.metrics)
                 if key.rsplit(".", 1)[-1] in wanted and ".intervals." not in key})
    tags = {VERSION_TAG: manifest.version}
    if manifest.gate is not None:
        tags |= {"dermascan.gate": "passed" if manifest.gate.passed else "rejected",
                 "dermascan.gate.reasons": "; ".join(manifest.gate.reasons)}
        run.artifact("gate.json", json.loads(manifest.gate.model_dump_json()))
    run.tags(tags)
    run.artifact("manifest.json", json.loads(manifest.model_dump_json()))


def log_offline(uri: str | None, command: str, manifest: ModelManifest) -> None:
    """One finished offline command (`train`, `refit`, `soup`) as a run, when `uri` is set."""
    tracking = tracker_for(uri)
    if isinstance(tracking, NoTracking):
        return
    run = tracking.start(manifest.version, {"dermascan.command": command})
    if run.alive:
        log_manifest(run, manifest, params={"command": command})
        run.end("FINISHED")
