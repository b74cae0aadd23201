"""Exceptions that carry a message a user can act on, and the exit status that goes with it.

The CLI prints a ModelcarError's message, without a traceback, and exits with its `exit_code`;
anything else is a bug and says so. The tree (each class in the module that raises it):

    ModelcarError (exit 1)
    +-- UsageError (exit 2): bad input, before any work starts
    |   +-- ParameterError: one parameter's value            (here)
    |   +-- CalibrationDataError, MissingExtra,
    |       NotACausalLM, ModelNotFound                      (compression/)
    +-- StageFailed: a stage failed; `.cause` is what it raised, its type kept   (here)
    +-- RegistryError: an OCI registry's error answer, `.status` and the
    |   |              distribution error `.codes`             (oci/errors.py)
    |   +-- RegistryUnreachable: no answer at all (DNS, refused, TLS)
    |   +-- InsecureLocation: a plain-http Location or redirect while TLS is verified
    |       +-- InsecureRealm: a token server that is not https
    +-- ImageError, BaseUnreachable, DestinationUnreachable  (oci/build.py)
    +-- LayoutError, ImageReadError, PullError, ModelDirError,
    |   HostileEntry, Mismatch                               (oci/)
    +-- Aborted: another transfer of the build failed: this one stops too   (here)
    +-- ModelRegistryError                                   (modelregistry/errors.py)
    |   +-- ModelRegistryUnreachable, AuthRefused, NotAModelRegistry, VersionConflict
    |   +-- ModelRegistryApiError: an error answer, `.status`; NotFound (404), Conflict (409)
    +-- HubError, TransferError (sources/hub.py, sources/hub_transfer.py), DownloadFailed (readyfiles.py),
    |   FileReplaced (growing_file.py)
    +-- QualityGateFailed, CompressionFailed, OutOfMemory    (compression/)
    +-- SignatureInvalid, ImageNotSigned, SigstoreUnreachable (signing/)
    +-- NotEnoughSpace, WorkspaceBusy, UnsafeSymlink, NothingMatched, FilesDeleted, NoPushedImage

Inside a transfer, a few plain exceptions carry state between layers and never reach the user:
upload.py's UploadInterrupted and SessionLost, sendfile.py's SendFailed (an httpx.NetworkError),
sources/hub_transfer.py's Interrupted.

What is transient (worth another try) is decided in one place, retry.py, for every server.
"""

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


class StageFailed(ModelcarError):
    """A stage failed; the message names the stage and the cause. `cause` is the exception the
    stage raised, of its own type (a RegistryError, a HubError...), for callers that tell them
    apart; the exit status is the cause's."""

    def __init__(self, stage: str, cause: BaseException, message: str | None = None) -> None:
        self.stage = stage
        self.cause = cause
        self.exit_code = cause.exit_code if isinstance(cause, ModelcarError) else 1
        super().__init__(f"stage {stage} failed: {cause if message is None else message}")


class Aborted(ModelcarError):
    """Another transfer of the same build failed, or the run was interrupted: this one stops too."""
