"""ASE calculator of a trained EDNN model.

Energy from the model; forces ``-dE/dpositions`` by automatic differentiation
through the TensorFlow rasterizer (:func:`ednn.raster.rasterize_tf`); per-pixel
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

    def __init__(self, model, maps: bool = False, **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.maps = maps

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        if "forces" in properties:
            import tensorflow as tf

            pos = tf.Variable(a.get_positions().astype(np.float32))
            with tf.GradientTape() as tape:
                e = self.model.energy_tf(a, pos)
            g = tape.gradient(e, pos)
            self.results["forces"] = -np.asarray(g.numpy(), dtype=np.float64)
            # use the float64-summed energy for consistency with predict_energy
        self.results["energy"] = float(self.model.predict_energy(a))
        self.results["free_energy"] = self.results["energy"]
        if self.maps:
            self.results["energy_map"] = self.model.energy_map(a)
            self.results["tile_energies"] = self.model.tile_energies(a)
