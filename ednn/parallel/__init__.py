"""Serial and Horovod backends behind one small interface.

The training loop asks only :class:`Backend` questions (rank, size,
is_chief, allreduce, broadcast, barrier, shard, scale_lr) and never tests
which backend it has::

    from ednn.parallel import get_backend
    backend = get_backend("auto")   # horovod iff launched with > 1 process
    backend.pin_gpu()
"""

from __future__ import annotations

from ..errors import BackendError, ConfigError
from .base import (
    LR_RULES,
    Backend,
    epoch_permutation,
    scale_learning_rate,
    shard_indices,
)
from .horovod_backend import HorovodBackend
from .launch import LaunchInfo, detect_launch
from .serial import SerialBackend

BACKENDS = ("auto", "serial", "horovod")

__all__ = [
    "BACKENDS",
    "LR_RULES",
    "Backend",
    "HorovodBackend",
    "LaunchInfo",
    "SerialBackend",
    "detect_launch",
    "epoch_permutation",
    "get_backend",
    "scale_learning_rate",
    "shard_indices",
]

_HOROVOD_BACKEND = None


def get_backend(name: str = "auto") -> Backend:
    """Return the backend for this process.

    Parameters
    ----------
    name : {"auto", "serial", "horovod"}
        ``auto``: Horovod when the process was launched as one of several
        ranks (see :func:`detect_launch`), serial otherwise. ``horovod``:
        always Horovod (also for one process). ``serial``: one process; refused
        under a multi-rank launch, where every rank would train alone and
        overwrite the others' files.

    Raises
    ------
    BackendError
        Multi-rank launch (or ``name="horovod"``) without an importable
        Horovod (the message says to run ``make horovod``), or ``serial``
        requested under a multi-rank launch.
    ConfigError
        Unknown ``name``.
    """
    global _HOROVOD_BACKEND
    if name not in BACKENDS:
        raise ConfigError(f"unknown parallel backend {name!r}: use one of {BACKENDS}")
    launch = detect_launch()
    if name == "serial":
        if launch.multi_rank:
            raise BackendError(
                f"backend 'serial' requested but this process is rank {launch.rank} of "
                f"{launch.size} launched by {launch.launcher}: every rank would train alone. "
                "Use backend 'auto'/'horovod', or launch a single process")
        return SerialBackend()
    if name == "auto" and not launch.multi_rank:
        return SerialBackend()
    if _HOROVOD_BACKEND is None:
        from .horovod_backend import import_horovod

        if launch.multi_rank:
            try:
                import_horovod()
            except BackendError as exc:
                raise BackendError(
                    f"launched as rank {launch.rank} of {launch.size} by {launch.launcher}, "
                    f"but {exc}. Refusing to train serially in each process.") from exc
        _HOROVOD_BACKEND = HorovodBackend(launch)
    return _HOROVOD_BACKEND
