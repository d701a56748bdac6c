"""Ridge regression with its regularisation chosen on a validation split (NumPy only: runs in ednn's and
in the peers' environment), for the linear-readout studies."""

from __future__ import annotations

import numpy as np


def ridge(x, y, alpha):
    """Closed-form ridge on standardised columns; returns a predictor."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-12
    z = (x - mu) / sd
    ym = y.mean()
    coef = np.linalg.solve(z.T @ z + alpha * len(z) * np.eye(z.shape[1]), z.T @ (y - ym))
    return lambda q: ((q - mu) / sd) @ coef + ym


def best_ridge(x_train, y_train, x_val, y_val, alphas):
    """``(predictor, alpha, validation MAE)`` of the ``alphas`` value with the smallest validation MAE."""
    best = None
    for alpha in alphas:
        f = ridge(x_train, y_train, alpha)
        mae = float(np.mean(np.abs(f(x_val) - y_val)))
        if best is None or mae < best[2]:
            best = (f, float(alpha), mae)
    return best
