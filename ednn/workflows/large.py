"""Prediction for one huge 2D structure: streamed energy with progress, a block energy map, per-region energies.

:func:`predict_large` streams the structure strip by strip
(:func:`ednn.predict.stream.stream_predict`: flat memory in the number of
atoms), shows a progress bar in atoms (atoms done, atoms/s, ETA), and returns
(and with ``out`` writes):

``summary.json``
    total energy, energy per atom, atoms, pixels, seconds, atoms/s, element counts;
``energy_map.npy`` / ``energy_map.png``
    network energies summed over blocks of ``map_block`` x ``map_block``
    pixels (eV per block; the per-atom reference energies are left out, so the
    map shows where the sheet's energy differs: domains, pores, vacancies);
``energy_zoom.npy``
    per-pixel network energies of a window at the image's centre (``zoom``
    pixels square), drawn as the map's second panel;
``regions.json``
    the energy of each of ``regions`` x ``regions`` regions of the image (blocks
    grouped evenly), references of the atoms in the region included, so the
    regions' energies add up to the total.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["predict_large", "region_counts"]

_ATOM_CHUNK = 1 << 20


def _arrays(structure: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, numbers, cell, pbc)`` of an ase.Atoms, such a tuple, or an object with ``as_tuple()``."""
    if hasattr(structure, "as_tuple"):
        structure = structure.as_tuple()
    if hasattr(structure, "get_positions"):
        return (structure.positions, structure.numbers, np.asarray(structure.cell.array), np.asarray(structure.pbc))
    if isinstance(structure, tuple) and len(structure) == 4:
        return tuple(np.asarray(x) for x in structure)  # type: ignore[return-value]
    raise InputError(f"expected an ase.Atoms or (positions, numbers, cell, pbc), got {type(structure).__name__}")


def region_counts(positions: np.ndarray, numbers: np.ndarray, lattice: np.ndarray, shape: tuple[int, int],
                  row_region: np.ndarray, col_region: np.ndarray, species: list[int]) -> np.ndarray:
    """Atoms of each species in each region, ``(R0, R1, n_species)``, in chunks of atoms (O(chunk) memory).

    An atom belongs to the region of its nearest pixel ``round(frac * n) mod n``;
    ``row_region[i]`` / ``col_region[j]`` give the region of pixel row i / column j.
    """
    inv = np.linalg.inv(np.asarray(lattice, dtype=np.float64))
    n = np.asarray(shape)
    lut = np.full(119, -1, dtype=np.int64)
    lut[np.asarray(species)] = np.arange(len(species))
    r0, r1 = int(row_region.max()) + 1, int(col_region.max()) + 1
    ns = len(species)
    counts = np.zeros(r0 * r1 * ns, dtype=np.int64)
    for a in range(0, len(numbers), _ATOM_CHUNK):
        pos = np.asarray(positions[a : a + _ATOM_CHUNK, :2], dtype=np.float64)
        pix = np.rint((pos @ inv) * n).astype(np.int64) % n
        s = lut[np.asarray(numbers[a : a + _ATOM_CHUNK])]
        if np.any(s < 0):
            raise InputError("the structure has elements that are not among the model's species")
        key = (row_region[pix[:, 0]] * r1 + col_region[pix[:, 1]]) * ns + s
        counts += np.bincount(key, minlength=counts.size)
    return counts.reshape(r0, r1, ns)


