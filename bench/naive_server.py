"""The naive baseline: one HTTP server that calls `model.predict` once per request.

    .venv/bin/python bench/naive_server.py MODEL_DIR --port 8099

What a first FastAPI/Flask deployment of a Keras model looks like: a synchronous handler run in a
thread pool (FastAPI's `def` endpoints), decoding the upload and calling `model.predict` on a
batch of one, with TensorFlow's default threading. Same preprocessing as DermaScan
(`shared.imaging.load_for_model`), so only the serving differs. Answers `{"label", "confidence"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.imaging import load_for_model


def create_app(model_dir: Path, threads: int) -> web.Application:
    import keras

    from shared.manifest import ModelManifest

    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    manifest = ModelManifest.model_validate_json((model_dir / "manifest.json").read_text())
    pool = ThreadPoolExecutor(threads)  # FastAPI runs `def` endpoints in a 40-thread pool

    def classify(data: bytes) -> dict[str, object]:
        pixels = load_for_model(data, manifest.input_size).astype(np.float32)
        probabilities = model.predict(pixels[None], verbose=0)[0]
        best = int(np.argmax(probabilities))
        return {"label": manifest.classes[best], "confidence": float(probabilities[best])}

    async def predict(request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": "send a 'file' field"}, status=422)
        answer = await asyncio.get_running_loop().run_in_executor(pool, classify, upload.file.read())
        return web.json_response(answer)

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=20 * 1024 * 1024)
    app.router.add_post("/predict", predict)
    app.router.add_get("/livez", livez)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--threads", type=int, default=40)
    args = parser.parse_args(argv)
    web.run_app(create_app(args.model, args.threads), host="127.0.0.1", port=args.port,
                access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
