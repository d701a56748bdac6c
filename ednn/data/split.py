"""The one train/validation/test split rule of ednn.

Training (``ednn.train``), :meth:`ednn.data.Dataset.split` and every experiment
split records with :func:`split_indices`. The test set is ``perm[:n_test]`` of a
seeded permutation, so it depends only on ``n``, the test fraction and the seed:
changing the validation fraction never moves a record into or out of the test set.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["split_indices"]


def _fraction(name: str, f: float) -> float:
    try:
        f = float(f)
    except (TypeError, ValueError) as e:
        raise InputError(f"split fraction {name}={f!r} must be a number in [0, 1)") from e
    if not (0.0 <= f < 1.0) or not math.isfinite(f):
        raise InputError(f"split fraction {name}={f} must be in [0, 1) (0.1 keeps a tenth of the records)")
    return f


def split_indices(
    n: int, val: float = 0.1, test: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic random train/validation/test split of ``range(n)``.

    With ``perm = np.random.default_rng(seed).permutation(n)``,
    ``n_test = round(test * n)`` and ``n_val = round(val * n)``: the test set is
    ``perm[:n_test]``, validation ``perm[n_test:n_test + n_val]`` and training the rest.

    Parameters
    ----------
    n : int
        Number of records (>= 0).
    val, test : float
        Fractions in [0, 1) for validation and test; ``val + test`` must stay below 1.
    seed : int
        Seed (>= 0) of the permutation; the same seed gives the same split.

    Returns
    -------
    train, val, test : np.ndarray
        Sorted int64 index arrays, disjoint, covering ``range(n)``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"split_indices needs a record count n >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"split seed must be an integer >= 0, got {seed!r}")
    val, test = _fraction("val", val), _fraction("test", test)
    n = int(n)
    if val + test >= 1.0 and n > 0:
        raise InputError(f"val + test = {val + test} leaves no training data; make it < 1")
    perm = np.random.default_rng(int(seed)).permutation(n)
    n_test = int(round(test * n))
    n_val = int(round(val * n))
    te = np.sort(perm[:n_test])
    va = np.sort(perm[n_test : n_test + n_val])
    tr = np.sort(perm[n_test + n_val :])
    return tr.astype(np.int64), va.astype(np.int64), te.astype(np.int64)
