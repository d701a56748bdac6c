"""Figures: parity plots, learning curves, energy maps (atomic PNG writes).

The figures are built with :class:`matplotlib.figure.Figure` directly, not
through pyplot, so calling these functions never changes the matplotlib
backend (a Jupyter notebook keeps its inline plots) and needs no display.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["parity_plot", "learning_curve", "energy_map_plot", "save_fig"]


def _figure(figsize: tuple[float, float]):
    """A figure and one axes, outside pyplot (no backend, no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save_fig(fig, path: str | os.PathLike, dpi: int = 120) -> str:
    """Save a figure atomically (tmp + rename); a pyplot figure is also closed."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return path


def parity_plot(true_per_atom: Sequence[float], pred_per_atom: Sequence[float], path: str,
                title: str = "", groups: Sequence[Any] | None = None, baseline_mae_mev: float | None = None) -> str:
    """Predicted vs reference energy per atom (eV/atom), with MAE/RMSE in meV/atom."""
    t, p = np.asarray(true_per_atom, float), np.asarray(pred_per_atom, float)
    err = 1000 * (p - t)
    fig, ax = _figure((4.6, 4.4))
    if groups is None:
        ax.scatter(t, p, s=8, alpha=0.7)
    else:
        g = np.asarray(groups)
        for k in sorted(set(g.tolist())):
            sel = g == k
            ax.scatter(t[sel], p[sel], s=8, alpha=0.7, label=str(k))
        ax.legend(fontsize=7, markerscale=2)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel("reference energy (eV/atom)")
    ax.set_ylabel("EDNN energy (eV/atom)")
    txt = f"MAE {np.mean(np.abs(err)):.2f} meV/atom\nRMSE {np.sqrt(np.mean(err**2)):.2f} meV/atom\nN = {len(t)}"
    if baseline_mae_mev is not None:
        txt += f"\ncomposition baseline {baseline_mae_mev:.1f}"
    ax.text(0.04, 0.96, txt, transform=ax.transAxes, va="top", fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_fig(fig, path)


def learning_curve(log: str | Sequence[dict], path: str, title: str = "") -> str:
    """Train/validation MAE (meV/atom, log scale) and learning rate per epoch from ``log.json``."""
    hist = json.load(open(log)) if isinstance(log, str) else list(log)
    ep = [h["epoch"] for h in hist]
    fig, ax = _figure((5.2, 3.6))
    ax.plot(ep, [h["mae_mev"] for h in hist], label="train MAE")
    if hist and "val_mae_mev" in hist[0]:
        ax.plot(ep, [h["val_mae_mev"] for h in hist], label="validation MAE")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("meV/atom")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["lr"] for h in hist], "k:", lw=0.8, label="learning rate")
    ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_fig(fig, path)


def energy_map_plot(atoms: Any, emap: np.ndarray, path: str, title: str = "") -> str:
    """Per-pixel energy map (meV per pixel) of a 2D structure with the atoms overlaid (cell coordinates)."""
    fig, ax = _figure((5, 4.4))
    n0, n1 = emap.shape
    m = emap - np.median(emap)
    v = float(np.percentile(np.abs(m), 99.5)) or 1.0
    im = ax.imshow(1000 * m.T, origin="lower", cmap="RdBu_r", vmin=-1000 * v, vmax=1000 * v,
                   extent=(0, n0, 0, n1), aspect="auto")
    frac = atoms.get_scaled_positions()[:, :2] % 1.0
    ax.scatter(frac[:, 0] * n0, frac[:, 1] * n1, s=3, c="k", alpha=0.5)
    fig.colorbar(im, ax=ax, label="energy - median (meV)")
    ax.set_xlabel("along cell vector 1 (map cells)")
    ax.set_ylabel("along cell vector 2 (map cells)")
    ax.set_title(title, fontsize=9)
    return save_fig(fig, path)
