"""Training: cached sets, the data-parallel loop with callbacks and resume, ``train(config)``."""

from .loop import *  # noqa: F401,F403
from .loop import __all__  # noqa: F401
