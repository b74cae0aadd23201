"""When and how long to wait before trying a network request again (registry, Hub, Model Registry).

Exponential backoff with full jitter on connection errors, 408, 429 and 5xx; a server's
Retry-After (seconds or an HTTP date) is honoured, within a cap so a confused server cannot stall
a run. MODELCAR_HTTP_RETRIES (tries in all) and MODELCAR_HTTP_BACKOFF (first delay, seconds)
tune it.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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


def is_retryable_error(exc: BaseException) -> bool:
    """Connection refused, reset or cut, and idle timeouts: worth another try.

    A failed TLS handshake (a certificate not trusted, plain http on the port) is not: it fails
    the same way every time.
    """
    if not isinstance(exc, httpx.TransportError) or isinstance(exc, httpx.UnsupportedProtocol):
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return False
        cause = cause.__cause__ or cause.__context__
    return True


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _number(text: str | None, kind: type[int] | type[float]) -> int | float | None:
    if text is None or not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        return None
