"""The aluminium LDOS datasets of ``make data-ldos``: data checks, costs and a figure (issue 12).

Reads every ``data/ldos/al*.h5`` (made by ``data_gen/ldos.py``), runs the data
checks of :func:`ednn.data.ldos.validate_ldos_dataset` on every record, and
writes ``experiments/results/ldos_labels.json`` (per dataset: records, atoms,
grid, seconds per record, size on disk, worst value of each check) and
``ldos_labels.png``: the DOS from the LDOS of one Al32 snapshot with the
Fermi-Dirac occupations at 298, 933 and 2000 K, the broadened eigenvalue DOS on
top of it, and a slice of the density from the LDOS beside the density summed
from the states. ::

    python experiments/ldos_labels.py
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from ednn.data import Dataset
from ednn.data.ldos import TOLERANCES, validate_ldos_dataset
from ednn.electronic import (
    EnergyGrid,
    broadened_dos,
    density_from_ldos,
    dos_from_ldos,
    fermi_dirac,
    fermi_level,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def main(argv: list[str] | None = None) -> int:
    """Check every dataset, write the JSON and the figure."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data" / "ldos"))
    args = ap.parse_args(argv)
    files = sorted(Path(args.data).glob("al*.h5"))
    if not files:
        raise SystemExit(f"no al*.h5 in {args.data}: run `make data-ldos` first")
    out: dict = {"tolerances": TOLERANCES, "machine": platform.processor() or platform.machine(), "datasets": {}}
    for f in files:
        with Dataset(f) as ds:
            empty = len(ds) == 0
        if empty:  # a job started but no record finished yet (resumable): nothing to check
            print(f"{f.stem:18s} no finished record yet (generation under way or stopped; resume it)")
            out.setdefault("unfinished", []).append(f.stem)
            continue
        rep = validate_ldos_dataset(f)
        with Dataset(f) as ds:
            info0 = ds.info(0)
            secs = [ds.info(i).get("label_seconds") for i in range(len(ds))]
            n_atoms = len(ds[0])
        out["datasets"][f.stem] = {
            "records": rep["n_records"], "atoms": n_atoms, "grid": info0["grid_shape"], "kpts": info0["kpts"],
            "electronic_temperature_K": info0["electronic_temperature_K"],
            "seconds_per_record": {"mean": float(np.mean(secs)), "min": float(np.min(secs)), "max": float(np.max(secs))},
            "MB_on_disk": f.stat().st_size / 1e6, "MB_per_record": f.stat().st_size / 1e6 / rep["n_records"],
            "all_checks_pass": rep["ok"], "worst": rep["worst"],
        }
        w = rep["worst"]
        print(f"{f.stem:18s} {rep['n_records']} x {n_atoms:3d} atoms, grid {info0['grid_shape']}, "
              f"{np.mean(secs):6.1f} s/record, {f.stat().st_size / 1e6 / rep['n_records']:6.1f} MB/record | "
              f"N rel {w['electrons_rel']:.1e}, DOS rel {w['dos_rel']:.1e}, dmu {1000 * w['fermi_level_error_eV']:.2f} "
              f"meV, density MAPE {w['density_mape_pct']:.3f} %, Eb bias {w['band_energy_bias_meV_per_atom'][0]:.2f}"
              f"..{w['band_energy_bias_meV_per_atom'][1]:.2f} meV/atom | {'ok' if rep['ok'] else 'FAIL'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ldos_labels.json").write_text(json.dumps(out, indent=1))
    _figure(files)
    return 0


def _figure(files: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = next((p for p in files if p.stem.startswith("al32")), files[0])
    with Dataset(f) as ds:
        grid = EnergyGrid.from_dict(ds.metadata["energy_grid"])
        info = ds.info(0)
        ldos = ds.target("ldos", 0)
        dens = ds.target("density", 0)
        n_atoms = len(ds[0])
    e = grid.energies
    dos = dos_from_ldos(ldos, info["voxel_volume_A3"])
    eig = np.asarray(info["eigenvalues_eV"])
    w = np.broadcast_to(2 * np.asarray(info["kpoint_weights"])[None, :, None], eig.shape)
    ref = broadened_dos(eig, w, grid, info["broadening_eV"])
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    ax[0].plot(e, dos / n_atoms, lw=0.8, label="DOS from the LDOS")
    ax[0].plot(e, ref / n_atoms, "--", lw=0.8, label="broadened eigenvalue DOS")
    for t, c in ((298.0, "C2"), (933.0, "C3"), (2000.0, "C4")):
        mu = fermi_level(dos, grid, info["n_electrons"], t)
        ax[0].fill_between(e, 0, dos / n_atoms * fermi_dirac(e, mu, t), color=c, alpha=0.25,
                           label=f"occupied at {t:.0f} K (mu {mu:.3f} eV)")
    ax[0].set(xlabel="E (eV, GPAW's zero)", ylabel="states / (eV atom)", title=f"{f.stem}: {n_atoms} atoms, record 0")
    ax[0].legend(fontsize=7)
    mu = fermi_level(dos, grid, info["n_electrons"], info["electronic_temperature_K"])
    n_ldos = density_from_ldos(ldos, grid, mu, info["electronic_temperature_K"])
    k = dens.shape[2] // 2
    vmax = float(dens[:, :, k].max())
    for a, img, title in ((ax[1], n_ldos[:, :, k], "density from the LDOS"),
                          (ax[2], dens[:, :, k], "density summed from the states")):
        im = a.imshow(img.T, origin="lower", vmin=0, vmax=vmax, cmap="viridis")
        a.set(title=f"{title} (slice {k}), 1/A^3", xticks=[], yticks=[])
        fig.colorbar(im, ax=a, shrink=0.8)
    fig.tight_layout()
    fig.savefig(RESULTS / "ldos_labels.png", dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
