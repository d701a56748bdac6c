"""Streaming prediction for systems of any size, in time linear in the number of atoms.

The image rows along cell vector 1 are cut into chunks (:func:`chunk_plan`:
output rows ``[a, b)``, a fixed plan that depends only on the image and the
chunk size). Each chunk's input rows ``[a - r, b + r)`` (periodic, ``r`` the
receptive radius) are rasterized from only the atoms that reach them
(:func:`ednn.image.raster.rasterize_strips` with row ``ranges``: the atoms are
binned by row once, O(N), and each chunk touches its own atoms), the density
network runs on the chunk, and its energy is added and the chunk forgotten.
Cost: O(N + pixels), plus ``2r / chunk`` rows rasterized twice; memory: one
chunk's image and the network's activations on one block of its columns
(about 2^20 input values, whatever the sheet's width). :func:`stream_energy` gives the energy, :func:`stream_predict` the energy
with a block energy map, progress reports and a split across Horovod ranks
(each rank takes a contiguous share of the same chunks, so any number of ranks
computes the same numbers), :func:`stream_outputs` every output channel
(per-voxel fields). The result equals the whole-image prediction up to float
summation order. Forces: :mod:`ednn.predict.stream_forces`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import InputError, ModelError

__all__ = ["stream_energy", "stream_predict", "stream_energy_map", "stream_outputs", "chunk_plan", "chunk_rows"]

CHUNK_VALUES = 1 << 20  # input values (pixels x channels) per chunk of rows and per network call
MIN_CHUNK_RADII = 16  # chunks and column blocks span at least this many receptive radii


def chunk_plan(n_rows: int, rows_per_chunk: int) -> list[tuple[int, int]]:
    """Output rows ``[start, stop)`` of each chunk: ``[0, n)`` cut into pieces of ``rows_per_chunk`` rows.

    The plan depends only on the image and the chunk size, never on how many
    ranks share it, so every rank count computes the same chunks (the same
    inputs, the same network calls) and their sums agree to round-off.
    """
    return [(a, min(n_rows, a + rows_per_chunk)) for a in range(0, n_rows, rows_per_chunk)]


def chunk_rows(model, p: Any, rows_per_strip: int | None = None) -> int:
    """Output rows per chunk: ``rows_per_strip``, or by default about 2^20 input values and at least 16 r
    rows, so that the 2r context rows each chunk recomputes cost <= 1/8 (2^18 values gave 36-row chunks on
    a 2e5-atom sheet: 30 % slower, measured)."""
    if rows_per_strip is None:
        rows_per_strip = max(MIN_CHUNK_RADII * model.radius,
                             CHUNK_VALUES // max(int(np.prod(p.shape[1:])) * model.in_channels, 1))
    return max(1, int(rows_per_strip))


def _strip_outputs(model, atoms: Any, rows_per_strip: int | None,
                   part: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (first output row, network outputs of rows (h, n2[, n3], n_out), w) chunk by chunk.

    Chunk ``[a, b)`` is computed from input rows ``[a - r, b + r)`` (periodic);
    ``part = (rank, size)`` takes this rank's contiguous share of the chunks.
    """
    if model.grid is None or model.head != "density":
        raise ModelError("streaming prediction needs a density-head model with a grid")
    rank, size = part
    r = model.radius
    pl = model.pipeline
    p = pl.prepare(atoms)
    w = pl.pixel_weight(p)
    n0 = p.shape[0]
    h = chunk_rows(model, p, rows_per_strip)
    if n0 < 4 * r + 2 or r == 0 or h + 2 * r > n0:  # small image: one chunk, wrap-padded whole
        if rank == 0:
            img = np.concatenate([s for _, s in pl.strips(p)], axis=0)
            yield 0, _run(model, img, r, full=True), w
        return
    chunks = chunk_plan(n0, h)
    mine = [chunks[i] for i in np.array_split(np.arange(len(chunks)), size)[rank]]
    pieces: list[list[tuple[int, int]]] = []  # each chunk's input rows as ranges within [0, n0)
    for a, b in mine:
        lo, hi = a - r, b + r
        if lo < 0:
            pieces.append([(lo + n0, n0), (0, hi)])
        elif hi > n0:
            pieces.append([(lo, n0), (0, hi - n0)])
        else:
            pieces.append([(lo, hi)])
    flat = [rg for ps in pieces for rg in ps]
    strips = pl.strips(p, rows_per_strip=n0, ranges=flat)  # one strip per range; atoms binned once
    for (a, _), ps in zip(mine, pieces, strict=True):
        rows = [next(strips)[1] for _ in ps]
        x = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)
        yield a, _run(model, x, r), w


