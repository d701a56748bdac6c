"""The ``"gpaw-ldos"`` labeller: DFT energies, forces, and the LDOS and electron density on GPAW's real-space grid.

GPAW (plane-wave mode, PBE by default) runs a self-consistent calculation with
Fermi-Dirac occupations at the electronic temperature ``temperature`` (K),
point-group symmetry off (time reversal kept, which leaves ``|psi|^2`` summed
over the irreducible k-points equal to the sum over the whole zone), and a
Monkhorst-Pack mesh of ``ceil(kpt_density / |a_i|)`` points along each periodic
lattice vector. From its Kohn-Sham states the labeller builds, on the
wave-function grid (point ``(i, j, k)`` at ``(i/N1, j/N2, k/N3)`` of the cell):

``targets["ldos"]``, shape ``(N1, N2, N3, n_E)``, 1/(eV Angstrom^3), float32
    ``LDOS(r, E) = sum_{k,n} (2 / n_spins) w_k |psi_nk(r)|^2 g(E - e_nk)`` on the
    energy grid :class:`ednn.electronic.EnergyGrid` (absolute Kohn-Sham energies,
    GPAW's zero), with MALA's Gaussian ``g(x) = exp(-(x/s)^2) / (s sqrt(pi))``
    of width ``s = broadening`` (default: the grid spacing).
``targets["density"]``, shape ``(N1, N2, N3)``, 1/Angstrom^3, float32
    ``n(r) = sum_{k,n} (2 / n_spins) w_k f_nk |psi_nk(r)|^2``, the same states
    with GPAW's own occupations.

**The PAW correction.** GPAW's pseudo wave functions are not normalised on the
grid (their norms here are 0.99-1.07); the missing part is the atom-centred
augmentation. The labeller renormalises each state on the grid:
``|psi_nk|^2 -> |psi_nk|^2 / sum_r |psi_nk(r)|^2 dV``, so every state carries
exactly one electron (times its occupation) and the LDOS integrates to the
electron count. The augmentation charge is thereby spread over the state's
pseudo density instead of being kept on the atoms: the density is the
renormalised *valence pseudo-density*, not GPAW's all-electron density.

**Checkpoints.** With ``checkpoint_dir`` (``ednn gen`` sets it to ``OUT.scf/``)
the SCF of a record writes GPAW's state, wave functions included, to
``scf-<key>.gpw`` there every ``checkpoint_seconds`` (atomically: a temporary
file renamed over the last one). ``<key>`` hashes the structure and the
settings, so a labelling run killed mid-record (a session's end, kill -9)
and started again continues that record's SCF from the last checkpoint
instead of from its first iteration; the file is removed once the record is
in the dataset (:meth:`GpawLdosLabeller.committed`). A large cell's record
(hours of SCF) thereby survives interruptions; the labels agree with an
uninterrupted run within the SCF convergence criteria. An SCF that wrote a
checkpoint writes one more once converged. Reading the states into the density
and the LDOS after it (hours on a large cell too: each band's wave function on
the grid, at each k-point) keeps its sums so far in ``scf-<key>.states.npz``
beside, written at a k-point's end once ``checkpoint_seconds`` have passed, so
a restarted record goes on from the next k-point (``info["states_resumed"]``:
the k-points taken from the file). The file's eigenvalues must match the
resumed calculation's (1e-3 eV), or it is set aside with a warning. A
density-only LCAO record reads no state (:func:`lcao_density`: GPAW's
density-matrix routine, one pass over the grid per k-point; ``info["density_from"]``).

Each record's ``info`` gets GPAW's Fermi level, free energy, energy extrapolated
to zero width, eigenvalue band energy, electron count, the eigenvalues and
k-point weights, grid shape, voxel volume, energy grid, broadening, electronic
temperature, the settings, the GPAW version and the seconds the record took.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

from ...electronic import KB, EnergyGrid, gaussian
from ...errors import BackendError, InputError
from .base import Labeller, check_atoms, finish

__all__ = ["GpawLdosLabeller", "kpoint_mesh", "AL_ENERGY_GRID"]

#: The default energy window for aluminium: -5 .. 9.475 eV absolute (GPAW's zero), 25 meV apart.
#: fcc Al's band bottom is near -3.8 eV and its Fermi level near 7.0 eV with PBE in GPAW (6x6x6). The spacing
#: and the default broadening (equal to it) were chosen on the measured broadening bias of the Fermi
#: level (experiments/ldos_labels.py): a Gaussian of s = 0.2 eV on 0.1 eV moves mu by 69 meV on Al4 at
#: 6x6x6; s = 0.025 eV by 3 meV.
AL_ENERGY_GRID = EnergyGrid(start=-5.0, spacing=0.025, n=580)

#: The record info keys of a checkpointed SCF: whether it resumed from a checkpoint, how many it wrote.
_SCF_INFO = ("scf_resumed", "scf_checkpoints_written", "states_resumed")

#: Vacuum (Angstrom) required across a non-periodic direction (computed periodically with one k-point).
MIN_VACUUM = 10.0


def kpoint_mesh(atoms: Atoms, kpt_density: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with ``ceil(kpt_density / |a_i|)`` points along each periodic vector (1 otherwise)."""
    if not (isinstance(kpt_density, (int, float)) and math.isfinite(kpt_density) and kpt_density > 0):
        raise InputError(f"kpt_density must be a positive number of Angstrom (k-points times cell length), "
                         f"got {kpt_density!r}")
    lengths = atoms.cell.lengths()
    return tuple(max(1, math.ceil(kpt_density / L - 1e-9)) if p else 1
                 for L, p in zip(lengths, atoms.pbc))  # type: ignore[return-value]


