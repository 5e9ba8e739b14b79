"""The naive baseline: one HTTP server that calls `model.predict` once per request.

    .venv/bin/python bench/naive_server.py MODEL_DIR --port 8099 [--framework fastapi|aiohttp]

What a first deployment of a Keras model looks like: a synchronous handler run in a thread pool,
decoding the upload and calling `model.predict` on a batch of one, with TensorFlow's default
threading. `fastapi` (the default) is exactly that: a FastAPI `def` endpoint taking an
`UploadFile`, served by uvicorn (Starlette runs `def` endpoints in AnyIO's 40-thread pool).
`aiohttp` is the same handler behind aiohttp and a 40-thread pool: a cheaper HTTP layer, so a
stronger baseline. Both use DermaScan's preprocessing (`shared.imaging.load_for_model`), so only
the serving differs. Both answer `{"label", "confidence"}` and `GET /livez`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, UploadFile  # at module level: FastAPI resolves the annotations here

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.imaging import load_for_model

THREADS = 40  # AnyIO's default thread limit, which FastAPI's `def` endpoints run under


def load_classify(model_dir: Path) -> Callable[[bytes], dict[str, object]]:
    """`classify(image bytes)`: decode, `model.predict` on a batch of one, best label."""
    import keras

    from shared.manifest import ModelManifest

    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    manifest = ModelManifest.model_validate_json((model_dir / "manifest.json").read_text())

    def classify(data: bytes) -> dict[str, object]:
        pixels = load_for_model(data, manifest.input_size, policy=manifest.preprocessing).astype(np.float32)
        outputs = model.predict(pixels[None], verbose=0)
        probabilities = (outputs[0] if isinstance(outputs,
                                                  list) else outputs)[0]  # a model may add an OOD score
        best = int(np.argmax(probabilities))
        return {"label": manifest.classes[best], "confidence": float(probabilities[best])}

    return classify


def fastapi_app(classify: Callable[[bytes], dict[str, object]]) -> Any:
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008 (FastAPI's idiom)
        return classify(file.file.read())

    @app.get("/livez")
    def livez() -> dict[str, bool]:
        return {"ok": True}

    return app


def aiohttp_app(classify: Callable[[bytes], dict[str, object]]) -> Any:
    from aiohttp import web

    pool = ThreadPoolExecutor(THREADS)

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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--framework", choices=["fastapi", "aiohttp"], default="fastapi")
    args = parser.parse_args(argv)
    classify = load_classify(args.model)
    if args.framework == "fastapi":
        import uvicorn

        uvicorn.run(fastapi_app(classify), host="127.0.0.1", port=args.port, log_level="warning",
                    access_log=False)
    else:
        from aiohttp import web

        web.run_app(aiohttp_app(classify), host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
