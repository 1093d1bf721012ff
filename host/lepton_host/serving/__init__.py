"""The edge gateway, on the board next to the accelerator: the Open Inference Protocol (KServe v2 / Triton) over
HTTP (`app` with `routes_info`, `routes_infer`, `middleware`, `error_responses`; `oip`, `http_guard`), dynamic
batching (`batcher`), the per-request edge-or-cloud plan and its execution (`routing`, `plan_executor`,
`gateway`), the board's health, reset, self-test and re-admission (`edge_monitor`), the online audit on the
bit-exact engine (`audit`), the cloud client with its circuit breaker (`cloud_client`, `breaker`), metrics, and
faults on a schedule for the emulated board (`fault_schedule`). numpy, the HTTP stack and the board runtime only.
"""
