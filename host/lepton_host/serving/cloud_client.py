"""The cloud fallback client: Open Inference Protocol v2 over a pooled async HTTP client (httpx), with
connect/read timeouts, a retry budget (retries may add at most a fixed fraction to the traffic, so a sick
server is not hit by a retry storm), a circuit breaker, and optional hedging (a second request after the
recent latency percentile; the first answer wins).

It talks to any OIP server: the reference cloud server, Triton, KServe, MLServer. Servers differ in small
ways, handled here: errors as `{"error": ...}` or FastAPI's `{"detail": ...}`, and servers without Triton's
binary tensor extension (not listed in their metadata, or a 4xx to a binary request that JSON then gets
through: JSON for a while, then binary is tried again).

What the gateway's callers see of the cloud says "the cloud", never its address or credentials; credentials
in the URL (`http://user:secret@host`) travel as HTTP basic auth and are kept out of every message.

Before its first inference the client compares the cloud's model metadata with the package's contract
(cloud_contract.py) unless that was done already (`lepton-hls serve` checks at start): a cloud model that does
not match then fails every call with CloudContractError, which the gateway answers from the edge. That verdict
is about the model, not the cloud's health, so it leaves the circuit breaker alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import numpy as np

from .breaker import STATE_VALUE, BreakerConfig, CircuitBreaker
from .cloud_contract import CloudContractError, ModelContract, UnreadableMetadata, check
from .errors import DeadlineExceeded, Unavailable, UpstreamError
from .metrics import ServingMetrics
from .oip import HEADER_LENGTH, Tensor, decode_infer_response, encode_infer_request, error_message

RETRYABLE_STATUS = (429, 500, 502, 503, 504)
NO_METADATA_STATUS = (404, 405, 501)  # to a metadata request of a server that answers inferences: it states none
log = logging.getLogger("lepton_hls.edge.cloud")


@dataclass
class CloudConfig:
    url: str
    model: str = ""  # model name on the cloud server; default: the package's
    connect_timeout_s: float = 0.5
    read_timeout_s: float = 2.0
    max_connections: int = 32
    retries: int = 1  # per request, on connection errors and 429/5xx, within the budget
    retry_budget_ratio: float = 0.1  # retries <= 10% of requests (+ a small reserve)
    retry_reserve: float = 3.0
    hedge_percentile: float | None = None  # e.g. 95: hedge once the request outlives p95 of recent ones
    hedge_min_samples: int = 20
    binary: bool = True
    binary_reprobe_s: float = 60.0  # after the server refused binary tensors, JSON for this long, then ask again
    token: str | None = None
    breaker: BreakerConfig | None = None
    clock: Callable[[], float] = time.monotonic  # the breaker's: a simulation or a test may drive its own
    contract: ModelContract | None = None  # what the cloud model must match (None: not checked)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """-> (the URL without user:password@, (user, password) or None)."""
    u = httpx.URL(url)
    if not u.userinfo:
        return url, None
    return str(u.copy_with(username=None, password=None)), (u.username, u.password)


def redact_url(url: str) -> str:
    """The URL for logs: credentials replaced by `***`."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    return str(u.copy_with(username="***", password=None)) if u.userinfo else url