class GpawLdosLabeller(Labeller):
    """GPAW plane-wave DFT with the LDOS and density on the real-space grid as per-voxel targets.

    Parameters
    ----------
    temperature : float
        Electronic temperature (K) of the Fermi-Dirac occupations (> 0).
    energy_grid : EnergyGrid or dict, optional
        The fixed absolute energy window of the LDOS (default
        :data:`AL_ENERGY_GRID`). Every record of a dataset must share it.
    broadening : float, optional
        Gaussian width ``s`` (eV) in MALA's convention (default: the grid spacing; MALA
        uses twice a 0.1 eV spacing, which biases the Fermi level by tens of meV for
        the k-meshes affordable here).
    ecut : float
        Plane-wave cutoff (eV); it sets the real-space grid (300 eV: 18^3 points for a 4.04 A cube)
        unless ``grid_spacing`` is given.
    grid_spacing : float, optional
        Real-space grid spacing (Angstrom) instead of GPAW's choice from ``ecut``: ``round(L / h)``
        points along each cell vector of length ``L``, the rule of ednn's image grids. Datasets meant
        for size transfer need it: GPAW picks 18 points for a 4.04 A cube but 35 (not 36) for the
        8.08 A one, so the two grids would differ in spacing. It must not be coarser than ``ecut``
        needs (checked).
    grid_multiple : int
        With ``grid_spacing``: every grid dimension a multiple of this number,
        ``m * round(L / (m h))`` points (default 1). A model whose image is ``m`` times
        coarser than the labels (``model.upsample: m``, ``grid.spacing: m h``) then sees
        exactly the labels' grid: with 1, a 14.96 A cell at 0.2 A gets 75 points, which
        no image of 0.4 A pixels refines to (37 x 2 = 74).
    kpt_density : float
        k-points times cell length (Angstrom) along each periodic direction. The default 40
        (10x10x10 for the 4-atom cube, 5x5x5 for the 32-atom one) puts the band energy of an Al32
        snapshot within 1.7 meV/atom of 6x6x6 (``experiments/ldos_convergence.py``); 24 (6x6x6 / 3x3x3,
        the first datasets) is 23 meV/atom off, and 5x5x5 costs ~3x the SCF time of 3x3x3.
    kpts : (int, int, int), optional
        An explicit mesh instead of ``kpt_density``.
    kpt_gamma : bool
        Gamma-centred meshes (default). Then the mesh of a 2x2x2 supercell (5^3 for Al32) unfolds onto
        the cell's (10^3 for Al4): both sizes sample the same k-points and give the same labels for the
        same structure, which a model trained on both needs. Monkhorst-Pack meshes (False, the first
        datasets) leave Gamma out of even meshes only, so an Al4 snapshot at 10^3 MP has its Fermi level
        63 meV above the same snapshot at the 10^3 mesh its supercell samples (7.214 against 7.151 eV;
        Gamma-centred 14^3 and 16^3 give 7.138 and 7.153: ``experiments/ldos_kmesh.py``).
    xc : str
        Exchange-correlation functional.
    mode : {"pw", "lcao"}
        GPAW's basis: plane waves (default; ``ecut`` sets their cutoff) or localized atomic orbitals
        (``basis``, GPAW's ``dzp`` by default; ``ecut`` unused, the real-space grid is ``grid_spacing``
        or GPAW's 0.2 A). For sheets in 20 A of vacuum LCAO took 289 s for a 28-atom defect cell where
        plane waves took 948 s (both beside other jobs), and its density differs from the plane-wave one
        by ~5 % (``tests/test_ldos_data.py``); the labels of one dataset must all come from one mode.
    basis : str
        GPAW's LCAO basis name (``mode="lcao"`` only).
    extra_bands : int
        Bands beyond the occupied ones: ``nbands = ceil(n_electrons / 2 * band_factor) + extra_bands``.
    band_factor : float
        See ``extra_bands``; the labeller checks that the highest converged band
        at every k-point lies at least 3 broadening widths above the window's
        top, and says how to fix it if not.
    density_only : bool
        Store only the density (no LDOS, no window check), for large cells with vacuum.
    convergence : dict, optional
        GPAW convergence criteria (default ``{"density": 1e-6, "eigenstates": 1e-8, "bands": -4}``,
        the top four bands left unconverged and unused).
    txt : str, optional
        GPAW log file (None: silent).
    checkpoint_dir : str or Path, optional
        Folder of SCF checkpoints (see the module notes; None: none). Not a setting of the labels:
        the same labels come with or without.
    checkpoint_seconds : float
        Seconds of SCF between two checkpoints (default 600; 0: after every iteration).
    """

    name = "gpaw-ldos"

    def __init__(
        self,
        temperature: float = 298.0,
        energy_grid: EnergyGrid | dict | None = None,
        broadening: float | None = None,
        ecut: float = 300.0,
        kpt_density: float = 40.0,
        kpts: tuple[int, int, int] | None = None,
        kpt_gamma: bool = True,
        grid_spacing: float | None = None,
        grid_multiple: int = 1,
        xc: str = "PBE",
        mode: str = "pw",
        basis: str = "dzp",
        extra_bands: int = 8,
        band_factor: float = 1.6,
        density_only: bool = False,
        convergence: dict | None = None,
        txt: str | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_seconds: float = 600.0,
    ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise InputError(f"electronic temperature must be > 0 K, got {temperature!r}")
        grid = AL_ENERGY_GRID if energy_grid is None else energy_grid
        if isinstance(grid, dict):
            grid = EnergyGrid.from_dict(grid)
        if not isinstance(grid, EnergyGrid):
            raise InputError(f"energy_grid must be an ednn.electronic.EnergyGrid or its dict, got {type(grid).__name__}")
        width = grid.spacing if broadening is None else float(broadening)
        if not (math.isfinite(width) and width > 0):
            raise InputError(f"broadening must be a positive width in eV, got {broadening!r}")
        if not (isinstance(ecut, (int, float)) and ecut > 0):
            raise InputError(f"ecut must be a positive plane-wave cutoff in eV, got {ecut!r}")
        if mode not in ("pw", "lcao"):
            raise InputError(f"mode must be 'pw' (plane waves) or 'lcao' (atomic orbitals), got {mode!r}")
        if mode == "pw" and basis != "dzp":
            raise InputError(f"basis={basis!r} is an LCAO basis; plane waves (mode='pw') take ecut instead: "
                             "set mode='lcao' or drop basis")
        if kpts is not None:
            kpts = tuple(int(k) for k in kpts)  # type: ignore[assignment]
            if len(kpts) != 3 or min(kpts) < 1:
                raise InputError(f"kpts must be three positive integers, got {kpts!r}")
        kpoint_mesh(Atoms("H", cell=[1, 1, 1], pbc=True), kpt_density)  # validates kpt_density
        if not isinstance(kpt_gamma, (bool, np.bool_)):
            raise InputError(f"kpt_gamma must be true or false, got {kpt_gamma!r}")
        if grid_spacing is not None:
            grid_spacing = float(grid_spacing)
            # GPAW's own PW rule (gpaw.utilities.gpts): h <= pi / sqrt(4 ecut) bohr, ecut in hartree; LCAO
            # takes any grid its basis functions are sampled on, but not coarser than 0.3 A
            h_max = math.pi / math.sqrt(4.0 * ecut / units.Hartree) * units.Bohr if mode == "pw" else 0.3
            if not (math.isfinite(grid_spacing) and 0 < grid_spacing <= h_max):
                raise InputError(f"grid_spacing must be a positive spacing in Angstrom no coarser than {h_max:.4f} "
                                 + (f"(what ecut={ecut} eV resolves)" if mode == "pw" else "(LCAO)")
                                 + f", got {grid_spacing!r}")
        if isinstance(grid_multiple, bool) or not isinstance(grid_multiple, (int, np.integer)) or grid_multiple < 1:
            raise InputError(f"grid_multiple must be a positive integer, got {grid_multiple!r}")
        if grid_multiple > 1 and grid_spacing is None:
            raise InputError(f"grid_multiple={grid_multiple} rounds the grid of grid_spacing; give grid_spacing too")
        if extra_bands < 0 or band_factor < 1:
            raise InputError("extra_bands must be >= 0 and band_factor >= 1")
        self.grid = grid
        self.width = width
        self.temperature = float(temperature)
        self.density_only = bool(density_only)
        self.txt = txt
        if not (isinstance(checkpoint_seconds, (int, float)) and math.isfinite(checkpoint_seconds)
                and checkpoint_seconds >= 0):
            raise InputError(f"checkpoint_seconds must be a number of seconds >= 0, got {checkpoint_seconds!r}")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_seconds = float(checkpoint_seconds)
        self.convergence = dict(convergence or {"density": 1e-6, "eigenstates": 1e-8, "bands": -4})
        super().__init__({
            "engine": "gpaw", "mode": mode, **({"ecut": float(ecut)} if mode == "pw" else {"basis": basis}),
            "xc": xc, "kpt_density": float(kpt_density),
            "kpts": None if kpts is None else list(kpts), "electronic_temperature_K": self.temperature,
            "occupations": "fermi-dirac", "symmetry": "point group off, time reversal on",
            "energy_grid": grid.to_dict(), "broadening_eV": width,
            "broadening_convention": "exp(-((E-e)/s)^2)/(s sqrt(pi))",
            "paw_correction": "each state renormalised to one electron on the grid",
            "extra_bands": int(extra_bands), "band_factor": float(band_factor),
            "density_only": self.density_only, "convergence": self.convergence,
            **({} if grid_spacing is None else {"grid_spacing": grid_spacing}),  # absent: GPAW's grid (older files)
            **({"grid_multiple": int(grid_multiple)} if grid_multiple > 1 else {}),  # absent: 1 (older files)
            **({"kpt_gamma": True} if kpt_gamma else {}),  # absent: Monkhorst-Pack (older files)
        })

    # ------------------------------------------------------------------
    def prepare(self) -> None:
        """Import GPAW and find its PAW setups now; record GPAW's version in the settings."""
        gpaw = _import_gpaw()
        self.settings["gpaw_version"] = str(gpaw.__version__)

    def check(self, atoms: Atoms) -> None:
        """InputError for structures this labeller cannot treat (no setup, no periodic cell volume)."""
        check_atoms(atoms)
        if abs(atoms.cell.volume) < 1e-6:
            raise InputError(
                "gpaw-ldos needs a cell with a volume (periodic in-plane, vacuum along the other directions), "
                f"got volume {atoms.cell.volume:.3g} A^3; give the structure a cell (atoms.center(vacuum=...))"
            )
        for axis in np.flatnonzero(~atoms.pbc):
            # a non-periodic direction is computed periodically (plane waves), one k-point, across the vacuum
            frac = atoms.get_scaled_positions(wrap=False)[:, axis]
            gap = (1.0 - (frac.max() - frac.min())) * atoms.cell.lengths()[axis]
            if gap < MIN_VACUUM:
                raise InputError(
                    f"direction {'xyz'[axis]} is not periodic but the vacuum across it is only {gap:.1f} A: "
                    f"gpaw-ldos computes it periodically and needs at least {MIN_VACUUM} A between the images "
                    "(atoms.center(vacuum=..., axis=...)), or mark it periodic"
                )
        _import_gpaw()
        from gpaw.setup_data import search_for_file  # noqa: PLC0415

        xc = self.settings["xc"]
        for sym in sorted(set(atoms.get_chemical_symbols())):
            try:
                search_for_file(f"{sym}.{xc}")
            except (RuntimeError, OSError) as e:
                raise InputError(
                    f"GPAW has no PAW setup for element {sym!r} with xc {xc!r} ({e}); install the gpaw-data "
                    "package (`pip install gpaw-data`) or choose structures of elements it covers"
                ) from e
            if self.settings["mode"] == "lcao":
                try:
                    search_for_file(f"{sym}.{self.settings['basis']}.basis")
                except (RuntimeError, OSError) as e:
                    raise InputError(
                        f"GPAW has no LCAO basis {self.settings['basis']!r} for element {sym!r} ({e}); choose a basis "
                        "its setups ship (dzp) or mode='pw'"
                    ) from e

    def n_bands(self, atoms: Atoms, n_electrons: float) -> int:
        """Number of bands GPAW computes for ``atoms`` with ``n_electrons`` valence electrons."""
        return int(math.ceil(n_electrons / 2 * self.settings["band_factor"])) + self.settings["extra_bands"]

    def mesh(self, atoms: Atoms) -> tuple[int, int, int]:
        """The k-point mesh used for ``atoms``."""
        if self.settings["kpts"] is not None:
            return tuple(self.settings["kpts"])  # type: ignore[return-value]
        return kpoint_mesh(atoms, self.settings["kpt_density"])

    def gpaw_kpts(self, atoms: Atoms) -> tuple[int, int, int] | dict[str, Any]:
        """GPAW's ``kpts``: the mesh, Gamma-centred with ``kpt_gamma`` (ASE's ``gamma=True``); otherwise the
        plain size, a Monkhorst-Pack mesh (ASE's ``gamma=False`` would shift odd meshes off Gamma too)."""
        mesh = self.mesh(atoms)
        return {"size": mesh, "gamma": True} if self.settings.get("kpt_gamma") else mesh

    def gpts(self, atoms: Atoms) -> tuple[int, int, int] | None:
        """Real-space grid points along the cell vectors (None: GPAW's choice from ``ecut``, or 0.2 A in LCAO)."""
        h = self.settings.get("grid_spacing")
        if h is None:
            return None
        m = int(self.settings.get("grid_multiple", 1))
        return tuple(m * max(1, int(round(L / (m * h)))) for L in atoms.cell.lengths())  # type: ignore[return-value]

    def checkpoint_path(self, atoms: Atoms) -> Path | None:
        """The SCF checkpoint file of ``atoms`` under these settings (None without ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            return None
        h = hashlib.sha256()
        for a in (atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                  np.asarray(atoms.cell, dtype=np.float64), atoms.pbc.astype(np.int8)):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps(self.settings, sort_keys=True, default=str).encode())
        return self.checkpoint_dir / f"scf-{h.hexdigest()[:20]}.gpw"

    def committed(self, atoms: Atoms) -> None:
        """The record of ``atoms`` is safely in its dataset: remove its SCF checkpoint (and the folder, once empty)."""
        path = self.checkpoint_path(atoms)
        if path is None:
            return
        for p in (path, _states_path(path)):
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".tmp").unlink(missing_ok=True)  # left by a kill during a write
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()

    def _resume(self, path: Path, at: Atoms) -> Any:
        """GPAW's calculator restored from the checkpoint ``path`` of ``at``, set to continue its SCF; None if the
        file cannot be read (a warning names it; the SCF then starts from scratch)."""
        gpaw = _import_gpaw()
        try:
            calc = gpaw.GPAW(str(path), txt=self.txt)
            ref = calc.atoms
        except Exception as e:  # noqa: BLE001 - GPAW's reader raises many kinds; reported, not hidden
            warnings.warn(f"SCF checkpoint {path} could not be read ({type(e).__name__}: {e}); this record's SCF "
                          "starts from scratch (delete the file to silence this)", RuntimeWarning, stacklevel=3)
            return None
        same = (len(ref) == len(at) and (ref.numbers == at.numbers).all()
                and np.abs(ref.positions - at.positions).max() < 1e-8 and np.abs(ref.cell - at.cell).max() < 1e-8)
        if not same:
            raise BackendError(f"SCF checkpoint {path} holds another structure than the one it is named for; "
                               "delete it and label again")
        at.positions = ref.positions  # GPAW's own copy (Bohr round trip): unchanged atoms, no re-initialisation
        at.cell = ref.cell
        calc.dft.results.clear()  # written mid-SCF: iterate on from the stored density and wave functions
        return calc

    def run(self, atoms: Atoms) -> Any:
        """The converged GPAW calculator of ``atoms`` (a copy; ``atoms`` is untouched); ``at.info["scf_resumed"]``
        says whether the SCF continued from a checkpoint (with ``checkpoint_dir``)."""
        self.check(atoms)
        gpaw = _import_gpaw()
        from gpaw import PW, FermiDirac  # noqa: PLC0415

        at = atoms.copy()
        at.pbc = True  # a periodic grid in both modes: a non-periodic direction has vacuum (checked), one k-point
        for k in _SCF_INFO:  # a relabelled record's old values are not this run's
            at.info.pop(k, None)
        path = self.checkpoint_path(atoms)
        calc = self._resume(path, at) if path is not None and path.exists() else None
        resumed = calc is not None
        if calc is None:
            valence = _valence_electrons(at, self.settings["xc"])
            pw = self.settings["mode"] == "pw"
            gpts = self.gpts(atoms)
            calc = gpaw.GPAW(
                **({"mode": PW(self.settings["ecut"])} if pw else {"mode": "lcao", "basis": self.settings["basis"]}),
                **({"gpts": gpts} if gpts is not None else {} if pw else {"h": 0.2}),
                xc=self.settings["xc"], kpts=self.gpaw_kpts(atoms),
                occupations=FermiDirac(KB * self.temperature), symmetry={"point_group": False},
                nbands=self.n_bands(at, valence), convergence=self.convergence, txt=self.txt,
            )
        if path is not None and not isinstance(getattr(calc, "hooks", None), dict):
            warnings.warn(f"GPAW {gpaw.__version__}'s calculator ({type(calc).__name__}) takes no SCF hooks: this "
                          "record's SCF is not checkpointed and restarts from scratch if killed (GPAW >= 25 has "
                          "them)", RuntimeWarning, stacklevel=3)
            path = None
        if path is not None:
            calc.hooks["scf_step"] = _Checkpointer(calc, path, self.checkpoint_seconds)
        at.calc = calc
        try:
            at.get_potential_energy()
        except Exception as e:  # noqa: BLE001 - GPAW raises many kinds; chained
            raise BackendError(f"GPAW failed on this {len(at)}-atom structure: {type(e).__name__}: {e}") from e
        if path is not None:
            hook = calc.hooks["scf_step"]
            if hook.written or resumed:  # a long SCF: keep its converged state for what follows
                hook.write()
            at.info["scf_resumed"] = resumed
            at.info["scf_checkpoints_written"] = hook.written
        return at

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """Energy, forces, stress, and ``targets`` (ldos, density) with ``info`` (see the module docs)."""
        check_atoms(atoms)
        t0 = time.perf_counter()
        at = self.run(atoms)
        calc = at.calc
        energy = at.get_potential_energy()
        free = at.get_potential_energy(force_consistent=True)
        forces = at.get_forces()
        t_scf = time.perf_counter() - t0
        bands = self.convergence.get("bands")
        n_used = calc.get_number_of_bands() + (bands if isinstance(bands, int) and bands < 0 else 0)
        # the density alone needs only the occupied states (see kohn_sham_states)
        states = kohn_sham_states(calc, n_used, min_occupation=1e-14 if self.density_only else None)
        bottom = self.grid.start + 3 * self.width
        if not self.density_only and states["eigenvalues"].min() < bottom:
            raise BackendError(
                f"the lowest Kohn-Sham state is at {states['eigenvalues'].min():.2f} eV, below the window's start "
                f"plus 3 broadening widths ({bottom:.2f} eV): the LDOS would miss its electrons. Start the energy "
                "window lower (energy_grid=EnergyGrid(start=..., spacing=..., n=...))"
            )
        top = self.grid.stop + 3 * self.width
        if not self.density_only and states["highest"].min() < top:
            k = int(np.argmin(states["highest"]))
            raise BackendError(
                f"the highest converged band at k-point {k} is at {states['highest'][k]:.2f} eV, below the window's "
                f"top plus 3 broadening widths ({top:.2f} eV): the LDOS near the top would miss states. Raise "
                "band_factor or extra_bands, or lower the window's top"
            )
        ng = states["shape"]
        dv = at.get_volume() / np.prod(ng)
        n_e = float(calc.get_number_of_electrons())
        lcao = self.density_only and self.settings["mode"] == "lcao" and _serial_lcao(calc)
        if lcao:  # the density from GPAW's density-matrix routine: no wave function on the grid (see lcao_density)
            density = lcao_density(calc, states["occupations"][..., :n_used], ng).ravel()
            ldos = None
            at.info["states_resumed"] = False
        else:
            density = np.zeros(int(np.prod(ng)))
            ldos = None if self.density_only else np.zeros((density.size, self.grid.n))
            e_grid = self.grid.energies
            sums = _StateSums(self.checkpoint_path(atoms), self.checkpoint_seconds, states["eigenvalues"],
                              density, ldos)
            for spin, k, weight, eps, occ, psi2 in states["iter"](skip=sums.done):
                # one block of bands at a time; psi2: (n, Ng) renormalised |psi|^2 (each row sums to 1 / dv)
                sums.at(spin, k)
                density += occ @ psi2
                if ldos is not None:
                    g = gaussian(e_grid[None, :] - eps[:, None], self.width)  # (n, nE)
                    ldos += psi2.T @ (g * weight)
            sums.at(None, None)
            at.info["states_resumed"] = sums.resumed
        info = {
            "electronic_temperature_K": self.temperature,
            "fermi_level_eV": float(calc.get_fermi_level()),
            "free_energy_eV": float(free),
            "energy_zero_width_eV": float(energy),
            "band_energy_eigen_eV": float(states["band_energy"]),
            "n_electrons": n_e,
            "n_spins": int(states["n_spins"]),
            "eigenvalues_eV": states["eigenvalues"].tolist(),
            "kpoint_weights": states["weights"].tolist(),
            "kpts": list(self.mesh(atoms)),
            "kpts_gamma_centred": bool(self.settings.get("kpt_gamma", False)),
            "grid_shape": [int(n) for n in ng],
            "voxel_volume_A3": float(dv),
            "energy_grid": self.grid.to_dict(),
            "broadening_eV": self.width,
            "gpaw_version": self.settings.get("gpaw_version", str(_import_gpaw().__version__)),
            "scf_seconds": t_scf,
            "seconds": time.perf_counter() - t0,
            "density_from": "lcao_density_matrix" if lcao else "states",
            **{k: at.info[k] for k in _SCF_INFO if k in at.info},
        }
        targets = {"density": density.reshape(ng).astype(np.float32)}
        if ldos is not None:
            targets["ldos"] = ldos.reshape(*ng, self.grid.n).astype(np.float32)
        lab = finish(energy, forces, None, self.name,
                     stress_absent="gpaw-ldos computes no stress (its PW stress would double the cost)")
        lab["targets"] = targets
        lab["info"] = info
        return lab


class _Checkpointer:
    """GPAW ``scf_step`` hook: write the calculation to ``path`` (wave functions included) once ``seconds`` have
    passed since the start or the last write; a temporary file renamed over ``path``, so a kill leaves either
    the previous checkpoint or the new one."""

    def __init__(self, calc: Any, path: Path, seconds: float) -> None:
        self.calc, self.path, self.seconds = calc, path, seconds
        self.last = time.monotonic()
        self.written = 0

    def __call__(self, ctx: Any) -> None:
        if time.monotonic() - self.last >= self.seconds:
            self.write()

    def write(self) -> None:
        """Write the checkpoint now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.calc.write(str(tmp), mode="all")
        os.replace(tmp, self.path)
        self.written += 1
        self.last = time.monotonic()


def _states_path(path: Path) -> Path:
    """The file of the partial state sums beside the SCF checkpoint ``path``."""
    return path.with_name(path.stem + ".states.npz")


class _StateSums:
    """The density (and LDOS) sums over k-points of one record, kept beside its SCF checkpoint (``path``; None:
    not kept) at the end of a k-point once ``seconds`` have passed since the last write, and taken up again
    (``done``, ``resumed``) if a file of the same calculation (its eigenvalues to 1e-3 eV) is there. ``at(s, k)``
    is told the spin and k-point of each block in order (None, None at the end)."""

    def __init__(self, path: Path | None, seconds: float, eigenvalues: np.ndarray, density: np.ndarray,
                 ldos: np.ndarray | None) -> None:
        self.path = None if path is None else _states_path(path)
        self.seconds, self.eps = seconds, np.asarray(eigenvalues, dtype=float)
        self.density, self.ldos = density, ldos
        self.done: set[tuple[int, int]] = set()
        self.current: tuple[int, int] | None = None
        self.last = time.monotonic()
        if self.path is not None and self.path.exists():
            self._load()
        self.resumed = len(self.done)

    def _load(self) -> None:
        try:
            with np.load(self.path) as f:
                eps, done = f["eigenvalues"], [tuple(int(x) for x in sk) for sk in f["done"]]
                ok = (eps.shape == self.eps.shape and np.abs(eps - self.eps).max() < 1e-3
                      and f["density"].shape == self.density.shape
                      and ("ldos" in f) == (self.ldos is not None)
                      and (self.ldos is None or f["ldos"].shape == self.ldos.shape))
                if ok:
                    self.density[:] = f["density"]
                    if self.ldos is not None:
                        self.ldos[:] = f["ldos"]
                    self.done = set(done)
                    return
            reason = "it belongs to another calculation (eigenvalues or shapes differ)"
        except Exception as e:  # noqa: BLE001 - numpy raises many kinds on a damaged file; reported, not hidden
            reason = f"{type(e).__name__}: {e}"
        warnings.warn(f"partial state sums {self.path} not used ({reason}); the states are read from the first "
                      "k-point (delete the file to silence this)", RuntimeWarning, stacklevel=4)

    def at(self, spin: int | None, k: int | None) -> None:
        if (spin, k) == self.current:
            return
        if self.current is not None:
            self.done.add(self.current)
            if self.path is not None and spin is not None and time.monotonic() - self.last >= self.seconds:
                self._write()
        self.current = None if spin is None else (spin, k)

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        arrays = {"density": self.density, "eigenvalues": self.eps, "done": np.array(sorted(self.done))}
        if self.ldos is not None:
            arrays["ldos"] = self.ldos
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, self.path)
        self.last = time.monotonic()


