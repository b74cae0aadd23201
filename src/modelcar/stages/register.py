"""The register-model stage."""

from ..errors import StageUnavailable
from .context import StageContext


def run(context: StageContext) -> None:
    raise StageUnavailable("the register-model stage is not available in this version of modelcar yet")
