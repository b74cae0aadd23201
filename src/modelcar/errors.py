"""Exceptions that carry a message a user can act on, and the exit status that goes with it."""

from typing import Any


class ModelcarError(Exception):
    """A failure with a message meant for the user (no traceback is shown)."""

    exit_code = 1
    record: Any = None  # the run record as it stood, when a stage failed


class UsageError(ModelcarError):
    """Bad input: a parameter, option or file that is wrong before any work starts."""

    exit_code = 2


class ParameterError(UsageError):
    """One parameter has a value that is not accepted."""

    def __init__(self, name: str, value: object, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(f"invalid {name}={value!r}: {accepted}")


class StageUnavailable(ModelcarError):
    """A stage that this build of modelcar does not provide."""


class StageFailed(ModelcarError):
    """A stage failed; the message names the stage and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        self.cause = cause
        super().__init__(f"stage {stage} failed: {cause}")