def kohn_sham_states(calc: Any, n_bands: int, block_bytes: int = 256 * 2**20,
                     min_occupation: float | None = None) -> dict[str, Any]:
    """The lowest ``n_bands`` Kohn-Sham states of a converged GPAW calculation, in the form the LDOS needs.

    Returns a dict with ``eigenvalues`` (n_spins, n_k, n_b) in eV, ``weights``
    (n_k,) summing to 1, ``highest`` (n_k,) the highest used band's energy at
    each k-point, ``band_energy`` (eV, sum of occupation x eigenvalue),
    ``shape`` of the wave-function grid, and ``iter()``, a generator of
    ``(spin, k, weight, eps, occ, psi2)`` with ``weight = (2 / n_spins) w_k``,
    ``occ = weight x f_nk`` and ``psi2`` (n, N_grid) the renormalised
    ``|psi_nk(r)|^2`` in 1/Angstrom^3, for one block of ``n`` bands at a time
    (``eps`` and ``occ`` of that block): the wave functions of a block hold at
    most ``block_bytes``, so a large cell's states (a 178-atom sheet: 580 bands
    on 1.25 million grid points, 12 GB at once) never all sit in memory.
    ``iter(skip)`` leaves out the (spin, k) pairs in ``skip``. ``occupations``: (n_spins, n_k, n_b), ``weight x
    f_nk`` as ``occ``.

    ``min_occupation`` (for the density alone): at each k-point, the bands above
    the last one whose occupation (0..1) reaches it are not read. Each carries
    less than that fraction of an electron (1e-14: the density changes by less
    than 1e-12 relative), and reading a band's wave function is most of the
    cost (an LCAO sheet's: 4-8 s per band on 1.25 million points; 40 % of its
    bands are empty).
    """
    ns = int(calc.get_number_of_spins())
    wk = np.asarray(calc.get_k_point_weights(), dtype=float)
    nk = len(wk)
    wks = (2.0 / ns) * wk  # each k-point's weight with the spin degeneracy
    nb = int(n_bands)
    eps = np.array([[calc.get_eigenvalues(kpt=k, spin=s)[:nb] for k in range(nk)] for s in range(ns)])
    # GPAW's raw occupations (0..1), copied, times the k-point weight and the spin factor. Not
    # get_occupation_numbers(): GPAW 26.7 multiplies its stored occupations by that weight in place on
    # every call, so a second call (a second kohn_sham_states of the same calculation) returned them doubled
    # at Gamma and shrunk on a mesh
    raw = np.array([[np.array(calc.get_occupation_numbers(kpt=k, spin=s, raw=True)[:nb], dtype=float)
                     for k in range(nk)] for s in range(ns)])
    occ_f = raw * wks[None, :, None]
    n_read = np.full((ns, nk), nb)  # bands read at each spin and k-point
    if min_occupation is not None:
        above = raw >= float(min_occupation)
        n_read = np.where(above.any(axis=-1), nb - np.argmax(above[..., ::-1], axis=-1), 0)
    band_energy = float(np.sum(occ_f * eps))
    first = calc.dft.wave_functions(n1=0, n2=1, kpt=0, spin=0).data
    shape = tuple(int(n) for n in first.shape[1:])
    volume = calc.get_atoms().get_volume()
    dv = volume / np.prod(shape)

    block = max(1, int(block_bytes) // (16 * int(np.prod(shape))))  # bands per block (complex128 worst case)

    def gen(skip: Any = ()):
        for s in range(ns):
            for k in range(nk):
                if (s, k) in skip:  # summed before (a resumed record)
                    continue
                for n1 in range(0, int(n_read[s, k]), block):
                    n2 = min(int(n_read[s, k]), n1 + block)
                    psi = calc.dft.wave_functions(n1=n1, n2=n2, kpt=k, spin=s).data.reshape(n2 - n1, -1)
                    p2 = psi.real ** 2 + psi.imag ** 2 if np.iscomplexobj(psi) else psi ** 2
                    del psi
                    norms = p2.sum(axis=1) * dv
                    if np.any(norms < 0.5) or np.any(norms > 1.5):
                        raise BackendError(
                            f"pseudo wave-function norms at k-point {k} (bands {n1}-{n2 - 1}) range "
                            f"{norms.min():.3f}-{norms.max():.3f}; expected about 1 (0.9-1.1): the grid or the GPAW "
                            "API differs from what ednn expects"
                        )
                    p2 /= norms[:, None]  # each state now carries one electron: sum_r p2 dv = 1
                    yield s, k, wks[k], eps[s, k, n1:n2], occ_f[s, k, n1:n2], p2
    return {"eigenvalues": eps, "weights": wk, "highest": eps[..., -1].min(axis=0), "band_energy": band_energy,
            "shape": shape, "n_spins": ns, "occupations": occ_f, "iter": gen}


def _serial_lcao(calc: Any) -> bool:
    """Whether ``calc`` is a serial LCAO calculation of the new GPAW (what :func:`lcao_density` reads)."""
    try:
        wfs = list(calc.dft.ibzwfs)
    except AttributeError:
        return False
    return all(hasattr(w, "C_nM") and hasattr(w, "basis") and w.C_nM.dist.comm.size == 1 for w in wfs)


def lcao_density(calc: Any, occupations: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The density of :func:`kohn_sham_states`' states, ``sum_n occ_n |psi_n|^2 / <psi_n|psi_n>_grid``, of a
    converged LCAO calculation, without forming a wave function on the grid (1/Angstrom^3, ``shape``).

    With ``psi_n = sum_mu C_n,mu Phi_mu``, the grid norm of each state is ``C_n T C_n^H`` where ``T`` is the
    grid overlap of the basis functions (GPAW's potential matrix of a potential of 1), and the density is
    GPAW's own density routine applied to the density matrix of the weights ``occ_n / norm_n``: one pass over
    the grid per k-point, where reading the states costs one per band: on a 178-atom sheet (C178, 64 x 196
    x 100 points) 36 s per k-point against 9 s per band, 53 minutes for its 356 occupied bands (both beside
    other jobs). The two agree to round-off (``tests/test_ldos_data.py``); band 0 of the first k-point is
    checked against its wave function.
    ``occupations``: (n_spins, n_k, n_bands), ``weight x f_nk`` (the spin factor included).
    """
    ns = occupations.shape[0]
    nb = occupations.shape[-1]
    density = np.zeros(shape)
    first = True
    for w in calc.dft.ibzwfs:
        s, k = (int(w.spin), int(w.k)) if ns > 1 else (0, int(w.k))
        c = w.C_nM.data[:nb]
        t = np.zeros((c.shape[1], c.shape[1]), dtype=c.dtype)
        w.basis.calculate_potential_matrix(np.ones(shape), t, w.q)  # lower triangle of <Phi_mu|Phi_nu>_grid
        t = np.tril(t)
        t = t + t.conj().T - np.diag(np.diag(t))
        norms = np.einsum("nm,mk,nk->n", c, t, c.conj()).real
        if np.any(norms < 0.5) or np.any(norms > 1.5):
            raise BackendError(f"LCAO state norms at k-point {k} range {norms.min():.3f}-{norms.max():.3f}; "
                               "expected about 1: GPAW's LCAO API differs from what ednn expects")
        weights = occupations[s, k] / norms
        w.basis.construct_density((c.conj().T * weights) @ c, density, w.q)
        if first:  # the same for one state through its wave function (the path of the LDOS labels)
            one = np.zeros(shape)
            w.basis.construct_density(np.outer(c[0].conj(), c[0]), one, w.q)
            psi = calc.dft.wave_functions(n1=0, n2=1, kpt=k, spin=s).data[0]
            p2 = np.abs(psi) ** 2
            ref = p2 / (p2.sum() * abs(calc.get_atoms().get_volume()) / p2.size)  # renormalised, 1/A^3
            got = one / units.Bohr**3 / norms[0]
            if np.abs(got - ref).max() > 1e-6 * ref.max():
                raise BackendError("the LCAO density-matrix route disagrees with the wave function of band 0 "
                                   f"({np.abs(got - ref).max() / ref.max():.2e} of its maximum): GPAW's LCAO API "
                                   "differs from what ednn expects")
            first = False
    return density / units.Bohr**3  # GPAW's routine works in 1/Bohr^3


def _valence_electrons(atoms: Atoms, xc: str) -> float:
    """Valence electrons of ``atoms`` in GPAW's setups (from the setup files' headers)."""
    from gpaw.setup import create_setup  # noqa: PLC0415

    counts: dict[str, float] = {}
    for sym in set(atoms.get_chemical_symbols()):
        counts[sym] = float(create_setup(sym, xc).Nv)
    return sum(counts[s] for s in atoms.get_chemical_symbols())


def _import_gpaw() -> Any:
    try:
        import gpaw  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'gpaw-ldos' labeller needs GPAW ({exc}); run `make dft` (installs libxc and OpenBLAS from "
            "Debian and builds GPAW with its PAW setups into .venv), or `pip install .[dft]` after "
            "`apt-get install -y libxc-dev libopenblas-dev` with CC=g++"
        ) from exc
    return gpaw
