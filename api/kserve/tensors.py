"""KServe v2 input tensors to model-ready images, and the request parameters they use.

`images` BYTES [N] (or [N, 1]) carries encoded files: base64 strings in JSON, raw bytes
through the binary extension; they are decoded in the gateway's pool like /v1 uploads.
`pixels` UINT8 [N, S, S, 3] carries crops the client made itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from resnet_serve.api.kserve.codec import BinaryData, flatten, unpack_bytes
from resnet_serve.api.kserve.schemas import InferenceRequest, RequestInput
from resnet_serve.shared.errors import InvalidTensor, PayloadTooLarge, ServeError, TooManyFiles
from resnet_serve.shared.jobs import ModelInfo
from resnet_serve.shared.settings import Settings

IMAGES, PIXELS = "images", "pixels"

T = TypeVar("T")


def flag(parameters: dict[str, Any], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidTensor(f"parameter {name!r} must be a boolean, not {value!r}")
    return value


def count(parameters: dict[str, Any], name: str, where: str) -> int | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidTensor(f"{where}: parameter {name!r} must be a non-negative integer")
    return value


# What a JSON tensor's `data` becomes (api/kserve/parsing.py converts it off the loop):
# encoded files for `images`, a uint8 array for `pixels`.
Converted = np.ndarray | list[bytes] | None


def convert_json_data(
    request: InferenceRequest, input_size: int, max_images: int, max_file_bytes: int
) -> Converted:
    """The one input's JSON `data` as bytes, its shape and size checked first; None
    when there is no such data (binary data, or a request input_images will refuse)."""
    if len(request.inputs) != 1 or request.inputs[0].data is None:
        return None
    tensor = request.inputs[0]
    data = request.inputs[0].data
    if count(tensor.parameters, "binary_data_size", f"input {tensor.name!r}") is not None:
        raise InvalidTensor(f"input {tensor.name!r} has both data and binary_data_size")
    if tensor.name == IMAGES:
        _images_shape(tensor, max_images)
        files = [_base64(element, i) for i, element in enumerate(flatten(data))]
        _files_fit(tensor, files, max_file_bytes)
        return files
    if tensor.name == PIXELS:
        _pixels_shape(tensor, input_size, max_images)
        return _uint8(data, tensor.shape)
    return None


def input_count(request: InferenceRequest) -> int:
    """Images the request's one input claims (its first dimension), for admission."""
    shape = request.inputs[0].shape if len(request.inputs) == 1 else []
    return shape[0] if shape else 1


@dataclass(frozen=True, slots=True)
class Inputs:
    """The request's images: encoded `files` (to decode) or model-ready `pixels`."""

    files: list[bytes] | None = None
    pixels: list[np.ndarray] | None = None


def input_images(
    request: InferenceRequest,
    binary: BinaryData,
    settings: Settings,
    info: ModelInfo,
    converted: Converted = None,
) -> Inputs:
    """The images the request's one input carries (its JSON data already `converted`),
    their shapes, types and sizes checked."""
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidTensor(
            f"send exactly one input, {IMAGES!r} (BYTES, encoded images) or {PIXELS!r} "
            f"(UINT8, preprocessed); got {names}"
        )
    tensor = request.inputs[0]
    size = count(tensor.parameters, "binary_data_size", f"input {tensor.name!r}")
    if size is not None and tensor.data is not None:
        raise InvalidTensor(f"input {tensor.name!r} has both data and binary_data_size")
    raw = binary.take(size, tensor.name) if size is not None else None
    binary.check_consumed()
    max_images = settings.max_files_per_request
    if tensor.name == IMAGES:
        return Inputs(files=_files(tensor, raw, converted, max_images, settings.max_upload_bytes))
    if tensor.name == PIXELS:
        return Inputs(pixels=_pixels(tensor, raw, converted, info.input_size, max_images))
    raise InvalidTensor(f"unknown input {tensor.name!r}; this model takes {IMAGES!r} or {PIXELS!r}")


