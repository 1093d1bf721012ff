"""Checks of the servers' command-line options, before anything starts: a value the server would silently
misuse (a port it cannot listen on, an empty batch, a queue that refuses everything, a cloud URL httpx cannot
reach) is one clear error instead."""

from __future__ import annotations

import httpx

from .errors import InvalidOption




def check_port(port: int, flag: str = "--port") -> None:
    if not 0 <= port <= 65535:
        raise InvalidOption(f"{flag} {port} is not a TCP port (0-65535; 0 picks a free one)")


def check_at_least(value: float | None, least: float, flag: str, why: str = "") -> None:
    if value is not None and not value >= least:  # `not >=` also catches NaN
        raise InvalidOption(f"{flag} {value:g} must be at least {least:g}{why}")


def check_positive(value: float | None, flag: str) -> None:
    if value is not None and not value > 0:
        raise InvalidOption(f"{flag} {value:g} must be greater than 0")


def check_cloud_url(url: str, flag: str = "--cloud") -> None:
    """http(s)://host[:port][/path]; the message never repeats credentials given in the URL."""
    example = "e.g. http://10.0.0.5:8001"
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InvalidOption(f"{flag}: not a URL ({example})") from None
    if u.scheme not in ("http", "https"):
        raise InvalidOption(f"{flag}: the URL must start with http:// or https:// ({example})")
    if not u.host or any(c.isspace() for c in url):
        raise InvalidOption(f"{flag}: the URL names no host ({example})")


def check_serving_args(args) -> None:
    """Options shared by `serve` and `cloud` (those not given are skipped)."""
    check_port(args.port)
    check_at_least(args.max_batch_size, 1, "--max-batch-size")
    check_at_least(args.max_queue, 1, "--max-queue", " (requests allowed to wait; 1 or more)")
    check_at_least(args.max_queue_delay_ms, 0, "--max-queue-delay-ms")


def check_serve_args(args) -> None:
    """`lepton-hls serve`'s options."""
    check_serving_args(args)
    check_positive(args.timeout_ms, "--timeout-ms")
    check_positive(args.edge_timeout_ms, "--edge-timeout-ms")
    check_at_least(args.inline_max_ms, 0, "--inline-max-ms")
    check_positive(args.latency_budget_ms, "--latency-budget-ms")
    if args.cloud is not None:
        check_cloud_url(args.cloud)
    check_positive(args.cloud_timeout_ms, "--cloud-timeout-ms")
    check_at_least(args.cloud_retries, 0, "--cloud-retries")
    check_at_least(args.breaker_failures, 1, "--breaker-failures")
    check_at_least(args.breaker_reset_s, 0, "--breaker-reset-s")
    if args.hedge_percentile is not None and not 0 < args.hedge_percentile <= 100:
        raise InvalidOption(f"--hedge-percentile {args.hedge_percentile:g} must be in (0, 100]")
    check_positive(getattr(args, "health_interval_ms", None), "--health-interval-ms")
    check_at_least(getattr(args, "probe_failures", None), 1, "--probe-failures")
    check_at_least(getattr(args, "audit_window_s", None), 0, "--audit-window-s")
    fraction = getattr(args, "audit_fraction", None)
    if fraction is not None and not 0 <= fraction <= 1:
        raise InvalidOption(f"--audit-fraction {fraction:g} must be between 0 and 1 (the share of edge answers "
                            "audited)")
    if getattr(args, "fault", None):
        from .fault_schedule import FaultSpecError, parse_schedule

        parse_schedule(args.fault)
        target = getattr(args, "target", None) or getattr(args, "legacy_target", None)
        if target != "emulated-board":
            raise FaultSpecError("--fault needs --target emulated-board (faults are injected into the emulated board)")
