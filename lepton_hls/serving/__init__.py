"""Serving: an Open Inference Protocol (KServe v2 / Triton) edge gateway that answers on the accelerator and
falls back to a cloud model server, the reference cloud server itself, and the Triton export.

The gateway side (`gateway`, `app`, `batcher`, `routing`, `cloud_client`, `breaker`, `metrics`, `oip`) imports
numpy and the board runtime only; `cloud_server` and `triton_export` import TensorFlow and nothing of the board.
"""
