"""An in-process Model Registry that follows the published OpenAPI spec (v1 and v1alpha3).

The real server is Go-only and cannot be built here. This one keeps state like it does: string
ids (registered models and versions share one id space, artifacts another), names unique as the
real server makes them (registered model names across the registry, version names within their
registered model, artifact names within their version), 409 on a taken name, errors as
{"code", "message"}, 404 from `find` endpoints when nothing matches, and 400 when a `find` lacks
the parameters it needs (a version by name needs `parentResourceId`).

Every request and answer is validated against the spec of its API version with openapi-core
(oneOf discriminators included); a request that fails gets a 400, and every failure is kept in
`validation_errors`, which the fixtures turn into a test failure. A server that does not serve an
API version answers its paths as a plain Go mux does (text "404 page not found"); the requests are
still checked against that version's spec, the answer is not, since the server implements none.

Faults (`inject`) stand for what sits in front of a real registry: a gateway answering 5xx or 429
with Retry-After, or a connection dropped without an answer. Injected answers that the spec
knows (500, 503) are validated too.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.validators import (
    V30RequestBodyValidator,
    V30RequestParametersValidator,
    V30RequestSecurityValidator,
)

from .common import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "tests" / "schemas" / "model-registry"
SPEC_HOST = "http://localhost:8080"  # the spec's own server entry; paths are what is checked
API_ROOT = "/api/model_registry"
ALL_APIS = ("v1", "v1alpha3")
DEFAULT_PAGE_SIZE = 20
JsonDict = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Exchange:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: the connection was dropped without an answer
    response: bytes = b""
    injected: bool = False

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def response_json(self) -> Any:
        return json.loads(self.response) if self.response else None


@dataclass
class Fault:
    status: int | None  # None: drop the connection without answering
    times: int = 1
    method: str | None = None
    path: str | None = None  # how the request path ends
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or path.endswith(self.path))


@dataclass
class _Validators:
    openapi: OpenAPI
    body: V30RequestBodyValidator
    parameters: V30RequestParametersValidator
    security: V30RequestSecurityValidator


@functools.cache
def _validators(version: str) -> _Validators:
    path = SCHEMA_DIR / f"model-registry-{version}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"the Model Registry OpenAPI spec is missing: {path}")
    # The published spec is taken as given: checking it costs seconds per session and is its
    # authors' business. CSafeLoader reads it in a tenth of the time of the pure-Python loader.
    spec = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    openapi = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
    return _Validators(
        openapi,
        V30RequestBodyValidator(openapi.spec),
        V30RequestParametersValidator(openapi.spec),
        V30RequestSecurityValidator(openapi.spec),
    )


class FakeModelRegistry:
    """A stateful Model Registry on 127.0.0.1, serving the given API versions."""

    def __init__(self, apis: tuple[str, ...] = ALL_APIS, token: str | None = None) -> None:
        self.apis = apis
        self.token = token
        self.exchanges: list[Exchange] = []
        self.validation_errors: list[str] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._context_ids = itertools.count(1)
        self._artifact_ids = itertools.count(1)
        self._last_time = 0
        self.registered_models: dict[str, JsonDict] = {}
        self.model_versions: dict[str, JsonDict] = {}
        self.artifacts: dict[str, JsonDict] = {}
        self.attributions: dict[str, str] = {}  # artifact id -> model version id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> FakeModelRegistry:
        for version in ALL_APIS:
            _validators(version)  # load the specs before the first request
        registry = self

        class Handler(_Handler):
            fake = registry

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-model-registry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test controls ----------------------------------------------------------------------------

    def inject(
        self,
        status: int | None,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `times` matching requests get `status` (None: the connection is dropped)."""
        with self._lock:
            self._faults.append(Fault(status, times, method, path, dict(headers or {})))

    def snapshot(self) -> JsonDict:
        """A deep copy of everything stored, for before/after comparisons."""
        with self._lock:
            return copy.deepcopy(
                {
                    "registered_models": self.registered_models,
                    "model_versions": self.model_versions,
                    "artifacts": self.artifacts,
                    "attributions": self.attributions,
                }
            )

    def writes(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method in ("POST", "PATCH", "PUT", "DELETE")]

    def versions_of(self, model_id: str) -> list[JsonDict]:
        return [v for v in self.model_versions.values() if v["registeredModelId"] == model_id]

    def artifacts_of(self, version_id: str) -> list[JsonDict]:
        return [self.artifacts[a] for a, v in self.attributions.items() if v == version_id]

    def check(self) -> None:
        """Fails the test when any exchange broke the spec."""
        if self.validation_errors:
            shown = "\n".join(self.validation_errors[:10])
            pytest.fail(f"{len(self.validation_errors)} exchange(s) broke the Model Registry spec:\n{shown}")

    # -- request handling -------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int | None, JsonDict, bytes]:
        """Answers one request: (status or None to drop, headers, body)."""
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        exchange = Exchange(method, path, query, dict(headers), body, None)
        with self._lock:
            self.exchanges.append(exchange)
            fault = self._take_fault(method, path)
        version = _api_version(path)
        if version is not None:
            request_errors = self._validate_request(version, method, path, query, headers, body)
        else:
            request_errors = [f"{method} {path}: not a Model Registry API path"]
        if fault is not None:
            exchange.injected = True
            status, answer = fault.status, _error_body(fault.status or 0, "injected fault")
            extra = fault.headers
        elif version is None or version not in self.apis:
            status, answer, extra = 404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"}
        elif request_errors:
            status, answer, extra = 400, _error_body(400, "; ".join(request_errors)), {}
        elif self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            status, answer, extra = 401, _error_body(401, "Unauthorized"), {}
        else:
            try:
                with self._lock:
                    status, payload = self._route(method, path.removeprefix(f"{API_ROOT}/{version}"), query, body)
                answer, extra = json.dumps(payload).encode(), {}
            except ApiError as exc:
                status, answer, extra = exc.status, _error_body(exc.status, exc.message), {}
        self.validation_errors.extend(request_errors)
        exchange.status, exchange.response = status, answer
        if status is not None and version in self.apis:
            self._validate_response(
                version, method, path, query, headers, body, status, answer, extra, exchange.injected
            )
        headers_out = {"Content-Type": "application/json", **extra}
        return status, headers_out, answer

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    def _mock_request(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> MockRequest:
        content_type = headers.get("content-type", "application/json").split(";")[0]
        return MockRequest(
            SPEC_HOST,
            method.lower(),
            path,
            args=query,
            headers={k.title(): v for k, v in headers.items()},
            data=body or None,
            content_type=content_type,
        )

    def _validate_request(
        self, version: str, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> list[str]:
        validators = _validators(version)
        request = self._mock_request(method, path, query, headers, body)
        checks = [validators.parameters, validators.body]
        if self.token is not None:  # the spec asks for a bearer token; a server without auth does not
            checks.append(validators.security)
        errors = []
        for validator in checks:
            try:
                validator.validate(request)
            except Exception as exc:
                errors.append(f"request {method} {path}?{query}: {_explain(exc)}")
        return errors

    def _validate_response(
        self,
        version: str,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        status: int,
        answer: bytes,
        extra: dict[str, str],
        injected: bool,
    ) -> None:
        if injected and status not in (500, 503):  # a gateway's answer (429, 502, ...): not in the spec
            return
        request = self._mock_request(method, path, query, headers, body)
        content_type = extra.get("Content-Type", "application/json").split(";")[0]
        response = MockResponse(answer, status_code=status, content_type=content_type)
        try:
            _validators(version).openapi.validate_response(request, response)
        except Exception as exc:
            self.validation_errors.append(f"response {status} to {method} {path}: {_explain(exc)}")

    # -- the API ----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        data = json.loads(body) if body else None
        for pattern, verb, action in self._routes():
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return action(*match.groups(), query=query, data=data)
        raise ApiError(404, f"{method} {path} is not implemented by the fake Model Registry")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        return [
            (r"/registered_models", "GET", self._list_models),
            (r"/registered_models", "POST", self._create_model),
            (r"/registered_model", "GET", self._find_model),
            (r"/registered_models/(\d+)", "GET", self._get_model),
            (r"/registered_models/(\d+)", "PATCH", self._update_model),
            (r"/registered_models/(\d+)/versions", "GET", self._list_model_versions),
            (r"/registered_models/(\d+)/versions", "POST", self._create_model_version),
            (r"/model_versions", "GET", self._list_versions),
            (r"/model_versions", "POST", self._create_version),
            (r"/model_version", "GET", self._find_version),
            (r"/model_versions/(\d+)", "GET", self._get_version),
            (r"/model_versions/(\d+)", "PATCH", self._update_version),
            (r"/model_versions/(\d+)/artifacts", "GET", self._list_version_artifacts),
            (r"/model_versions/(\d+)/artifacts", "POST", self._upsert_version_artifact),
            (r"/model_artifacts", "GET", self._list_model_artifacts),
            (r"/model_artifacts", "POST", self._create_model_artifact),
            (r"/model_artifact", "GET", self._find_model_artifact),
            (r"/model_artifacts/(\d+)", "GET", self._get_model_artifact),
            (r"/model_artifacts/(\d+)", "PATCH", self._update_model_artifact),
            (r"/artifacts/(\d+)", "GET", self._get_artifact),
        ]

    # registered models

    def _list_models(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        return 200, _page(list(self.registered_models.values()), query)

    def _create_model(self, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        name = data["name"]
        if any(m["name"] == name for m in self.registered_models.values()):
            raise ApiError(409, f"registered model with name {name} already exists")
        self._check_external_id(self.registered_models, data)
        model = self._new(self._context_ids, data, {"state": "LIVE", "customProperties": {}})
        self.registered_models[model["id"]] = model
        return 201, model

    def _find_model(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        name, external_id = query.get("name"), query.get("externalId")
        if name is None and external_id is None:
            raise ApiError(400, "invalid parameters call, supply either name or externalId")
        return 200, _only(self.registered_models.values(), name, external_id, "registered models")

    def _get_model(self, model_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        return 200, _get(self.registered_models, model_id, "registered model")

    def _update_model(self, model_id: str, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        model = _get(self.registered_models, model_id, "registered model")
        return 200, self._patch(model, data, fixed=("name",))

    def _list_model_versions(self, model_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        _get(self.registered_models, model_id, "registered model")
        items = self.versions_of(model_id)
        if "name" in query:
            items = [v for v in items if v["name"] == query["name"]]
        return 200, _page(items, query)

    def _create_model_version(self, model_id: str, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        _get(self.registered_models, model_id, "registered model")
        return self._add_version(dict(data, registeredModelId=model_id))

    # model versions

    def _list_versions(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        return 200, _page(list(self.model_versions.values()), query)

    def _create_version(self, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        if data["registeredModelId"] not in self.registered_models:
            raise ApiError(422, f"no registered model found for id {data['registeredModelId']}")
        return self._add_version(data)

    def _add_version(self, data: JsonDict) -> tuple[int, Any]:
        model_id, name = data["registeredModelId"], data["name"]
        if any(v["name"] == name for v in self.versions_of(model_id)):
            raise ApiError(409, f"model version with name {name} already exists")
        self._check_external_id(self.model_versions, data)
        version = self._new(self._context_ids, data, {"state": "LIVE", "customProperties": {}})
        self.model_versions[version["id"]] = version
        return 201, version

    def _find_version(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        name, parent, external_id = query.get("name"), query.get("parentResourceId"), query.get("externalId")
        if (name is None or parent is None) and external_id is None:
            raise ApiError(
                400, "invalid parameters call, supply either (versionName and registeredModelId), or externalId"
            )
        items = list(self.model_versions.values())
        if parent is not None:
            items = [v for v in items if v["registeredModelId"] == parent]
        return 200, _only(items, name, external_id, "model versions")

    def _get_version(self, version_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        return 200, _get(self.model_versions, version_id, "model version")

    def _update_version(self, version_id: str, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        version = _get(self.model_versions, version_id, "model version")
        return 200, self._patch(version, data, fixed=("name", "registeredModelId"))

    # artifacts

    def _list_version_artifacts(self, version_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        _get(self.model_versions, version_id, "model version")
        items = self.artifacts_of(version_id)
        if "artifactType" in query:
            items = [a for a in items if a["artifactType"] == query["artifactType"]]
        if "name" in query:
            items = [a for a in items if a.get("name") == query["name"]]
        return 200, _page(items, query)

    def _upsert_version_artifact(self, version_id: str, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        _get(self.model_versions, version_id, "model version")
        if data.get("id") is not None:
            artifact = _get(self.artifacts, data["id"], "artifact")
            if artifact["artifactType"] != data["artifactType"]:
                raise ApiError(400, f"artifact with id {data['id']} is not a {data['artifactType']}")
            self._patch(artifact, {k: v for k, v in data.items() if k != "id"}, fixed=("name", "artifactType"))
            self.attributions[artifact["id"]] = version_id
            return 200, artifact
        return 201, self._add_artifact(data, version_id)

    def _add_artifact(self, data: JsonDict, version_id: str | None) -> JsonDict:
        name = data.get("name")
        taken = version_id is not None and any(a.get("name") == name for a in self.artifacts_of(version_id))
        if name is not None and taken:
            raise ApiError(409, f"artifact with name {name} already exists in model version {version_id}")
        self._check_external_id(self.artifacts, data)
        artifact = self._new(self._artifact_ids, data, {"state": "UNKNOWN", "customProperties": {}})
        self.artifacts[artifact["id"]] = artifact
        if version_id is not None:
            self.attributions[artifact["id"]] = version_id
        return artifact

    def _list_model_artifacts(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        items = [a for a in self.artifacts.values() if a["artifactType"] == "model-artifact"]
        return 200, _page(items, query)

    def _create_model_artifact(self, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        return 201, self._add_artifact(dict(data, artifactType="model-artifact"), None)

    def _find_model_artifact(self, query: dict[str, str], data: Any) -> tuple[int, Any]:
        name, parent, external_id = query.get("name"), query.get("parentResourceId"), query.get("externalId")
        if name is None and parent is None and external_id is None:
            raise ApiError(
                400, "invalid parameters call, supply either (artifactName and modelVersionId), or externalId"
            )
        items = [a for a in self.artifacts.values() if a["artifactType"] == "model-artifact"]
        if parent is not None:
            items = [a for a in items if self.attributions.get(a["id"]) == parent]
        return 200, _only(items, name, external_id, "model artifacts")

    def _get_model_artifact(self, artifact_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        artifact = _get(self.artifacts, artifact_id, "model artifact")
        if artifact["artifactType"] != "model-artifact":
            raise ApiError(404, f"artifact with id {artifact_id} is not a model artifact")
        return 200, artifact

    def _update_model_artifact(self, artifact_id: str, query: dict[str, str], data: JsonDict) -> tuple[int, Any]:
        artifact = self._get_model_artifact(artifact_id, query, None)[1]
        return 200, self._patch(artifact, data, fixed=("name", "artifactType"))

    def _get_artifact(self, artifact_id: str, query: dict[str, str], data: Any) -> tuple[int, Any]:
        return 200, _get(self.artifacts, artifact_id, "artifact")

    # storage helpers

    def _now(self) -> str:
        now = max(int(time.time() * 1000), self._last_time + 1)
        self._last_time = now
        return str(now)

    def _new(self, ids: Iterator[int], data: JsonDict, defaults: JsonDict) -> JsonDict:
        entity = {**defaults, **{k: v for k, v in data.items() if k not in ("id",)}}
        entity["id"] = str(next(ids))
        entity["createTimeSinceEpoch"] = entity["lastUpdateTimeSinceEpoch"] = self._now()
        return entity

    def _patch(self, entity: JsonDict, data: JsonDict, fixed: tuple[str, ...]) -> JsonDict:
        """Like the real server: given fields replace stored ones (customProperties as a whole)."""
        for key, value in data.items():
            if key in fixed or key in ("id", "createTimeSinceEpoch", "lastUpdateTimeSinceEpoch"):
                continue
            entity[key] = value
        entity["lastUpdateTimeSinceEpoch"] = self._now()
        return entity

    def _check_external_id(self, entities: dict[str, JsonDict], data: JsonDict) -> None:
        external_id = data.get("externalId")
        if external_id is not None and any(e.get("externalId") == external_id for e in entities.values()):
            raise ApiError(409, f"an entity with externalId {external_id} already exists")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeModelRegistry
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, answer = self.fake.handle(self.command, self.path, headers, body)
        if status is None:  # a dropped connection
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(status)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


def _api_version(path: str) -> str | None:
    match = re.match(rf"^{API_ROOT}/([^/]+)/", path)
    return match.group(1) if match and match.group(1) in ALL_APIS else None


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"code": str(status), "message": message}).encode()


def _get(entities: dict[str, JsonDict], entity_id: str, kind: str) -> JsonDict:
    if entity_id not in entities:
        raise ApiError(404, f"no {kind} found for id {entity_id}")
    return entities[entity_id]


def _only(items: Any, name: str | None, external_id: str | None, kind: str) -> JsonDict:
    found = [
        e
        for e in items
        if (name is None or e.get("name") == name) and (external_id is None or e.get("externalId") == external_id)
    ]
    if len(found) != 1:
        what = "no" if not found else "multiple"
        raise ApiError(404, f"{what} {kind} found for name={name or ''}, externalId={external_id or ''}")
    return found[0]


def _page(items: list[JsonDict], query: dict[str, str]) -> JsonDict:
    items = _filtered(items, query.get("filterQuery"))
    reverse = query.get("sortOrder") == "DESC"
    key = {"CREATE_TIME": "createTimeSinceEpoch", "LAST_UPDATE_TIME": "lastUpdateTimeSinceEpoch"}.get(
        query.get("orderBy", "ID"), "id"
    )
    items = sorted(items, key=lambda e: int(e[key]), reverse=reverse)
    size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
    start = int(query.get("nextPageToken") or 0)
    page = items[start : start + size]
    next_token = str(start + size) if start + size < len(items) else ""
    return {"items": page, "size": len(page), "pageSize": size, "nextPageToken": next_token}


_CONDITION = re.compile(r"""\s*`?([\w.-]+)`?\s*=\s*(?:'([^']*)'|"([^"]*)"|(\S+))\s*""")


def _filtered(items: list[JsonDict], filter_query: str | None) -> list[JsonDict]:
    """The subset of filterQuery the fake knows: `prop = 'value'` conditions joined by AND."""
    if not filter_query:
        return items
    conditions = []
    for part in re.split(r"\s+AND\s+", filter_query.strip(), flags=re.IGNORECASE):
        match = _CONDITION.fullmatch(part)
        if not match:
            raise ApiError(400, f"filterQuery {filter_query!r} is beyond what the fake Model Registry supports")
        prop, value = match.group(1), next(g for g in match.groups()[1:] if g is not None)
        conditions.append((prop.split(".")[0], value))
    return [e for e in items if all(_property(e, prop) == value for prop, value in conditions)]


def _property(entity: JsonDict, prop: str) -> str | None:
    if prop in entity and not isinstance(entity[prop], dict):
        return str(entity[prop])
    custom = entity.get("customProperties", {}).get(prop)
    if not custom:
        return None
    value = next((v for k, v in custom.items() if k.endswith("_value")), None)
    return str(value).lower() if isinstance(value, bool) else None if value is None else str(value)


def _explain(exc: Exception) -> str:
    causes = [str(exc)]
    cause = exc.__cause__
    while cause is not None:
        causes.append(str(cause))
        details = getattr(cause, "schema_errors", None)
        if details:
            causes.extend(getattr(e, "message", str(e)) for e in details)
        cause = cause.__cause__
    return " | ".join(causes)[:2000]


@pytest.fixture
def model_registry_factory() -> Iterator[Callable[..., FakeModelRegistry]]:
    """Starts fake Model Registries; each is stopped and checked against the spec afterwards."""
    started: list[FakeModelRegistry] = []

    def start(apis: tuple[str, ...] = ALL_APIS, token: str | None = None) -> FakeModelRegistry:
        server = FakeModelRegistry(apis=apis, token=token).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        server.check()


@pytest.fixture
def model_registry(model_registry_factory: Callable[..., FakeModelRegistry]) -> FakeModelRegistry:
    """A fake Model Registry serving v1 and v1alpha3, without authentication."""
    return model_registry_factory()
