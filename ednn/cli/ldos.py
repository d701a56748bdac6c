"""``ednn ldos``: electronic-structure datasets (LDOS and density labels).

``ednn ldos check FILE [--json OUT]``
    The data checks of every record (:func:`ednn.data.ldos.validate_ldos_dataset`):
    electrons from the LDOS against the electron count, the LDOS's DOS against
    the broadened eigenvalue DOS, the Fermi level against the DFT code's, the
    density from the LDOS against the density summed from the states, and the
    band-energy broadening bias. Exit status 1 when a check fails.
``ednn ldos broaden FILE -o OUT --width W``
    A copy with every LDOS re-broadened to W eV (exact: Gaussian widths add in
    quadrature), for training per-voxel models on a smooth target; resumable.
``ednn ldos props FILE [--index I] [--temperature T]``
    The DOS-derived properties of a record at any electronic temperature:
    Fermi level, band energy, -TS, electrons (JSON on stdout).

Examples
--------
::

    ednn ldos check data/ldos/al4_298K.h5 --json data/ldos/al4_298K_check.json
    ednn ldos props data/ldos/al4_298K.h5 --index 0 --temperature 933
    ednn ldos broaden data/ldos/al4_298K.h5 -o data/ldos/al4_298K_s100.h5 --width 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InputError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ednn ldos``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples\n--------\n::\n", 1)[-1]
    parser.add_argument("action", choices=["check", "props", "broaden"],
                        help="check: data checks; props: derived properties; broaden: re-broadened copy")
    parser.add_argument("path", help="an LDOS dataset (.h5) made by the gpaw-ldos labeller")
    parser.add_argument("--json", metavar="OUT", help="check: also write the full report as JSON")
    parser.add_argument("--index", type=int, default=0, help="props: record index")
    parser.add_argument("-o", "--out", help="broaden: output dataset (.h5)")
    parser.add_argument("--width", type=float, help="broaden: the new Gaussian width s (eV, MALA's convention)")
    parser.add_argument("--no-progress", action="store_true", help="broaden: no progress bar")
    parser.add_argument("--temperature", type=float, default=None,
                        help="props: electronic temperature in K (default: the record's)")


def _row(r: dict[str, Any]) -> str:
    dens = f"{r['density_mape_pct']:9.4f}" if "density_mape_pct" in r else "        -"
    secs = r.get("label_seconds")
    return (f"{r['index']:5d} {r['n_atoms']:6d} {r['electronic_temperature_K']:7.0f} {r['electrons_ldos']:10.4f} "
            f"{r['n_electrons']:7.1f} {r['electrons_rel']:9.2e} {r['dos_rel']:9.2e} "
            f"{1000 * r['fermi_level_error_eV']:8.2f} {dens} {r['band_energy_bias_meV_per_atom']:9.2f} "
            f"{'-' if secs is None else f'{secs:8.1f}':>8} {'ok' if r['ok'] else 'FAIL'}")


def run_check(args: argparse.Namespace) -> int:
    """``ednn ldos check``: print one line per record and a summary; 1 if any check fails."""
    from ..data import Dataset  # noqa: PLC0415
    from ..data.ldos import validate_ldos_dataset  # noqa: PLC0415 - h5py/scipy only for this verb

    with Dataset(args.path) as ds:
        density_only = "ldos" not in ds.target_names and "density" in ds.target_names
    if density_only:
        print(f"{'rec':>5} {'atoms':>6} {'grid':>14} {'N(dens)':>10} {'N':>7} {'N rel':>9} {'min':>10} {'s/rec':>8}")
        rep = validate_ldos_dataset(args.path, on_record=lambda r: print(
            f"{r['index']:>5} {r['n_atoms']:>6} {'x'.join(map(str, r['grid'])):>14} {r['electrons']:>10.4f} "
            f"{r['n_electrons']:>7.1f} {r['electrons_rel']:>9.2e} {r['density_min']:>10.2e} "
            f"{r['label_seconds'] or float('nan'):>8.0f}", flush=True))
        print(f"worst: electrons {rep['worst']['electrons_rel']:.2e} (tol {rep['tolerances']['electrons_rel']:.0e}), "
              f"smallest density {rep['worst']['density_min']:.2e} 1/A^3")
    else:
        print(f"{'rec':>5} {'atoms':>6} {'T_e/K':>7} {'N(LDOS)':>10} {'N':>7} {'N rel':>9} {'DOS rel':>9} "
              f"{'dmu/meV':>8} {'dens %':>9} {'Eb bias':>9} {'s/rec':>8}  (Eb bias: meV/atom)")
        rep = validate_ldos_dataset(args.path, on_record=lambda r: print(_row(r), flush=True))
        _print_worst(rep)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rep, fh, indent=1)
    print(f"{args.path}: {rep['n_records']} records, {'all checks pass' if rep['ok'] else 'CHECKS FAIL'}")
    return 0 if rep["ok"] else 1


def _print_worst(rep: dict[str, Any]) -> None:
    tol = rep["tolerances"]
    w = rep["worst"]
    print(f"worst: electrons {w['electrons_rel']:.2e} (tol {tol['electrons_rel']:.0e}), DOS {w['dos_rel']:.2e} "
          f"(tol {tol['dos_rel']:.0e}), Fermi level {1000 * w['fermi_level_error_eV']:.2f} meV "
          f"(tol {1000 * tol['fermi_level_eV']:.0f}), density MAPE "
          f"{w.get('density_mape_pct', float('nan')):.3f} % (tol {tol['density_mape_pct']}), band-energy bias "
          f"{w['band_energy_bias_meV_per_atom'][0]:.2f} .. {w['band_energy_bias_meV_per_atom'][1]:.2f} meV/atom")


def run_props(args: argparse.Namespace) -> int:
    """``ednn ldos props``: DOS-derived properties of one record at a chosen electronic temperature."""
    from ..data import Dataset  # noqa: PLC0415
    from ..electronic import EnergyGrid, electronic_properties  # noqa: PLC0415

    with Dataset(args.path) as ds:
        if "ldos" not in ds.target_names:
            raise InputError(f"{args.path} has no 'ldos' target; make one with ednn gen aluminium")
        if not 0 <= args.index < len(ds):
            raise InputError(f"--index {args.index} is outside 0..{len(ds) - 1}")
        info = ds.info(args.index)
        grid = EnergyGrid.from_dict(ds.metadata["energy_grid"])
        t_e = info["electronic_temperature_K"] if args.temperature is None else args.temperature
        props = electronic_properties(grid, t_e, info["n_electrons"], ldos=ds.target("ldos", args.index),
                                      voxel_volume=info["voxel_volume_A3"])
        n_atoms = len(ds[args.index])
    out = {k: float(v) for k, v in props.items() if k not in ("dos", "density")}
    out.update({"n_atoms": n_atoms, "band_energy_per_atom": out["band_energy"] / n_atoms,
                "labelled_at_K": info["electronic_temperature_K"], "fermi_level_dft": info["fermi_level_eV"]})
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


def run_broaden(args: argparse.Namespace) -> int:
    """``ednn ldos broaden``: a re-broadened copy of an LDOS dataset."""
    from ..data.ldos import broaden_dataset  # noqa: PLC0415

    if not args.out or args.width is None:
        raise InputError("ednn ldos broaden needs -o OUT.h5 and --width W (eV)")
    res = broaden_dataset(args.path, args.out, args.width, progress=not args.no_progress)
    print(f"{args.out}: {res['n_records']} records, LDOS broadening {res['width_eV']} eV")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``ednn ldos``."""
    return {"check": run_check, "props": run_props, "broaden": run_broaden}[args.action](args)
