"""Why the Al4 and Al32 labels disagreed on the Fermi level (issue 13): the k-point mesh, not the cell size.

The Al4 training sets (``*_k40``) were labelled on a Monkhorst-Pack 10^3 mesh, which leaves Gamma out
(even size); the Al32 sets on 5^3, which holds it (odd size) and unfolds onto the Gamma-centred 10^3 mesh
of the 4-atom cell. This labels one Al4 snapshot (298 K, record 0 of ``al4_298K_Te298_k40``) on both
meshes and on denser meshes (Monkhorst-Pack 12^3, Gamma-centred 14^3 and 16^3) with the production
settings, and writes the Fermi levels and energies
to ``results/ldos_kmesh.json``::

    nice python experiments/ldos_kmesh.py     # ~40 min on one core; meshes already in the JSON are kept
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ednn.atoms.bulk import aluminium_snapshots
from ednn.atoms.labellers.ldos import GpawLdosLabeller

OUT = Path(__file__).resolve().parent / "results" / "ldos_kmesh.json"
MESHES = {"mp10": ((10, 10, 10), False), "gamma10": ((10, 10, 10), True), "mp12": ((12, 12, 12), False),
          "gamma14": ((14, 14, 14), True), "gamma16": ((16, 16, 16), True)}


def main() -> None:
    atoms = next(iter(aluminium_snapshots(1, size=1, temperature=298.0, seed=0)))
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name, (mesh, gamma) in MESHES.items():
        if name in out:  # finished earlier: resumable
            continue
        lab = GpawLdosLabeller(temperature=298.0, kpts=mesh, kpt_gamma=gamma)
        t0 = time.time()
        calc = lab.run(atoms).calc
        out[name] = {"kpts": list(mesh), "gamma_centred": gamma, "fermi_level_eV": float(calc.get_fermi_level()),
                     "energy_per_atom_eV": float(calc.get_potential_energy()) / len(atoms),
                     "seconds": time.time() - t0}
        print(name, out[name], flush=True)
        OUT.write_text(json.dumps(out, indent=1))  # each mesh as it finishes


if __name__ == "__main__":
    main()
