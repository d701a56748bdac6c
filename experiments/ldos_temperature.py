"""Electronic-temperature transfer of an LDOS model trained at T_e = 298 K only (issue 13, must-show 2).

The model of ``experiments/ldos_model.py`` (``runs/ldos_model/ednn``) saw LDOS labels at 298 K only.
For the structures that GPAW also labelled at T_e = 933 K and 2000 K
(``data/ldos/al4_298K_Te933.h5``, ``al4_298K_Te2000.h5``: the first snapshots of the 298 K
trajectory), the Fermi level, band energy, -TS and density at T_e are computed three ways, each
against GPAW's LDOS at T_e (the same physics code for all):

- ``floor``: the *true* 298 K LDOS evaluated at T_e: what the approximation "the LDOS does not depend
  on T_e, only the occupations do" costs, with a perfect network;
- ``ednn``: the model's LDOS evaluated at T_e: the floor plus the network's error;
- ``gpaw_mu``: GPAW's own Fermi level at T_e against the truth's (how well the LDOS reproduces it).

The model's targets are the labels re-broadened to 0.1 eV (``data/ldos/s100``, as in
``ldos_model.py``); truth and floor use the same broadening. Beside them, the free energy: GPAW's
``F(T_e) - F(298 K)`` of the same structure against the frozen-LDOS estimate
``[E_band - TS](T_e) - [E_band - TS](298 K)`` from the 298 K LDOS (true, and predicted): the part of
the free energy's temperature dependence that the LDOS carries when the density's change is
neglected (it moves the Hartree and exchange-correlation terms, which this estimate leaves out).

Output: ``experiments/results/ldos_temperature.json``::

    python experiments/ldos_temperature.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
DATA = ROOT / "data" / "ldos" / "s100"
HOT = {933.0: "al4_298K_Te933.h5", 2000.0: "al4_298K_Te2000.h5"}
COLD = "al4_298K_Te298.h5"


def main() -> int:
    import ednn
    from ednn.data import Dataset
    from ednn.data.ldos import broaden_dataset
    from ednn.electronic import electronic_properties
    from ednn.predict.electronic import energy_grid

    for f in [COLD, *HOT.values()]:  # the model's targets: the labels re-broadened to 0.1 eV (resumable)
        broaden_dataset(DATA.parent / f, DATA / f, 0.1)
    run = ROOT / "runs" / "ldos_model" / "ednn"
    model = ednn.load(str(run / "model"))
    split = json.loads((run / "split.json").read_text())
    with Dataset(DATA / COLD) as ds:
        n_cold = len(ds)
    held_out = {int(i) for i in split["test"]}
    test = list(range(n_cold))  # every structure for the floor; the model's errors on held-out ones only
    grid = energy_grid(model)
    rows = []
    for t_e, name in HOT.items():
        with Dataset(DATA / name) as hot, Dataset(DATA / COLD) as cold:
            for i in test:
                if i >= len(hot):
                    continue
                at = hot[i]
                assert np.array_equal(at.positions, cold.positions(i)), "the T_e files share the 298 K snapshots"
                n_e = float(hot.info(i)["n_electrons"])
                dv = abs(at.cell.volume) / np.prod(hot.target("ldos", i).shape[:-1])

                def props(ldos, t=t_e, n_e=n_e, dv=dv):
                    return electronic_properties(grid, t, n_e, ldos=ldos, voxel_volume=dv)

                truth = props(hot.target("ldos", i))
                floor = props(cold.target("ldos", i))
                pred = props(model.predict_ldos(at))
                cold_truth = electronic_properties(grid, 298.0, n_e, ldos=cold.target("ldos", i), voxel_volume=dv)
                cold_pred = electronic_properties(grid, 298.0, n_e, ldos=model.predict_ldos(at), voxel_volume=dv)
                d_gpaw = hot.info(i)["free_energy_eV"] - cold.info(i)["free_energy_eV"]
                row = {"record": i, "electronic_temperature_K": t_e, "n_atoms": len(at),
                       "free_energy_change_gpaw_meV_per_atom": 1000 * d_gpaw / len(at),
                       "free_energy_change_frozen_ldos_meV_per_atom": 1000 * (
                           floor["band_energy"] + floor["entropy_term"] - cold_truth["band_energy"]
                           - cold_truth["entropy_term"]) / len(at),
                       "free_energy_change_ednn_meV_per_atom": 1000 * (
                           pred["band_energy"] + pred["entropy_term"] - cold_pred["band_energy"]
                           - cold_pred["entropy_term"]) / len(at),
                       "gpaw_fermi_level_minus_ldos_meV": 1000 * (hot.info(i)["fermi_level_eV"] - truth["fermi_level"])}
                for key, p in (("floor", floor), ("ednn", pred)):
                    row[key] = {
                        "fermi_level_meV": 1000 * (p["fermi_level"] - truth["fermi_level"]),
                        "band_energy_meV_per_atom": 1000 * (p["band_energy"] - truth["band_energy"]) / len(at),
                        "entropy_term_meV_per_atom": 1000 * (p["entropy_term"] - truth["entropy_term"]) / len(at),
                        "density_mape_pct": float(100 * np.mean(np.abs(p["density"] - truth["density"])
                                                                / truth["density"])),
                    }
                row["held_out"] = i in held_out
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for t_e in HOT:
        sel = [r for r in rows if r["electronic_temperature_K"] == t_e]
        held = [r for r in sel if r["held_out"]]
        if sel:
            summary[str(int(t_e))] = {
                "floor (all records)": {m: float(np.mean([abs(r["floor"][m]) for r in sel])) for m in sel[0]["floor"]},
                "ednn (held-out records)": {m: float(np.mean([abs(r["ednn"][m]) for r in held]))
                                            for m in sel[0]["ednn"]} if held else {},
                "free_energy_change_meV_per_atom": {
                    "gpaw": [r["free_energy_change_gpaw_meV_per_atom"] for r in sel],
                    "frozen_ldos": [r["free_energy_change_frozen_ldos_meV_per_atom"] for r in sel],
                    "ednn": [r["free_energy_change_ednn_meV_per_atom"] for r in sel]},
                "n_records": len(sel), "n_held_out": len(held)}
    out = {"model": str(run), "test_records": test, "summary": summary, "records": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ldos_temperature.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
