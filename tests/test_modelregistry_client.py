"""The Model Registry REST client: API version choice, auth, retries, redirects, errors."""

from __future__ import annotations

import httpx
import pytest

from modelcar.modelregistry import (
    AuthRefused,
    ModelRegistryApiError,
    ModelRegistryClient,
    ModelRegistryUnreachable,
    NotAModelRegistry,
    metadata,
)
from modelcar.modelregistry.client import server_url, without_userinfo
from modelcar.retry import RetryPolicy, parse_retry_after
from tests.helpers.common import free_port
from tests.helpers.secrets import MODEL_REGISTRY_TOKEN

# Not the tests' fast setting (fake_registry.FAST): the waits are recorded, not slept, so they may be
# long; the cap lets a Retry-After of 2 s through, and the messages count four tries.
RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=5.0)


def client_for(url: str, sleeps: list[float] | None = None, **kwargs: object) -> ModelRegistryClient:
    record = sleeps if sleeps is not None else []
    return ModelRegistryClient(url, retry=RETRY, sleep=record.append, **kwargs)  # type: ignore[arg-type]


# -- metadata values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, {"metadataType": "MetadataBoolValue", "bool_value": True}),
        (128, {"metadataType": "MetadataIntValue", "int_value": "128"}),
        (-7, {"metadataType": "MetadataIntValue", "int_value": "-7"}),
        (14_000_000_000, {"metadataType": "MetadataDoubleValue", "double_value": 14e9}),
        (0.5, {"metadataType": "MetadataDoubleValue", "double_value": 0.5}),
        ("c4", {"metadataType": "MetadataStringValue", "string_value": "c4"}),
        (["a", "b"], {"metadataType": "MetadataStringValue", "string_value": '["a", "b"]'}),
    ],
)
def test_metadata_values_take_the_spec_variant(value: object, expected: dict[str, object]) -> None:
    assert metadata.encode(value) == expected
    if not isinstance(value, list):
        assert metadata.decode(expected) == value


def test_metadata_same_compares_typed_values() -> None:
    assert metadata.same(metadata.encode(4), {"metadataType": "MetadataIntValue", "int_value": "4"})
    assert not metadata.same(metadata.encode(4), metadata.encode("4"))
    assert not metadata.same(None, metadata.encode(False))
    assert metadata.encode_all({"a": None, "b": False}) == {"b": metadata.encode(False)}


# -- small helpers --------------------------------------------------------------------------------


def test_server_url_drops_the_api_path_and_userinfo_is_never_shown() -> None:
    assert server_url("https://mr.example.com/") == "https://mr.example.com"
    assert server_url("https://mr.example.com/api/model_registry/v1alpha3") == "https://mr.example.com"
    assert server_url("https://mr.example.com/prefix/api/model_registry/v1/") == "https://mr.example.com/prefix"
    assert without_userinfo("https://me:secret@mr.example.com:8443/x") == "https://mr.example.com:8443/x"


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=4.0)
    assert all(0 <= policy.backoff(n) <= min(4.0, 2 ** (n - 1)) for n in range(1, 8) for _ in range(20))
    assert policy.delay(1, "120") == 4.0  # a Retry-After is capped too
    env = {"MODELCAR_HTTP_RETRIES": "2", "MODELCAR_HTTP_BACKOFF": "0.1"}
    assert RetryPolicy.from_env(env) == RetryPolicy(attempts=2, base_delay=0.1)
    assert RetryPolicy.from_env({"MODELCAR_HTTP_RETRIES": "x"}) == RetryPolicy()


# -- against the spec-following fake server ------------------------------------------------------


def test_connect_prefers_v1(model_registry) -> None:
    with client_for(model_registry.url) as client:
        assert client.connect() == "v1"
    assert [e.path for e in model_registry.exchanges] == ["/api/model_registry/v1/registered_models"]


