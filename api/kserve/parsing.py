"""A KServe v2 JSON header, parsed and its tensor data converted where the event loop is
not: `json` and pydantic hold the GIL, so a thread would still stall every other client.

Before anything is parsed the header's elements are counted (its commas: a C loop over
the bytes) against the largest valid request for the model, so a small compressed body
that inflates to millions of elements is refused at once. Small headers are parsed
inline (a few milliseconds); larger ones in a process pool whose processes hand their
memory back after each one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from resnet_serve.api.kserve.schemas import InferenceRequest
from resnet_serve.api.kserve.tensors import Converted, convert_json_data
from resnet_serve.api.limits.budget import ByteBudget, body_grant
from resnet_serve.shared.children import die_with_parent
from resnet_serve.shared.errors import InvalidTensor, PayloadTooLarge, QueueFull

log = logging.getLogger(__name__)

INLINE_HEADER_BYTES = 256 * 1024
# Peak bytes held while parsing and converting: the text and its strings (base64 images)
# about 3x, and each element of an array (measured: a nested UINT8 array of 1.2 M
# elements in 6 MB of JSON peaks 82 MB above its text, ~68 bytes an element).
PARSE_BYTES_PER_HEADER_BYTE = 3
PARSE_BYTES_PER_ELEMENT = 72
# Elements beyond the tensors' own: shapes, parameters, outputs.
FRAMING_ELEMENTS = 4096


@dataclass(frozen=True, slots=True)
class ParseLimits:
    input_size: int
    max_images: int
    max_file_bytes: int

    @property
    def max_elements(self) -> int:
        """The most JSON elements a valid request can hold: a full batch of pixels."""
        return self.max_images * self.input_size * self.input_size * 3 + FRAMING_ELEMENTS


@dataclass(frozen=True, slots=True)
class Parsed:
    request: InferenceRequest  # its input's JSON data removed: see `converted`
    converted: Converted


def check_elements(header: bytes, limits: ParseLimits) -> int:
    """The bytes parsing the header will hold; refuses (413) a header with more
    elements than any valid request has."""
    elements = header.count(b",") + 1
    if elements > limits.max_elements:
        raise PayloadTooLarge(
            f"the request holds about {elements} JSON elements; a request for this model "
            f"holds at most {limits.max_elements} (send large tensors as binary data)"
        )
    return len(header) * PARSE_BYTES_PER_HEADER_BYTE + elements * PARSE_BYTES_PER_ELEMENT


def parse(header: bytes, limits: ParseLimits) -> Parsed:
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidTensor(f"invalid inference request: {validation_message(exc)}") from None
    converted = convert_json_data(
        request, limits.input_size, limits.max_images, limits.max_file_bytes
    )
    for tensor in request.inputs:
        tensor.data = None  # converted: not carried back across the process boundary
    return Parsed(request, converted)


def _parse_and_trim(header: bytes, limits: ParseLimits) -> Parsed:
    from resnet_serve.api.limits import malloc

    try:
        return parse(header, limits)
    finally:
        malloc.trim()


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    """pydantic's errors in one line, without FastAPI's `body`/`path` location prefixes."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "path"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


class HeaderParser:
    """Inline for small headers, a pool of `processes` for the rest (started lazily).

    What a parse holds (`cost`: the text, its strings and elements) is charged to the
    body budget while that parse runs, and only then: a request waiting for a parser
    process holds none of it, and none of it is held through queueing and inference."""

    def __init__(self, processes: int, budget: ByteBudget) -> None:
        self._processes = processes
        self._budget = budget
        self._slots = asyncio.Semaphore(processes)
        self._pool: ProcessPoolExecutor | None = None

    async def parse(self, header: bytes, limits: ParseLimits, cost: int) -> Parsed:
        async with body_grant(self._budget) as grant:
            if len(header) <= INLINE_HEADER_BYTES:
                await grant.grow_to(cost)
                return parse(header, limits)
            async with self._slots:
                await grant.grow_to(cost)
                return await self._in_process(header, limits)

    async def _in_process(self, header: bytes, limits: ParseLimits) -> Parsed:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _parse_and_trim, header, limits)
        except BrokenProcessPool:
            # A parser process died (killed for memory?): a fresh pool for the next one.
            log.error("a KServe parser process died; starting a fresh pool")
            self.close()
            self._pool = None
            raise QueueFull("the request parser restarted; try again", retry_after_s=1) from None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the gateway has threads (decode pool, Redis); forking it is unsafe.
            # Started from the event loop's thread, which lives as long as the gateway.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self._processes, mp_context=context, initializer=die_with_parent
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
