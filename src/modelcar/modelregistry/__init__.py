"""The Kubeflow / OpenShift AI Model Registry: a small REST client and idempotent registration."""

from .client import API_VERSIONS, ModelRegistryClient
from .errors import (
    AuthRefused,
    ModelRegistryError,
    NotAModelRegistry,
    RegistryApiError,
    RegistryUnreachable,
    VersionConflict,
)
from .registration import Registration, RegistrationResult, register

__all__ = [
    "API_VERSIONS",
    "AuthRefused",
    "ModelRegistryClient",
    "ModelRegistryError",
    "NotAModelRegistry",
    "Registration",
    "RegistrationResult",
    "RegistryApiError",
    "RegistryUnreachable",
    "VersionConflict",
    "register",
]
