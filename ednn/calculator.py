"""ASE calculator of a trained EDNN model.

Energy from the model; forces ``-dE/dpositions`` by automatic differentiation
through the TensorFlow rasterizer (:func:`ednn.raster.rasterize_tf`), compiled
with ``tf.function`` once per cell and species list (an MD run or a relaxation
at fixed cell traces once and then reuses the graph); per-pixel
energies (``calc.results["energy_map"]``) and per-tile energies
(``calc.results["tile_energies"]``) as extras.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

__all__ = ["EDNNCalculator"]


class EDNNCalculator(Calculator):
    """ASE calculator for an :class:`~ednn.models.EnergyModel`.

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

    #: compiled force functions kept (one per cell / species list / pbc)
    max_compiled = 8

    def __init__(self, model, maps: bool = False, **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.maps = maps
        self._compiled: dict[bytes, Any] = {}
        self._seen: dict[bytes, int] = {}

    def _energy_and_gradient(self, atoms):
        """Function of positions returning (energy, dE/dpositions) for structures like ``atoms``.

        Everything but the positions (cell, species, pbc, image shape) is fixed
        at trace time, so a compiled ``tf.function`` is cached under those. A
        cell seen for the first time runs eagerly (tracing costs about a second,
        which a variable-cell relaxation would pay at every step); the second
        time it is compiled.
        """
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
            template = atoms.copy()
            template.calc = None
            model = self.model

            @tf.function(input_signature=[tf.TensorSpec([len(atoms), 3], tf.float32)])
            def fn(pos):
                with tf.GradientTape() as tape:
                    tape.watch(pos)
                    e = model.energy_tf(template, pos)
                return e, tape.gradient(e, pos)

            if len(self._compiled) >= self.max_compiled:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[key] = fn
        return fn

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        if "forces" in properties:
            import tensorflow as tf

            _, g = self._energy_and_gradient(a)(tf.constant(a.get_positions(), tf.float32))
            self.results["forces"] = -np.asarray(g.numpy(), dtype=np.float64)
        # the energy always comes from predict_energy (float64 sums), with or without forces
        self.results["energy"] = float(self.model.predict_energy(a))
        self.results["free_energy"] = self.results["energy"]
        if self.maps:
            self.results["energy_map"] = self.model.energy_map(a)
            self.results["tile_energies"] = self.model.tile_energies(a)
