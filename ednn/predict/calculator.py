"""ASE calculator of a trained EDNN model.

Energy from the model; forces ``-dE/dpositions`` by automatic differentiation
through the TensorFlow rasterizer (:func:`ednn.image.raster.rasterize_tf_core`),
compiled with ``tf.function`` once per model (density head: every structure
reuses the graph) or once per cell (dense head); per-pixel
energies (``calc.results["energy_map"]``) and per-tile energies
(``calc.results["tile_energies"]``) as extras.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

__all__ = ["EDNNCalculator", "generic_gradient_function", "input_signature"]

_VARIABLE = frozenset({"offsets", "offsets_cart", "weights", "channels"})  # leading axis: any size


def input_signature(inputs: dict[str, Any]) -> dict[str, Any]:
    """``tf.TensorSpec`` per key of :meth:`EnergyModel.energy_tf_inputs`, with the sizes that vary left free."""
    import tensorflow as tf

    spec = {}
    for k, v in inputs.items():
        v = np.asarray(v)
        if k in _VARIABLE:
            shape = [None] + list(v.shape[1:])
        elif k.startswith("pad"):
            shape = [None]
        else:
            shape = list(v.shape)
        spec[k] = tf.TensorSpec(shape, tf.as_dtype(v.dtype), name=k)
    return spec


def generic_gradient_function(model, inputs: dict[str, Any]):
    """The model's compiled ``(positions, inputs) -> (energy, dE/dpositions)`` (density head).

    Built once per model (kept on it) with an input signature in which the
    number of atoms, the stencil size and the image size are free, so it is
    traced once and serves every structure. ``inputs`` (from
    :meth:`EnergyModel.energy_tf_inputs`) fixes the keys and dtypes.
    """
    import tensorflow as tf

    fn = getattr(model, "_generic_gradient_fn", None)
    if fn is not None:
        return fn
    spec = input_signature(inputs)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), spec])
    def fn(pos, inp):
        with tf.GradientTape() as tape:
            tape.watch(pos)
            e = model.energy_tf_core(pos, inp)
        return e, tape.gradient(e, pos)

    model._generic_gradient_fn = fn
    return fn


class EDNNCalculator(Calculator):
    """ASE calculator for an :class:`~ednn.predict.model.EnergyModel`.

    Parameters
    ----------
    model : EnergyModel
    maps : bool
        Also store ``energy_map`` (per pixel, eV) and ``tile_energies`` in
        ``results`` when the energy is computed.

    Examples
    --------
    >>> atoms.calc = ednn.load("runs/demo/model").calculator()
    >>> atoms.get_potential_energy(), atoms.get_forces()
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    #: compiled force functions kept for the dense head (one per cell / species list / pbc)
    max_compiled = 8

    def __init__(self, model, maps: bool = False, **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.maps = maps
        self._compiled: dict[bytes, Any] = {}
        self._seen: dict[bytes, int] = {}

    def gradient(self, atoms) -> np.ndarray:
        """``dE/dpositions`` (N, 3) of ``atoms`` (eV/Angstrom), through a compiled function.

        ``atoms``: an ase.Atoms or a ``(positions, numbers, cell, pbc)`` tuple
        (the dense head needs an ase.Atoms).

        Density head (the default): one ``tf.function`` per model whose inputs
        (positions, stencil, species, image size) may have any size, traced on
        the first call and reused for every structure. Dense head (fixed tile
        layout): one compiled function per cell, species list and pbc; a cell
        seen for the first time runs eagerly, because tracing costs about a
        second, which a variable-cell relaxation would pay at every step.
        """
        import tensorflow as tf

        positions = atoms.get_positions() if hasattr(atoms, "get_positions") else np.asarray(atoms[0])
        pos = tf.constant(positions, tf.float32)
        if self.model.head != "dense":
            inputs = self.model.energy_tf_inputs(atoms)
            fn = generic_gradient_function(self.model, inputs)
            return np.asarray(fn(pos, inputs)[1].numpy(), dtype=np.float64)
        return np.asarray(self._per_cell_function(atoms)(pos)[1].numpy(), dtype=np.float64)

    def _per_cell_function(self, atoms):
        import tensorflow as tf

        key = b"|".join([np.asarray(atoms.cell, dtype=np.float64).tobytes(), atoms.numbers.tobytes(),
                         np.asarray(atoms.pbc).tobytes()])
        fn = self._compiled.get(key)
        if fn is None and self._seen.get(key, 0) == 0:
            if len(self._seen) >= 64:
                self._seen.clear()
            self._seen[key] = 1

            def eager(pos):
                pos = tf.Variable(pos)
                with tf.GradientTape() as tape:
                    e = self.model.energy_tf(atoms, pos)
                return e, tape.gradient(e, pos)

            return eager
        if fn is None:
            model = self.model
            inputs = model.energy_tf_inputs(atoms)

            @tf.function(input_signature=[tf.TensorSpec([len(atoms), 3], tf.float32)])
            def fn(pos):
                with tf.GradientTape() as tape:
                    tape.watch(pos)
                    e = model.energy_tf_core(pos, inputs)
                return e, tape.gradient(e, pos)

            if len(self._compiled) >= self.max_compiled:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[key] = fn
        return fn

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        if "forces" in properties:
            self.results["forces"] = -self.gradient(a)
        # the energy always comes from predict_energy (float64 sums), with or without forces
        self.results["energy"] = float(self.model.predict_energy(a))
        self.results["free_energy"] = self.results["energy"]
        if self.maps:
            self.results["energy_map"] = self.model.energy_map(a)
            self.results["tile_energies"] = self.model.tile_energies(a)
