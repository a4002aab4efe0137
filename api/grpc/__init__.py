"""The Open Inference Protocol (KServe v2 / Triton) over gRPC, beside HTTP."""
