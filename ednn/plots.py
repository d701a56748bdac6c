"""Figures: parity plots, learning curves, energy maps.

Each figure has a builder that returns a :class:`matplotlib.figure.Figure`
(``parity_figure``, ``learning_curve_figure``, ``energy_map_figure``) and a
writer that builds and saves it (``parity_plot``, ``learning_curve``,
``energy_map_plot``). :func:`save_fig` writes atomically (tmp + rename) in
the format named by the file's extension: PNG at 300 dpi (fit for a paper),
or the vector formats PDF and SVG.

The figures are built with :class:`matplotlib.figure.Figure` directly, not
through pyplot, so calling these functions never changes the matplotlib
backend (a Jupyter notebook keeps its inline plots) and needs no display.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "FORMATS",
    "DPI",
    "save_fig",
    "block_map_plot",
    "parity_figure",
    "parity_plot",
    "learning_curve_figure",
    "learning_curve",
    "energy_map_figure",
    "energy_map_plot",
]

#: file formats :func:`save_fig` writes (the path's extension picks one)
FORMATS: tuple[str, ...] = ("png", "pdf", "svg")
#: resolution of raster output (PNG, and the rasterized map inside a PDF/SVG)
DPI = 300


def _figure(figsize: tuple[float, float], layout: str | None = None):
    """A figure and one axes, outside pyplot (no backend, no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots()


def figure_format(path: str | os.PathLike) -> str:
    """The figure format named by ``path``'s extension, checked against :data:`FORMATS`.

    Raises
    ------
    InputError
        The extension is missing or not one of :data:`FORMATS`.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise InputError(f"cannot save a figure as {os.fspath(path)!r}: the file name must end in one of "
                         f"{', '.join('.' + f for f in FORMATS)} (PNG at {DPI} dpi, or vector PDF/SVG)")
    return ext


def save_fig(fig: Any, path: str | os.PathLike, dpi: int = DPI) -> str:
    """Save a figure atomically (tmp + rename) in the format of ``path``'s extension.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (a pyplot figure is also closed after saving).
    path : str or os.PathLike
        Output file ending in ``.png``, ``.pdf`` or ``.svg``.
    dpi : int
        Resolution of PNG output and of rasterized artists in vector output.

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    fmt = figure_format(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.{fmt}"
    fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return path


# ---------------------------------------------------------------- parity
def parity_figure(true_per_atom: Sequence[float], pred_per_atom: Sequence[float], title: str = "",
                  groups: Sequence[Any] | None = None, baseline_mae_mev: float | None = None):
    """Predicted vs reference energy per atom (eV/atom), with MAE/RMSE in meV/atom.

    Parameters
    ----------
    true_per_atom, pred_per_atom : sequence of float
        Reference and predicted energies per atom (eV/atom).
    title : str
        Axes title.
    groups : sequence, optional
        A label per point (e.g. the structure kind); one colour and legend entry per label.
    baseline_mae_mev : float, optional
        MAE of a baseline (meV/atom) to quote beside the model's.

    Returns
    -------
    matplotlib.figure.Figure
    """
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
    return fig


def parity_plot(true_per_atom: Sequence[float], pred_per_atom: Sequence[float], path: str,
                title: str = "", groups: Sequence[Any] | None = None, baseline_mae_mev: float | None = None) -> str:
    """Write :func:`parity_figure` to ``path`` (.png, .pdf or .svg); returns ``path``."""
    return save_fig(parity_figure(true_per_atom, pred_per_atom, title, groups, baseline_mae_mev), path)


# -------------------------------------------------------- learning curve
def _log_axis(axis: Any, values: np.ndarray) -> None:
    """Readable log ticks: plain numbers (``10``, ``20``, ``50``) at 1-2-5 steps, unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = values[np.isfinite(values) & (values > 0)]
    span = math.log10(v.max() / v.min()) if v.size else 1.0
    subs = tuple(range(1, 10)) if span < 0.5 else (1.0, 2.0, 5.0) if span <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=20))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=20))
    axis.set_minor_formatter(NullFormatter())


def learning_curve_figure(log: str | os.PathLike | Sequence[dict], title: str = ""):
    """Train/validation MAE (meV/atom, log scale; the losses for per-voxel field models) and learning rate per epoch.

    Parameters
    ----------
    log : path or sequence of dict
        ``log.json`` of a run, or its parsed history (rows with ``epoch``,
        ``mae_mev``, optional ``val_mae_mev``, ``lr``).
    title : str
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        One legend names every curve (both axes); the best validation epoch is marked.
    """
    from matplotlib.ticker import MaxNLocator

    if isinstance(log, (str, os.PathLike)):
        with open(log) as fh:
            hist = json.load(fh)
    else:
        hist = list(log)
    if not hist:
        raise InputError("the training log is empty: no epoch has finished yet, so there is no curve to draw")
    ep = np.array([h["epoch"] for h in hist])
    fig, ax = _figure((5.2, 3.6))
    energy = "mae_mev" in hist[0]  # a per-voxel field model has no energy: its losses are drawn instead
    key, val_key, what = ("mae_mev", "val_mae_mev", "MAE") if energy else ("loss", "val_loss", "loss")
    mae = np.array([h[key] for h in hist], float)
    ax.plot(ep, mae, "C0-", label=f"train {what}")
    shown = [mae]
    if val_key in hist[0]:
        val = np.array([h[val_key] for h in hist], float)
        ax.plot(ep, val, "C1-", label=f"validation {what}")
        best = int(np.nanargmin(val))
        ax.plot([ep[best]], [val[best]], "C1*", ms=9, label=f"best validation ({val[best]:.3g}, epoch {ep[best]})")
        shown.append(val)
    ax.set_yscale("log")
    _log_axis(ax.yaxis, np.concatenate(shown))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(which="major", alpha=0.3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy MAE (meV/atom)" if energy else "loss (mean squared error / field scale^2)")
    handles, labels = ax.get_legend_handles_labels()
    if "lr" in hist[0]:
        ax2 = ax.twinx()
        ax2.plot(ep, [h["lr"] for h in hist], "k:", lw=0.8, label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def learning_curve(log: str | os.PathLike | Sequence[dict], path: str, title: str = "") -> str:
    """Write :func:`learning_curve_figure` to ``path`` (.png, .pdf or .svg); returns ``path``."""
    return save_fig(learning_curve_figure(log, title), path)


# ------------------------------------------------------------ energy map
def _block_edges(n: int, block: int) -> np.ndarray:
    """Pixel indices where blocks of ``block`` pixels start, plus ``n`` (the last block may be shorter)."""
    return np.append(np.arange(0, n, block), n)


def energy_map_figure(atoms: Any, emap: np.ndarray, title: str = "", block: int = 1):
    """Energy map of a 2D structure in Angstrom, in the true cell geometry, with the atoms by species.

    Pixel ``(i, j)`` of the map sits at the fractional coordinates
    ``(i/n0, j/n1)`` (:mod:`ednn.image.raster`), so it is drawn as the
    parallelogram around ``(i/n0) a1 + (j/n1) a2`` (``pcolormesh`` on the skewed
    pixel corners, equal aspect). The colour is the energy density in
    meV/Angstrom^2 minus its median, so blocks of any size and strained cells
    compare directly; the atoms are drawn on top, one colour per element
    (Jmol colours), named in the figure's legend.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (its first two cell vectors are the map's axes).
    emap : ndarray, shape (n0, n1) or (n0, n1, n2)
        Per-pixel energies (eV), e.g. ``model.energy_map(atoms)``; a 3D map is
        summed along the third cell vector.
    title : str
        Axes title.
    block : int
        Sum ``block x block`` pixels into one cell of the drawing (the last
        row and column of blocks may be narrower, so the whole cell is drawn).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ase.data import chemical_symbols
    from ase.data.colors import jmol_colors

    e = np.asarray(emap, dtype=np.float64)
    if e.ndim == 3:
        e = e.sum(axis=2)
    if e.ndim != 2:
        raise InputError(f"an energy map must have shape (n0, n1) or (n0, n1, n2), got {e.shape}")
    if not isinstance(block, int) or block < 1:
        raise InputError(f"block must be a positive integer number of pixels, got {block!r}")
    n0, n1 = e.shape
    e0, e1 = _block_edges(n0, block), _block_edges(n1, block)
    sums = np.add.reduceat(np.add.reduceat(e, e0[:-1], axis=0), e1[:-1], axis=1)
    fig, ax, (a1, a2) = _block_map(atoms.cell.array, sums, e0, e1, title)
    xy = (atoms.get_scaled_positions(wrap=True)[:, :2] % 1.0) @ np.array([a1, a2])
    size = float(np.clip(4000.0 / max(len(atoms), 1), 2.0, 30.0))
    for z in sorted(set(np.asarray(atoms.numbers).tolist())):
        sel = np.asarray(atoms.numbers) == z
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=jmol_colors[z], edgecolors="k", linewidths=0.3,
                   label=chemical_symbols[z])
    fig.legend(title="atoms", loc="outside lower center", ncol=8, fontsize=8,
               markerscale=max(1.0, 20.0 / size) ** 0.5, frameon=False)
    return fig


