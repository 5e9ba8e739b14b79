"""Calls of `tritonclient.http`, used unchanged, for the Open Inference Protocol tests
(synchronous, as a user's script calls it: the in-process tests run them in a thread)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
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