def test_connect_falls_back_to_v1alpha3(model_registry_factory) -> None:
    server = model_registry_factory(apis=("v1alpha3",))
    with client_for(server.url) as client:
        assert client.connect() == "v1alpha3"
    assert [e.status for e in server.exchanges] == [404, 200]


def test_an_explicit_api_version_gets_no_fallback(model_registry_factory) -> None:
    server = model_registry_factory(apis=("v1alpha3",))
    with client_for(server.url, api_version="v1") as client, pytest.raises(NotAModelRegistry) as caught:
        client.connect()
    assert "/api/model_registry/v1" in str(caught.value) and "v1alpha3 " not in str(caught.value)


def test_404_on_both_apis_is_not_a_model_registry(model_registry_factory) -> None:
    server = model_registry_factory(apis=())
    with client_for(server.url) as client, pytest.raises(NotAModelRegistry) as caught:
        client.connect()
    assert "is not a Model Registry" in str(caught.value)
    assert "MODEL_REGISTRY_URL" in str(caught.value)


def test_refused_token_is_named_but_never_shown(model_registry_factory) -> None:
    server = model_registry_factory(token="the-right-one")
    with client_for(server.url, token=MODEL_REGISTRY_TOKEN) as client, pytest.raises(AuthRefused) as caught:
        client.connect()
    assert "refused the token" in str(caught.value)
    assert MODEL_REGISTRY_TOKEN not in str(caught.value)
    assert server.exchanges[0].headers["authorization"] == f"Bearer {MODEL_REGISTRY_TOKEN}"


def test_the_right_token_is_accepted(model_registry_factory) -> None:
    server = model_registry_factory(token=MODEL_REGISTRY_TOKEN)
    with client_for(server.url, token=MODEL_REGISTRY_TOKEN) as client:
        assert client.connect() == "v1"


def test_5xx_bursts_are_retried_with_backoff(model_registry) -> None:
    model_registry.inject(503, times=2)
    model_registry.inject(500, times=1)
    sleeps: list[float] = []
    logged: list[str] = []
    with client_for(model_registry.url, sleeps, log=logged.append) as client:
        assert client.connect() == "v1"
    assert [e.status for e in model_registry.exchanges] == [503, 503, 500, 200]
    assert len(sleeps) == 3 and all(0 <= s <= RETRY.base_delay * 4 for s in sleeps)
    assert "HTTP 503" in logged[0] and "attempt 2 of 4" in logged[0]


def test_429_honours_retry_after(model_registry) -> None:
    model_registry.inject(429, headers={"Retry-After": "2"})
    sleeps: list[float] = []
    with client_for(model_registry.url, sleeps) as client:
        assert client.connect() == "v1"
    assert sleeps == [2.0]


def test_a_dropped_connection_is_retried(model_registry) -> None:
    model_registry.inject(None, times=2)
    with client_for(model_registry.url) as client:
        assert client.connect() == "v1"
    assert [e.status for e in model_registry.exchanges] == [None, None, 200]


def test_5xx_that_never_ends_is_an_error_with_the_status(model_registry) -> None:
    model_registry.inject(503, times=10)
    with client_for(model_registry.url) as client, pytest.raises(ModelRegistryApiError) as caught:
        client.connect()
    assert caught.value.status == 503
    assert len(model_registry.exchanges) == RETRY.attempts


def test_unreachable_server_after_retries() -> None:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"
    with client_for(url, sleeps) as client, pytest.raises(ModelRegistryUnreachable) as caught:
        client.connect()
    assert "cannot reach the Model Registry" in str(caught.value)
    assert f"tried {RETRY.attempts} times" in str(caught.value)
    assert len(sleeps) == RETRY.attempts - 1


# -- answers outside the spec (auth proxies, redirects): a mock transport ------------------------


def _mock(handler):  # type: ignore[no-untyped-def]
    return httpx.MockTransport(handler)