def _check(tensor: RequestInput, datatype: str, images: int, max_images: int) -> None:
    if tensor.datatype != datatype:
        raise InvalidTensor(f"input {tensor.name!r} must be {datatype}, not {tensor.datatype}")
    if images == 0:
        raise InvalidTensor(f"input {tensor.name!r} holds no image")
    if images > max_images:
        raise TooManyFiles(f"at most {max_images} images per request, got {images}")


def _base64(element: object, index: int) -> bytes:
    if not isinstance(element, str):
        raise InvalidTensor(f"input {IMAGES!r} element {index} must be a base64 string")
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTensor(f"input {IMAGES!r} element {index} is not valid base64: {exc}") from exc


def _images_shape(tensor: RequestInput, max_images: int) -> None:
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidTensor(f"input {IMAGES!r} must have shape [N] or [N, 1], not {shape}")
    _check(tensor, "BYTES", shape[0], max_images)


def _files_fit(tensor: RequestInput, files: list[bytes], max_file_bytes: int) -> None:
    shape = tensor.shape
    if len(files) != shape[0]:
        raise InvalidTensor(f"input {IMAGES!r} has shape {shape} but {len(files)} elements")
    for i, data in enumerate(files):
        if len(data) > max_file_bytes:
            raise PayloadTooLarge(
                f"input {IMAGES!r} element {i} is larger than {max_file_bytes} bytes"
            )


def _files(
    tensor: RequestInput,
    raw: memoryview | None,
    converted: Converted,
    max_images: int,
    max_file_bytes: int,
) -> list[bytes]:
    _images_shape(tensor, max_images)
    if raw is not None:
        files = unpack_bytes(raw, tensor.name, tensor.shape[0])
    elif isinstance(converted, list):
        files = converted
    else:
        raise InvalidTensor(f"input {IMAGES!r} has neither data nor binary_data_size")
    _files_fit(tensor, files, max_file_bytes)
    return files


def _pixels_shape(tensor: RequestInput, size: int, max_count: int) -> None:
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [size, size, 3]:
        raise InvalidTensor(f"input {PIXELS!r} must have shape [N, {size}, {size}, 3], not {shape}")
    _check(tensor, "UINT8", shape[0], max_count)


def _pixels(
    tensor: RequestInput, raw: memoryview | None, converted: Converted, size: int, max_count: int
) -> list[np.ndarray]:
    shape = tensor.shape
    _pixels_shape(tensor, size, max_count)
    if raw is not None:
        if len(raw) != math.prod(shape):
            raise InvalidTensor(
                f"input {PIXELS!r} has shape {shape} but {len(raw)} bytes of binary data"
            )
        array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    elif isinstance(converted, np.ndarray):
        array = converted
    else:
        raise InvalidTensor(f"input {PIXELS!r} has neither data nor binary_data_size")
    return list(array)


def _uint8(data: list[Any], shape: list[int]) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidTensor(f"input {PIXELS!r}: the data is not a regular array: {exc}") from exc
    if array.dtype.kind not in "iu":
        raise InvalidTensor(f"input {PIXELS!r}: UINT8 elements must be integers")
    if array.size != math.prod(shape):
        raise InvalidTensor(f"input {PIXELS!r} has shape {shape} but {array.size} elements")
    if array.min() < 0 or array.max() > 255:
        raise InvalidTensor(f"input {PIXELS!r}: UINT8 elements must be within 0..255")
    return array.astype(np.uint8).reshape(shape)


async def gather_all(calls: Iterable[Awaitable[T]], name: str) -> list[T]:
    """Every call's result; otherwise the first element's error, naming the element."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, ServeError):
            raise type(outcome)(
                f"input {name!r} element {i}: {outcome.message}",
                retry_after_s=outcome.retry_after_s,
            ) from outcome
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results