class RetryBudget:
    """A token bucket: each request earns `ratio` of a retry, each retry spends one."""

    def __init__(self, ratio: float, reserve: float):
        self.ratio, self.cap = ratio, reserve
        self.tokens = reserve

    def earn(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CloudClient:
    def __init__(self, config: CloudConfig, model: str, input_name: str, output_name: str | None = None,
                 metrics: ServingMetrics | None = None):
        self.config = config
        self.model = config.model or model
        self.input_name = input_name
        self.output_name = output_name
        self.metrics = metrics
        base, auth = split_userinfo(config.url)
        self.base = base.rstrip("/")
        self.breaker = CircuitBreaker(config.breaker or BreakerConfig(), on_change=self._breaker_changed,
                                      clock=config.clock)
        self.budget = RetryBudget(config.retry_budget_ratio, config.retry_reserve)
        self._binary_listed = config.binary  # the server's metadata lists the binary extension
        self._negotiated_at: float | None = None
        self._json_until = 0.0  # the server refused binary tensors that it then took as JSON: JSON until then
        self._latencies: collections.deque[float] = collections.deque(maxlen=200)
        self._contract_pending = config.contract is not None
        self._contract_lock = asyncio.Lock()
        self._mismatch: CloudContractError | None = None
        self.contract_notes: list[str] = []  # what the cloud's metadata did not state (so was not compared)
        headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=config.max_connections),
            headers=headers,
            auth=auth,
        )
        if metrics is not None:
            metrics.breaker_state.set(0)

    def _breaker_changed(self, state: str) -> None:
        if self.metrics is not None:
            self.metrics.breaker_state.set(STATE_VALUE[state])
            self.metrics.breaker_transitions.labels(state).inc()

    @property
    def binary(self) -> bool:
        """Whether requests go out with binary tensors now."""
        return self.config.binary and self._binary_listed and time.monotonic() >= self._json_until

    @property
    def available(self) -> bool:
        """False while the breaker is open (no request would be sent)."""
        return self.breaker.state != "open"

    async def close(self) -> None:
        await self._client.aclose()

    async def ready(self) -> bool:
        try:
            r = await self._client.get(f"{self.base}/v2/models/{self.model}/ready")
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    # ---- the contract ------------------------------------------------------------------------------------
    async def check_contract(self, expected: ModelContract | None = None) -> list[str]:
        """Compare the cloud model's metadata with `expected` (default: the configured contract). Raises
        CloudContractError when it differs, UpstreamError when the cloud gives no metadata (unreachable, an
        error status); returns notes on what it does not state. The verdict holds for this client's calls."""
        expected = expected or self.config.contract
        if expected is None:
            return []
        try:
            r = await self._client.get(f"{self.base}/v2/models/{self.model}")
        except httpx.HTTPError as e:
            raise UpstreamError(f"the cloud is unreachable ({type(e).__name__})", None) from None
        except (AttributeError, OSError) as e:  # a pooled connection closed under anyio: see _attempt
            raise UpstreamError(f"the cloud connection broke ({type(e).__name__})", None) from None
        if r.status_code != 200:
            msg = self._scrub(error_message(r.content, r.reason_phrase))
            raise UpstreamError(f"the cloud answered {r.status_code} for the model metadata: {msg}", r.status_code)
        try:
            cloud = ModelContract.from_metadata(r.json(), expected.input_name, expected.output_name)
            notes = check(expected, cloud, self.model)
        except ValueError as e:  # UnreadableMetadata, or a body that is not JSON
            reason = str(e) if isinstance(e, UnreadableMetadata) else "not JSON"
            notes = [f"the cloud model {self.model!r} metadata is unreadable ({reason}); not compared"]
        except CloudContractError as e:
            self._mismatch, self._contract_pending = e, False
            raise
        self.accept_contract(notes)
        return notes

    def accept_contract(self, notes=()) -> None:
        """The contract was checked and held (by this client or, at start, by another one for the same cloud)."""
        self._mismatch, self._contract_pending = None, False
        self.contract_notes = list(notes)

    async def _contract_before_first_call(self) -> None:
        async with self._contract_lock:
            if self._contract_pending:
                try:
                    for note in await self.check_contract():
                        log.warning(note)
                except UpstreamError as e:
                    if e.upstream_status not in NO_METADATA_STATUS:
                        return  # no metadata now; the request itself reports why, and the next call asks again
                    note = f"the cloud model {self.model!r} states no model metadata ({e}); not compared"
                    log.warning(note)
                    self.accept_contract([note])
                except CloudContractError as e:
                    log.error("%s; the cloud is not called (the edge answers where the routing allows it)", e)
                    raise
            self._raise_if_mismatched()

    def _raise_if_mismatched(self) -> None:
        if self._mismatch is not None:
            raise CloudContractError(self._mismatch.model, self._mismatch.differences)

    # ---- one inference ----------------------------------------------------------------------------------
    async def predict(self, x: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """Raw features (N, ...) -> the cloud model's first output as float64. Raises Unavailable (breaker
        open), DeadlineExceeded, UpstreamError with the server's own message, or CloudContractError (the cloud
        model does not match the package's)."""
        self._raise_if_mismatched()
        if not self.breaker.allow():
            raise Unavailable(
                f"the cloud is failing; circuit breaker open for another {self.breaker.retry_after_s():.1f} s"
            )
        start = time.perf_counter()
        self.budget.earn()
        if self.config.binary and (self._negotiated_at is None
                                   or time.monotonic() - self._negotiated_at > self.config.binary_reprobe_s):
            await self._negotiate()
        try:
            coro = self._checked_then_sent(np.ascontiguousarray(x, dtype=np.float32))
            y = await (asyncio.wait_for(coro, timeout_s) if timeout_s is not None else coro)
        except asyncio.TimeoutError:
            if timeout_s >= self.config.read_timeout_s:
                self.breaker.record_failure()  # it had the whole read timeout and did not answer
            else:
                # The caller's deadline was shorter than the cloud is allowed to take: no verdict on the cloud
                # (a client sending tiny timeouts must not open the breaker for everyone).
                self.breaker.release_probe()
            raise DeadlineExceeded(f"the cloud did not answer within {timeout_s:.3g} s") from None
        except CloudContractError:
            self.breaker.release_probe()  # a verdict on the model, not on the cloud's health
            raise
        except UpstreamError as e:
            if e.server_fault:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the server is up; it disliked this request
            raise
        except asyncio.CancelledError:
            self.breaker.release_probe()
            raise
        elapsed = time.perf_counter() - start
        self._latencies.append(elapsed)
        self.breaker.record_success()
        if self.metrics is not None:
            self.metrics.cloud_latency.labels(self.model).observe(elapsed)
        return y

    async def _checked_then_sent(self, x: np.ndarray) -> np.ndarray:
        if self._contract_pending:
            await self._contract_before_first_call()
        return await self._with_retries(x)

    async def _with_retries(self, x: np.ndarray) -> np.ndarray:
        attempt = 0
        while True:
            try:
                return await self._maybe_hedged(x)
            except UpstreamError as e:
                if not e.retryable or attempt >= self.config.retries or not self.budget.spend():
                    raise
                attempt += 1
                self._count("retry", "sent")

    async def _maybe_hedged(self, x: np.ndarray) -> np.ndarray:
        delay = self._hedge_delay()
        if delay is None:
            return await self._attempt(x, "first")
        first = asyncio.ensure_future(self._attempt(x, "first"))
        done, _ = await asyncio.wait({first}, timeout=delay)
        if done:
            return first.result()
        second = asyncio.ensure_future(self._attempt(x, "hedge"))
        pending = {first, second}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is None:
                        return t.result()
                    error = t.exception()
            raise error  # both failed
        finally:
            for t in pending:
                t.cancel()

    async def _negotiate(self) -> None:
        """Use binary tensors only with a server that lists Triton's `binary_tensor_data` extension in its
        metadata (MLServer, for one, answers a binary body with a 500)."""
        try:
            r = await self._client.get(f"{self.base}/v2")
        except httpx.HTTPError:
            return  # ask again next time; the request itself will report the connection problem
        self._negotiated_at = time.monotonic()
        if r.status_code == 200:
            try:
                extensions = r.json().get("extensions") or []
            except (ValueError, AttributeError):
                extensions = []
            self._binary_listed = isinstance(extensions, list) and "binary_tensor_data" in extensions
        else:
            self._binary_listed = True  # no metadata to go by: try binary, a refusal falls back per request

    def _hedge_delay(self) -> float | None:
        p = self.config.hedge_percentile
        if p is None or len(self._latencies) < self.config.hedge_min_samples:
            return None
        return float(np.percentile(np.fromiter(self._latencies, float), p))

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.cloud_attempts.labels(kind, outcome).inc()

    def _scrub(self, text: str) -> str:
        """A server's own error text, without the cloud's address (a proxy's error page may name it)."""
        host = httpx.URL(self.base).host
        text = text.replace(self.base, "the cloud")
        return text.replace(host, "the cloud") if host else text

    async def _attempt(self, x: np.ndarray, kind: str, binary: bool | None = None) -> np.ndarray:
        url = f"{self.base}/v2/models/{self.model}/infer"
        tensor = Tensor(self.input_name, "FP32", x)
        if binary is None:
            binary = self.binary
        body, headers = encode_infer_request([tensor], binary=binary, binary_outputs=binary)
        try:
            r = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as e:
            self._count(kind, "timeout")
            raise UpstreamError(f"the cloud timed out ({type(e).__name__})", None, retryable=False) from None
        except httpx.HTTPError as e:
            # The exception's own text may carry the cloud's address: the type says enough to the caller.
            self._count(kind, "connect_error")
            raise UpstreamError(f"the cloud is unreachable ({type(e).__name__})", None) from None
        except (AttributeError, OSError) as e:
            # anyio (4.x, under httpcore) raises AttributeError when a pooled keep-alive connection's transport
            # closed under it (a cloud stopped and continued, or restarted): as unreachable as a refused connect,
            # and worth a retry on another connection rather than a 500 to the caller.
            self._count(kind, "connect_error")
            raise UpstreamError(f"the cloud connection broke ({type(e).__name__})", None) from None
        if r.status_code != 200:
            self._count(kind, str(r.status_code))
            msg = self._scrub(error_message(r.content, r.reason_phrase))
            if binary and r.status_code in (400, 415, 422):
                # A server without the binary extension, or one that disliked this payload: ask again in JSON.
                # Only if JSON gets through is binary set aside (for a while; one bad payload decides nothing).
                y = await self._attempt(x, kind, binary=False)
                self._json_until = time.monotonic() + self.config.binary_reprobe_s
                return y
            raise UpstreamError(
                f"the cloud answered {r.status_code}: {msg}", r.status_code,
                retryable=r.status_code in RETRYABLE_STATUS,
            )
        self._count(kind, "ok")
        try:
            resp = decode_infer_response(r.content, r.headers.get(HEADER_LENGTH))
        except ValueError as e:
            raise UpstreamError(f"the cloud: {e}", 200, retryable=False) from None
        if not resp.outputs:
            raise UpstreamError("the cloud answered without outputs", 200, retryable=False)
        out = resp.outputs.get(self.output_name) if self.output_name else None
        if out is None:
            out = next(iter(resp.outputs.values()))
        if out.shape[0] != x.shape[0]:
            raise UpstreamError(
                f"the cloud answered {out.shape[0]} rows for {x.shape[0]}", 200, retryable=False
            )
        return out.astype(np.float64)
