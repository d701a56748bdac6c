"""``ednn gen``: generate and label datasets, sample Ising configurations, convert formats.

Examples
--------
::

    ednn gen graphene --n 500 --labeller tersoff -o data/graphene.h5 --seed 0
    ednn gen mixed --n 2000 --size 8,200 -o data/mixed.h5          # rerun to resume
    ednn gen defect --n 100 --set md_fraction=0.2 -o data/defect.h5
    ednn gen ising --L 8 --temperatures 1.5:3.5:21 --n-per-T 200 -o data/ising8.h5
    ednn gen convert OUTCAR data/vasp.h5        # or x.extxyz / x.db -> .h5, .h5 -> .extxyz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError

SPECIAL = ("ising", "convert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ednn gen``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples\n--------\n::\n", 1)[-1]
    parser.add_argument(
        "kind",
        help="structure kind (graphene, hbn, bcn, hetero, defect, mixed, bilayer: see ednn.atoms.structures), "
        "'ising', or 'convert'",
    )
    parser.add_argument("paths", nargs="*", help="for 'convert': SRC DST")
    parser.add_argument("-o", "--out", help="output HDF5 file (e.g. data/graphene.h5)")
    parser.add_argument("--n", type=int, default=100, help="number of structures (total, incl. finished ones)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; record i depends only on (seed, i)")
    parser.add_argument("--labeller", default=None,
                        help="tersoff (default; tersoff-ilp for the bilayer kind), tersoff-ilp, rebo, lcbop, xtb, "
                        "gpaw, or none")
    parser.add_argument(
        "--labeller-opt", action="append", default=[], metavar="KEY=VALUE", help="labeller setting (repeatable)"
    )
    parser.add_argument("--size", help="atom-count range of the cells, 'LO,HI' (default: the builder's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="extra keyword for ednn.atoms.structures.generate, value parsed as JSON (repeatable)",
    )
    parser.add_argument("--restart", action="store_true", help="discard an existing file and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("ising")
    g.add_argument("--L", type=int, default=8, help="lattice size L (L x L spins)")
    g.add_argument(
        "--temperatures", default="1.5:3.5:21",
        help="'lo:hi:count' (inclusive linspace) or comma-separated values (J = k_B = 1)",
    )
    g.add_argument("--n-per-T", type=int, default=100, help="configurations per temperature")
    g.add_argument("--algorithm", default="wolff", choices=["wolff", "metropolis"], help="sampler")
    g.add_argument("--sweeps", type=int, default=2, help="sweeps between stored configurations of a chain")
    g.add_argument("--equil", type=int, default=None, help="equilibration sweeps (default: sampler's)")


def _kv(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"{what} {it!r} must look like KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _temperatures(spec: str) -> np.ndarray:
    try:
        if ":" in spec:
            lo, hi, cnt = spec.split(":")
            return np.round(np.linspace(float(lo), float(hi), int(cnt)), 6)
        return np.array([float(x) for x in spec.split(",") if x.strip()])
    except ValueError as e:
        raise ConfigError(f"--temperatures {spec!r}: give 'lo:hi:count' or 'T1,T2,...' ({e})") from e


def _size(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        parts = [int(x) for x in spec.replace("-", ",").split(",")]
    except ValueError as e:
        raise ConfigError(f"--size {spec!r}: give the atom-count range as LO,HI (e.g. 8,200)") from e
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise ConfigError(f"--size {spec!r}: need 0 < LO <= HI")
    return parts[0], parts[1]


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        except (TypeError, ValueError):
            continue
        out[k] = v.tolist() if hasattr(v, "tolist") else v
    return out


def run_convert(args: argparse.Namespace) -> int:
    """``ednn gen convert SRC DST``."""
    from ..data import convert

    if len(args.paths) != 2:
        raise InputError("usage: ednn gen convert SRC DST (e.g. OUTCAR data/vasp.h5 or data/x.h5 x.extxyz)")
    t0 = time.time()
    dst = convert(args.paths[0], args.paths[1])
    print(f"wrote {dst} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def run_ising(args: argparse.Namespace) -> int:
    """``ednn gen ising``: sample spin configurations and write an image dataset."""
    from ..atoms.ising import sample_configs
    from ..data import write_image_dataset

    if not args.out:
        raise InputError("give the output file with -o/--out (e.g. -o data/ising8.h5)")
    temps = _temperatures(args.temperatures)
    t0 = time.time()
    r = sample_configs(
        args.L, temps, args.n_per_T, seed=args.seed, algorithm=args.algorithm, n_sweeps=args.sweeps,
        n_equil=args.equil, progress=not args.no_progress,
    )
    meta = {
        "model": "ising",
        "energy": "E = -J sum_<ij> s_i s_j, periodic, each bond once",
        "J": 1.0,
        "L": args.L,
        "temperatures": temps.tolist(),
        "n_per_T": args.n_per_T,
        "algorithm": args.algorithm,
        "n_sweeps": args.sweeps,
        "seed": args.seed,
        "units": {"energy": "J", "temperature": "J/k_B"},
    }
    write_image_dataset(
        args.out, r["spins"], r["energy"], meta,
        columns={"temperature": r["temperature"], "magnetization": r["magnetization"]},
    )
    print(f"wrote {len(r['energy'])} {args.L}x{args.L} configurations to {args.out} "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def run_structures(args: argparse.Namespace) -> int:
    """``ednn gen KIND``: build, label and append structures, resumably."""
    from ..data import DatasetWriter

    if not args.out:
        raise InputError(f"give the output file with -o/--out (e.g. -o data/{args.kind}.h5)")
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    try:
        from ..atoms import structures
    except ImportError as e:  # pragma: no cover
        raise ConfigError(f"structure builders unavailable ({e}); install ednn completely") from e
    kinds = getattr(structures, "KINDS", None)
    if kinds is not None and args.kind not in kinds:
        raise ConfigError(
            f"unknown structure kind {args.kind!r}; valid kinds are {list(kinds)} plus 'ising' and 'convert'"
        )
    kw = _kv(args.set, "--set")
    size = _size(args.size)
    if size is not None:
        kw["n_atoms"] = size
    labeller = None
    if args.labeller is None:  # bilayers need the interlayer potential; everything else the plain Tersoff
        args.labeller = "tersoff-ilp" if args.kind == "bilayer" else "tersoff"
    if args.labeller.lower() != "none":
        from ..atoms.labellers import get_labeller

        labeller = get_labeller(args.labeller, **_kv(args.labeller_opt, "--labeller-opt"))
        if kw.get("md_fraction", 0):
            kw.setdefault("calc", labeller)
    gen_meta = {"kind": args.kind, "seed": args.seed, "kwargs": _jsonable({k: v for k, v in kw.items() if k != "calc"})}
    meta = {
        "generator": gen_meta,
        "labeller": None if labeller is None else {"name": labeller.name, "settings": _jsonable(labeller.settings)},
    }
    with DatasetWriter(args.out, metadata=meta, resume=not args.restart) as w:
        start = w.n_records
        if start >= args.n:
            print(f"{args.out} already holds {start} >= {args.n} records; nothing to do", file=sys.stderr)
            return 0
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=args.n, initial=start, desc=f"gen {args.kind}", unit="struct", file=sys.stderr)
        t0 = time.time()
        for i, atoms in enumerate(structures.generate(args.kind, args.n, args.seed, start=start, **kw), start):
            lab: dict[str, Any] = {}
            if labeller is not None:
                try:
                    lab = labeller.label(atoms)
                except Exception as e:
                    raise type(e)(f"labelling record {i} ({args.kind}, {len(atoms)} atoms) failed: {e}") from e
            w.append(
                atoms, energy=lab.get("energy"), forces=lab.get("forces"), stress=lab.get("stress"),
                info=_jsonable(atoms.info) or None,
            )
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        n_done = w.n_records
    print(f"{args.out}: {n_done} records ({n_done - start} new in {time.time() - t0:.1f} s)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``ednn gen``."""
    if args.kind == "convert":
        return run_convert(args)
    if args.paths:
        raise InputError(f"unexpected extra arguments {args.paths}; only 'convert' takes paths")
    if args.kind == "ising":
        return run_ising(args)
    return run_structures(args)
