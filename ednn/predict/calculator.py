"""ASE calculator of a trained ednn model.

Properties (ASE conventions, eV and Angstrom):

``energy``, ``free_energy``
    The model's total energy (the two are equal: ednn models have no
    electronic entropy term).
``forces``
    ``-dE/dpositions`` by automatic differentiation through the TensorFlow
    rasterizer, compiled with ``tf.function`` once per model (density head:
    every structure reuses the graph) or once per cell (dense head).
``stress``
    ``(1/V) dE/d(strain)`` (Voigt order xx, yy, zz, yz, xz, xy) from the same
    compiled function: the positions and the cell are deformed by
    ``I + strain`` inside the differentiable energy. ``V`` is the volume of
    the 3x3 cell (for a 2D sheet: including its vacuum, as ASE does; its
    out-of-plane shear components yz and xz are zero, the sheet stays flat).
``energies``
    Per-atom energies from the energy map (:meth:`EnergyModel.atom_energies`:
    each pixel's energy to the nearest atom), summing to the energy.

When forces or stress are asked, the energy comes from the same compiled call
(computed once). Structures are checked against the model's domain of
applicability (:mod:`ednn.predict.domain`; at every change of atoms or cell,
and every ``DOMAIN_EVERY`` calls when only positions move): outside it, a
``DomainWarning`` once per kind of problem; overlapping atoms or an atom far
from the sheet raise ``InputError``. Extras with ``maps=True``: ``energy_map`` (per pixel, eV) and
``tile_energies``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import InputError

__all__ = ["EDNNCalculator", "ForcesNotTrainedWarning", "generic_gradient_function", "input_signature",
           "voigt_stress"]


class ForcesNotTrainedWarning(UserWarning):
    """Forces asked of a model whose training never fitted forces (train.force_weight 0)."""


def _trained_on_forces(model) -> bool | None:
    """Whether the model's training fitted forces (None: unknown, e.g. a model saved without its config)."""
    meta = getattr(model, "meta", None) or {}
    if "trained_on_forces" in meta:  # atom-centred models record it directly
        return bool(meta["trained_on_forces"])
    cfg = meta.get("train_config")
    if not isinstance(cfg, dict):
        return None
    return float((cfg.get("train") or {}).get("force_weight", 0.0) or 0.0) > 0.0

_VARIABLE = frozenset({"offsets", "offsets_cart", "weights", "channels",  # image models
                       "i", "j", "shift", "species", "slot"})  # atom-centred models: pairs, atoms  # leading axis: any size


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


