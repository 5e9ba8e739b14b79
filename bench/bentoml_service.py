"""The BentoML peer of the serving benchmark: the same LiteRT model behind BentoML 1.4.

    BENCH_LITERT_FILE=model.tflite BENCH_MANIFEST=manifest.json BENCH_WORKERS=2 BENCH_THREADS=1 \
        var/bench-bentoml-venv/bin/bentoml serve bench.bentoml_service:LesionClassifier --port 3000

Runs in its own venv (bench/requirements-bentoml.txt, made by `bench/bentoml_peer.py`), never
the services'. What a BentoML user would write for this model: a sync `@bentoml.api` taking the
upload as a file (`pathlib.Path`, multipart field `file`, what bench/loadgen.py sends), one LiteRT
interpreter of `BENCH_THREADS` threads per worker process and `BENCH_WORKERS` processes, one
request at a time per worker (`threads=1`: an interpreter serves one caller), access log off (as
the other servers of the benchmark: a line per request costs CPU the model would use). The image goes
through DermaScan's own decoding and preprocessing (`shared.imaging.load_for_model`), so only
the serving differs. Answers `{"label", "confidence"}` like bench/naive_server.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.imaging import load_for_model
from shared.manifest import ModelManifest


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "1")), threads=1,
                 traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class LesionClassifier:
    """One worker process: its interpreter, and the model's manifest."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.manifest = ModelManifest.model_validate_json(Path(os.environ["BENCH_MANIFEST"]).read_text())
        self.interpreter = Interpreter(model_path=os.environ["BENCH_LITERT_FILE"],
                                       num_threads=int(os.environ.get("BENCH_THREADS", "1")))
        self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()[0]
        self.input, self.dtype = details["index"], details["dtype"]
        # the class scores: the output as wide as the class list (a model may add an OOD score)
        self.scores = next(d["index"] for d in self.interpreter.get_output_details()
                           if d["shape"][-1] == len(self.manifest.classes))

    @bentoml.api  # type: ignore[untyped-decorator]  # not in the services' venv, so untyped to mypy
    def predict(self, file: Path) -> dict[str, object]:
        """Decode, preprocess and classify one uploaded image."""
        pixels = load_for_model(file.read_bytes(), self.manifest.input_size,
                                policy=self.manifest.preprocessing)
        self.interpreter.set_tensor(self.input, pixels[None].astype(self.dtype))
        self.interpreter.invoke()
        scores = self.interpreter.get_tensor(self.scores)[0]
        best = int(np.argmax(scores))
        return {"label": self.manifest.classes[best], "confidence": float(scores[best])}
