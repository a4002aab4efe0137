"""The protocol's message and service classes: the one place they are imported from.

They are the `service_pb2` / `service_pb2_grpc` / `model_config_pb2` modules that
tritonclient ships (pinned exactly in pyproject.toml, BSD-3), generated from Triton's
`grpc_service.proto`: the same wire as Triton's and KServe's servers, with no copied
.proto in this repository. tests/unit/test_grpc_wire.py records the served methods and
every message's field numbers, so an upgrade cannot change the wire silently.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as model_config
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name  # "inference.GRPCInferenceService"

__all__ = ["SERVICE", "SERVICE_NAME", "model_config", "pb", "rpc"]
