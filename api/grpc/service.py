"""`inference.GRPCInferenceService`: the RPCs, each a thin adapter over the gateway
pipeline that REST's /v2 routes use (api/kserve/), so both answer alike.

A request message, once gRPC has read it (api/grpc/server.py bounds what calls hold
before that), is charged to the body budget like an HTTP body; a call's deadline
becomes the request's (with Triton's `timeout` parameter and `request_timeout_s`,
whichever ends first). A client that cancels cancels its handler: its queue places are
given back and its jobs skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from resnet_serve import __version__
from resnet_serve.api.dependencies import Gateway
from resnet_serve.api.grpc import messages
from resnet_serve.api.grpc.calls import Call
from resnet_serve.api.grpc.messages import InferCall
from resnet_serve.api.grpc.protocol import pb
from resnet_serve.api.kserve import inference
from resnet_serve.api.kserve.model_config import model_config
from resnet_serve.api.kserve.routes import EXTENSIONS
from resnet_serve.api.kserve.tensors import count
from resnet_serve.shared.errors import ServeError, UnknownModel
from resnet_serve.shared.jobs import ModelInfo

# Requests of one ModelStreamInfer call being answered at once; reading waits beyond.
STREAM_IN_FLIGHT = 64
# Measured: a handled message holds ~4x its size (see _infer).
HELD_PER_BYTE = 4
TRIM_AFTER_BYTES = 1024 * 1024


class InferenceService:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.classifier = gateway.classifier
        self.broker = gateway.broker
        self.trim_due = False

    def _model(self, name: str, version: str) -> ModelInfo:
        return inference.served_model(self.broker, name, version or None)

    async def server_live(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.gateway.startup_failure is None)

    async def server_ready(
        self, request: pb.ServerReadyRequest, call: Call
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.broker.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        """Ready while a live worker serves the model; an unknown model or version is not
        ready (no error), as in Triton."""
        try:
            info = self._model(request.name, request.version)
        except UnknownModel:
            return pb.ModelReadyResponse(ready=False)
        ready = self.broker.ready() and bool(self.broker.workers(info.name))
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="resnet-serve", version=__version__, extensions=EXTENSIONS
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        info = self._model(request.name, request.version)
        return messages.metadata_response(inference.metadata(info))

    async def model_config(
        self, request: pb.ModelConfigRequest, call: Call
    ) -> pb.ModelConfigResponse:
        info = self._model(request.name, request.version)
        settings = self.classifier.settings
        config = model_config(info, settings.max_batch, settings.max_batch_wait_ms)
        return messages.config_response(config)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, call: Call
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self._model(request.name, request.version)]
        else:
            models = list(self.broker.models().values())
        return messages.statistics_response(self.classifier.statistics.report(models))

    async def model_infer(self, message: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        return await self._infer(message, call)

    async def _infer(self, message: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        size = message.ByteSize()
        try:
            async with self.gateway.body_limits() as body_budget:
                # Charged before it is taken apart: the parsed message, its contents
                # copied out, the elements they become and a decode's input.
                await body_budget.grant.grow_to(HELD_PER_BYTE * size)
                return await self._run(messages.infer_call(message), call)
        finally:
            if size >= TRIM_AFTER_BYTES:
                self.trim_due = True  # GrpcServer trims once no body is held

    async def _run(self, request: InferCall, call: Call) -> pb.ModelInferResponse:
        classifier = self.classifier
        info = classifier.model(self._model(request.model, request.version).name)
        parameters = request.parsed.request.parameters
        deadline = call.received_at + classifier.settings.request_timeout_s
        timeout_us = count(parameters, "timeout", "request")
        if timeout_us is not None:
            deadline = min(deadline, call.received_at + timeout_us / 1e6)
        if call.deadline is not None:
            deadline = min(deadline, call.deadline)
        answer, blobs = await inference.run(
            classifier,
            info,
            request.parsed,
            request.binary,
            call.request_id,
            call.received_at,
            deadline,
        )
        return messages.infer_response(answer, blobs)

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], call: Call
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request answered as soon as it is done (in any order; `id` tells which);
        an error answers that request only and the stream goes on, as in Triton."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        reading = asyncio.create_task(self._read_stream(requests, call, answers))
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reading  # its error, if any, ends the call
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        call: Call,
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None],
    ) -> None:
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def answer(message: pb.ModelInferRequest) -> None:
            try:
                one = call.for_message(message.id)
                try:
                    response = await one.counted(self._infer(message, one))
                    answers.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
                except ServeError as exc:
                    error = f"[{exc.code}] {exc.message}"
                    answers.put_nowait(pb.ModelStreamInferResponse(error_message=error))
            finally:
                slots.release()

        try:
            while True:
                await slots.acquire()
                message = await anext(requests, None)
                if message is None:
                    slots.release()
                    break
                task = asyncio.create_task(answer(message))
                del message
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running)
        finally:
            for task in running:
                task.cancel()
            answers.put_nowait(None)
