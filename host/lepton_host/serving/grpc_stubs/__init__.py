"""Python stubs of the Open Inference Protocol's gRPC service (KServe v2 / Triton `inference.GRPCInferenceService`),
generated from Triton's own protos and kept in the repository.

Source: `grpc_service.proto` and `model_config.proto` from triton-inference-server/common (protobuf/, commit
83adf7cf88a2f343005974dff3728be746de2d66), verbatim with their BSD-3-Clause licence (LICENSE beside them). Triton's
file rather than KServe's `open_inference_grpc.proto`: it is the superset that Triton's clients and perf_analyzer
speak (ModelConfig, ModelStatistics), and the same wire format for the calls the two share.

Why generated here rather than taken from a package:
- tritonclient's own stubs are no option for the server: 2.52 and later are generated for protobuf >= 5.26 (2.73's
  import google.protobuf.runtime_version), while the build and cloud environment holds TensorFlow 2.15, which needs
  protobuf < 5; a board would also have to install tritonclient to serve.
- Generated with grpcio-tools 1.62 (protoc 25, the last that targets protobuf 4.x), the code runs on protobuf
  4.25 next to TensorFlow and on the protobuf 5 and 6 of newer board images, with any grpcio from 1.51 on.

The stubs use a descriptor pool of their own (`_pool.py`) instead of protobuf's default one: a process that also
imports tritonclient's gRPC client (the tests, a benchmark driving its own server) would otherwise hold two different
copies of `grpc_service.proto` in the default pool, which protobuf refuses. Messages from either copy are the same
bytes on the wire.

Regenerate with `regenerate.py` (it says how); tests/test_serving_grpc.py checks that the stubs were generated from
the protos beside them.
"""