def _block_map(cell: Any, sums: np.ndarray, e0: np.ndarray, e1: np.ndarray, title: str,
               n: tuple[int, int] | None = None, ax: Any = None):
    """Draw block energies ``sums`` (eV; blocks start at pixel edges ``e0``, ``e1`` of an image of ``n`` pixels,
    by default ``(e0[-1], e1[-1])``) as the energy density minus its median (meV/Angstrom^2) in the true cell
    geometry, on ``ax`` or a new figure: (fig, ax, (a1, a2))."""
    cell = np.asarray(cell, dtype=np.float64)
    a1, a2 = cell[0, :2], cell[1, :2]
    n0, n1 = (int(e0[-1]), int(e1[-1])) if n is None else (int(n[0]), int(n[1]))
    f0, f1 = (e0 - 0.5) / n0, (e1 - 0.5) / n1  # pixel m covers fractions (m - 1/2)/n .. (m + 1/2)/n
    corners = f0[:, None, None] * a1 + f1[None, :, None] * a2
    area = abs(float(a1[0] * a2[1] - a1[1] * a2[0])) * np.outer(np.diff(f0), np.diff(f1))
    dens = 1000 * sums / area
    m = dens - np.median(dens)
    v = float(np.percentile(np.abs(m), 99.5)) or 1.0
    span = np.ptp(corners.reshape(-1, 2), axis=0)
    if ax is None:
        fig, ax = _figure((5.6, float(np.clip(3.9 * span[1] / max(span[0], 1e-9) + 1.5, 2.8, 8.0))),
                          layout="constrained")
    else:
        fig = ax.figure
    mesh = ax.pcolormesh(corners[..., 0], corners[..., 1], m, cmap="RdBu_r", vmin=-v, vmax=v, shading="flat",
                         rasterized=True)
    if n is None:
        outline = np.array([[0, 0], a1, a1 + a2, a2, [0, 0]])
        ax.plot(outline[:, 0], outline[:, 1], "k-", lw=0.6)
    ax.margins(0)
    ax.set_aspect("equal")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    fig.colorbar(mesh, ax=ax, label="energy density - median (meV/Å²)", shrink=0.8)
    ax.set_title(title, fontsize=9)
    return fig, ax, (a1, a2)


