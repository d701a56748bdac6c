"""The labeller contract (:class:`Labeller`), its ASE calculator, and any ASE calculator as a labeller.

``label(atoms)`` returns ``{"energy", "forces", "stress", "stress_absent"}``:
energy (eV), forces (N, 3) (eV/Angstrom), the Voigt stress (6,) (eV/Angstrom^3,
ASE's sign convention) or None, and, when the stress is None, the reason in
``stress_absent`` (None when there is a stress). A stress is never dropped
silently: either it is there, or ``stress_absent`` says why, or labelling raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ...errors import BackendError, EdnnError, InputError
from ...properties import ENERGY, FORCES, STRESS

__all__ = ["Labeller", "LabellerCalculator", "CalculatorLabeller", "from_calculator"]


class Labeller:
    """Base class: computes reference labels of structures.

    Attributes
    ----------
    name : str
        Short name, e.g. ``"tersoff"``.
    settings : dict
        JSON-serialisable description of the method (stored as metadata).
    """

    name: str = "labeller"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = dict(settings or {})

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """Return ``{"energy", "forces", "stress", "stress_absent"}`` of ``atoms`` (see module docs)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Set the method up now (start the engine, read parameter files) so that a bad setting fails early.

        ``ednn gen`` calls it before it creates any file. The default does nothing.
        """

    def committed(self, atoms: Atoms) -> None:
        """Called once the record of ``atoms`` is safely in its dataset: drop what was kept to resume its labelling
        (the GPAW labeller's SCF checkpoint). The default does nothing."""

    def calculator(self) -> Calculator:
        """An ASE calculator that evaluates this labeller (for relaxations, MD)."""
        return LabellerCalculator(self)

    def metadata(self) -> dict[str, Any]:
        """``{"name": name, "settings": settings}``, JSON-serialisable: a dataset's ``labeller`` entry."""
        return {"name": self.name, "settings": _jsonable(self.settings)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, settings={self.settings!r})"


class LabellerCalculator(Calculator):
    """ASE calculator evaluating a :class:`Labeller` (energy, forces, stress)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, labeller: Labeller, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labeller = labeller

    def check_state(self, atoms, tol=1e-15):  # noqa: D102 - exact and much cheaper than ASE's allclose chain
        old = self.atoms
        if old is None or len(old) != len(atoms):
            return list(all_changes)
        if (np.array_equal(old.positions, atoms.positions) and np.array_equal(old.numbers, atoms.numbers)
                and np.array_equal(np.asarray(old.cell), np.asarray(atoms.cell))
                and np.array_equal(old.pbc, atoms.pbc)):
            return []
        return list(all_changes)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # noqa: D102
        super().calculate(atoms, properties, system_changes)
        lab = self.labeller.label(self.atoms)
        self.results["energy"] = lab["energy"]
        self.results["free_energy"] = lab["energy"]
        self.results["forces"] = lab["forces"]
        if lab.get("stress") is not None:
            self.results["stress"] = lab["stress"]
        elif "stress" in properties:
            raise InputError(
                f"labeller {self.labeller.name!r} gives no stress for this structure: "
                f"{lab.get('stress_absent') or 'no reason given'}"
            )


def checkpoints_beside(labeller: Any, out: str | os.PathLike) -> None:
    """Give a labeller that can keep resume checkpoints (a ``checkpoint_dir`` of None) the folder ``OUT.scf``
    beside the dataset ``out`` it labels into: a record killed mid-SCF then resumes where it was."""
    if getattr(labeller, "checkpoint_dir", False) is None:
        labeller.checkpoint_dir = Path(str(out) + ".scf")


def _jsonable(d: Any) -> Any:
    """Round-trip through JSON (str() for unknown objects) so metadata always serialises."""
    return json.loads(json.dumps(d, default=str))


def check_atoms(atoms: Atoms) -> None:
    """InputError for what no labeller can label (not an Atoms, no atoms, non-finite positions)."""
    if not isinstance(atoms, Atoms):
        raise InputError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InputError("structure has no atoms; nothing to label")
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError("structure has non-finite (NaN/inf) positions; fix the structure before labelling")


def finish(energy: float, forces: np.ndarray, stress: np.ndarray | None, name: str,
           stress_absent: str | None = None) -> dict[str, Any]:
    """The label dict: checked energy and forces, the stress in Voigt order, or why there is none."""
    energy = float(energy)
    forces = np.asarray(forces, dtype=float)
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise BackendError(
            f"labeller {name!r} returned non-finite energy/forces; the structure is probably "
            "unphysical (overlapping atoms?)"
        )
    if stress is not None:
        stress = np.asarray(stress, dtype=float).reshape(-1)
        if stress.shape == (9,):
            s = stress.reshape(3, 3)
            stress = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        stress_absent = None
    elif not stress_absent:
        raise BackendError(f"labeller {name!r} gave no stress and no reason; a labeller must say why (stress_absent)")
    return {ENERGY.key: energy, FORCES.key: forces, STRESS.key: stress, "stress_absent": stress_absent}


# ----------------------------------------------------------------------------
# any ASE calculator
# ----------------------------------------------------------------------------
class CalculatorLabeller(Labeller):
    """Wraps an ASE calculator (or a factory returning one) as a labeller.

    Parameters
    ----------
    calc : ase Calculator or callable
        The calculator, or a zero-argument callable returning one (created
        lazily on first use).
    name : str
        Name stored as metadata.
    settings : dict
        Settings stored as metadata.
    stress : bool
        Ask the calculator for the stress (if it implements it and the cell has
        a volume). A calculator that raises ``PropertyNotImplementedError`` for
        a structure gives ``stress=None`` with the reason in ``stress_absent``;
        any other failure of the stress raises :class:`~ednn.errors.BackendError`.
    check : callable, optional
        ``check(atoms)`` raising :class:`~ednn.errors.InputError` for
        structures the method cannot handle.
    fresh : bool
        With a factory: a new calculator for every structure (for codes such as
        GPAW whose state, e.g. the symmetry found for the first structure, must
        not carry over to the next). :meth:`calculator` then returns the one
        used last.
    """

    def __init__(
        self,
        calc: Calculator | Callable[[], Calculator],
        name: str,
        settings: dict[str, Any] | None = None,
        stress: bool = True,
        check: Callable[[Atoms], None] | None = None,
        fresh: bool = False,
    ) -> None:
        super().__init__(settings)
        self.name = str(name)
        self._calc = calc if isinstance(calc, Calculator) or not callable(calc) else None
        self._factory = None if self._calc is not None else calc
        self._stress = stress
        self._check = check
        self._fresh = bool(fresh) and self._factory is not None

    def calculator(self) -> Calculator:
        """The wrapped ASE calculator."""
        if self._calc is None:
            self._calc = self._factory()  # type: ignore[misc]
        return self._calc

    def prepare(self) -> None:
        """Create the calculator now (a factory's errors surface here)."""
        self.calculator()

    def _stress_of(self, at: Atoms) -> tuple[np.ndarray | None, str | None]:
        """The stress of ``at`` (calculator attached) or ``(None, why not)``."""
        if not self._stress:
            return None, "the labeller was made with stress=False"
        if "stress" not in getattr(at.calc, "implemented_properties", []):
            return None, f"the {type(at.calc).__name__} calculator does not implement the stress"
        if abs(at.cell.volume) <= 1e-9 or not at.pbc.any():
            return None, "the structure has no periodic cell with a volume (a flake or molecule)"
        try:
            return at.get_stress(voigt=True), None
        except PropertyNotImplementedError as e:
            return None, f"{type(at.calc).__name__} cannot compute the stress of this structure ({e})"
        except EdnnError:
            raise
        except Exception as e:  # noqa: BLE001 - a calculator may raise anything; the chain keeps it
            raise BackendError(
                f"labeller {self.name!r}: the stress failed ({type(e).__name__}: {e}); fix the structure, or make "
                "the labeller with from_calculator(..., stress=False) to label without stresses"
            ) from e

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """Label ``atoms`` with the wrapped calculator (on a copy; ``atoms`` is untouched)."""
        check_atoms(atoms)
        if self._check is not None:
            self._check(atoms)
        at = atoms.copy()
        if self._fresh:
            self._calc = self._factory()  # type: ignore[misc]
        at.calc = self.calculator()
        energy = at.get_potential_energy()
        forces = at.get_forces()
        stress, why = self._stress_of(at)
        return finish(energy, forces, stress, self.name, why)


def from_calculator(calc: Calculator | Callable[[], Calculator], name: str, settings: dict[str, Any] | None = None,
                    **kwargs: Any) -> CalculatorLabeller:
    """Wrap any ASE calculator as a :class:`Labeller`.

    Parameters
    ----------
    calc : ase Calculator or zero-argument callable returning one
    name : str
        Name stored in dataset metadata (e.g. ``"emt"``).
    settings : dict, optional
        Method settings stored in dataset metadata.
    **kwargs
        Passed to :class:`CalculatorLabeller` (``stress``, ``check``, ``fresh``).

    Returns
    -------
    CalculatorLabeller
    """
    if not (isinstance(calc, Calculator) or callable(calc)):
        raise InputError(f"from_calculator needs an ASE calculator or a factory, got {type(calc).__name__}")
    return CalculatorLabeller(calc, name=name, settings=settings, **kwargs)
