"""The aluminium LDOS datasets (issue 12), built resumably in the background.

Each job is one ``ednn gen aluminium`` run (fcc Al snapshots from EMT MD at an
ionic temperature, labelled by ``gpaw-ldos`` at an electronic temperature);
kill this script at any time (even ``kill -9``) and start it again: finished
records are kept and every job continues where it stopped. Snapshot seeds are
shared between electronic temperatures, so the T_e = 933 K and 2000 K records
are the same structures as the first ones at 298 K::

    nohup nice python -m data_gen.ldos --out data/ldos > data/ldos.log 2>&1 &
    python -m data_gen.ldos --out data/ldos --jobs al4_298K_Te298 --n 2   # one job, fewer records

The ``*_k40g`` jobs label on Gamma-centred k-meshes (the labeller's default), so that
a cell and its supercells sample the same k-points; the older jobs keep the
Monkhorst-Pack meshes they were made with (``kpt_gamma=false``), which for an even
mesh size put the Fermi level tens of meV elsewhere (experiments/ldos_kmesh.py).

``sheets_defect_density`` labels 2D sheets with defects (graphene, h-BN; left
unrelaxed) with the electron density only, on the 3D grid (0.2 A) across 20 A of
vacuum, in GPAW's LCAO mode (dzp): the first 28-atom cell took 289 s at a 0.2 A grid
against 948 s in plane waves at 0.25 A (both beside other jobs); an h-BN sheet's LCAO
density is within 5 % (MAPE) of the plane-wave one (tests/test_ldos_data.py). The grid has an even
number of points along each cell vector (``grid_multiple=2``: ``2 round(L / 0.4 A)``), the grid an
image of 0.4 A pixels refines 2x (``model.upsample: 2``). ``_x4`` holds cells
4x larger (128-192 atoms) for size transfer.
After the jobs, ``ednn ldos check`` runs on every aluminium file and the
reports go to ``OUT/checks_<jobs>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ednn.cli import main as ednn_main
from ednn.data.ldos import validate_ldos_dataset

#: Real-space grid spacing (A) of the jobs meant for size transfer: GPAW's own grid for the 4.04 A cube
#: (18 points), imposed on larger cells too (36 for 8.08 A, 54 for 12.12 A) so that every cell shares it.
AL_GRID_SPACING = 4.04 / 18

#: name -> (cell repeats, ionic temperature K, electronic temperature K, records, seed, grid spacing or None,
#: k-point density in A). The first sets used 24 A (6^3 k for Al4, 3^3 for Al32); the band energy converges
#: to 2 meV/atom at 40 A (experiments/ldos_convergence.py), the labeller's default, used by the *_k40 sets.
JOBS: dict[str, tuple[int, float, float, int, int, float | None, float]] = {
    "al4_298K_Te298": (1, 298.0, 298.0, 24, 0, None, 24.0),
    "al4_933K_Te298": (1, 933.0, 298.0, 24, 1, None, 24.0),
    "al4_298K_Te933": (1, 298.0, 933.0, 6, 0, None, 24.0),
    "al4_298K_Te2000": (1, 298.0, 2000.0, 6, 0, None, 24.0),
    "al32_298K_Te298": (2, 298.0, 298.0, 2, 0, None, 24.0),
    "al32_933K_Te298": (2, 933.0, 298.0, 2, 1, None, 24.0),
    "al32g_298K_Te298": (2, 298.0, 298.0, 3, 10, AL_GRID_SPACING, 24.0),
    "al32g_933K_Te298": (2, 933.0, 298.0, 2, 11, AL_GRID_SPACING, 24.0),
    "al4_298K_Te298_k40": (1, 298.0, 298.0, 24, 0, None, 40.0),
    "al4_933K_Te298_k40": (1, 933.0, 298.0, 24, 1, None, 40.0),
    "al32g_298K_Te298_k40": (2, 298.0, 298.0, 2, 10, AL_GRID_SPACING, 40.0),
    "al4_298K_Te933_k40": (1, 298.0, 933.0, 6, 0, None, 40.0),
    "al4_298K_Te2000_k40": (1, 298.0, 2000.0, 6, 0, None, 40.0),
    "al32g_933K_Te298_k40": (2, 933.0, 298.0, 2, 11, AL_GRID_SPACING, 40.0),
    # the Al4 sets again (the same snapshots) on Gamma-centred meshes: the 10^3 mesh the Al32 cells' 5^3
    # unfolds to, so that the two sizes are labelled alike (the *_k40 Al4 sets' Monkhorst-Pack 10^3 leaves
    # Gamma out and puts the Fermi level ~60 meV higher)
    "al4_298K_Te298_k40g": (1, 298.0, 298.0, 24, 0, None, 40.0),
    "al4_933K_Te298_k40g": (1, 933.0, 298.0, 24, 1, None, 40.0),
    # the first 298 K snapshots again at higher electronic temperatures (electronic-temperature transfer of
    # models trained on the *_k40g sets)
    "al4_298K_Te933_k40g": (1, 298.0, 933.0, 6, 0, None, 40.0),
    "al4_298K_Te2000_k40g": (1, 298.0, 2000.0, 6, 0, None, 40.0),
    # the size-transfer targets (issue 13, must-show 4): 108-atom cells on the Al32 sets' grid spacing (54^3),
    # Gamma-centred 4^3 k-points. Hours of SCF per record (README): the labeller's SCF checkpoints in
    # al108g_298K_Te298_k40g.h5.scf/ carry a record across interruptions
    "al108g_298K_Te298_k40g": (3, 298.0, 298.0, 2, 12, AL_GRID_SPACING, 40.0),
}

#: jobs on Gamma-centred k-meshes (the labeller's default); the others keep the Monkhorst-Pack meshes they
#: were made with (identical for odd meshes, such as the Al32 sets' 5^3)
GAMMA_JOBS = {name for name in JOBS if name.endswith("_k40g")}

#: name -> (structure kind, atom-count range, records, seed): 2D sheets, electron density only on the 3D grid,
#: LCAO (SHEET_OPTS). The defect builder's pristine cells hold at least 32 atoms.
SHEET_JOBS: dict[str, tuple[str, str, int, int]] = {
    "sheets_defect_density": ("defect", "32,48", 40, 0),
    "sheets_defect_density_x4": ("defect", "128,192", 4, 1),
}
#: labeller options of every sheet job (one k-point per 24 A, the 2D datasets' density)
SHEET_OPTS = ("density_only=true", "kpt_density=24.0", "mode=lcao", "grid_spacing=0.2", "grid_multiple=2")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/ldos", help="output folder")
    ap.add_argument("--jobs", nargs="*", default=[*JOBS, *SHEET_JOBS],
                    help=f"jobs to run (default all: {[*JOBS, *SHEET_JOBS]})")
    ap.add_argument("--n", type=int, default=None, help="records per job (default: the job's)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.jobs) - set(JOBS) - set(SHEET_JOBS))
    if unknown:
        ap.error(f"unknown job(s) {unknown}; jobs are {[*JOBS, *SHEET_JOBS]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.jobs:
        t0 = time.time()
        if name in SHEET_JOBS:  # defects left unrelaxed: a DFT relaxation would cost ~80 DFT runs per record
            kind, size_range, n, seed = SHEET_JOBS[name]
            cmd = ["gen", kind, "--n", str(args.n or n), "--seed", str(seed), "--size", size_range,
                   "--labeller", "gpaw-ldos", "--set", "relax_defects=false"]
            for opt in SHEET_OPTS:
                cmd += ["--labeller-opt", opt]
        else:
            size, t_ion, t_e, n, seed, h, kd = JOBS[name]
            cmd = ["gen", "aluminium", "--n", str(args.n or n), "--seed", str(seed), "--set", f"size={size}",
                   "--set", f"temperature={t_ion}", "--labeller-opt", f"temperature={t_e}",
                   "--labeller-opt", f"kpt_density={kd}"]
            if h is not None:
                cmd += ["--labeller-opt", f"grid_spacing={h!r}"]
            if name not in GAMMA_JOBS:
                cmd += ["--labeller-opt", "kpt_gamma=false"]
        cmd += ["-o", str(out / f"{name}.h5")] + (["--no-progress"] if args.no_progress else [])
        print(f"== {name}: ednn {' '.join(cmd)}", flush=True)
        rc = ednn_main(cmd)
        if rc:
            return rc
        print(f"== {name}: done in {time.time() - t0:.0f} s", flush=True)
    reports = {}
    for name in (j for j in args.jobs if j in JOBS):
        rep = validate_ldos_dataset(out / f"{name}.h5")
        reports[name] = rep
        print(f"{name}: {rep['n_records']} records, worst {rep['worst']}, {'ok' if rep['ok'] else 'CHECKS FAIL'}")
    if reports:
        (out / f"checks_{'_'.join(reports)}.json"[:120]).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
