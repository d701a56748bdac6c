"""Reference datasets (``make data``): Tersoff-labelled B/C/N sheets.

Builds, resumably (kill at any time and rerun: finished records are kept and
the remaining ones are generated exactly as an uninterrupted run would):

``<out>/train.h5``
    ``--n`` (default 3000) structures of ``generate("mixed")``: graphene,
    h-BN, B_xC_yN_z alloys, in-plane heterostructures (stripes, islands) and
    defects (vacancies, di-vacancies, Stone-Wales, nanopores), 8-200 atoms,
    hexagonal (75 %) and rectangular (25 %) supercells, in-plane strain up to
    2 %, thermal disorder from random displacements or (15 %) 30 fs Langevin
    MD at 300-1000 K with the labeller's forces.
``<out>/transfer.h5``
    ``--n-transfer`` (default 60) structures of the same mix with 1000-5000
    atoms, for testing size transfer (train small, predict large). Its
    disorder is random displacements only (no MD), but its defects are relaxed
    with the labeller exactly as the training set's are, so that the
    size-transfer figures measure the model, not a change of distribution.

Every defect record says in its ``info["relaxed"]`` whether the relaxed
structure was used.

All cells use the common lattice constant ``ednn.atoms.structures.A_BNC`` (2.495 A),
so a pixel spacing ``A_BNC / k`` makes every hexagonal cell commensurate with
the raster grid; the metadata records it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ednn.atoms import structures as st
from ednn.atoms.labellers import Labeller, get_labeller
from ednn.data import DatasetWriter

# name -> (n, seed, n_atoms range, md_fraction)
PLANS: dict[str, dict[str, Any]] = {
    "train": {"n": 3000, "seed": 2024, "n_atoms": (8, 200), "md_fraction": 0.15},
    "transfer": {"n": 60, "seed": 4048, "n_atoms": (1000, 5000), "md_fraction": 0.0},
}
SMALL: dict[str, dict[str, Any]] = {
    "train": {"n": 40, "seed": 2024, "n_atoms": (8, 64), "md_fraction": 0.1},
    "transfer": {"n": 4, "seed": 4048, "n_atoms": (300, 600), "md_fraction": 0.0},
}


def build(path: Path, labeller: Labeller, n: int, seed: int, n_atoms: tuple[int, int], md_fraction: float,
          kind: str = "mixed", progress: bool = True, fsync: bool = True) -> dict[str, Any]:
    """Generate and label ``n`` records of ``kind`` into ``path`` (resuming if it exists).

    Returns
    -------
    dict
        ``{"path", "n_records", "new", "seconds", "atoms"}``.
    """
    # the labeller always goes to generate(): it relaxes the defects (whatever md_fraction is) and drives the MD
    gen_kw = {"n_atoms": list(n_atoms), "a": st.A_BNC, "md_fraction": md_fraction, "relax_defects": True}
    labeller.prepare()  # the settings stored below then hold what the set-up adds (e.g. the LAMMPS version)
    metadata = {
        "labeller": labeller.metadata(),
        "recipe": "data_gen.reference",
        "kind": kind,
        "seed": int(seed),
        "generate": gen_kw,
        "lattice_constant": st.A_BNC,
        "vacuum_c": st.VACUUM_C,
        "pbc": [True, True, False],
    }
    t0 = time.perf_counter()
    new = 0
    n_atoms_total = 0
    with DatasetWriter(path, metadata, fsync=fsync) as w:
        start = w.n_records
        gen = st.generate(kind, n, seed, start=start, n_atoms=tuple(n_atoms), a=st.A_BNC,
                          md_fraction=md_fraction, calc=labeller, relax_defects=True)
        bar = tqdm(gen, total=n, initial=start, desc=path.name, unit="struct", disable=not progress,
                   file=sys.stderr, mininterval=1.0)
        for atoms in bar:
            lab = labeller.label(atoms)
            info = {k: atoms.info[k] for k in ("kind", "index", "seed", "defect", "relaxed", "hetero",
                                               "md_temperature_K") if k in atoms.info}
            if lab["stress"] is None:
                info["stress_absent"] = lab["stress_absent"]
            w.append(atoms, energy=lab["energy"], forces=lab["forces"], stress=lab["stress"], info=info)
            new += 1
            n_atoms_total += len(atoms)
        n_rec = w.n_records
    return {"path": str(path), "n_records": n_rec, "new": new, "seconds": time.perf_counter() - t0,
            "atoms_new": n_atoms_total}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m data_gen.reference --out data [--small]``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data", help="output folder (default: data)")
    ap.add_argument("--small", action="store_true", help="tiny datasets for tests (a few seconds)")
    ap.add_argument("--n", type=int, default=None, help="number of training structures (default 3000)")
    ap.add_argument("--n-transfer", type=int, default=None, help="number of 1000-5000 atom structures (default 60)")
    ap.add_argument("--only", choices=sorted(PLANS), default=None, help="build one of the datasets only")
    ap.add_argument("--labeller", default="tersoff", help="labeller name (default tersoff)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    plans = {k: dict(v) for k, v in (SMALL if args.small else PLANS).items()}
    if args.n is not None:
        plans["train"]["n"] = args.n
    if args.n_transfer is not None:
        plans["transfer"]["n"] = args.n_transfer
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labeller = get_labeller(args.labeller)
    report = {}
    for name, plan in plans.items():
        if args.only and name != args.only:
            continue
        res = build(out / f"{name}.h5", labeller, plan["n"], plan["seed"], plan["n_atoms"], plan["md_fraction"],
                    progress=not args.no_progress, fsync=not args.small)
        report[name] = res
        print(f"{name}: {res['n_records']} records ({res['new']} new, {res['atoms_new']} atoms) "
              f"in {res['seconds']:.1f} s -> {res['path']}")
    tmp = out / "reference_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / "reference_report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
