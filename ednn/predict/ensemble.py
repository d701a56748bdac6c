"""Ensembles of models: the mean as the prediction, the spread between members as its uncertainty.

Members are trained on the same data and split from different random
initialisations and batch orders (``ednn train CONFIG --ensemble K``: seeds
``seed .. seed + K - 1``). Where the data constrain the energy, the members
agree; away from the data they drift apart, so the standard deviation between
them (``ddof=1``) flags structures unlike the training set. The folder::

    ensemble/
      ensemble.json      # {"format": "ednn-ensemble-1", "members": ["member_0/model", ...]}
      member_0/model/    # ordinary model folders
      ...

:func:`ednn.load` returns an :class:`Ensemble` for such a folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import ModelError

__all__ = ["Ensemble", "EnsembleCalculator", "load_ensemble", "ENSEMBLE_FILE", "ENSEMBLE_FORMAT"]

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "ednn-ensemble-1"


class Ensemble:
    """Several models of one kind; predictions are member means, ``return_std`` their spread.

    Parameters
    ----------
    members : sequence of EnergyModel or AtomicModel
        At least two with an energy output: image models of the same grid, or atom-centred models of the same
        species (their bases may differ: ``ednn train --ensemble K`` spreads the cutoffs).
    """

    def __init__(self, members: Sequence[Any]):
        members = list(members)
        if len(members) < 2:
            raise ModelError(f"an ensemble needs at least 2 members, got {len(members)}")
        ref = members[0]
        for i, m in enumerate(members[1:], 1):
            if _contract(m) != _contract(ref) or m.energy_output is None or ref.energy_output is None:
                raise ModelError(f"member {i} ({_contract(m)}) does not match member 0 ({_contract(ref)}) or has no "
                                 "energy output; ensemble members must be models of one kind (the same grid, or "
                                 "atom-centred with the same species; their cutoffs may differ) trained on the same "
                                 "data")
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    @property
    def grid(self):
        return self.members[0].grid

    @property
    def domain(self):
        return self.members[0].domain

    def check_domain(self, atoms: Any) -> list[tuple[str, str]]:
        return self.members[0].check_domain(atoms)

    def predict_energies(self, structures: Iterable[Any], return_std: bool = False):
        """Mean energies (eV); with ``return_std`` also the standard deviation between members (eV)."""
        structures = list(structures)
        e = np.stack([m.predict_energies(structures) for m in self.members])
        mean = e.mean(axis=0)
        return (mean, e.std(axis=0, ddof=1)) if return_std else mean

    def predict_energy(self, atoms: Any, return_std: bool = False):
        """Mean energy (eV) of one structure; with ``return_std`` the pair (mean, std)."""
        if return_std:
            m, s = self.predict_energies([atoms], return_std=True)
            return float(m[0]), float(s[0])
        return float(self.predict_energies([atoms])[0])

    def predict_forces(self, structures: Iterable[Any], return_std: bool = False):
        """Mean forces (eV/A), one (N, 3) array per structure; with ``return_std`` also their std per component."""
        structures = list(structures)
        f = [m.predict_forces(structures) for m in self.members]
        mean = [np.mean([fk[i] for fk in f], axis=0) for i in range(len(structures))]
        if not return_std:
            return mean
        return mean, [np.std([fk[i] for fk in f], axis=0, ddof=1) for i in range(len(structures))]

    def calculator(self, **kw: Any) -> EnsembleCalculator:
        return EnsembleCalculator(self, **kw)

    def save(self, path: str) -> str:
        """Write the ensemble folder (each member as a model folder, then ``ensemble.json``)."""
        os.makedirs(path, exist_ok=True)
        names = []
        for i, m in enumerate(self.members):
            name = f"member_{i}/model"
            m.save(os.path.join(path, name))
            names.append(name)
        _write_manifest(path, names)
        return path


def _contract(model: Any) -> tuple:
    """What ensemble members must share: the grid of an image model, the species of an atom-centred one."""
    basis = getattr(model, "basis", None)
    return ("atoms", tuple(basis.species)) if basis is not None else ("image", model.grid)


def _write_manifest(path: str, members: Sequence[str]) -> None:
    tmp = os.path.join(path, f".{ENSEMBLE_FILE}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump({"format": ENSEMBLE_FORMAT, "members": list(members)}, fh, indent=1)
    os.replace(tmp, os.path.join(path, ENSEMBLE_FILE))


def is_ensemble(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, ENSEMBLE_FILE))


def load_ensemble(path: str) -> Ensemble:
    """Load an ensemble folder (see the module docstring)."""
    from .model import load  # noqa: PLC0415

    try:
        with open(os.path.join(path, ENSEMBLE_FILE)) as fh:
            man = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not a readable ensemble folder ({e})") from e
    if man.get("format") != ENSEMBLE_FORMAT or not isinstance(man.get("members"), list):
        raise ModelError(f"{path}/{ENSEMBLE_FILE} is not an ednn ensemble manifest ({ENSEMBLE_FORMAT})")
    missing = [m for m in man["members"] if not os.path.exists(os.path.join(path, m))]
    if missing:
        raise ModelError(f"ensemble {path} lists members that are missing: {missing} (an unfinished "
                         "`ednn train --ensemble` run? rerun it to finish the members)")
    return Ensemble([load(os.path.join(path, m)) for m in man["members"]])


class EnsembleCalculator(Calculator):
    """ASE calculator of an :class:`Ensemble`: member means of energy and forces, plus ``energy_std`` (eV) and
    ``forces_std`` ((N, 3), eV/A) between members. The first member checks the domain and warns."""

    implemented_properties = ["energy", "free_energy", "forces", "energy_std", "forces_std"]

    def __init__(self, ensemble: Ensemble, **kw: Any):
        super().__init__(**kw)
        self.ensemble = ensemble
        self._calcs = [m.calculator() for m in ensemble.members]
        for c in self._calcs[1:]:  # one set of warnings, not one per member
            c._domain = None
            c._warn_forces = False

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_f = "forces" in properties or "forces_std" in properties
        es, fs = [], []
        for c in self._calcs:
            c.calculate(self.atoms, ["energy", "forces"] if want_f else ["energy"], system_changes)
            es.append(c.results["energy"])
            if want_f:
                fs.append(c.results["forces"])
        es = np.asarray(es)
        self.results["energy"] = float(es.mean())
        self.results["free_energy"] = self.results["energy"]
        self.results["energy_std"] = float(es.std(ddof=1))
        if want_f:
            f = np.stack(fs)
            self.results["forces"] = f.mean(axis=0)
            self.results["forces_std"] = f.std(axis=0, ddof=1)