def predict_large(model: Any, structure: Any, out: str | os.PathLike | None = None, map_block: int | None = None,
                  regions: int = 4, progress: bool = True, rows_per_strip: int | None = None,
                  title: str = "", backend: Any = None, zoom: int | None = 1024) -> dict[str, Any]:
    """Stream the energy of one huge 2D structure with progress, a block energy map and per-region energies.

    Parameters
    ----------
    model : ednn.predict.model.EnergyModel
        A density-head 2D model.
    structure : ase.Atoms, (positions, numbers, cell, pbc), or an object with ``as_tuple()``
    out : path, optional
        Folder for ``summary.json``, ``energy_map.npy``, ``energy_map.png``, ``energy_zoom.npy`` and
        ``regions.json``.
    map_block : int, optional
        Pixels per map block along each axis (default: the map's longer side at most 512 blocks).
    regions : int
        Regions per axis for the per-region energies (>= 1).
    progress : bool
        A tqdm progress bar in atoms on stderr.
    rows_per_strip : int, optional
        Passed to :func:`~ednn.predict.stream.stream_predict`.
    title : str
        Title of the map figure.
    backend : ednn.parallel.Backend, optional
        Several ranks (``horovodrun -np K``) share the strips; every rank gets
        the totals, only rank 0 writes ``out`` and shows progress.
    zoom : int or None
        Side (pixels) of a square window at the centre of the image whose
        per-pixel energies are kept too (``energy_zoom.npy``, the map's second
        panel): the domains and pores that blocks average away. None: no zoom.

    Returns
    -------
    dict
        ``energy``, ``energy_per_atom``, ``n_atoms``, ``pixels``, ``seconds``, ``atoms_per_second``,
        ``counts`` (element -> atoms), ``map`` (ndarray), ``map_block``, ``regions`` (list of dicts),
        with ``zoom``: ``zoom`` (eV per pixel) and ``zoom_origin`` (its first pixel).
    """
    from ..predict.stream import stream_predict  # noqa: PLC0415 - TensorFlow only when predicting

    if not isinstance(regions, int) or regions < 1:
        raise InputError(f"regions must be an integer >= 1, got {regions!r}")
    pos, num, cell, pbc = _arrays(structure)
    n_atoms = len(num)
    p = model.pipeline.prepare((pos, num, cell, pbc))
    if len(p.shape) != 2:
        raise InputError(f"predict_large draws 2D energy maps; this model's grid is {len(p.shape)}D")
    if map_block is None:
        map_block = max(1, math.ceil(max(p.shape) / 512))
    window = None
    if zoom is not None:
        if not isinstance(zoom, int) or zoom < 1:
            raise InputError(f"zoom must be a window side in pixels (an integer >= 1) or None, got {zoom!r}")
        side = [min(zoom, int(m)) for m in p.shape]
        window = ((int(p.shape[0]) - side[0]) // 2, (int(p.shape[1]) - side[1]) // 2, side[0], side[1])
    chief = backend is None or backend.is_chief
    bar = None
    if progress and chief:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=n_atoms, unit="atoms", unit_scale=True, desc="predict", smoothing=0.1)

    def report(done_rows: int, rows: int) -> None:
        if bar is not None:
            bar.update(int(round(n_atoms * done_rows / rows)) - bar.n)

    t0 = time.perf_counter()
    res = stream_predict(model, p, rows_per_strip=rows_per_strip, map_block=map_block, on_progress=report,
                         backend=backend, window=window)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    emap = res["map"]
    # regions: blocks grouped evenly; pixel -> block -> region
    r = min(regions, *emap.shape)
    blk_region = [np.repeat(np.arange(r), [len(g) for g in np.array_split(np.arange(m), r)]) for m in emap.shape]
    row_region = blk_region[0][np.arange(p.shape[0]) // map_block]
    col_region = blk_region[1][np.arange(p.shape[1]) // map_block]
    species = [int(z) for z in model.grid.species]
    counts = region_counts(pos, num, p.lattice, p.shape, row_region, col_region, species)
    refs = np.asarray(model.refs, dtype=np.float64)
    from ase.data import chemical_symbols  # noqa: PLC0415

    region_list = []
    for i in range(r):
        for j in range(r):
            e_net = float(emap[blk_region[0] == i][:, blk_region[1] == j].sum())
            c = counts[i, j]
            n_reg = int(c.sum())
            e_reg = e_net + float(c @ refs)
            region_list.append({"region": [i, j], "n_atoms": n_reg, "energy": e_reg,
                                "energy_per_atom": e_reg / n_reg if n_reg else None,
                                "counts": {chemical_symbols[z]: int(k) for z, k in zip(species, c)}})
    total_counts = counts.sum(axis=(0, 1))
    result = {"energy": res["energy"], "energy_per_atom": res["energy"] / n_atoms, "n_atoms": n_atoms,
              "pixels": [int(x) for x in p.shape], "seconds": seconds, "atoms_per_second": n_atoms / seconds,
              "counts": {chemical_symbols[z]: int(k) for z, k in zip(species, total_counts)},
              "map": emap, "map_block": int(map_block), "regions": region_list}
    if window is not None:
        result["zoom"], result["zoom_origin"] = res["window"], [int(v) for v in res["window_origin"]]
    if backend is not None and backend.size > 1:
        result["ranks"] = int(backend.size)
    if out is not None and chief:
        _write(Path(out), result, cell, p.shape, title)
    return result


def _write(out: Path, result: dict[str, Any], cell: np.ndarray, shape: tuple[int, ...], title: str) -> None:
    from ..plots import block_map_plot  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k not in ("map", "regions", "zoom")}
    for name, obj in (("summary.json", summary), ("regions.json", result["regions"])):
        tmp = out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, out / name)
    for name in ("map", "zoom"):
        if name in result:
            tmp = out / f".energy_{name}.tmp{os.getpid()}.npy"
            np.save(tmp, result[name])
            os.replace(tmp, out / f"energy_{name}.npy")
    block_map_plot(cell, result["map"], (int(shape[0]), int(shape[1])), result["map_block"],
                   str(out / "energy_map.png"),
                   title or f"{result['n_atoms']:,} atoms: {result['energy_per_atom']:.5f} eV/atom, "
                   f"blocks of {result['map_block']} px", window=result.get("zoom"),
                   window_origin=tuple(result.get("zoom_origin", (0, 0))))
