"""Horovod backend (Gloo or MPI), for TensorFlow 2.21 with Keras 3 variables.

Horovod is imported only when this backend is built. Keras 3 variables are
not ``tf.Variable`` objects, so ``hvd.DistributedGradientTape`` and
``hvd.broadcast_variables`` do not work with them (horovod#4290). Instead:
gradients from a plain ``tf.GradientTape`` go through
``hvd.grouped_allreduce(..., op=hvd.Average)`` and variables are synchronised
with ``v.assign(hvd.broadcast(v.value, root_rank))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BackendError
from .base import Backend
from .launch import LaunchInfo, detect_launch

INSTALL_HINT = ("install it with `make horovod` (builds the patched Horovod 0.28.1 wheel into "
                ".venv; see the README section 'Parallel training (Horovod)')")


def import_horovod():
    """Import ``horovod.tensorflow`` or raise :class:`BackendError` saying how to install it."""
    try:
        import horovod.tensorflow as hvd
    except ImportError as exc:
        raise BackendError(f"Horovod is not importable ({exc}); {INSTALL_HINT}") from exc
    return hvd


def _variable_value(v: Any) -> Any:
    val = v.value
    return val() if callable(val) else val


class HorovodBackend(Backend):
    """Data-parallel backend on top of ``horovod.tensorflow``.

    Parameters
    ----------
    launch : LaunchInfo, optional
        What the launcher announced; used to check that Horovod sees the same
        world (a Gloo-only Horovod under ``srun -n 4`` would otherwise see four
        independent size-1 worlds).
    """

    name = "horovod"

    def __init__(self, launch: LaunchInfo | None = None):
        hvd = import_horovod()
        hvd.init()
        self._hvd = hvd
        launch = detect_launch() if launch is None else launch
        if launch.multi_rank and hvd.size() != launch.size:
            raise BackendError(
                f"the launcher ({launch.launcher}) started {launch.size} processes but Horovod "
                f"sees a world of {hvd.size()}: this Horovod cannot talk to that launcher "
                f"(mpi_built={hvd.mpi_built()}, gloo_built={hvd.gloo_built()}). Launch with "
                "`horovodrun -np N --gloo ...`, or rebuild Horovod with MPI "
                "(`make horovod-mpi`, then run .venv-mpi/bin/python; or EDNN_HOROVOD_MPI=1 scripts/build_horovod.sh "
                "VENV with your cluster's mpicc on PATH) for mpirun/srun")
        self._rank = int(hvd.rank())
        self._size = int(hvd.size())
        self._local_rank = int(hvd.local_rank())
        self._local_size = int(hvd.local_size())

    # -- topology ---------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    @property
    def local_rank(self) -> int:
        return self._local_rank

    @property
    def local_size(self) -> int:
        return self._local_size

    # -- collectives ------------------------------------------------------
    def allreduce_gradients(self, grads: Sequence[Any]) -> list:
        import tensorflow as tf

        grads = list(grads)
        if self._size == 1:
            return grads
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return grads
        dense = [tf.convert_to_tensor(grads[i]) for i in present]
        reduced = self._hvd.grouped_allreduce(dense, op=self._hvd.Average)
        out = list(grads)
        for i, g in zip(present, reduced, strict=True):
            out[i] = g
        return out

    def _reduce(self, x: Any, op: Any) -> Any:
        import tensorflow as tf

        if tf.is_tensor(x) or isinstance(x, tf.Variable):
            return self._hvd.allreduce(tf.convert_to_tensor(x), op=op)
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            arr = arr.astype(np.int64)
        else:
            raise BackendError(f"cannot allreduce an array of dtype {arr.dtype}")
        if op is self._hvd.Average and arr.dtype == np.int64:
            arr = arr.astype(np.float64)
        out = self._hvd.allreduce(tf.constant(arr), op=op).numpy()
        return out[()] if out.ndim == 0 else out

    def allreduce_sum(self, x: Any) -> Any:
        return self._reduce(x, self._hvd.Sum)

    def allreduce_mean(self, x: Any) -> Any:
        return self._reduce(x, self._hvd.Average)

    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        if self._size == 1:
            return
        for v in variables:
            v.assign(self._hvd.broadcast(_variable_value(v), root_rank=root))

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        if self._size == 1:
            return obj
        return self._hvd.broadcast_object(obj, root_rank=root)

    def barrier(self) -> None:
        if self._size == 1:
            return
        barrier = getattr(self._hvd, "barrier", None)
        if barrier is not None:
            barrier()
        else:  # Horovod 0.28 has no barrier op for TensorFlow: a tiny allreduce syncs
            self.allreduce_sum(np.zeros(1))

    def shutdown(self) -> None:
        self._hvd.shutdown()
