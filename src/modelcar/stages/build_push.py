"""The build-and-push stage."""

from ..errors import StageUnavailable
from .context import StageContext


def run(context: StageContext) -> None:
    raise StageUnavailable("the build-and-push stage is not available in this version of modelcar yet")
