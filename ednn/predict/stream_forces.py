"""Energy and forces of a structure of any size with flat memory: the streamed gradient.

The energy is a sum over the chunks of :func:`ednn.predict.stream.chunk_plan`
(output rows ``[a, b)`` of the image along cell vector 1, each computed from
input rows ``[a - r, b + r)``), so its gradient is the sum of the chunks'
gradients. For each chunk, only the atoms whose Gaussians reach its input rows
are rasterized with TensorFlow (:func:`ednn.image.raster_tf.rasterize_tf_core`
with a row window), the network runs on the chunk, and the gradient of the
chunk's energy with respect to those atoms' positions is added to their forces.
Memory is that of one chunk (its atoms, its image, the network's activations),
whatever the size of the structure.

The height channels measure heights from the structure's mean plane, which
depends on every atom: each chunk also returns its derivative with respect to
that plane, and the sum over chunks, divided by N, is added to every atom's z
gradient, exactly as the whole-image gradient has it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ModelError
from ..image.raster import _bin_by_row, _norm, _stencil, atoms_reaching_rows
from .stream import chunk_plan, chunk_rows

__all__ = ["stream_forces"]


def _chunk_function(model):
    """One compiled function for every chunk: (positions, weights, channels, window, z_ref, inputs) ->
    (energy sum of the chunk's interior rows in network units x w, d/dpositions, d/dz_ref)."""
    import tensorflow as tf

    if getattr(model, "_chunk_grad_fn", None) is not None:
        return model._chunk_grad_fn
    pl = model._pipeline()
    g = pl.grid
    channel = model._energy().channel

    @tf.function(reduce_retracing=True)
    def fn(pos, weights, channels, window, z_ref, inputs):
        with tf.GradientTape() as tape:
            tape.watch(pos)
            tape.watch(z_ref)
            rin = dict(inputs)
            rin["weights"], rin["channels"] = weights, channels
            img = pl.raster_window(pos, rin, window, z_ref)  # (h_in, n_2, ..., C_in) network channels
            for ax in range(1, g.dim):  # periodic wrap by r pixels along the other axes; rows carry context
                img = tf.gather(img, inputs[f"pad{ax}"], axis=ax)
            y = model.network(img[None], training=False)[0, ..., channel]
            e = tf.reduce_sum(tf.cast(y, tf.float64))
        dpos, dz = tape.gradient(e, [pos, z_ref])
        return e, dpos, dz

    model._chunk_grad_fn = fn
    return fn


def stream_forces(model, atoms: Any, rows_per_strip: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (N, 3) (eV/Angstrom) of a structure of any size, streamed chunk by chunk.

    Parameters
    ----------
    model : ednn.predict.model.EnergyModel
        A density-head model with a grid.
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    rows_per_strip : int, optional
        Output rows per chunk (default as :func:`~ednn.predict.stream.stream_energy`).
    on_progress : callable, optional
        ``on_progress(rows_done, rows_total)`` after every chunk.

    Returns
    -------
    (float, ndarray)
        The energy and the forces, equal to the whole-image calculator's to
        round-off (float32 network).
    """
    import tensorflow as tf

    if model.grid is None or model.head != "density":
        raise ModelError("streamed forces need a density-head model with a grid")
    pl = model._pipeline()
    p = pl.prepare(atoms)
    e_out = model._energy()
    r = model.radius
    n = np.asarray(p.shape)
    n0 = int(n[0])
    inputs = {k: v for k, v in pl.tf_inputs(p).items() if k not in ("weights", "channels", "pad0")}
    weights_all = p.weight() * _norm(pl.grid)
    channels_all = p.channel().astype(np.int64)
    h = chunk_rows(model, p, rows_per_strip)
    if h + 2 * r > n0:
        h = max(1, n0 - 2 * r)
    if h < 1 or n0 < 2 * r + 1:
        raise ModelError(f"the image has {n0} rows, too few to stream with a receptive radius of {r}; "
                         "use the calculator (whole image) for so small a structure")
    off = _stencil(p.lattice, p.shape, pl.grid.radius)
    o0min, o0max = int(off[:, 0].min()), int(off[:, 0].max())
    order, starts = _bin_by_row(p, n)
    z_ref = tf.constant(float(p.positions[:, 2].mean()) if p.n_atoms else 0.0, tf.float32)
    fn = _chunk_function(model)
    forces = np.zeros((p.n_atoms, 3))
    dz_total = 0.0
    sums = []
    done = 0
    for a, b in chunk_plan(n0, h):
        lo_row, h_in = a - r, (b - a) + 2 * r
        sel = atoms_reaching_rows(order, starts, lo_row % n0, h_in, o0min, o0max)
        if len(sel) == 0:
            continue
        window = tf.constant([lo_row % n0, h_in], tf.int64)
        e, dpos, dz = fn(tf.constant(p.positions[sel], tf.float32), tf.constant(weights_all[sel], tf.float64),
                         tf.constant(channels_all[sel]), window, z_ref, inputs)
        sums.append(float(e.numpy()))
        np.add.at(forces, sel, -np.asarray(dpos.numpy(), dtype=np.float64))
        dz_total += 0.0 if dz is None else float(dz.numpy())
        done += b - a
        if on_progress is not None:
            on_progress(done, n0)
    scale = pl.pixel_weight(p) * e_out.scale
    forces *= scale
    if p.n_atoms:
        forces[:, 2] -= scale * dz_total / p.n_atoms  # d z_ref / d z_i = 1/N for every atom
    energy = float(e_out.from_network(np.array([pl.pixel_weight(p) * math.fsum(sums)]), model.counts(p)[None])[0])
    return energy, forces
