"""The one retry rule and the one retry loop that every client (registry, Hub, Model Registry) uses."""

from __future__ import annotations

import ssl

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from modelcar.oci.errors import RegistryError
from modelcar.retry import (
    Resumes,
    RetryPolicy,
    call_with_retries,
    is_transient_error,
    is_transient_status,
    tls_failure,
)

POLICY = RetryPolicy(attempts=4, base_delay=0.01)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507, 520, 599])
def test_transient_answers(status: int) -> None:
    assert is_transient_status(status)


@pytest.mark.parametrize("status", [None, 200, 201, 301, 400, 401, 403, 404, 409, 413, 416, 501, 505, 600])
def test_answers_that_will_not_change(status: int | None) -> None:
    assert not is_transient_status(status)


def _tls_error(cause: ssl.SSLError) -> httpx.ConnectError:
    try:
        try:
            raise cause
        except ssl.SSLError as exc:
            raise httpx.ConnectError("handshake failed") from exc
    except httpx.ConnectError as outer:
        return outer


def test_transient_errors_are_the_network_and_transient_statuses_not_tls() -> None:
    assert is_transient_error(httpx.ConnectError("refused"))
    assert is_transient_error(httpx.ReadTimeout("idle"))
    assert is_transient_error(_tls_error(ssl.SSLEOFError("cut mid-handshake")))  # a cut connection
    assert not is_transient_error(_tls_error(ssl.SSLCertVerificationError("self-signed")))
    assert not is_transient_error(_tls_error(ssl.SSLError("wrong version number")))
    assert not is_transient_error(httpx.UnsupportedProtocol("ftp://"))
    assert is_transient_error(RegistryError("busy", 503)) and not is_transient_error(RegistryError("no", 404))
    answer = httpx.Response(429, request=httpx.Request("GET", "https://hub.test/x"))
    assert is_transient_error(HfHubHTTPError("slow down", response=answer))
    assert not is_transient_error(ValueError("a bug"))
    assert isinstance(tls_failure(_tls_error(ssl.SSLCertVerificationError("x"))), ssl.SSLCertVerificationError)
    assert tls_failure(httpx.ConnectError("refused")) is None


def test_the_loop_retries_transient_outcomes_then_returns_the_last_answer() -> None:
    outcomes: list[object] = [httpx.ConnectError("refused"), 503, 503, 503, 200]
    seen: list[tuple[int, float, object]] = []
    sleeps: list[float] = []

    def send() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    last = call_with_retries(
        send,
        POLICY,
        transient_answer=is_transient_status,
        before_retry=lambda attempt, wait, outcome: seen.append((attempt, wait, outcome)),
        sleep=sleeps.append,
    )
    assert last == 503  # four tries in all: the fourth answer is given back as it is
    assert [attempt for attempt, _, _ in seen] == [1, 2, 3] and len(sleeps) == 3
    assert isinstance(seen[0][2], httpx.ConnectError) and outcomes == [200]


def test_the_loop_raises_an_error_that_is_not_transient_at_once() -> None:
    calls: list[int] = []

    def send() -> int:
        calls.append(1)
        raise _tls_error(ssl.SSLCertVerificationError("self-signed"))

    with pytest.raises(httpx.ConnectError):
        call_with_retries(send, POLICY, sleep=lambda _s: None)
    assert len(calls) == 1


def test_the_loop_honours_retry_after_within_the_cap() -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "7"}), httpx.Response(429, headers={"Retry-After": "9999"})]
    answers.append(httpx.Response(200))
    sleeps: list[float] = []
    last = call_with_retries(
        lambda: answers.pop(0),
        POLICY,
        transient_answer=lambda r: is_transient_status(r.status_code),
        sleep=sleeps.append,
    )
    assert last.status_code == 200 and sleeps == [7.0, POLICY.max_delay]


def test_a_resumed_transfer_counts_only_tries_in_a_row_that_got_no_further(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("modelcar.retry.time.sleep", waits.append)
    tries = Resumes(POLICY)
    for position in range(10):  # it keeps moving: never given up on
        assert tries.failed(position * 100)
    assert [tries.failed(900) for _ in range(POLICY.attempts - 1)] == [True] * (POLICY.attempts - 2) + [False]
    assert tries.failures == POLICY.attempts  # stuck at byte 900: the limit's tries in all
    assert len(waits) == 10 + POLICY.attempts - 2 and all(0 <= w <= POLICY.max_delay for w in waits)


def test_a_resumed_transfer_waits_what_the_server_says(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("modelcar.retry.time.sleep", waits.append)
    tries = Resumes(RetryPolicy(attempts=50, base_delay=0.01, max_delay=30.0), limit=3)
    assert tries.failed(0, "2") and tries.failed(0, "999")
    assert not tries.failed(0, "2")
    assert waits == [2.0, 30.0]  # Retry-After, within the cap; none after the last try
