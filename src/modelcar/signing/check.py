"""Signing parameters checked before any work (exit 2): the key parses with its password, and
the process that runs build-and-push has what signing needs (the `sign` extra; for keyless, the
`keyless` extra)."""

from __future__ import annotations

from ..errors import ParameterError
from ..param_table import SERVICE_ACCOUNT_TOKEN
from ..params import Params
from . import keyless, keys


def check_signing(params: Params, installed: bool = False) -> None:
    """`installed`: this process runs build-and-push, so the packages must be here too.

    Without it (`modelcar validate`, which may run elsewhere), a key is parsed when the
    cryptography package is at hand, and otherwise left to the process that signs.
    """
    if not params.signing:
        return
    # FOLLOW_DOWNLOAD with signing is no overlap: model.sig lists every file's digest before the
    # first layer goes, so build-and-push waits for the finished download (stages/follow.py).
    if params.sign_key is not None:
        if installed:
            keys.require_cryptography()
        if keys.available():
            password = params.sign_key_password.get_secret_value() if params.sign_key_password else None
            keys.load_private_key(params.sign_key, password)
    elif params.sign_keyless:
        if params.sigstore_identity_token_path is None:
            raise ParameterError(
                "SIGSTORE_IDENTITY_TOKEN_PATH",
                "",
                "a file holding the OIDC identity token for keyless signing (there is no service-account "
                f"token at {SERVICE_ACCOUNT_TOKEN})",
            )
        if installed:
            keyless.require_library()
        keyless.services(params.sigstore_trust_config)  # the trust config names its services
