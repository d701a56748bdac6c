"""A small DFT (GPAW LCAO dzp, PBE, Gamma point) dataset, built resumably in the background.

Needs the optional extra: ``pip install .[dft]`` (on Debian/Ubuntu first
``apt-get install -y libxc-dev libopenblas-dev``; build GPAW with ``CC=g++``).
Measured here (GPAW 26.7.0, one core, niced): 100-117 s per record of 80-108
atoms, pseudo density stored; a SIGKILL during the second record kept the
first and the rerun added the other two. The default 200 structures therefore
take several hours; run it in the background::

    nohup python -m data_gen.dft_dataset --out data/dft.h5 --n 200 > data/dft.log 2>&1 &

Kill it at any time (even ``kill -9``) and start the same command again: the
finished records are kept and generation continues with the next index. The
structures are ``ednn.atoms.structures.generate("mixed")`` with 6x6 to 8x8 primitive
cells (72-128 atoms before defects), so the Gamma-point sampling is adequate;
defects are left unrelaxed (``relax_defects=False``, recorded in the metadata and
in each defect record's ``info["relaxed"]``): a DFT relaxation would cost ~80 DFT calls;
``--store-density`` also stores GPAW's pseudo valence density on its grid as a
per-voxel target (``targets["density"]``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ednn.atoms import structures as st
from ednn.atoms.labellers import get_labeller
from ednn.data import DatasetWriter
from ednn.errors import BackendError


def main(argv: list[str] | None = None) -> int:
    """Command-line entry, see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/dft.h5")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n-atoms", type=int, nargs=2, default=(72, 128), metavar=("LO", "HI"))
    ap.add_argument("--basis", default="dzp")
    ap.add_argument("--xc", default="PBE")
    ap.add_argument("--h", type=float, default=0.2, help="real-space grid spacing (Angstrom)")
    ap.add_argument("--store-density", action="store_true", help="store the pseudo density as a per-voxel target")
    args = ap.parse_args(argv)
    try:
        lab = get_labeller("gpaw", basis=args.basis, xc=args.xc, h=args.h)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {"labeller": lab.metadata(), "recipe": "data_gen.dft_dataset", "kind": "mixed", "seed": args.seed,
            "generate": {"n_atoms": list(args.n_atoms), "a": st.A_BNC, "relax_defects": False},
            "lattice_constant": st.A_BNC,
            "store_density": bool(args.store_density)}
    t0 = time.perf_counter()
    with DatasetWriter(Path(args.out), meta) as w:
        start = w.n_records
        gen = st.generate("mixed", args.n, args.seed, start=start, n_atoms=tuple(args.n_atoms), a=st.A_BNC,
                          rectangular=False, relax_defects=False)  # a DFT relaxation costs ~80 DFT calls
        for atoms in tqdm(gen, total=args.n, initial=start, desc=Path(args.out).name, unit="struct"):
            out = lab.label(atoms)
            targets = None
            if args.store_density:
                targets = {"density": lab.calculator().get_pseudo_density()}
            info = {k: atoms.info[k] for k in ("kind", "index", "seed", "defect", "relaxed") if k in atoms.info}
            w.append(atoms, energy=out["energy"], forces=out["forces"], stress=out["stress"], targets=targets,
                     info=info)
        n = w.n_records
    print(f"{args.out}: {n} records ({n - start} new) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
