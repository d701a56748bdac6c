"""The backend interface the training loop talks to, plus pure helpers.

Rules that make data-parallel training equal to serial training
---------------------------------------------------------------
* Every rank draws the same per-epoch permutation (:func:`epoch_permutation`
  with the same seed), then keeps a strided share of it
  (:meth:`Backend.shard`): rank ``r`` of ``P`` takes positions
  ``r, r + P, r + 2P, ...``. With a per-rank batch of ``b = B / P``
  (:meth:`Backend.local_batch_size`), step ``j`` on all ranks together covers
  exactly positions ``j*B ... (j+1)*B - 1`` of the permutation, i.e. the same
  global batch a serial run with batch ``B`` uses at step ``j``.
* The remainder is padded, not dropped: when ``len(indices)`` is not a
  multiple of ``P`` the permutation is extended by wrapping around to its
  start, so at most ``P - 1`` samples are seen twice in that epoch and every
  rank gets the same number of samples, hence the same number of steps (a
  rank with one step more would wait forever in the allreduce).
* Each rank averages its per-structure loss over its own ``b`` structures;
  :meth:`Backend.allreduce_gradients` averages the gradients over ranks. With
  equal per-rank counts that is the mean over the global batch, exactly the
  serial gradient (up to float summation order).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

LR_RULES = ("none", "linear", "sqrt")


def shard_indices(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Strided share of ``indices`` for ``rank`` out of ``size``, padded by wrapping.

    Parameters
    ----------
    indices : numpy.ndarray
        1-D array, typically this epoch's permutation (identical on all ranks).
    rank, size : int
        This process' rank and the number of ranks.

    Returns
    -------
    numpy.ndarray
        ``padded[rank::size]`` where ``padded`` is ``indices`` extended by
        wrapping to a length that is a multiple of ``size``. All ranks get
        ``ceil(len(indices) / size)`` entries.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ConfigError(f"shard expects a 1-D index array, got shape {idx.shape}")
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"invalid rank {rank} for size {size}")
    n = len(idx)
    if n == 0:
        raise ConfigError("cannot shard an empty index array: the dataset split has no samples")
    padded_len = -(-n // size) * size
    if padded_len != n:
        idx = np.resize(idx, padded_len)  # wraps around to the start
    return idx[rank::size]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` used in ``epoch``; the same on every rank.

    Depends only on ``(seed, epoch)``, so a resumed run continues with the
    same data order as an uninterrupted one.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(int(n))


def scale_learning_rate(lr: float, rule: str, size: int) -> float:
    """Scale a base learning rate with the number of ranks.

    Parameters
    ----------
    lr : float
        Learning rate that suits one process with the same global batch.
    rule : {"none", "linear", "sqrt"}
        ``none``: unchanged (right when the global batch is fixed, as in
        ednn, where the per-rank batch is ``B / size``); ``linear``:
        ``lr * size`` (Goyal et al., for a global batch that grows with
        ``size``); ``sqrt``: ``lr * sqrt(size)``.
    size : int
        Number of ranks.
    """
    if rule not in LR_RULES:
        raise ConfigError(f"unknown learning-rate scaling rule {rule!r}: use one of {LR_RULES}")
    if rule == "linear":
        return float(lr) * size
    if rule == "sqrt":
        return float(lr) * math.sqrt(size)
    return float(lr)


class Backend(ABC):
    """What the training loop may ask of the parallel environment.

    Implementations: :class:`~ednn.parallel.serial.SerialBackend` and
    :class:`~ednn.parallel.horovod_backend.HorovodBackend`. Obtain one with
    :func:`ednn.parallel.get_backend`.
    """

    name: str = "abstract"

    # -- topology ---------------------------------------------------------
    @property
    @abstractmethod
    def rank(self) -> int:
        """Global rank of this process (0 ... size-1)."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of processes training together."""

    @property
    @abstractmethod
    def local_rank(self) -> int:
        """Rank among the processes on this node (used to pick a GPU)."""

    @property
    def local_size(self) -> int:
        """Number of processes on this node."""
        return 1

    @property
    def is_chief(self) -> bool:
        """True on rank 0, the only rank that writes files and logs."""
        return self.rank == 0

    # -- collectives ------------------------------------------------------
    @abstractmethod
    def allreduce_gradients(self, grads: Sequence[Any]) -> list:
        """Average gradients over ranks; ``None`` entries stay ``None``."""

    @abstractmethod
    def allreduce_sum(self, x: Any) -> Any:
        """Sum over ranks of a tensor, NumPy array or scalar.

        NumPy/Python inputs come back as NumPy (floats as float64, ints as
        int64) so that global metric sums and counts are exact; tensors come
        back as tensors.
        """

    @abstractmethod
    def allreduce_mean(self, x: Any) -> Any:
        """Mean over ranks; same input/output conventions as :meth:`allreduce_sum`."""

    @abstractmethod
    def broadcast_variables(self, variables: Sequence[Any], root: int = 0) -> None:
        """Overwrite ``variables`` (Keras 3 or tf variables) with the root's values."""

    @abstractmethod
    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Return the root's value of a picklable Python object on every rank."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait until every rank reaches this point."""

    # -- placement --------------------------------------------------------
    def pin_gpu(self) -> str | None:
        """Make GPU ``local_rank`` (modulo the GPU count) the only visible GPU.

        Must run before TensorFlow touches a GPU. Enables memory growth.
        Returns the pinned device name, or ``None`` when there is no GPU.
        """
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        gpu = gpus[self.local_rank % len(gpus)]
        try:
            tf.config.set_visible_devices(gpu, "GPU")
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TF already initialised its devices
            return None
        return gpu.name

    # -- data and learning rate ----------------------------------------------
    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's strided share of an epoch permutation (see module docs).

        Padding by wrapping: every rank gets ``ceil(n / size)`` indices.
        """
        return shard_indices(indices, self.rank, self.size)

    def local_batch_size(self, global_batch: int) -> int:
        """Per-rank batch ``global_batch / size``; the global batch must divide evenly."""
        if global_batch < self.size or global_batch % self.size:
            raise ConfigError(
                f"global batch size {global_batch} is not a multiple of the {self.size} ranks: "
                f"choose a batch size divisible by {self.size}")
        return global_batch // self.size

    def scale_lr(self, lr: float, rule: str = "none") -> float:
        """Learning rate scaled by ``rule`` in {"none", "linear", "sqrt"} for ``size`` ranks."""
        return scale_learning_rate(lr, rule, self.size)

    def shutdown(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release the backend (no-op for serial)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"
