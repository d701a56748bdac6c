"""One family of errors. Every message says what was wrong and what to do."""

from __future__ import annotations


class EdnnError(Exception):
    """Base class of all errors raised by ednn."""


class InputError(EdnnError, ValueError):
    """A structure, array or argument given by the user is invalid."""


class GridError(InputError):
    """A grid specification or an image/tile geometry is invalid."""


class SpeciesError(InputError):
    """A structure contains an element that the grid (or model) does not know."""


class DatasetError(EdnnError):
    """A dataset file is missing, corrupt, or lacks required fields."""


class ConfigError(EdnnError, ValueError):
    """A configuration has unknown keys, wrong types or invalid values."""


class ModelError(EdnnError):
    """A model artifact is missing, corrupt, or incompatible with the input."""


class BackendError(EdnnError, RuntimeError):
    """The parallel backend (e.g. Horovod) is unavailable or misconfigured."""
