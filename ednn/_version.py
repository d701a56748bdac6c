"""The ednn version (one place; read by the package, model files and dataset metadata)."""

__version__ = "0.1.0"