def test_no_token_and_401_asks_for_one() -> None:
    transport = _mock(lambda request: httpx.Response(401, text="Unauthorized"))
    with client_for("https://mr.example.com", transport=transport) as client, pytest.raises(AuthRefused) as caught:
        client.connect()
    assert "needs a token" in str(caught.value) and "MODEL_REGISTRY_TOKEN" in str(caught.value)


def test_403_from_a_proxy_is_a_refused_token() -> None:
    transport = _mock(lambda request: httpx.Response(403, text=f"forbidden for {MODEL_REGISTRY_TOKEN}"))
    with (
        client_for("https://mr.example.com", token=MODEL_REGISTRY_TOKEN, transport=transport) as client,
        pytest.raises(AuthRefused) as caught,
    ):
        client.connect()
    assert "refused the token (HTTP 403)" in str(caught.value)
    assert MODEL_REGISTRY_TOKEN not in str(caught.value)


def test_server_messages_are_scrubbed_of_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/registered_models") and request.method == "GET":
            return httpx.Response(200, json={"items": [], "size": 0, "pageSize": 1, "nextPageToken": ""})
        return httpx.Response(400, json={"code": "400", "message": f"bad token {MODEL_REGISTRY_TOKEN}"})

    with (
        client_for("https://mr.example.com", token=MODEL_REGISTRY_TOKEN, transport=_mock(handler)) as client,
        pytest.raises(ModelRegistryApiError) as caught,
    ):
        client.create_registered_model({"name": "x"})
    assert "HTTP 400" in str(caught.value) and "bad token ***" in str(caught.value)
    assert MODEL_REGISTRY_TOKEN not in str(caught.value)


def test_no_authorization_after_a_redirect_to_another_host() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == "mr.example.com":
            return httpx.Response(
                307, headers={"Location": f"https://elsewhere.example.net{request.url.raw_path.decode()}"}
            )
        return httpx.Response(200, json={"items": [], "size": 0, "pageSize": 1, "nextPageToken": ""})

    with client_for("https://mr.example.com", token=MODEL_REGISTRY_TOKEN, transport=_mock(handler)) as client:
        assert client.connect() == "v1"
    assert seen == [("mr.example.com", f"Bearer {MODEL_REGISTRY_TOKEN}"), ("elsewhere.example.net", None)]


def test_a_redirected_create_is_an_error_not_a_get() -> None:
    """httpx would replay a 302-redirected POST as a GET, and the list would pass for the new model."""
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if request.method == "GET":
            return httpx.Response(200, json={"items": [], "size": 0, "pageSize": 1, "nextPageToken": ""})
        return httpx.Response(302, headers={"Location": f"https://mr-route.example.com{request.url.raw_path.decode()}"})

    with (
        client_for("https://mr.example.com", token=MODEL_REGISTRY_TOKEN, transport=_mock(handler)) as client,
        pytest.raises(ModelRegistryApiError) as caught,
    ):
        client.create_registered_model({"name": "x"})
    assert "redirected POST" in str(caught.value) and "https://mr-route.example.com" in str(caught.value)
    assert [method for method, _ in seen].count("POST") == 1 and all("mr-route" not in url for _, url in seen)


def test_a_200_that_is_not_the_api_is_not_a_model_registry() -> None:
    transport = _mock(lambda request: httpx.Response(200, text="<html>welcome</html>"))
    with client_for("https://mr.example.com", transport=transport) as client, pytest.raises(NotAModelRegistry):
        client.connect()


def test_tls_verification_failure_says_what_to_do(tmp_path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        import ssl

        raise httpx.ConnectError("failed") from ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED")

    sleeps: list[float] = []
    with (
        client_for("https://mr.example.com", sleeps, transport=_mock(handler)) as client,
        pytest.raises(ModelRegistryUnreachable) as caught,
    ):
        client.connect()
    assert "TLS verification failed" in str(caught.value) and "--ca-bundle" in str(caught.value)
    assert sleeps == []  # not retried
