"""The tensors of the Open Inference Protocol (KServe v2 / Triton REST) for DermaScan's one model:
an inference request in (JSON, or JSON plus Triton's binary data extension), a response out.

In: one `BYTES` tensor named `image` of shape `[N]` (or `[N, 1]`), each element an encoded JPEG,
PNG or WebP. As JSON, an element is the image in base64 (JSON strings cannot hold raw bytes; a
tritonclient user sends `np.array([base64.b64encode(jpeg)], dtype=object)` with
`binary_data=False`). With the binary extension (`Inference-Header-Content-Length` says how long
the JSON part is), the input's `binary_data_size` bytes follow the JSON, each element a 4-byte
little-endian length and the raw file (what tritonclient sends with `binary_data=True`).

Out: the tensors of `OUTPUTS`, all of them or those the request names, each as JSON `data` or,
with `binary_data` (per output, or `binary_data_output` for all), as raw little-endian bytes after
the JSON part. The classes of `probabilities` are the model's (its metadata's `classes`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from gateway.json_body import describe
from gateway.predict import DEFAULT_TOP_K, parse_top_k
from shared.errors import BadRequest, PayloadTooLarge, Unprocessable
from shared.messages import Prediction

#: Header of Triton's binary data extension: bytes of the JSON part at the start of the body.
HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT = "image"
Parameter = StrictBool | StrictInt | StrictFloat | StrictStr
Row = list[float | bool | str | None]


@dataclass(frozen=True)
class Output:
    """One output tensor: its datatype, what it holds, and its row for one prediction."""

    datatype: Literal["FP32", "BOOL", "BYTES"]
    description: str
    row: Callable[[Prediction], Row]
    per_class: bool = False  # shape [N, C] rather than [N]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


#: Every output, in the order of the model's metadata.
OUTPUTS: dict[str, Output] = {
    "probabilities": Output("FP32", "Each class's probability (a parent's includes its children's), in the "
                                    "order of the metadata's `classes`.",
                            lambda p: list(p.probabilities.values()), per_class=True),
    "label": Output("BYTES", "The most probable class.", lambda p: [p.label]),
    "out_of_distribution": Output("BOOL", "The image does not look like a dermoscopic image: the label means "
                                          "nothing.", lambda p: [p.out_of_distribution]),
    "ood_score": Output("FP32", "The out-of-distribution score (NaN, or null in JSON, for a model without a "
                                "detector).", lambda p: [p.ood_score]),
    "uncertain": Output("BOOL", "The confidence is below the model's calibrated threshold.",
                        lambda p: [p.uncertain]),
    "referral": Output("BYTES", "JSON: the malignant classes above their referral threshold, "
                                "`[{label, probability, threshold}]` (empty: none).",
                       lambda p: [_json([r.model_dump() for r in p.referral])]),
    "top_k": Output("BYTES", "JSON: the `top_k` best classes (request parameter, default "
                             f"{DEFAULT_TOP_K}), `[{{label, probability, parent}}]`, most probable first.",
                    lambda p: [_json([s.model_dump() for s in p.top_k])]),
}


class InputTensor(BaseModel):
    """An input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["image"] = Field(description="The model's one input.")
    datatype: Literal["BYTES"] = Field(description="Encoded images are BYTES.")
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=2, description="`[N]` (or `[N, 1]`): N images.")
    parameters: dict[str, Parameter] = Field(
        default_factory=dict, description="`binary_data_size`: the tensor's bytes after the JSON part "
                                          "(binary data extension); absent: the images are in `data`.")
    data: list[StrictStr | list[StrictStr]] | None = Field(
        None, description="Each image in base64, row-major (flat or nested); absent with `binary_data_size`.")


class RequestedOutput(BaseModel):
    """An output the request asks for."""

    model_config = ConfigDict(extra="forbid")

    name: Literal[tuple(OUTPUTS)] = Field(description="One of the model's outputs.")  # type: ignore[valid-type]
    parameters: dict[str, Parameter] = Field(
        default_factory=dict,
        description="`binary_data`: answer this output as raw bytes after the JSON part.")


class InferRequest(BaseModel):
    """An inference request's JSON (the whole body, or its first `Inference-Header-Content-Length`
    bytes)."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = Field(None, description="Echoed in the response.")
    parameters: dict[str, Parameter] = Field(
        default_factory=dict, description=f"`top_k` (1 to the number of classes, default {DEFAULT_TOP_K}): "
                                          "the length of the `top_k` output; `binary_data_output`: answer "
                                          "every output as raw bytes unless it says otherwise.")
    inputs: list[InputTensor] = Field(min_length=1, max_length=1, description="The `image` tensor.")
    outputs: list[RequestedOutput] | None = Field(None, description="The outputs wanted (absent: all).")


class OutputTensor(BaseModel):
    """An output tensor of an inference response."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The output's name.")
    datatype: str = Field(description="FP32, BOOL or BYTES.")
    shape: list[int] = Field(description="`[N]`, or `[N, C]` for `probabilities`.")
    parameters: dict[str, int] | None = Field(
        None, description="`binary_data_size`: the tensor's bytes after the JSON part, when sent so.")
    data: Row | None = Field(None, description="The values, row-major; absent when sent as binary.")


