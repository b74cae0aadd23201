"""When and how long to wait before trying a registry request again."""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from dataclasses import dataclass

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter; Retry-After is honoured (up to `max_wait`)."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_wait: float = 300.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            wait = parse_retry_after(retry_after)
            if wait is not None:
                return min(wait, self.max_wait)
        return random.uniform(0, min(self.cap, self.base * (2**attempt)))

    def sleep(self, attempt: int, retry_after: str | None = None) -> None:
        time.sleep(self.delay(attempt, retry_after))


def parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
