"""One process: every collective is the identity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Backend


def _as_exact_numpy(x: Any) -> np.ndarray | np.generic:
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        arr = arr.astype(np.int64)
    return arr[()] if arr.ndim == 0 else arr


def _is_tensor(x: Any) -> bool:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TF is a hard dependency
        return False
    return tf.is_tensor(x) or isinstance(x, tf.Variable)


class SerialBackend(Backend):
    """Backend for a single process (rank 0 of 1)."""

    name = "serial"

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    @property
    def local_rank(self) -> int:
        return 0

    def allreduce_gradients(self, grads: Sequence[Any]) -> list:
        return list(grads)

    def allreduce_sum(self, x: Any) -> Any:
        return x if _is_tensor(x) else _as_exact_numpy(x)

    def allreduce_mean(self, x: Any) -> Any:
        return x if _is_tensor(x) else _as_exact_numpy(x)

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        return None

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        return None
