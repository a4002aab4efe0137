"""What keeps a gateway standing, over gRPC, against a real `resnet-serve serve`: hostile
messages get the answers REST gives them, within the same memory bounds; overload and
deadlines answer RESOURCE_EXHAUSTED (with retry information) or DEADLINE_EXCEEDED; a
client that cancels frees its queue place and its job is skipped."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from resnet_serve.api.grpc.protocol import pb, rpc
from resnet_serve.api.kserve.codec import pack_bytes
from tests.cluster import fault_settings
from tests.hostile import megapixels_png, peak_rss_bytes, reset_peak, rss_bytes
from tests.images import jpeg
from tests.servers import Server, run_server

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BUDGET = 192 * MIB  # bodies 40% (76.8 MiB)
MAX_MESSAGE = 18 * MIB  # then one call at a time: it holds ~3x while gRPC reads it
INFER = "/inference.GRPCInferenceService/ModelInfer"


def images_request(files: list[bytes], model: str = "resnet18") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="images", datatype="BYTES", shape=[len(files)])
    request.raw_input_contents.append(pack_bytes(files))
    return request


@pytest.fixture(scope="module")
def bounded(home: Path, logs: Path) -> Iterator[Server]:
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        memory_budget_bytes=str(BUDGET),
        budget_wait_ms="200",
        response_cache_entries="0",
        grpc_max_message_bytes=str(MAX_MESSAGE),
    ) as server:
        yield server


@pytest.fixture
def stub(bounded: Server) -> Iterator[rpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_send_message_length", 64 * MIB)]
    with grpc.insecure_channel(bounded.grpc_target, options=options) as channel:
        yield rpc.GRPCInferenceServiceStub(channel)


def rpc_error(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def trailer(error: grpc.RpcError, key: str) -> str | None:
    return dict(error.trailing_metadata() or ()).get(key)  # type: ignore[attr-defined]


def test_a_40_mp_png_is_invalid_argument_without_decoding(
    bounded: Server, stub: rpc.GRPCInferenceServiceStub
) -> None:
    huge = images_request([megapixels_png(40)])
    reset_peak(bounded.process.pid)
    before = rss_bytes(bounded.process.pid)
    decodes = bounded.metric("resnet_serve_decode_duration_seconds_count")
    for _ in range(3):
        error = rpc_error(stub.ModelInfer, huge, timeout=30)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert trailer(error, "error-code") == "too_many_pixels"
        assert trailer(error, "retry-after") is None  # retrying cannot help
    assert bounded.metric("resnet_serve_decode_duration_seconds_count") == decodes
    assert peak_rss_bytes(bounded.process.pid) - before < 64 * MIB


def test_a_message_past_the_limit_is_refused_by_grpc(
    bounded: Server, stub: rpc.GRPCInferenceServiceStub
) -> None:
    reset_peak(bounded.process.pid)
    before = rss_bytes(bounded.process.pid)
    error = rpc_error(stub.ModelInfer, images_request([bytes(24 * MIB)]), timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.details()
    assert peak_rss_bytes(bounded.process.pid) - before < 64 * MIB


def test_a_compressed_message_that_inflates_past_the_limit_is_refused(bounded: Server) -> None:
    """gzip (grpc-encoding): 24 MiB of zeros travel as ~25 KB; the limit applies to the
    inflated message, so it is refused without holding it."""
    bomb = images_request([bytes(24 * MIB)])
    reset_peak(bounded.process.pid)
    before = rss_bytes(bounded.process.pid)
    with grpc.insecure_channel(bounded.grpc_target, compression=grpc.Compression.Gzip) as channel:
        error = rpc_error(rpc.GRPCInferenceServiceStub(channel).ModelInfer, bomb, timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Decompressed message larger than max" in error.details()  # said by the server
    assert peak_rss_bytes(bounded.process.pid) - before < 64 * MIB


def test_more_bytes_elements_than_the_shape_says_are_refused(
    stub: rpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name="resnet18")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(pack_bytes([b""] * 1_000_000))
    error = rpc_error(stub.ModelInfer, request, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 1 elements" in error.details()


def test_a_burst_of_large_messages_costs_what_it_sends_and_is_given_back(
    bounded: Server, stub: rpc.GRPCInferenceServiceStub
) -> None:
    """Twelve 17 MB messages at once (a 3000x2000 tensor's size). grpcio takes a message
    off the wire before any handler runs, even for a call it then refuses, and offers
    no memory quota: no budget can refuse these bytes before they arrive (REST's can).
    What holds: the calls the budget holds are served (INVALID_ARGUMENT: not an image),
    the rest refused (RESOURCE_EXHAUSTED); the peak is a small multiple of what was
    sent (measured up to 2.5x: gRPC's buffers, its Python copy, the parsed message);
    memory comes back after each burst and the server stays whole."""
    sent = 17 * 1000 * 1000
    noise = np.random.default_rng(0).integers(0, 255, sent, np.uint8).tobytes()
    big = images_request([noise])
    idle = rss_bytes(bounded.process.pid)
    for _ in range(3):
        reset_peak(bounded.process.pid)
        calls = [stub.ModelInfer.future(big, timeout=60) for _ in range(12)]
        codes = [call.exception().code() for call in calls]  # type: ignore[union-attr]
        assert set(codes) <= {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        assert grpc.StatusCode.INVALID_ARGUMENT in codes
        grown = peak_rss_bytes(bounded.process.pid) - idle
        assert grown < 3.5 * 12 * sent, f"peak grew {grown / MIB:.0f} MiB for {12 * sent / MIB:.0f}"
        # Nothing accumulates from one burst to the next: the gateway collects what
        # grpcio keeps in reference cycles and gives the heap back.
        deadline = time.monotonic() + 20
        while rss_bytes(bounded.process.pid) > idle + 96 * MIB and time.monotonic() < deadline:
            time.sleep(0.25)
        assert rss_bytes(bounded.process.pid) <= idle + 96 * MIB
    # The server is still whole: a small call is answered.
    assert len(stub.ModelInfer(images_request([jpeg("coffee")]), timeout=30).outputs) == 1


@pytest.fixture(scope="module")
def slow_engine(home: Path, logs: Path) -> Iterator[Server]:
    """A 0.5 s batch of at most 2 (the TEST-ONLY fault engine: a fixed batch time on any
    machine), a 4 s deadline and a queue far larger than the deadline allows."""
    with run_server(
        home, logs, max_batch="2", request_timeout_s="4", max_queue="256", **fault_settings(500)
    ) as server:
        yield server


@pytest.fixture
def slow_stub(slow_engine: Server) -> Iterator[rpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(slow_engine.grpc_target) as channel:
        yield rpc.GRPCInferenceServiceStub(channel)


def test_overload_is_resource_exhausted_with_retry_information(
    slow_engine: Server, slow_stub: rpc.GRPCInferenceServiceStub
) -> None:
    """40 calls at once against ~4 images/s and a 4 s deadline: what can be answered in
    time is, the rest is refused at once with gRPC's retry pushback."""
    request = images_request([jpeg("chelsea")])
    started = time.perf_counter()
    calls = [slow_stub.ModelInfer.future(request, timeout=30) for _ in range(40)]
    outcomes = [(call.exception(), call) for call in calls]
    answered = [call for error, call in outcomes if error is None]
    refused = [error for error, _ in outcomes if error is not None]
    assert 4 <= len(answered) <= 20
    assert time.perf_counter() - started < 8
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert trailer(error, "error-code") == "queue_full"
        assert int(trailer(error, "grpc-retry-pushback-ms") or 0) >= 1
        assert int(trailer(error, "retry-after") or 0) >= 1
    assert slow_engine.metric("resnet_serve_expired_jobs_total") == 0


def test_a_grpc_deadline_becomes_the_requests_budget(
    slow_stub: rpc.GRPCInferenceServiceStub,
) -> None:
    """A 0.5 s batch cannot answer within 0.3 s: refused at admission, not left to expire."""
    request = images_request([jpeg("coffee")])
    started = time.perf_counter()
    error = rpc_error(slow_stub.ModelInfer, request, timeout=0.3)
    assert error.code() in {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert time.perf_counter() - started < 2.0  # the 10 s default deadline is not waited for
    assert len(slow_stub.ModelInfer(request, timeout=10).raw_output_contents) == 1


def test_a_cancelled_call_frees_its_place_and_its_job_is_skipped(
    slow_engine: Server, slow_stub: rpc.GRPCInferenceServiceStub
) -> None:
    """Two calls keep the engine busy; four more are cancelled while queued; an honest
    one comes last. Only three images are inferred."""
    request = images_request([jpeg("rocket")])
    inferred = slow_engine.metric("resnet_serve_batch_size_sum")
    cancelled = slow_engine.metric("resnet_serve_requests_total", route=INFER, status="CANCELLED")
    busy = [slow_stub.ModelInfer.future(request, timeout=30) for _ in range(2)]
    time.sleep(0.1)
    leaving = [slow_stub.ModelInfer.future(request, timeout=30) for _ in range(4)]
    time.sleep(0.2)
    for call in leaving:
        call.cancel()
    honest = slow_stub.ModelInfer.future(request, timeout=30)
    assert [len(call.result().raw_output_contents) for call in [*busy, honest]] == [1, 1, 1]

    # What the four had queued was skipped, never inferred: only the busy and honest ran.
    assert slow_engine.metric("resnet_serve_batch_size_sum") - inferred == 3
    # Each handler that had started counts CANCELLED (a call cancelled before the
    # server took it up makes no request at all).
    now = slow_engine.metric("resnet_serve_requests_total", route=INFER, status="CANCELLED")
    assert 1 <= now - cancelled <= 4


def test_long_lived_connections_are_closed_and_clients_reconnect(home: Path, logs: Path) -> None:
    """grpc_max_connection_age_s: the gateway closes a connection that old (GOAWAY), so a
    Kubernetes Service spreads long-lived clients over new gateways; the client
    reconnects by itself and its calls go on."""
    with run_server(home, logs, "--weights", "random", grpc_max_connection_age_s="1") as server:
        states: list[grpc.ChannelConnectivity] = []
        with grpc.insecure_channel(server.grpc_target) as channel:
            channel.subscribe(states.append, try_to_connect=True)
            stub = rpc.GRPCInferenceServiceStub(channel)
            request = images_request([jpeg("coffee")])
            for _ in range(8):
                assert len(stub.ModelInfer(request, timeout=30).outputs) == 1
                time.sleep(0.5)
    ready = [i for i, state in enumerate(states) if state == grpc.ChannelConnectivity.READY]
    assert len(ready) >= 2, states  # connected, closed by the server, connected again


def malformed(rng: random.Random, photo: bytes) -> pb.ModelInferRequest:
    """A request made of plausible and wrong parts: names, datatypes, shapes (negative,
    huge), typed and raw contents that do or do not match, parameters of every type."""
    request = pb.ModelInferRequest(model_name=rng.choice(["resnet18", "resnet18", "", "x"]))
    request.model_version = rng.choice(["", "", "1", "2"])
    for _ in range(rng.choice([0, 1, 1, 2])):
        tensor = request.inputs.add(
            name=rng.choice(["images", "pixels", "", "z"]),
            datatype=rng.choice(["BYTES", "UINT8", "FP32", ""]),
        )
        dims = [-5, 0, 1, 2, 224, 3, 2**40]
        tensor.shape[:] = [rng.choice(dims) for _ in range(rng.choice([0, 1, 2, 4]))]
        if rng.random() < 0.3:
            tensor.contents.bytes_contents[:] = [rng.choice([photo, b"", b"xx"])]
        elif rng.random() < 0.3:
            tensor.contents.uint_contents[:] = [rng.randrange(300) for _ in range(3)]
        if rng.random() < 0.3:
            tensor.parameters["binary_data_size"].int64_param = rng.choice([-1, 10**12])
    if rng.random() < 0.5:
        raws = [pack_bytes([photo]), b"\x01", b"", bytes(150528), b"\xff\xff\xff\xff"]
        request.raw_input_contents.extend(rng.sample(raws, rng.choice([1, 2])))
    if rng.random() < 0.3:
        values = [
            pb.InferParameter(int64_param=-3),
            pb.InferParameter(string_param="3"),
            pb.InferParameter(int64_param=10**15),
            pb.InferParameter(bool_param=True),
            pb.InferParameter(),
        ]
        output = request.outputs.add(name=rng.choice(["probabilities", "q"]))
        output.parameters["classification"].CopyFrom(rng.choice(values))
    return request


def test_malformed_requests_are_the_callers_mistake_never_internal(
    bounded: Server, stub: rpc.GRPCInferenceServiceStub
) -> None:
    """300 seeded malformed requests: each is answered INVALID_ARGUMENT or NOT_FOUND
    (or served, where the parts happen to fit); never INTERNAL or UNKNOWN."""
    rng, photo, codes = random.Random(23), jpeg("coffee"), set()
    for _ in range(300):
        try:
            stub.ModelInfer(malformed(rng, photo), timeout=30)
            codes.add(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.add(error.code())  # type: ignore[attr-defined]
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    assert codes <= allowed
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    assert "Traceback" not in bounded.log()
