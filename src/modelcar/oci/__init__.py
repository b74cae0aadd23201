"""The OCI side of modelcar: references, layers, images, layouts and the registry client."""