def block_map_plot(cell: Any, block_sums: np.ndarray, shape: tuple[int, int], block: int, path: str,
                   title: str = "", window: np.ndarray | None = None,
                   window_origin: tuple[int, int] = (0, 0)) -> str:
    """Write the map of block-summed energies (``stream_predict(..., map_block=block)["map"]``) of an image of
    ``shape`` pixels to ``path``, drawn like :func:`energy_map_figure` without the atoms (for huge sheets).

    With ``window`` (per-pixel energies of a window starting at pixel
    ``window_origin``, ``stream_predict(..., window=...)``), a second panel
    shows that window at full resolution, and the overview marks where it is.
    """
    sums = np.asarray(block_sums, dtype=np.float64)
    e0, e1 = _block_edges(int(shape[0]), int(block)), _block_edges(int(shape[1]), int(block))
    if sums.shape != (len(e0) - 1, len(e1) - 1):
        raise InputError(f"block sums of shape {sums.shape} do not fit an image of {tuple(shape)} pixels in blocks "
                         f"of {block}")
    if window is None:
        fig, _, _ = _block_map(cell, sums, e0, e1, title)
        return save_fig(fig, path)
    window = np.asarray(window, dtype=np.float64)
    r0, c0 = (int(v) for v in window_origin)
    h, w = window.shape
    if r0 < 0 or c0 < 0 or r0 + h > shape[0] or c0 + w > shape[1]:
        raise InputError(f"a window of {window.shape} pixels at {window_origin} is not inside {tuple(shape)}")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 5.4), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    _, _, (a1, a2) = _block_map(cell, sums, e0, e1, title, ax=ax0)
    w0, w1 = np.arange(r0, r0 + h + 1), np.arange(c0, c0 + w + 1)
    _block_map(cell, window, w0, w1, f"zoom: {h} x {w} pixels at full resolution", n=(int(shape[0]), int(shape[1])),
               ax=ax1)
    f = np.array([[r0, c0], [r0 + h, c0], [r0 + h, c0 + w], [r0, c0 + w], [r0, c0]], dtype=np.float64)
    box = ((f[:, 0:1] - 0.5) / shape[0]) * a1 + ((f[:, 1:2] - 0.5) / shape[1]) * a2
    ax0.plot(box[:, 0], box[:, 1], "k-", lw=1.0)
    return save_fig(fig, path)


