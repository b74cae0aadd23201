"""modelcar: Hugging Face model -> ModelCar OCI image -> registry -> Model Registry."""

from . import _lean_httpx

__version__ = "0.1.0"

_lean_httpx.install()
