"""When and how long to wait before trying a network request again (registry, Hub, Model Registry).

One rule for what is transient, for every server modelcar talks to: connection errors and idle
timeouts (not a failed TLS handshake, which fails the same way every time), and the answers 408,
429 and 5xx other than 501 and 505 (which say the request will never work). `call_with_retries`
is the one loop that acts on it: exponential backoff with full jitter, a server's Retry-After
(seconds or an HTTP date) honoured within a cap so a confused server cannot stall a run.
`Resumes` is the same rule for a transfer that resumes where it broke off (a blob read or sent,
a Hub file), where a try that got further starts the count again.
MODELCAR_HTTP_RETRIES (tries in all) and MODELCAR_HTTP_BACKOFF (first delay, seconds) tune it.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
NEVER_WORKS_STATUS = frozenset({501, 505})  # Not Implemented, HTTP Version Not Supported
ATTEMPTS_ENV = "MODELCAR_HTTP_RETRIES"
BACKOFF_ENV = "MODELCAR_HTTP_BACKOFF"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # tries in all, the first included
    base_delay: float = 0.5  # seconds before the second try, doubled each time
    max_delay: float = 30.0  # longest wait between two tries, Retry-After included

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if environ is None else environ
        default = cls()
        attempts = _number(env.get(ATTEMPTS_ENV), int)
        base = _number(env.get(BACKOFF_ENV), float)
        return cls(
            attempts=max(1, int(attempts)) if attempts is not None else default.attempts,
            base_delay=max(0.0, base) if base is not None else default.base_delay,
            max_delay=default.max_delay,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: a random wait up to base * 2**(attempt-1), capped; `attempt` counts from 1."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(0, ceiling)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """The wait after failed try number `attempt`: Retry-After when the server gave one, else backoff."""
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(self.max_delay, told)
        return self.backoff(attempt)

    def sleep(self, attempt: int, retry_after: str | None = None) -> None:
        time.sleep(self.delay(attempt, retry_after))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # only for the rare HTTP-date form; it is slow to import

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_transient_status(status: int | None) -> bool:
    """An answer worth another try: 408, 429, and 5xx but 501 and 505."""
    if status is None:
        return False
    return status in (408, 429) or (500 <= status < 600 and status not in NEVER_WORKS_STATUS)


def is_transient_error(exc: BaseException) -> bool:
    """Connection refused, reset or cut, idle timeouts, and errors that carry a transient HTTP
    status (`.status`, or an httpx `.response`): worth another try.

    A failed TLS handshake (a certificate not trusted, plain http on the port) is not: it fails
    the same way every time.
    """
    if isinstance(exc, httpx.TransportError):
        return not isinstance(exc, httpx.UnsupportedProtocol) and tls_failure(exc) is None
    response = getattr(exc, "response", None)
    status = getattr(exc, "status", None) if response is None else getattr(response, "status_code", None)
    return isinstance(status, int) and is_transient_status(status)


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under `exc` (a certificate not trusted, no TLS on the port), if that is what
    failed; None for a connection refused, a name that does not resolve, or a connection cut."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def retry_after_of(outcome: object) -> str | None:
    """The Retry-After a server gave with an answer or an error, if any."""
    told = getattr(outcome, "retry_after", None)
    if isinstance(told, str):
        return told
    response = outcome if isinstance(outcome, httpx.Response) else getattr(outcome, "response", None)
    headers = getattr(response, "headers", None)
    return headers.get("Retry-After") if headers is not None else None


def call_with_retries(
    send: Callable[[], T],
    policy: RetryPolicy,
    *,
    transient_answer: Callable[[T], bool] = lambda _answer: False,
    transient_error: Callable[[BaseException], bool] = is_transient_error,
    before_retry: Callable[[int, float, Any], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls `send` until it gives an answer that is not transient, raises an error that is not,
    or the policy's tries are used up; then returns that answer or raises that error.

    Each wait is what the server's Retry-After says, where it gave one, else the backoff.
    `before_retry(attempt, wait, outcome)` sees each transient outcome that is tried again (to log
    it, or to close a response that is dropped); `attempt` counts from 1.
    """
    attempt = 1
    while True:
        try:
            answer = send()
        except Exception as exc:
            if attempt >= policy.attempts or not transient_error(exc):
                raise
            outcome: Any = exc
            wait = policy.delay(attempt, retry_after_of(exc))
        else:
            if attempt >= policy.attempts or not transient_answer(answer):
                return answer
            outcome = answer
            wait = policy.delay(attempt, retry_after_of(answer))
        if before_retry is not None:
            before_retry(attempt, wait, outcome)
        sleep(wait)
        attempt += 1


class Resumes:
    """The one rule for a transfer that goes on where it stopped (a body read or sent in part):
    only failed tries in a row that got no further count, so a transfer that keeps moving is not
    given up on, and one stuck at the same byte is, after `limit` tries (the policy's by default).
    Waits as `call_with_retries` does: the server's Retry-After, else the backoff (capped at the
    sixth try's, as a long transfer may fail many times)."""

    def __init__(self, policy: RetryPolicy, limit: int | None = None) -> None:
        self.policy = policy
        self.limit = policy.attempts if limit is None else limit
        self.failures = 0
        self._stuck_at: int | None = None

    def failed(self, position: int, retry_after: str | None = None) -> bool:
        """A try failed at byte `position`: waits and returns True when another may follow, False
        (at once) when the tries are used up."""
        if position != self._stuck_at:
            self.failures, self._stuck_at = 0, position
        self.failures += 1
        if self.failures >= self.limit:
            return False
        self.policy.sleep(min(self.failures, 6), retry_after)
        return True


def transient_response(response: httpx.Response) -> bool:
    return is_transient_status(response.status_code)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _number(text: str | None, kind: type[int] | type[float]) -> int | float | None:
    if text is None or not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        return None
