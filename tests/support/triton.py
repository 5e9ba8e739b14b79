"""Calls of `tritonclient.http`, used unchanged, for the Open Inference Protocol tests
(synchronous, as a user's script calls it: the in-process tests run them in a thread)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

MODEL = "dermascan"
OUTPUTS = ("probabilities", "label", "out_of_distribution", "ood_score", "uncertain", "referral", "top_k")


def client(base_url: str) -> triton.InferenceServerClient:
    """A client of the gateway at `base_url` (`http://host:port`)."""
    return triton.InferenceServerClient(base_url.removeprefix("http://"))


def infer(base_url: str, images: list[bytes], *, binary: bool, version: str = "",
          outputs: tuple[str, ...] | None = OUTPUTS, **parameters: Any) -> triton.InferResult:
    """Classify `images` as one BYTES tensor: raw with the binary data extension (`binary`), or
    base64 in JSON; the `outputs` asked for (None: ask for none, get all) in the same mode."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(image) for image in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    wanted = None if outputs is None else [triton.InferRequestedOutput(name, binary_data=binary)
                                           for name in outputs]
    return client(base_url).infer(MODEL, [tensor], model_version=version, outputs=wanted,
                                  parameters=parameters or None)


def as_lists(result: triton.InferResult) -> dict[str, Any]:
    """Every output of `result` as plain Python values (bytes decoded)."""
    values = {}
    for output in result.get_response()["outputs"]:
        array = result.as_numpy(output["name"])
        values[output["name"]] = [v.decode() if isinstance(v, bytes) else v for v in array.tolist()] \
            if array.dtype == np.object_ else array.tolist()
    return values


def eight(fixture_images: dict[str, list[Path]]) -> list[bytes]:
    """Eight HAM10000 fixture images, two of each of four classes."""
    return [path.read_bytes() for paths in list(fixture_images.values())[:4] for path in paths[:2]]


def assert_same(outputs: dict[str, Any], answers: list[dict[str, Any]], classes: list[str]) -> None:
    """The v2 `outputs` (as_lists) say what `POST /predict` said of each image (`answers`);
    `classes` is the metadata's order of `probabilities`."""
    assert outputs["probabilities"] == [pytest.approx([a["probabilities"][c] for c in classes], abs=1e-6)
                                        for a in answers]
    assert outputs["label"] == [a["label"] for a in answers]
    assert outputs["out_of_distribution"] == [a["out_of_distribution"] for a in answers]
    assert outputs["uncertain"] == [a["uncertain"] for a in answers]
    assert outputs["ood_score"] == pytest.approx(
        [math.nan if a["ood_score"] is None else a["ood_score"] for a in answers], abs=1e-4, nan_ok=True)
    assert [json.loads(r) for r in outputs["referral"]] == [a["referral"] for a in answers]
    assert [[s["label"] for s in json.loads(t)] for t in outputs["top_k"]] == \
        [[s["label"] for s in a["top_k"]] for a in answers]
