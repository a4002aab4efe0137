"""The gRPC server beside the HTTP one, on the same event loop and gateway pipeline.

It serves `inference.GRPCInferenceService` (api/grpc/service.py), the standard health
service (`grpc.health.v1`, for Kubernetes `grpc:` probes: SERVING while the gateway is
ready) and server reflection. Limits (`options`): the largest message, keepalive pings,
a maximum connection age (so long-lived clients are rebalanced across gateways), and
no SO_REUSEPORT (a second server on the port fails to start instead of sharing it).
No TLS, as on the HTTP side: it ends at the ingress or the mesh.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gc
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from resnet_serve.api.auth import ApiKeys, load_api_keys
from resnet_serve.api.dependencies import Gateway
from resnet_serve.api.grpc.calls import Call, metadata_of
from resnet_serve.api.grpc.protocol import SERVICE, SERVICE_NAME, pb
from resnet_serve.api.grpc.service import HELD_PER_BYTE, InferenceService
from resnet_serve.api.grpc.status import status_of, trailers
from resnet_serve.api.limits import malloc
from resnet_serve.api.limits.budget import resident_bytes
from resnet_serve.shared.errors import ServeError
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)

UNAUTHENTICATED = "a valid API key is required: send 'authorization: Bearer <key>' or 'x-api-key'"
# RPCs whose REST twin's path decides whether they need a key (auth_exempt_paths).
_REST_TWINS = {"ServerLive": "/v2/health/live", "ServerReady": "/v2/health/ready"}
TEND_EVERY_S = 0.5
COLLECT_AFTER_GROWTH_BYTES = 32 * 1024 * 1024
# The RPCs served (the rest of the service answer UNIMPLEMENTED): tests/golden/grpc-wire.json.
UNARY = (
    "ModelInfer",
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
)
SERVED = (*UNARY, "ModelStreamInfer")


def options(settings: Settings, max_message: int) -> list[tuple[str, int]]:
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping every 10 s (tritonclient's keepalive options) without a GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_connection_age_ms", round(settings.grpc_max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", round((settings.request_timeout_s + 1) * 1000)),
    ]


# Measured: what a message holds while gRPC receives it (its receive buffers and the
# Python bytes), per byte. Once it is handled, the handler charges the body budget.
HELD_WHILE_READ = 2


def call_limits(settings: Settings, body_budget_bytes: int) -> tuple[int, int]:
    """(largest message, calls at once): gRPC reads a call's whole message before its
    handler runs, so what calls can hold unaccounted must fit the body budget; more
    calls are refused at once (RESOURCE_EXHAUSTED)."""
    # A handled message is charged HELD_PER_BYTE x its size: larger could never be.
    max_message = min(settings.grpc_max_message_bytes, body_budget_bytes // HELD_PER_BYTE)
    if max_message < settings.grpc_max_message_bytes:
        log.warning(
            "grpc_max_message_bytes lowered to %d: the body budget (%d bytes) holds no more",
            max_message,
            body_budget_bytes,
        )
    return max_message, max(1, body_budget_bytes // (HELD_WHILE_READ * max_message))


class GrpcServer:
    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        max_message, calls = call_limits(settings, gateway.budgets.bodies.capacity)
        self.service = InferenceService(gateway)
        keys = load_api_keys(settings)
        self.keys = ApiKeys(keys) if keys else None
        self.exempt = [p.strip() for p in settings.auth_exempt_paths.split(",") if p.strip()]
        self.health = _Health(gateway)
        self.server = grpc.aio.server(
            options=options(settings, max_message), maximum_concurrent_rpcs=calls
        )
        self.server.add_generic_rpc_handlers([self._handlers()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        self.address = f"{settings.host}:{settings.grpc_port}"
        self._watching: asyncio.Task[None] | None = None
        log.info("gRPC: messages up to %d bytes, %d calls at once", max_message, calls)

    async def start(self) -> None:
        """Binds the port (an error if it is taken) and starts serving."""
        port = self.server.add_insecure_port(self.address)
        await self.server.start()
        self._watching = asyncio.create_task(self._tend(), name="grpc-tend")
        log.info("gRPC server listening on %s", self.address.rsplit(":", 1)[0] + f":{port}")

    async def stop(self, grace_s: float) -> None:
        """Stops taking calls; calls in flight get `grace_s` to finish."""
        if self._watching is not None:
            self._watching.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

    async def _tend(self) -> None:
        """Health follows readiness (also between Checks, for Watch), and memory
        comes back after large messages (`_collect`)."""
        baseline, loop = resident_bytes(), asyncio.get_running_loop()
        backoff_s = next_at = 0.0
        while True:
            await self.health.follow()
            before = resident_bytes()
            if before > baseline + COLLECT_AFTER_GROWTH_BYTES and loop.time() >= next_at:
                after = await _collect()
                baseline = min(baseline, after)
                # Little to free (the memory is in use, or a burst is still arriving):
                # try again later, less often each time, but never give up on it.
                futile = before - after < COLLECT_AFTER_GROWTH_BYTES / 2
                backoff_s = min(max(2 * backoff_s, 1.0), 60.0) if futile else 0.0
                next_at = loop.time() + backoff_s
            elif self.service.trim_due and self.gateway.budgets.bodies.used == 0:
                await asyncio.to_thread(malloc.trim)  # cheap: no collection
            self.service.trim_due = False
            await asyncio.sleep(TEND_EVERY_S)

    def _handlers(self) -> grpc.GenericRpcHandler:
        s = self.service
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name in UNARY:
            method = getattr(s, _snake(name))
            handlers[name] = _unary(name, self._answer(name, method))
        handlers["ModelInfer"] = _unary("ModelInfer", self._answer("ModelInfer", s.model_infer))
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._stream("ModelStreamInfer", s.model_stream_infer),
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _answer(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        route = f"/{SERVICE_NAME}/{name}"

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = Call.start(context, route, self.gateway.metrics)

            async def answered() -> Any:
                self._authenticate(name, context)
                return await method(request, call)

            try:
                return await call.counted(answered())
            except ServeError as exc:
                await _abort(context, exc, call.request_id)

        return handle

    def _stream(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        route = f"/{SERVICE_NAME}/{name}"

        async def handle(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            call = Call.start(context, route, self.gateway.metrics)
            try:
                self._authenticate(name, context)
                async for answer in method(requests, call):
                    yield answer
            except ServeError as exc:
                await _abort(context, exc, call.request_id)

        return handle

    def _authenticate(self, name: str, context: grpc.aio.ServicerContext) -> None:
        if self.keys is None:
            return
        twin = _REST_TWINS.get(name)
        if twin and any(fnmatch.fnmatchcase(twin, pattern) for pattern in self.exempt):
            return
        metadata = metadata_of(context)
        if self.keys.bearer(metadata.get("authorization", "")):
            return
        if "x-api-key" in metadata and self.keys.matches(metadata["x-api-key"]):
            return
        raise Unauthenticated(UNAUTHENTICATED)


class _Health(health.aio.HealthServicer):
    """grpc.health.v1: SERVING while the gateway is ready (as GET /readyz), checked
    afresh at each Check so a probe never reads a stale status."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._gateway = gateway
        self._serving: bool | None = None

    async def follow(self) -> None:
        ready = self._gateway.broker.ready() and self._gateway.startup_failure is None
        if ready is not self._serving:
            serving = health_pb2.HealthCheckResponse
            for name in ("", SERVICE_NAME):
                await self.set(name, serving.SERVING if ready else serving.NOT_SERVING)
            self._serving = ready

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await self.follow()
        return await super().Check(request, context)


async def _collect() -> int:
    """grpcio keeps each call's message alive in reference cycles until Python's cycle
    collector runs, which a few large allocations never trigger: twelve 17 MB messages a
    burst grew a gateway by ~100 MB a burst to 1 GB. Collected, and the freed heap handed
    back to the kernel, it stays flat (tests/integration/test_grpc_limits.py). Returns
    the resident size after."""
    gc.collect()
    await asyncio.to_thread(malloc.trim)
    return resident_bytes()


def _snake(name: str) -> str:
    """`ModelInfer` -> `model_infer`: the service's method for an RPC."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class Unauthenticated(ServeError):
    status, code = 401, "unauthorized"


def _unary(name: str, handle: Callable[..., Any]) -> grpc.RpcMethodHandler:
    method = SERVICE.methods_by_name[name]
    request = getattr(pb, method.input_type.name)
    response = getattr(pb, method.output_type.name)
    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )


async def _abort(context: grpc.aio.ServicerContext, error: ServeError, request_id: str) -> None:
    metadata = trailers(error.code, request_id, error.retry_after_s)
    await context.abort(status_of(error), error.message, metadata)
