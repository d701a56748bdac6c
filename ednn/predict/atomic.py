"""The atom-centred energy model: exact invariances, exact extensivity, closed-form training.

:class:`AtomicModel` predicts ``E = sum_i (b[Z_i] + W[Z_i] . p_i)`` where ``p_i`` are the atom-centred
density projections of :mod:`ednn.nn.atomic` (the species' Gaussian densities around atom ``i`` in a
radial x angular basis, rotation invariants). It has the same user-facing methods as the voxel-image
:class:`~ednn.predict.model.EnergyModel` (``predict_energy``, ``predict_energies``, ``predict_forces``,
``atom_energies``, ``calculator()``, ``domain``, ``save``) and is saved in the same model-folder format
(``representation: "atoms"`` in ``config.json``; the weights in ``model.weights.h5``), so
``ednn.load``, the calculator, ensembles and the CLI take either.

Training (:func:`fit_atomic`) is a regularised least-squares fit, exact and deterministic:

* rows: every training structure's per-atom energy (features and target divided by the atom count, so small
  and large cells weigh alike) and, when the data have forces, ``n_force_rows`` random projections of its
  forces per structure, ``v . F = -(d features / d positions . v) . W`` (forward-mode derivatives), weighted
  by ``force_weight``;
* per-element reference energies fitted first by least squares on the compositions (stored as ``b``);
* columns scaled to unit RMS over the energy rows, the ridge strength chosen on the validation split from a
  grid (energy MAE, plus force MAE times ``force_weight`` when there are forces).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..image.raster import _structure_arrays
from ..nn.atomic import (
    AtomicBasis,
    batch_inputs,
    centre_chunk,
    descriptors_tf,
    input_signature,
    neighbour_inputs,
)
from ..properties import ENERGY
from .calculator import EDNNCalculator
from .domain import HasDomain

__all__ = ["AtomicModel", "fit_atomic", "REPRESENTATION"]

REPRESENTATION = "atoms"
_BATCH_ATOMS = 4096  # structures are predicted together up to about this many atoms per call
STREAM_ATOMS = 50_000  # atoms per strip of a large structure (its neighbour list), in chunks of _BATCH_ATOMS


class AtomicModel(HasDomain):
    """A linear model on atom-centred density projections (see the module docstring).

    Parameters
    ----------
    basis : AtomicBasis
    weights : (S, F) array, optional
        Per-species readout weights (zeros: an untrained model).
    refs : (S,) array, optional
        Per-species constant energy (eV).
    meta : dict, optional
        Saved with the model (training settings and metrics, the domain of applicability).
    """

    head = REPRESENTATION  # the calculator's generic (any-shape) compiled path
    position_dtype = "float64"
    energy_output = ENERGY  # what the model predicts: the energy, no per-voxel fields
    fields: dict[str, Any] = {}
    grid = None

    def __init__(self, basis: AtomicBasis, weights: np.ndarray | None = None, refs: np.ndarray | None = None,
                 meta: dict[str, Any] | None = None):
        import tensorflow as tf

        self.basis = basis
        S, F = basis.n_species, basis.n_features
        w = np.zeros((S, F)) if weights is None else np.asarray(weights, dtype=np.float64)
        b = np.zeros(S) if refs is None else np.asarray(refs, dtype=np.float64)
        if w.shape != (S, F) or b.shape != (S,):
            raise ModelError(f"weights {w.shape} / refs {b.shape} do not match the basis ({S} species, {F} features)")
        self._w = tf.Variable(w, dtype=tf.float64, trainable=False)
        self._b = tf.Variable(b, dtype=tf.float64, trainable=False)
        self.meta = dict(meta or {})
        self._compiled = None

    # ------------------------------------------------------------- properties
    @property
    def species(self) -> tuple[int, ...]:
        return self.basis.species

    @property
    def weights(self) -> np.ndarray:
        return self._w.numpy()

    @property
    def refs(self) -> np.ndarray:
        return self._b.numpy()

    def set_weights(self, weights: np.ndarray, refs: np.ndarray) -> None:
        self._w.assign(np.asarray(weights, dtype=np.float64))
        self._b.assign(np.asarray(refs, dtype=np.float64))

    # ------------------------------------------------------------- energies
    def energy_tf_inputs(self, atoms: Any) -> dict[str, Any]:
        return neighbour_inputs(atoms, self.basis)

    def atom_energies_tf(self, positions, inputs: dict[str, Any], deform=None):
        import tensorflow as tf

        p = descriptors_tf(positions, inputs, self.basis, deform)
        size = tf.cast(inputs["size"], tf.int32)
        sp = tf.cast(inputs["species"], tf.int32)[size[2] : size[2] + size[0]]  # the centre atoms' species
        return tf.reduce_sum(tf.gather(self._w, sp) * p, axis=1) + tf.gather(self._b, sp)

    def energy_tf_core(self, positions, inputs: dict[str, Any], strain=None):
        """Energy (float64 scalar), differentiable with respect to ``positions`` and ``strain`` (3 x 3)."""
        import tensorflow as tf

        deform = None if strain is None else tf.eye(3, dtype=tf.float64) + tf.cast(strain, tf.float64)
        return tf.reduce_sum(self.atom_energies_tf(positions, inputs, deform))

    def _atom_energy_fn(self):
        import tensorflow as tf

        if self._compiled is None:
            @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64), input_signature()])
            def fn(pos, inp):
                return self.atom_energies_tf(pos, inp)

            self._compiled = fn
        return self._compiled

    def _batches(self, structures: Sequence[Any]):
        """Groups of consecutive structures of about ``_BATCH_ATOMS`` atoms: (indices, positions, inputs, owner)."""
        group, n = [], 0
        for k, a in enumerate(structures):
            group.append(k)
            n += len(_structure_arrays(a)[0])
            if n >= _BATCH_ATOMS:
                yield self._batch(structures, group)
                group, n = [], 0
        if group:
            yield self._batch(structures, group)

    def _batch(self, structures, group):
        inps = [neighbour_inputs(structures[k], self.basis) for k in group]
        pos, inp, owner = batch_inputs(inps, [_structure_arrays(structures[k])[0] for k in group])
        return group, pos, inp, owner

    def predict_energies(self, structures: Iterable[Any], batch_size: int | None = None) -> np.ndarray:
        """Total energies (eV), one per structure (ase.Atoms or ``(positions, numbers, cell, pbc)``).

        Structures of more atoms than one chunk (4096) are streamed (:meth:`stream`): the same energy in flat
        memory."""
        structures = list(structures)
        out = np.zeros(len(structures))
        big = [k for k, a in enumerate(structures) if self._huge(a)]
        for k in big:
            out[k] = self.stream(structures[k])[0]
        rest = [k for k in range(len(structures)) if k not in set(big)]
        fn = self._atom_energy_fn()
        for group, pos, inp, owner in self._batches([structures[k] for k in rest]):
            e = fn(pos, inp).numpy()
            out[np.asarray(rest)[group]] = np.bincount(owner, weights=e, minlength=len(group))
        return out

    # ------------------------------------------------------------- streaming
    def strips(self, atoms: Any, max_atoms: int = STREAM_ATOMS):
        """The structure cut along its first cell vector into strips of at most about ``max_atoms`` atoms.

        Yields ``(sub, centre, index)``: ``sub`` a ``(positions, numbers, cell, pbc)`` structure holding the
        strip's atoms and every atom within the cutoff of them (periodic images along the first vector moved
        next to the strip; that axis is then treated as open), ``centre`` a boolean mask of the strip's own
        atoms in ``sub``, ``index`` the atoms' indices in ``atoms``. Every atom is a centre of exactly one strip,
        and sees in ``sub`` every neighbour it sees in ``atoms``, so the strips' centre energies add up to the
        energy exactly.
        """
        pos, numbers, cell, pbc = _structure_arrays(atoms)
        n = len(pos)
        n_strips = max(1, -(-n // max_atoms))
        inv = np.linalg.inv(cell)
        frac0 = (pos @ inv)[:, 0]
        if pbc[0]:  # wrapped along the first vector (positions too, so that images are whole periods away)
            pos = pos - np.floor(frac0)[:, None] * cell[0]
            frac0 = frac0 - np.floor(frac0)
            width = self.basis.cutoff * np.linalg.norm(inv[:, 0])  # the cutoff in units of the first vector's planes
            if n_strips > 1 and 1.0 / n_strips < 2 * width:
                n_strips = max(1, int(1.0 / (2 * width)))
        else:
            width = self.basis.cutoff * np.linalg.norm(inv[:, 0])
        lo, hi = float(frac0.min()), float(frac0.max()) + 1e-12
        if pbc[0]:
            lo, hi = 0.0, 1.0
        edges = np.linspace(lo, hi, n_strips + 1)
        sub_pbc = np.array([False, pbc[1], pbc[2]]) if n_strips > 1 else pbc
        for k in range(n_strips):
            a, b = edges[k], edges[k + 1]
            centre = (frac0 >= a) & ((frac0 < b) if k < n_strips - 1 else (frac0 <= b))
            idx, shifts = [np.nonzero(centre)[0]], [np.zeros(int(centre.sum()))]
            if n_strips > 1:
                near = ~centre & (frac0 >= a - width) & (frac0 < b + width)
                idx.append(np.nonzero(near)[0])
                shifts.append(np.zeros(int(near.sum())))
                if pbc[0]:
                    for sh in (-1.0, 1.0):  # periodic images along the first vector
                        f = frac0 + sh
                        img = (f >= a - width) & (f < b + width)
                        idx.append(np.nonzero(img)[0])
                        shifts.append(np.full(int(img.sum()), sh))
            index, shift = np.concatenate(idx), np.concatenate(shifts)
            sub_pos = pos[index] + shift[:, None] * cell[0]
            sub_cell = cell
            if n_strips > 1:  # the open axis spans just the strip and its halo: tight bins for the neighbour list
                sub_pos = sub_pos - (a - width) * cell[0]
                sub_cell = cell.copy()
                sub_cell[0] = cell[0] * (b - a + 2 * width)
            mask = np.zeros(len(index), bool)
            mask[: int(centre.sum())] = True
            yield (sub_pos, numbers[index], sub_cell, sub_pbc), mask, index

    def stream(self, atoms: Any, forces: bool = False, max_atoms: int = STREAM_ATOMS):
        """``(energy, atom energies)`` (``forces``: ``(energy, forces)``) strip by strip; equal to the whole."""

        n = len(_structure_arrays(atoms)[0])
        e_at = np.zeros(n)
        f = np.zeros((n, 3)) if forces else None
        fn = self._atom_energy_fn()
        grad = _gradient_fn(self) if forces else None
        for sub, mask, index in self.strips(atoms, max_atoms):
            inp = neighbour_inputs(sub, self.basis)
            n_centre = int(mask.sum())  # the strip's own atoms come first in sub
            for c0 in range(0, n_centre, _BATCH_ATOMS):  # descriptors chunk by chunk: flat memory
                c1 = min(c0 + _BATCH_ATOMS, n_centre)
                chunk = centre_chunk(inp, c0, c1)
                if forces:
                    e, g = (t.numpy() for t in grad(sub[0], chunk))
                    np.add.at(f, index, -g)
                else:
                    e = fn(sub[0], chunk).numpy()
                e_at[index[c0:c1]] = e
        return (float(e_at.sum()), f) if forces else (float(e_at.sum()), e_at)

    def stream_forces(self, atoms: Any) -> tuple[float, np.ndarray]:
        """Energy and forces of a huge structure strip by strip (the calculator's path for them)."""
        return self.stream(atoms, forces=True)

    def predict_energy(self, atoms: Any, return_std: bool = False) -> float:
        if return_std:
            raise ModelError("a single model has no uncertainty; load an ensemble (ednn train --ensemble K) for "
                             "return_std=True")
        return float(self.predict_energies([atoms])[0])

    def atom_energies(self, atoms: Any) -> np.ndarray:
        """Energy of every atom (eV): the model's own local decomposition, summing exactly to the total."""
        if self._huge(atoms):
            return self.stream(atoms)[1]
        return self._atom_energy_fn()(_structure_arrays(atoms)[0], neighbour_inputs(atoms, self.basis)).numpy()

    def predict_forces(self, structures: Iterable[Any]) -> list[np.ndarray]:
        calc = self.calculator()
        return [-calc.gradients(a)[1] for a in structures]

    def calculator(self, **kw) -> EDNNCalculator:
        """An ASE calculator: energy, forces, stress and per-atom energies (``energies``)."""
        return EDNNCalculator(self, **kw)

    # calculator hooks shared with the image model
    def descriptions(self, atoms: Any) -> list[Any]:
        return [atoms]

    def _huge(self, atoms: Any) -> bool:
        """More atoms than one chunk: predicted (and the calculator's forces) strip by strip, chunk by chunk."""
        return len(_structure_arrays(atoms)[0]) > _BATCH_ATOMS

    # ------------------------------------------------------------- features for training
    def features(self, structures: Sequence[Any]) -> np.ndarray:
        """Per-structure sums of the descriptors per centre species, ``(n, S * F)``: ``E = X . W.ravel() + counts . b``."""
        import tensorflow as tf

        S, F = self.basis.n_species, self.basis.n_features
        out = np.zeros((len(structures), S * F))
        fn = _feature_fn(self.basis)
        for group, pos, inp, owner in self._batches(structures):
            p = fn(tf.constant(pos), inp).numpy()
            col = owner * S + inp["species"]
            out[group] = np.stack([np.bincount(col, weights=p[:, f], minlength=len(group) * S)
                                   for f in range(F)], axis=1).reshape(len(group), S * F)
        return out

    def force_features(self, structures: Sequence[Any], n_dirs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Directional derivatives of :meth:`features` along ``n_dirs`` random unit directions per structure.

        Returns ``(D (n * n_dirs, S * F), V)`` with ``V`` the directions (list per structure, (n_dirs, N, 3));
        the energy's derivative along direction ``v`` is ``D . W.ravel()``.
        """
        import tensorflow as tf

        S, F = self.basis.n_species, self.basis.n_features
        rng = np.random.default_rng(seed)
        dirs = []
        for a in structures:
            v = rng.normal(size=(n_dirs,) + _structure_arrays(a)[0].shape)
            dirs.append(v / np.linalg.norm(v.reshape(n_dirs, -1), axis=1)[:, None, None])
        out = np.zeros((len(structures), n_dirs, S * F))
        for group, pos, inp, owner in self._batches(structures):
            col = owner * S + inp["species"]
            for d in range(n_dirs):
                tang = np.concatenate([dirs[k][d] for k in group])
                with tf.autodiff.ForwardAccumulator(primals=(tp := tf.constant(pos)), tangents=tf.constant(tang)) as acc:
                    p = descriptors_tf(tp, inp, self.basis)
                jp = acc.jvp(p).numpy()
                out[group, d] = np.stack([np.bincount(col, weights=jp[:, f], minlength=len(group) * S)
                                          for f in range(F)], axis=1).reshape(len(group), S * F)
        return out.reshape(len(structures) * n_dirs, S * F), dirs

    # ------------------------------------------------------------- files
    def describe(self) -> dict[str, Any]:
        from .._version import __version__  # noqa: PLC0415
        from .artifact import FORMAT, _jsonable  # noqa: PLC0415

        return {"format": FORMAT, "ednn_version": __version__, "representation": REPRESENTATION,
                "units": {"energy": "eV", "length": "Angstrom"}, "basis": self.basis.to_dict(),
                "grid": None, "meta": _jsonable(self.meta)}

    def write_weights(self, path: str) -> None:
        import h5py

        with h5py.File(path, "w") as f:
            f["weights"] = self.weights
            f["refs"] = self.refs

    def save(self, path: str) -> str:
        from .artifact import save_model  # noqa: PLC0415

        return save_model(self, path)

    @classmethod
    def from_files(cls, cfg: dict[str, Any], weights_path: str, path: str) -> AtomicModel:
        import h5py

        from .artifact import corrupt  # noqa: PLC0415

        try:
            basis = AtomicBasis.from_dict(cfg["basis"])
            with h5py.File(weights_path, "r") as f:
                w, b = f["weights"][()], f["refs"][()]
            return cls(basis, w, b, meta=cfg.get("meta", {}))
        except (KeyError, OSError, TypeError, InputError, ModelError) as e:
            raise corrupt(path, f"its atom-centred basis or weights cannot be read ({e})") from e


def _gradient_fn(model: AtomicModel):
    """Compiled ``(positions, inputs) -> (atom energies of the centres, d(their sum)/d positions)``."""
    import tensorflow as tf

    fn = getattr(model, "_grad_fn", None)
    if fn is None:
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64), input_signature()])
        def fn(pos, inp):
            with tf.GradientTape() as tape:
                tape.watch(pos)
                e = model.atom_energies_tf(pos, inp)
                total = tf.reduce_sum(e)
            return e, tf.convert_to_tensor(tape.gradient(total, pos))

        model._grad_fn = fn
    return fn


def _feature_fn(basis: AtomicBasis):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64), input_signature()])
    def fn(pos, inp):
        return descriptors_tf(pos, inp, basis)

    return fn


# ----------------------------------------------------------------------------------------------- fitting
def _counts(structures: Sequence[Any], species: Sequence[int]) -> np.ndarray:
    return np.array([[np.sum(_structure_arrays(s)[1] == z) for z in species] for s in structures], float)


def fit_atomic(train: Sequence[Any], energies: np.ndarray, val: Sequence[Any], val_energies: np.ndarray,
               basis: AtomicBasis, forces: Sequence[np.ndarray] | None = None,
               val_forces: Sequence[np.ndarray] | None = None, force_weight: float = 0.05,
               n_force_rows: int = 4, alphas: Sequence[float] | None = None, seed: int = 0,
               progress: bool = False, shared: bool = True) -> AtomicModel:
    """Fit an :class:`AtomicModel` (see the module docstring); returns it with its metrics in ``meta["fit"]``.

    ``force_weight``: the weight of a force row (eV/A) against an energy row (eV/atom) in the squared loss.
    ``alphas``: relative ridge strengths tried (times the mean diagonal of the normal matrix).
    ``shared``: one weight vector for every centre species (S times fewer weights; the per-element constants
    stay per species).
    """
    t0 = time.time()
    model = AtomicModel(basis)
    energies, val_energies = np.asarray(energies, float), np.asarray(val_energies, float)
    if len(train) != len(energies) or len(val) != len(val_energies):
        raise InputError("structures and energies differ in number")
    if len(val) == 0:
        raise InputError("the ridge strength is chosen on a validation split; give at least one validation structure")
    S, F = basis.n_species, basis.n_features
    n_tr = np.array([len(_structure_arrays(s)[0]) for s in train], float)
    n_va = np.array([len(_structure_arrays(s)[0]) for s in val], float)
    c_tr, c_va = _counts(train, basis.species), _counts(val, basis.species)
    refs, *_ = np.linalg.lstsq(c_tr / n_tr[:, None], energies / n_tr, rcond=None)
    def merge(Z):  # shared weights: one readout for every centre species (the blocks summed)
        return Z.reshape(len(Z), S, F).sum(axis=1) if shared else Z

    X = merge(model.features(train)) / n_tr[:, None]
    y = (energies - c_tr @ refs) / n_tr
    Xv = merge(model.features(val))
    t_feat = time.time() - t0
    scale = np.sqrt(np.mean(X * X, axis=0))
    scale[scale < 1e-12] = 1.0
    Xs = X / scale
    A = Xs.T @ Xs
    rhs = Xs.T @ y
    use_forces = forces is not None and force_weight > 0 and n_force_rows > 0
    if use_forces:
        D, dirs = model.force_features(train, n_force_rows, seed)
        D = merge(D)
        t = np.array([np.sum(f * v) for f, vs in zip(forces, dirs) for v in vs])  # v . F = -(dE/dx . v)
        Ds = -D / scale
        A += force_weight * Ds.T @ Ds
        rhs += force_weight * Ds.T @ t
    evals, evecs = np.linalg.eigh(A)
    proj = evecs.T @ rhs
    mean_diag = float(np.trace(A) / len(A))
    alphas = list(alphas) if alphas is not None else [10.0 ** k for k in range(-14, -1)]
    trials, best = [], None
    for a in alphas:
        w = evecs @ (proj / (evals + a * mean_diag)) / scale
        e_va = Xv @ w + c_va @ refs
        if shared:
            w = np.tile(w, S)
        mae = float(np.mean(np.abs(e_va - val_energies) / n_va))
        score = mae
        trial = {"alpha": a, "val_energy_mae_meV_atom": 1e3 * mae}
        if use_forces and val_forces is not None:
            model.set_weights(w.reshape(S, F), refs)
            fmae = float(np.mean(np.concatenate([np.abs(f - g).ravel() for f, g in
                                                 zip(model.predict_forces(val[:20]), val_forces[:20])])))
            trial["val_force_mae_eV_A"] = fmae
            score = mae + force_weight * fmae
        trials.append(trial)
        if best is None or score < best[0]:
            best = (score, a, w)
    _, alpha, w = best
    model.set_weights(w.reshape(S, F), refs)
    e_tr = model.predict_energies(train)
    model.meta["fit"] = {
        "alpha": alpha, "trials": trials, "force_weight": force_weight if use_forces else 0.0, "shared": shared,
        "n_force_rows": n_force_rows if use_forces else 0, "n_train": len(train), "n_val": len(val),
        "train_energy_mae_meV_atom": float(1e3 * np.mean(np.abs(e_tr - energies) / n_tr)),
        "val_energy_mae_meV_atom": [t for t in trials if t["alpha"] == alpha][0]["val_energy_mae_meV_atom"],
        "features_s": t_feat, "fit_s": time.time() - t0,
    }
    model.meta["trained_on_forces"] = bool(use_forces)
    if progress:
        print(json.dumps(model.meta["fit"], indent=1), flush=True)
    return model

