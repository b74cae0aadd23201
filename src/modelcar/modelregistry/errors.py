"""What can go wrong talking to a Model Registry, each with a message the user can act on."""

from __future__ import annotations

from ..errors import ModelcarError


class ModelRegistryError(ModelcarError):
    """A Model Registry failure (exit status 1, no traceback)."""


class ModelRegistryUnreachable(ModelRegistryError):
    """No HTTP answer at all: refused, reset, timed out, DNS or TLS failure (after retries)."""


class AuthRefused(ModelRegistryError):
    """401/403: the token was refused, or one is needed and none was given."""


class NotAModelRegistry(ModelRegistryError):
    """The URL answers, but not with the Model Registry REST API of any known version."""


class VersionConflict(ModelRegistryError):
    """The model version exists and points at another image (and --overwrite was not given)."""


class ModelRegistryApiError(ModelRegistryError):
    """An HTTP error answer from the Model Registry, with its status and {"code","message"}."""

    def __init__(self, message: str, status: int, server_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class NotFound(ModelRegistryApiError):
    """404 on an entity (the API itself exists)."""


class Conflict(ModelRegistryApiError):
    """409: a name (or external id) that must be unique is taken; re-read and continue."""
