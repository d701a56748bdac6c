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

Another model and label set (the Gamma-centred converged-k labels, a model trained with ``augment:
symmetry`` whose held-out 298 K snapshots are records 1 and 2, its fields symmetrized)::

    python experiments/ldos_temperature.py --run runs/ldos_sym50_16/ednn_mom_r2 --labels _k40g \
        --held-out 1 2 --symmetrize --results ldos_temperature_k40g
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
DATA = ROOT / "data" / "ldos" / "s100"


def main(argv: list[str] | None = None) -> int:
    import ednn
    from ednn.data import Dataset
    from ednn.data.ldos import broaden_dataset
    from ednn.electronic import electronic_properties
    from ednn.predict.electronic import energy_grid

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "ldos_model" / "ednn"),
                    help="the training run (its model/ and split.json)")
    ap.add_argument("--labels", default="", help="label-set suffix: al4_298K_Te{298,933,2000}<labels>.h5")
    ap.add_argument("--held-out", type=int, nargs="*", default=None,
                    help="records of the 298 K file the model never saw (default: split.json's test records)")
    ap.add_argument("--symmetrize", action="store_true", help="average the fields over the cell's symmetries")
    ap.add_argument("--results", default="ldos_temperature", help="name of the JSON in experiments/results")
    args = ap.parse_args(argv)
    cold_name = f"al4_298K_Te298{args.labels}.h5"
    hot_names = {933.0: f"al4_298K_Te933{args.labels}.h5", 2000.0: f"al4_298K_Te2000{args.labels}.h5"}
    with Dataset(DATA.parent / hot_names[933.0]) as ds:
        n_hot = len(ds)
    for f in [cold_name, *hot_names.values()]:  # the model's targets: the labels re-broadened to 0.1 eV
        have = 0
        if (DATA / f).exists():
            with Dataset(DATA / f) as ds:
                have = len(ds)
        if have < n_hot:  # (resumable; a copy that already holds the records used is not touched, so a job
            broaden_dataset(DATA.parent / f, DATA / f, 0.1)  # may still be appending to its source)
    run = Path(args.run)
    model = ednn.load(str(run / "model"))
    if args.symmetrize:
        model.symmetrize_fields = True
    if args.held_out is None:  # split.json counts records over the run's training files in order: they are
        first = json.loads((run / "config.json").read_text())["data"]["train"][0]  # the 298 K file's records
        if Path(first).name != cold_name:  # only when that file came first and whole
            raise SystemExit(f"{run} was trained on {first} first, not {cold_name}: its split.json does not number "
                             f"{cold_name}'s records; name the held-out records with --held-out")
        held_out = {int(i) for i in json.loads((run / "split.json").read_text())["test"]}
    else:
        held_out = set(args.held_out)
    test = list(range(n_hot))  # every structure for the floor; the model's errors on held-out ones only
    grid = energy_grid(model)
    rows = []
    predicted: dict[int, np.ndarray] = {}  # record -> the model's LDOS (the same structure at every T_e)
    for t_e, name in hot_names.items():
        with Dataset(DATA / name) as hot, Dataset(DATA / cold_name) as cold:
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
                if i not in predicted:
                    predicted[i] = model.predict_ldos(at)
                pred = props(predicted[i])
                cold_truth = electronic_properties(grid, 298.0, n_e, ldos=cold.target("ldos", i), voxel_volume=dv)
                cold_pred = electronic_properties(grid, 298.0, n_e, ldos=predicted[i], voxel_volume=dv)
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
    for t_e in hot_names:
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
    out = {"model": str(run), "labels": [cold_name, *hot_names.values()], "symmetrized": args.symmetrize,
           "held_out": sorted(held_out), "test_records": test, "summary": summary, "records": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
