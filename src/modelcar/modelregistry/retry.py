"""When and how long to wait before trying an HTTP request again.

Exponential backoff with full jitter on connection errors, 429 and 5xx; a server's Retry-After
(seconds or an HTTP date) is honoured, within a cap so a confused server cannot stall a run.
The attempts and base delay can be tuned with MODELCAR_HTTP_RETRIES / MODELCAR_HTTP_BACKOFF.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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
        policy = cls()
        attempts = _number(env.get(ATTEMPTS_ENV), int)
        base = _number(env.get(BACKOFF_ENV), float)
        return cls(
            attempts=max(1, attempts) if attempts is not None else policy.attempts,
            base_delay=max(0.0, base) if base is not None else policy.base_delay,
            max_delay=policy.max_delay,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: a random wait up to base * 2**(attempt-1), capped (attempt counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """The wait before the next try: Retry-After when the server gave one, else the backoff."""
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(self.max_delay, told)
        return self.backoff(attempt)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(text: str | None, kind: type[int] | type[float]) -> int | float | None:
    if text is None or not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        return None
