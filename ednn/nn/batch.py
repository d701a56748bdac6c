"""Batches: network inputs of several structures (and their per-voxel labels) for one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Batch", "make_batch"]


class Batch:
    """Network inputs of several structures, ready for one forward pass.

    Attributes
    ----------
    x : float32 array (B', ..., C)
        Wrap-padded images (density head; zero-padded at the far end to a
        common shape) or tiles (dense head).
    mask : float32 array (B', ...)
        Pixel weight ``w`` on real output pixels, 0 on padding.
    seg : int32 array (B',)
        Structure index (within the batch) of each row of ``x``.
    n : int
        Number of structures.
    fields : float32 array (B', ..., F) or None
        Per-voxel labels (network units) on the output pixels, 0 on padding.
    """

    def __init__(self, x: np.ndarray, mask: np.ndarray, seg: np.ndarray, n: int, fields: np.ndarray | None = None):
        self.x, self.mask, self.seg, self.n, self.fields = x, mask, seg, n, fields


def make_batch(samples: Sequence[tuple[np.ndarray, float]], head: str, radius: int,
               fields: Sequence[np.ndarray] | None = None) -> Batch:
    """Assemble a batch from ``(network_input, pixel_weight)`` samples.

    For the density head each input is a wrap-padded image of spatial shape
    ``n_i + 2 r``; images of different shapes are zero-padded at the far end
    and their extra outputs masked out (valid convolutions never mix the
    padding into real outputs). For the dense head each input is a stack of
    tiles ``(T_i, t, ..., C)``. ``fields``: one ``(n_i..., F)`` label array per
    sample (density head only).
    """
    if head == "dense":
        x = np.concatenate([s[0] for s in samples], axis=0)
        seg = np.concatenate([np.full(len(s[0]), i, np.int32) for i, s in enumerate(samples)])
        mask = np.concatenate([np.full(len(s[0]), s[1], np.float32) for s in samples])
        return Batch(x.astype(np.float32, copy=False), mask, seg, len(samples))
    shapes = np.array([s[0].shape[:-1] for s in samples])
    big = tuple(int(v) for v in shapes.max(0))
    C = samples[0][0].shape[-1]
    B = len(samples)
    x = np.zeros((B,) + big + (C,), dtype=np.float32)
    out_shape = tuple(b - 2 * radius for b in big)
    mask = np.zeros((B,) + out_shape, dtype=np.float32)
    lab = None if fields is None else np.zeros((B,) + out_shape + (fields[0].shape[-1],), dtype=np.float32)
    for i, (img, w) in enumerate(samples):
        x[(i,) + tuple(slice(0, s) for s in img.shape[:-1])] = img
        real = (i,) + tuple(slice(0, s - 2 * radius) for s in img.shape[:-1])
        mask[real] = w
        if lab is not None:
            lab[real] = fields[i]
    return Batch(x, mask, np.arange(B, dtype=np.int32), B, lab)