def _run(model, rows: np.ndarray, r: int, full: bool = False) -> np.ndarray:
    """Network outputs for the interior rows of ``rows`` (axis 0 already carries r context rows).

    The network runs on blocks of output columns (axis 1) of about 2^20 input
    values each, at least 16 r columns wide, so that its activations do not
    grow with the width of the sheet (a 35-million-atom sheet is 15,000 pixels
    wide: one call on a whole 90-row strip held ~1 GB of activations); each
    block carries its r context columns on either side (<= 1/8 extra work).
    """
    d = rows.ndim - 1
    if full:
        pads = [(r, r)] * d + [(0, 0)]
    else:
        pads = [(0, 0)] + [(r, r)] * (d - 1) + [(0, 0)]
    x = (np.pad(rows, pads, mode="wrap") if r else rows).astype(np.float32, copy=False)
    if d < 2:
        return np.asarray(model._forward(x[None])[0], dtype=np.float64)
    n_cols = x.shape[1] - 2 * r
    per_col = int(np.prod(x.shape)) // x.shape[1]
    cols = max(MIN_CHUNK_RADII * max(r, 1), CHUNK_VALUES // max(per_col, 1))
    if cols >= n_cols:
        return np.asarray(model._forward(x[None])[0], dtype=np.float64)
    out = None
    for c in range(0, n_cols, cols):
        y = model._forward(x[None, :, c : min(n_cols, c + cols) + 2 * r])[0]
        if out is None:
            out = np.empty((y.shape[0], n_cols) + y.shape[2:], dtype=np.float64)
        out[:, c : c + y.shape[1]] = y
    return out


def stream_energy(model, atoms: Any, rows_per_strip: int | None = None) -> float:
    """Total energy (eV) of a structure of any size with flat memory (density head).

    Parameters
    ----------
    model : ednn.predict.model.EnergyModel
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    rows_per_strip : int, optional
        Pixel rows per rasterized strip (default: about 2^20 input values, at least 16 r rows).
    """
    return stream_predict(model, atoms, rows_per_strip)["energy"]


def stream_predict(model, atoms: Any, rows_per_strip: int | None = None, map_block: int | None = None,
                   on_progress: Callable[[int, int], None] | None = None, backend: Any = None,
                   window: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """Total energy of a structure of any size, with a block-summed energy map and progress reports.

    Parameters
    ----------
    model : ednn.predict.model.EnergyModel
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    rows_per_strip : int, optional
        Pixel rows per rasterized strip (default: about 2^20 input values, at least 16 r rows).
    map_block : int, optional
        Also return the energy map summed over blocks of ``map_block`` x
        ``map_block`` pixels (2D grids): memory ``pixels / map_block^2``.
    on_progress : callable, optional
        ``on_progress(rows_done, rows_total)`` after every chunk (image rows
        along cell vector 1; with several ranks, this rank's rows).
    backend : ednn.parallel.Backend, optional
        With ``size > 1`` (``horovodrun -np K``): each rank streams its
        contiguous share of the same chunks, and the energy and the map are
        summed over ranks (every rank returns the total). The chunks do not
        depend on the number of ranks, so K ranks equal one to round-off.
    window : (row, col, rows, cols), optional
        Also keep the per-pixel energies of this window of a 2D image (pixels
        ``row .. row + rows - 1`` along cell vector 1, ``col ..`` along cell
        vector 2, inside the image): a full-resolution zoom of a huge sheet.

    Returns
    -------
    dict
        ``energy`` (eV, references included), ``n_rows``, and with ``map_block``:
        ``map`` (eV per block, network energies without the per-atom
        references: what varies across the sheet) and ``map_block``; with
        ``window``: ``window`` (eV per pixel, same convention) and ``window_origin``.
    """
    e = model._energy()
    p = model.pipeline.prepare(atoms)  # validated once; the strips reuse it
    n0 = int(p.shape[0])
    coarse = None
    if map_block is not None:
        if len(p.shape) != 2 or int(map_block) < 1:
            raise InputError(f"map_block needs a 2D grid and an integer >= 1, got {map_block!r} for grid {p.shape}")
        f = int(map_block)
        coarse = np.zeros((-(-n0 // f), -(-int(p.shape[1]) // f)))
        col_starts = np.arange(0, int(p.shape[1]), f)
    zoom = None
    if window is not None:
        wr, wc, wh, ww = (int(v) for v in window)
        if len(p.shape) != 2 or wh < 1 or ww < 1 or wr < 0 or wc < 0 or wr + wh > n0 or wc + ww > p.shape[1]:
            raise InputError(f"window (row, col, rows, cols) = {tuple(window)} must lie inside the 2D image of "
                             f"{tuple(p.shape)} pixels")
        zoom = np.zeros((wh, ww))
    part = (0, 1) if backend is None else (int(backend.rank), int(backend.size))
    sums = []
    w = model.pipeline.pixel_weight(p)
    done = 0
    mine = -(-n0 // part[1])  # this rank's share of the rows (approximate with several ranks: whole chunks)
    for r0, y, _ in _strip_outputs(model, p, rows_per_strip, part=part):
        y = y[..., e.channel]
        sums.append(math.fsum(y.sum(axis=tuple(range(1, y.ndim))).tolist()))
        if coarse is not None:
            cols = np.add.reduceat(y, col_starts, axis=1)  # (h, m2)
            np.add.at(coarse, (r0 + np.arange(len(y))) // f, cols)
        if zoom is not None and r0 < wr + wh and r0 + len(y) > wr:
            a, b = max(r0, wr), min(r0 + len(y), wr + wh)
            zoom[a - wr : b - wr] = y[a - r0 : b - r0, wc : wc + ww]
        done += len(y)
        if on_progress is not None:
            on_progress(min(done, mine), mine)
    total = math.fsum(sums)
    if part[1] > 1:
        total = float(np.asarray(backend.allreduce_sum(np.array([total], dtype=np.float64))).reshape(-1)[0])
        if coarse is not None:
            coarse = np.asarray(backend.allreduce_sum(coarse), dtype=np.float64)
        if zoom is not None:  # each rank filled its own rows of the window, zeros elsewhere
            zoom = np.asarray(backend.allreduce_sum(zoom), dtype=np.float64)
    out: dict[str, Any] = {"energy": float(e.from_network(np.array([w * total]), model.counts(p)[None])[0]),
                           "n_rows": n0}
    if coarse is not None:
        out["map"] = coarse * w * e.scale
        out["map_block"] = int(map_block)
    if zoom is not None:
        out["window"] = zoom * w * e.scale
        out["window_origin"] = (wr, wc)
    return out


def stream_energy_map(model, atoms: Any, rows_per_strip: int | None = None) -> np.ndarray:
    """Per-pixel network energies (eV, references excluded), assembled from strips."""
    e = model._energy()
    p = model.pipeline.prepare(atoms)  # validated once; the strips reuse it
    return stream_outputs(model, p, rows_per_strip)[..., e.channel] * model.pipeline.pixel_weight(p) * e.scale


def stream_outputs(model, atoms: Any, rows_per_strip: int | None = None) -> np.ndarray:
    """All network output channels ``(n_1, ..., n_d, n_out)`` assembled from strips (per-voxel fields).

    ``atoms`` may also be the pipeline's :class:`~ednn.image.raster.Prepared`
    structure. The inputs stream with flat memory; the result itself is a
    per-voxel array the size of the image.
    """
    p = model.pipeline.prepare(atoms)
    out = np.zeros(p.shape + (model.n_out,))
    for r0, y, _ in _strip_outputs(model, p, rows_per_strip):
        out[r0 : r0 + len(y)] = y
    return out