def _energy_and_gradients(model, pos, inp):
    import tensorflow as tf

    strain = tf.zeros([3, 3], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(pos)
        tape.watch(strain)
        e = model.energy_tf_core(pos, inp, strain)
    g_pos, g_strain = tape.gradient(e, pos), tape.gradient(e, strain)
    del tape
    return e, g_pos, g_strain


def generic_gradient_function(model, inputs: dict[str, Any]):
    """The model's compiled ``(positions, inputs) -> (E, dE/dpositions, dE/dstrain)`` (density head).

    Built once per model (kept on it) with an input signature in which the
    number of atoms, the stencil size and the image size are free, so it is
    traced once and serves every structure. ``inputs`` (from
    :meth:`EnergyModel.energy_tf_inputs`) fixes the keys and dtypes.
    """
    import tensorflow as tf

    fn = getattr(model, "_generic_gradient_fn", None)
    if fn is not None:
        return fn

    dtype = tf.as_dtype(getattr(model, "position_dtype", "float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], dtype), input_signature(inputs)])
    def fn(pos, inp):
        return _energy_and_gradients(model, pos, inp)

    model._generic_gradient_fn = fn
    return fn


def voigt_stress(d_e_d_strain: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """ASE's stress (Voigt xx yy zz yz xz xy, eV/A^3) from ``dE/dstrain`` (3 x 3) and the cell."""
    vol = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if vol < 1e-12:
        raise InputError("stress needs a cell with a volume: give the third cell vector (for a 2D sheet, "
                         "its vacuum height, e.g. atoms.center(vacuum=10, axis=2))")
    g = np.asarray(d_e_d_strain, dtype=np.float64)
    s = 0.5 * (g + g.T) / vol
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


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
    >>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    #: compiled functions kept for the dense head (one per cell / species list / pbc)
    max_compiled = 8
    #: positions-only changes (MD, relaxations) are checked against the domain every this many calls
    DOMAIN_EVERY = 10

    def __init__(self, model, maps: bool = False, **kw: Any):
        super().__init__(**kw)
        if maps and not hasattr(model, "energy_map"):
            raise InputError("maps=True asks for per-pixel energy maps, which only voxel-image models have; this "
                             "model gives per-atom energies (results['energies'], atoms.get_potential_energies())")
        self.model = model
        self.maps = maps
        self._compiled: dict[bytes, Any] = {}
        self._seen: dict[bytes, int] = {}
        self._domain = getattr(model, "domain", None)
        self._domain_seen: set[str] = set()
        self._domain_calls = 0
        self._warn_forces = _trained_on_forces(model) is False

    def gradients(self, atoms) -> tuple[float, np.ndarray, np.ndarray]:
        """``(E, dE/dpositions (N, 3), dE/dstrain (3, 3))`` through one compiled call.

        ``atoms``: an ase.Atoms or a ``(positions, numbers, cell, pbc)`` tuple
        (the dense head needs an ase.Atoms).

        Density head (the default): one ``tf.function`` per model whose inputs
        (positions, stencil, species, image size) may have any size, traced on
        the first call and reused for every structure. Dense head (fixed tile
        layout): one compiled function per cell, species list and pbc; a cell
        seen for the first time runs eagerly, because tracing costs about a
        second, which a variable-cell relaxation would pay at every step.
        """
        descs = self.model.descriptions(atoms) if hasattr(self.model, "descriptions") else [atoms]
        if len(descs) > 1:  # shift_average / cell_average: the means over the descriptions are the exact gradients
            parts = [self._gradients(d) for d in descs]
            return (float(np.mean([p[0] for p in parts])), np.mean([p[1] for p in parts], axis=0),
                    np.mean([p[2] for p in parts], axis=0))
        return self._gradients(atoms)

    def _gradients(self, atoms) -> tuple[float, np.ndarray, np.ndarray]:
        import tensorflow as tf

        positions = atoms.get_positions() if hasattr(atoms, "get_positions") else np.asarray(atoms[0])
        pos = tf.constant(positions, tf.as_dtype(getattr(self.model, "position_dtype", "float32")))
        if self.model.head != "dense":
            inputs = self.model.energy_tf_inputs(atoms)
            out = generic_gradient_function(self.model, inputs)(pos, inputs)
        else:
            out = self._per_cell_function(atoms)(pos)
        e, g, gs = (np.asarray(t.numpy(), dtype=np.float64) for t in out)
        return float(e), g, gs

    def gradient(self, atoms) -> np.ndarray:
        """``dE/dpositions`` (N, 3) of ``atoms`` (eV/Angstrom)."""
        return self.gradients(atoms)[1]

    def _per_cell_function(self, atoms):
        import tensorflow as tf

        key = b"|".join([np.asarray(atoms.cell, dtype=np.float64).tobytes(), atoms.numbers.tobytes(),
                         np.asarray(atoms.pbc).tobytes()])
        fn = self._compiled.get(key)
        model = self.model
        inputs = model.energy_tf_inputs(atoms)
        if fn is None and self._seen.get(key, 0) == 0:
            if len(self._seen) >= 64:
                self._seen.clear()
            self._seen[key] = 1
            return lambda pos: _energy_and_gradients(model, pos, inputs)  # eager
        if fn is None:
            @tf.function(input_signature=[tf.TensorSpec([len(atoms), 3], tf.float32)])
            def fn(pos):
                return _energy_and_gradients(model, pos, inputs)

            if len(self._compiled) >= self.max_compiled:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[key] = fn
        return fn

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        if self._domain is not None:  # outside the training domain: a DomainWarning per kind of problem, once
            # the full check (a neighbour list) when the atoms or the cell change, else every DOMAIN_EVERY calls:
            # ~20 % of an MD step of a small cell if done at every step
            if self._domain_calls % self.DOMAIN_EVERY == 0 or {"numbers", "cell", "pbc"} & set(system_changes):
                self._domain.warn(a, self._domain_seen, stacklevel=4)
            self._domain_calls += 1
        if self._warn_forces and ("forces" in properties or "stress" in properties):
            import warnings  # noqa: PLC0415

            warnings.warn(ForcesNotTrainedWarning(
                "this model was trained on energies only: its forces and stress are derivatives of an energy "
                "fitted without them. Measure them before dynamics or relaxations (`ednn evaluate MODEL DATA` gives "
                "the force error on data with forces): an image model fitted this way is off by ~1.8 eV/A against "
                "Tersoff, the atom-centred one by ~0.2; or train with forces (train.force_weight > 0, image; "
                "atoms.force_weight > 0, atoms)"), stacklevel=4)
            self._warn_forces = False  # once per calculator
        if "forces" in properties and "stress" not in properties and self.model._huge(a):
            # a huge sheet: energy and forces streamed chunk by chunk with flat memory (MD of 10^6 atoms)
            from .stream_forces import stream_forces  # noqa: PLC0415

            own = getattr(self.model, "stream_forces", None)  # the atom-centred model streams itself
            parts = [own(d) if own else stream_forces(self.model, d) for d in self.model.descriptions(a)]
            self.results["energy"] = float(np.mean([p[0] for p in parts]))
            self.results["forces"] = np.mean([p[1] for p in parts], axis=0)
        elif "forces" in properties or "stress" in properties:
            e, g, gs = self.gradients(a)
            self.results["energy"] = e
            self.results["forces"] = -g
            if "stress" in properties:
                self.results["stress"] = voigt_stress(gs, a.cell[:])
        else:
            self.results["energy"] = float(self.model.predict_energy(a))
        self.results["free_energy"] = self.results["energy"]
        if "energies" in properties:
            self.results["energies"] = self.model.atom_energies(a)
        if self.maps:
            self.results["energy_map"] = self.model.energy_map(a)
            self.results["tile_energies"] = self.model.tile_energies(a)