def energy_map_plot(atoms: Any, emap: np.ndarray, path: str, title: str = "", block: int = 1) -> str:
    """Write :func:`energy_map_figure` to ``path`` (.png, .pdf or .svg); returns ``path``."""
    return save_fig(energy_map_figure(atoms, emap, title, block), path)


def atom_energy_figure(atoms: Any, energies: np.ndarray, title: str = ""):
    """Per-atom energies of a 2D structure (meV/atom, minus their median) at the atoms' wrapped positions in
    Angstrom, equal aspect, with the cell outline: where an atom-centred model puts the energy."""
    e = 1000 * np.asarray(energies, dtype=np.float64)
    if e.shape != (len(atoms),):
        raise InputError(f"need one energy per atom ({len(atoms)}), got shape {e.shape}")
    fig, ax = _figure((6.4, 5.4), layout="constrained")
    cell = atoms.cell.array
    a1, a2 = cell[0, :2], cell[1, :2]
    xy = (atoms.get_scaled_positions(wrap=True)[:, :2] % 1.0) @ np.array([a1, a2])
    corners = np.array([[0, 0], a1, a1 + a2, a2, [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], color="0.4", lw=0.8)
    dev = e - np.median(e)
    lim = float(np.percentile(np.abs(dev), 99)) or 1.0
    size = float(np.clip(4000.0 / max(len(atoms), 1), 2.0, 30.0))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=dev, s=size, cmap="RdBu_r", vmin=-lim, vmax=lim, linewidths=0)
    fig.colorbar(sc, ax=ax, label="atom energy - median (meV)")
    ax.set_aspect("equal")
    ax.set(xlabel="x (Å)", ylabel="y (Å)", title=title)
    return fig


def atom_energy_plot(atoms: Any, energies: np.ndarray, path: str, title: str = "") -> str:
    """Write :func:`atom_energy_figure` to ``path`` (.png, .pdf or .svg); returns ``path``."""
    return save_fig(atom_energy_figure(atoms, energies, title), path)


# ---------------------------------------------------------------- electronic structure
def dos_plot(energies: np.ndarray, curves: dict[str, np.ndarray], path: str, n_atoms: int = 1,
             fermi_level: float | None = None, title: str = "") -> str:
    """DOS curves (states/eV, divided by ``n_atoms``) against energy (eV), e.g. predicted against DFT."""
    fig, ax = _figure((6.0, 3.6), layout="constrained")
    for j, (name, dos) in enumerate(curves.items()):
        ax.plot(energies, np.asarray(dos) / n_atoms, color="k" if j == 0 else f"C{j - 1}", lw=1.6 if j == 0 else 1.0,
                ls="-" if j < 2 else "--", label=name)
    if fermi_level is not None:
        ax.axvline(fermi_level, color="0.5", lw=0.8, ls=":", label="Fermi level (DFT LDOS)")
    ax.set(xlabel="E (eV)", ylabel="DOS (states / eV" + (" / atom)" if n_atoms > 1 else ")"), title=title)
    ax.legend(frameon=False, fontsize=8)
    return save_fig(fig, path)


def density_slice_plot(fields: dict[str, np.ndarray], path: str, axis: int = 2, index: int = 0,
                       title: str = "") -> str:
    """Slices ``index`` along ``axis`` of 3D densities (1/A^3) side by side on one colour scale, plus the
    difference of the second from the first."""
    names = list(fields)
    sl = [np.take(np.asarray(fields[k]), index, axis=axis) for k in names]
    n = len(sl) + (1 if len(sl) == 2 else 0)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.3 * n, 3.0), layout="constrained")
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    lo, hi = min(float(s.min()) for s in sl), max(float(s.max()) for s in sl)
    for ax, name, s in zip(axes, names, sl, strict=False):
        im = ax.imshow(s.T, origin="lower", vmin=lo, vmax=hi, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[: len(sl)], label="density (1/A^3)", shrink=0.8)
    if len(sl) == 2:
        d = sl[1] - sl[0]
        v = float(np.abs(d).max()) or 1.0
        im2 = axes[2].imshow(d.T, origin="lower", vmin=-v, vmax=v, cmap="RdBu_r")
        axes[2].set_title(f"{names[1]} - {names[0]}", fontsize=9)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        fig.colorbar(im2, ax=axes[2], shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_fig(fig, path)
