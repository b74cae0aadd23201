"""modelcar: Hugging Face model -> ModelCar OCI image -> registry -> Model Registry."""

__version__ = "0.1.0"
