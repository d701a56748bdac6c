"""Tiler: exact domain decomposition (issue 3, must-show 5 and 6)."""

from __future__ import annotations

import numpy as np
import pytest

from ednn.errors import GridError
from ednn.image.tiling import layout_for, tile, tile_tf, untile, untile_tf, wrap_pad


@pytest.mark.parametrize(
    "shape,focus,context",
    [((12, 12), 4, 2), ((13, 7), 5, 3), ((10, 9, 11), 4, 2), ((6, 6), 6, 6), ((9, 8), 3, 1)],
)
def test_tile_untile_identity(shape, focus, context):
    rng = np.random.default_rng(0)
    img = rng.normal(size=shape + (3,))
    tiles, lay = tile(img, focus, context)
    d = len(shape)
    assert tiles.shape == (lay.n_tiles,) + (focus + 2 * context,) * d + (3,)
    focus_part = tiles[(slice(None),) + (slice(context, context + focus),) * d]
    np.testing.assert_array_equal(untile(focus_part, lay), img)
    # every image pixel is the focus of exactly one tile
    ids = np.arange(np.prod(shape)).reshape(shape + (1,)).astype(float)
    t_ids, _ = tile(ids, focus, context)
    fp = t_ids[(slice(None),) + (slice(context, context + focus),) * d][..., 0]
    real = fp[lay.mask.astype(bool)]
    assert sorted(real.astype(int).tolist()) == list(range(int(np.prod(shape))))
    assert lay.mask.sum() == np.prod(shape)
    assert lay.exact == all(n % focus == 0 for n in shape)


def test_tile_content_is_periodic_wrap():
    img = np.arange(5 * 5, dtype=float).reshape(5, 5, 1)
    tiles, lay = tile(img, 5, 2)
    assert lay.n_tiles == 1
    np.testing.assert_array_equal(tiles[0], wrap_pad(img, 2))
    tiles, lay = tile(img, 2, 1)  # 3x3 tiles, last focus column/row padded
    assert lay.grid == (3, 3)
    # tile (1, 2): rows 1..4, columns 3..6 -> wrapped indices
    np.testing.assert_array_equal(tiles[1 * 3 + 2][..., 0], img[np.ix_([1, 2, 3, 4], [3, 4, 0, 1])][..., 0])


def test_tf_tile_untile_match_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    img = rng.normal(size=(11, 9, 2)).astype(np.float32)
    tiles, lay = tile(img, 4, 3)
    np.testing.assert_array_equal(tile_tf(tf.constant(img), lay).numpy(), tiles)
    fo = tiles[:, 3:7, 3:7]
    np.testing.assert_array_equal(untile_tf(tf.constant(fo), lay).numpy(), untile(fo, lay))


def _conv_stack(dim: int, channels: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    Conv = keras.layers.Conv2D if dim == 2 else keras.layers.Conv3D
    layers = [
        Conv(6, 3, padding="valid", activation="tanh"),
        Conv(5, 5 if dim == 2 else 3, padding="valid", activation="softplus"),
        Conv(2, 1, padding="valid"),
    ]
    radius = 1 + (2 if dim == 2 else 1)
    inp = keras.Input(shape=(None,) * dim + (channels,))
    x = inp
    for lay in layers:
        x = lay(x)
    return keras.Model(inp, x), radius


@pytest.mark.parametrize(
    "shape,focus,context",
    [((16, 16), 4, 3), ((14, 11), 5, 3), ((13, 13), 6, 4), ((9, 8, 10), 4, 2)],
)
def test_valid_conv_on_tiles_equals_circular_conv_on_image(shape, focus, context):
    dim = len(shape)
    net, radius = _conv_stack(dim, 3, seed=7)
    assert radius <= context
    rng = np.random.default_rng(2)
    img = rng.normal(size=shape + (3,)).astype(np.float32)
    # whole periodic image: circular padding by the receptive radius, valid convolutions
    whole = net(wrap_pad(img, radius)[None]).numpy()[0]
    assert whole.shape == shape + (2,)
    tiles, lay = tile(img, focus, context)
    out = net(tiles).numpy()  # (T, f + 2(c - r), ..., 2)
    trim = context - radius
    focus_out = out[(slice(None),) + (slice(trim, trim + focus),) * dim]
    np.testing.assert_allclose(untile(focus_out, lay), whole, rtol=0, atol=1e-5)


def test_zero_context_instead_of_wrap_breaks_equivalence():
    # the control: the same tiles with zeros instead of periodic context differ at the edges
    net, radius = _conv_stack(2, 3, seed=7)
    rng = np.random.default_rng(3)
    img = rng.normal(size=(12, 12, 3)).astype(np.float32)
    whole = net(wrap_pad(img, radius)[None]).numpy()[0]
    tiles, lay = tile(img, 12, radius)
    zero = np.pad(img, [(radius, radius), (radius, radius), (0, 0)])[None]
    assert zero.shape == tiles.shape
    np.testing.assert_allclose(untile(net(tiles).numpy(), lay), whole, atol=1e-5)
    assert np.abs(untile(net(zero).numpy(), lay) - whole).max() > 1e-2


@pytest.mark.parametrize(
    "args,match",
    [
        (((8, 8), 0, 2), "focus must be a positive integer"),
        (((8, 8), 4, 0), "context must be a positive integer"),
        (((8, 8), -1, 2), "focus must be a positive integer"),
        (((8, 8), 9, 2), "focus=9 is larger than the image"),
        (((8, 5), 4, 6), "context=6 is larger than the image"),
        (((8, 8), 2.5, 2), "focus must be a positive integer"),
    ],
)
def test_bad_tiling_parameters(args, match):
    with pytest.raises(GridError, match=match):
        layout_for(*args)


def test_bad_shapes():
    with pytest.raises(GridError, match="channel axis"):
        tile(np.zeros((8,)), 2, 1)
    lay = layout_for((8, 8), 4, 2)
    with pytest.raises(GridError, match="untile expects"):
        untile(np.zeros((3, 4, 4, 1)), lay)
    with pytest.raises(GridError, match="multiples of focus"):
        layout_for((9, 8), 4, 2).require_exact("the dense head")
