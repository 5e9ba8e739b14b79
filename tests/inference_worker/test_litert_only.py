"""A worker serves a version's own LiteRT file with neither TensorFlow nor Keras in its process; a
version saved without one, and the `tensorflow` engine, still serve, from the Keras file.

Each case runs a worker (the in-memory bus, a file store seeded from a bundled model, as a fresh
deployment is) in a subprocess that answers one prediction and then reports the modules it loaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.manifest import ModelManifest
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

WORKER = r"""
import asyncio, json, sys, time
from pathlib import Path

from prometheus_client import CollectorRegistry

import inference_worker.__main__  # noqa: F401 - what `python -m inference_worker` imports counts too
from inference_worker.metrics import WorkerMetrics
from inference_worker.service import InferenceWorker
from inference_worker.settings import WorkerSettings
from shared.bus import connect_bus
from shared.messages import PredictReply, PredictRequest, decode
from shared.store import open_store
from shared.wire import to_wire


async def serve_one(bundled: str, work: str, image: str, engine: str) -> dict[str, object]:
    settings = WorkerSettings(store_url=(Path(work) / "store").as_uri(), bundled_model_dir=Path(bundled),
                              model_cache_dir=Path(work) / "cache", metrics_port=0, inference_engine=engine)
    bus = await connect_bus("memory://")
    store = await open_store(settings.store_url)
    worker = InferenceWorker(settings, bus, store, WorkerMetrics(CollectorRegistry()))
    await worker.start()
    wire = to_wire(PredictRequest(image=Path(image).read_bytes(), image_format="jpeg",
                                  deadline=time.time() + 60))
    reply = decode(PredictReply, await bus.call(settings.predict_queue, wire.body, headers=wire.headers,
                                                timeout=60))
    await worker.stop()
    await bus.close()
    await store.close()
    return {"engine": worker.classifier.engine, "label": reply.result and reply.result.label,
            "error": reply.error and reply.error.message,
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}


print(json.dumps(asyncio.run(serve_one(*sys.argv[1:]))))
"""


@pytest.fixture(scope="module")
def tiny_with_litert(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as the trainer saves a version: `model.tflite` beside `model.keras`."""
    import keras

    from trainer_service.ml.artifacts import save_artifact

    manifest = ModelManifest.model_validate_json((tiny_model_dir / "manifest.json").read_text())
    model = keras.saving.load_model(tiny_model_dir / "model.keras", compile=False)
    directory = save_artifact(model, manifest.model_copy(update={"version": "tiny-lite"}),
                              tmp_path_factory.mktemp("tiny-lite") / "model")
    assert (directory / "model.tflite").is_file()
    return directory


def serve_one(bundled: Path, tmp_path: Path, image: Path, engine: str) -> dict[str, object]:
    """Run a worker seeded from `bundled` in a fresh process; its report after one prediction
    (and, under "log", what it logged)."""
    done = subprocess.run([sys.executable, "-c", WORKER, str(bundled), str(tmp_path), str(image), engine],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["error"] is None and report["label"] is not None, report
    return {**report, "log": done.stderr}


def test_a_version_with_a_litert_file_is_served_without_tensorflow_or_keras(
        tiny_with_litert: Path, tmp_path: Path, fixture_images: dict[str, list[Path]]) -> None:
    report = serve_one(tiny_with_litert, tmp_path, fixture_images["melanoma"][0], "litert")
    assert report["engine"] == "litert"
    assert report["loaded"] == []
    assert (tmp_path / "cache" / "tiny-lite" / "model.tflite").is_file()  # fetched from the registry


def test_a_version_without_a_litert_file_is_served_from_its_keras_file(
        tiny_model_dir: Path, tmp_path: Path, fixture_images: dict[str, list[Path]]) -> None:
    report = serve_one(tiny_model_dir, tmp_path, fixture_images["melanoma"][0], "litert")
    assert "tensorflow" in report["loaded"]  # type: ignore[operator]  # the fallback: Keras file, TensorFlow
    assert not (tmp_path / "cache" / "tiny-v1" / "model.tflite").exists()


def test_the_tensorflow_engine_serves_a_version_that_has_a_litert_file(
        tiny_with_litert: Path, tmp_path: Path, fixture_images: dict[str, list[Path]]) -> None:
    report = serve_one(tiny_with_litert, tmp_path, fixture_images["melanoma"][0], "tensorflow")
    assert report["engine"] == "tensorflow" and "tensorflow" in report["loaded"]  # type: ignore[operator]


def test_a_litert_file_that_is_not_the_published_one_is_not_served(
        tiny_with_litert: Path, tmp_path: Path, fixture_images: dict[str, list[Path]]) -> None:
    """A corrupt download (here: a cached file changed after it was fetched) fails its digest
    check: the worker serves the version from its Keras file instead, and says why."""
    bundled = shutil.copytree(tiny_with_litert, tmp_path / "bundled")
    cached = tmp_path / "cache" / "tiny-lite"
    cached.mkdir(parents=True)
    for name in ("manifest.json", "model.keras"):
        shutil.copy(bundled / name, cached / name)
    (cached / "model.tflite").write_bytes((bundled / "model.tflite").read_bytes()[:-16])
    report = serve_one(bundled, tmp_path, fixture_images["melanoma"][0], "litert")
    assert "tensorflow" in report["loaded"]  # type: ignore[operator]
    assert "is not the file its manifest names" in str(report["log"])


def test_without_tensorflow_a_version_without_a_litert_file_fails_saying_why(tiny_model_dir: Path) -> None:
    """The worker image has no TensorFlow: a version it cannot serve fails its load with a reason
    (the worker then keeps serving the version it had)."""
    script = ("import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
              "from pathlib import Path; from shared.classifier import Classifier\n"
              f"Classifier.load(Path({str(tiny_model_dir)!r}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1
    assert "RuntimeError" in done.stderr and "has no LiteRT file" in done.stderr