class InferResponse(BaseModel):
    """An inference response's JSON (the whole body, or its first `Inference-Header-Content-Length`
    bytes when some output is binary)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="`dermascan`.")
    model_version: str = Field(description="The registry version that answered every image.")
    id: str | None = Field(None, description="The request's `id`, when it had one.")
    outputs: list[OutputTensor] = Field(description="The outputs asked for, in that order (absent: all).")


@dataclass(frozen=True)
class Inference:
    """What an inference request asks: its images, and how to answer."""

    request_id: str | None
    images: list[bytes]
    top_k: int
    outputs: list[tuple[str, bool]]  # (name, binary), in the order to answer


def _flag(parameters: dict[str, Parameter], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"the parameter {name} is a boolean (got {str(value)[:40]!r})",
                         code=f"invalid_{name}")
    return value


def _unsupported(parameters: dict[str, Parameter], where: str) -> None:
    for name in parameters:
        if name.startswith("shared_memory") or name == "classification":
            raise BadRequest(f"{where}: {name} is not supported here (no shared memory, no classification "
                             "extension: ask for the top_k output)", code="unsupported_extension")


def _malformed(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_tensor")


def _split(raw: bytes, count: int, max_bytes: int) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _malformed("the binary image tensor ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if length > max_bytes:
            raise _too_large(len(elements), length, max_bytes)
        if offset + length > len(raw):
            raise _malformed(f"the binary image tensor ends inside image {len(elements)}")
        elements.append(raw[offset:offset + length])
        offset += length
        if len(elements) > count:
            break
    return elements


def _too_large(index: int, size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"image {index} is {size:,} bytes; the limit is {limit:,}", code="file_too_large")


def _from_base64(data: list[str | list[str]], max_bytes: int) -> list[bytes]:
    images = []
    for i, item in enumerate(x for row in data for x in (row if isinstance(row, list) else [row])):
        if len(item) > (max_bytes + 2) // 3 * 4:  # too large before it is decoded
            raise _too_large(i, len(item) // 4 * 3, max_bytes)
        try:
            image = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed(f"image {i} is not base64: in JSON each element of the image tensor is an "
                             "encoded image in base64 (or send binary data)") from None
        if len(image) > max_bytes:
            raise _too_large(i, len(image), max_bytes)
        images.append(image)
    return images


def parse_request(body: bytes, header_length: str | None, *, max_image_bytes: int) -> Inference:
    """The request of `body` (`header_length`: the binary extension's header, or None). Raises
    Unprocessable for JSON that is not an inference request, BadRequest for tensors that do not
    add up, PayloadTooLarge for an image over `max_image_bytes`."""
    split = len(body)
    if header_length is not None:
        if not header_length.isascii() or not header_length.isdigit() or int(header_length) > len(body):
            raise _malformed(f"{HEADER_LENGTH} must be a whole number of bytes, at most the body's "
                             f"{len(body):,}")
        split = int(header_length)
    try:
        request = InferRequest.model_validate_json(body[:split])
    except ValidationError as exc:
        raise Unprocessable(f"invalid inference request: {describe(exc)}", code="invalid_request") from None
    tensor = request.inputs[0]
    _unsupported(tensor.parameters, "input image")
    count = tensor.shape[0]
    if tensor.shape[1:] not in ([], [1]) or count == 0:
        raise _malformed(f"the image tensor's shape is [N] or [N, 1] with N >= 1 (got {tensor.shape})")
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(body) - split \
                or tensor.data is not None:
            raise _malformed("binary_data_size must count the bytes after the JSON part, without `data`")
        images = _split(body[split:split + size], count, max_image_bytes)
    elif tensor.data is not None:
        images = _from_base64(tensor.data, max_image_bytes)
    else:
        raise _malformed("the image tensor has neither `data` nor `binary_data_size`")
    if split + (size or 0) != len(body):
        raise _malformed(f"{len(body) - split - (size or 0):,} bytes follow the tensors")
    if len(images) != count:
        raise _malformed(f"the image tensor's shape says {count} images; it holds {len(images)}")
    return Inference(request.id, images, _top_k(request.parameters), _outputs(request))


def _top_k(parameters: dict[str, Parameter]) -> int:
    value = parameters.get("top_k")
    return DEFAULT_TOP_K if value is None else parse_top_k(str(value))


def _outputs(request: InferRequest) -> list[tuple[str, bool]]:
    every = _flag(request.parameters, "binary_data_output", False)
    if request.outputs is None:
        return [(name, every) for name in OUTPUTS]
    names = [output.name for output in request.outputs]
    if len(set(names)) != len(names):
        raise BadRequest("an output is asked for twice", code="duplicate_output")
    for output in request.outputs:
        _unsupported(output.parameters, f"output {output.name}")
    return [(o.name, _flag(o.parameters, "binary_data", every)) for o in request.outputs]


def _binary(datatype: str, values: Row) -> bytes:
    if datatype == "FP32":
        return np.asarray(values, dtype="<f4").tobytes()  # None -> NaN
    if datatype == "BOOL":
        return np.asarray(values, dtype=np.bool_).tobytes()
    return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))


def encode_response(inference: Inference, predictions: list[Prediction],
                    version: str, model_name: str) -> tuple[bytes, int | None]:
    """The response body to `inference` from `predictions` (one per image, in order, all of
    `version`), and the length of its JSON part when binary tensors follow it (else None)."""
    tensors, blobs = [], []
    for name, binary in inference.outputs:
        output = OUTPUTS[name]
        rows = [output.row(p) for p in predictions]
        values = [value for row in rows for value in row]
        shape = [len(rows), len(rows[0])] if output.per_class else [len(rows)]
        if binary:
            blob = _binary(output.datatype, values)
            blobs.append(blob)
            tensors.append(OutputTensor(name=name, datatype=output.datatype, shape=shape,
                                        parameters={"binary_data_size": len(blob)}))
        else:
            tensors.append(OutputTensor(name=name, datatype=output.datatype, shape=shape, data=values))
    response = InferResponse(model_name=model_name, model_version=version, id=inference.request_id,
                             outputs=tensors)
    header = response.model_dump_json(exclude_none=True).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)
