"""The Kubeflow / OpenShift AI Model Registry: a small REST client and idempotent registration."""

from .client import API_VERSIONS, ModelRegistryClient
from .errors import (
    AuthRefused,
    ModelRegistryApiError,
    ModelRegistryError,
    ModelRegistryUnreachable,
    NotAModelRegistry,
    VersionConflict,
)
from .registration import Registration, RegistrationResult, register

__all__ = [
    "API_VERSIONS",
    "AuthRefused",
    "ModelRegistryApiError",
    "ModelRegistryClient",
    "ModelRegistryError",
    "ModelRegistryUnreachable",
    "NotAModelRegistry",
    "Registration",
    "RegistrationResult",
    "VersionConflict",
    "register",
]
