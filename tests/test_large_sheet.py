"""paper_sheet: the linear-time builder of huge disordered B/C/N sheets (composition, bonds, periodicity)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

from ednn.atoms import large
from ednn.atoms import structures as st
from ednn.errors import InputError

BOND = st.A_BNC / np.sqrt(3)


@pytest.fixture(scope="module")
def sheet_2e4():
    return st.paper_sheet(20_000, seed=1, as_arrays=True)


@pytest.fixture(scope="module")
def sheet_flat():
    """5e3 sites without rattling (exact lattice positions)."""
    return st.paper_sheet(5_000, seed=2, rattle_xy=0.0, rattle_z=0.0)


def _tree(s):
    """Periodic in-plane k-d tree of a sheet's positions (scipy, independent of ase)."""
    return cKDTree(s.positions, boxsize=[s.cell[0, 0], s.cell[1, 1], 1e6])  # z: a box far larger than the sheet


def _periodic_nn_distance(s):
    """Nearest-neighbour distance of every atom, periodic in-plane."""
    d, _ = _tree(s).query(s.positions, k=2)
    return d[:, 1]


def test_shape_counts_and_info(sheet_2e4):
    s = sheet_2e4
    info = s.info
    nx, ny = info["repetitions"]
    assert info["n_sites"] == 4 * nx * ny >= 20_000
    assert (nx, ny) == st.sheet_shape(20_000)
    lx, ly, lz = info["cell_lengths"]
    assert np.allclose(s.cell, np.diag([nx * st.A_BNC, ny * st.A_BNC * np.sqrt(3), st.VACUUM_C]))
    assert (lx, ly, lz) == (s.cell[0, 0], s.cell[1, 1], s.cell[2, 2])
    assert 0.95 < lx / ly < 1.05  # close to square
    assert s.pbc.tolist() == [True, True, False]
    assert s.positions.dtype == np.float64 and s.positions.flags.c_contiguous and s.positions.shape == (len(s), 3)
    assert s.numbers.dtype == np.uint8 and set(np.unique(s.numbers).tolist()) == {5, 6, 7}
    n_b, n_c, n_n = (int(np.sum(s.numbers == z)) for z in (5, 6, 7))
    assert (info["n_B"], info["n_C"], info["n_N"]) == (n_b, n_c, n_n)
    assert info["n_atoms"] == len(s) == n_b + n_c + n_n
    assert len(s) == info["n_sites"] - info["pore_removed"] - info["vacancy_removed"] - info["dangling_removed"]
    # composition and defect statistics as requested
    assert abs(info["hbn_fraction"] - 0.3) < 0.05
    assert info["hbn_fraction"] == pytest.approx((n_b + n_n) / len(s))
    assert abs(n_b - n_n) <= 0.02 * max(n_b, n_n) + 5
    assert info["pore_fraction"] == pytest.approx(0.01, abs=2e-4)  # a quantile: exact up to rounding
    assert info["vacancy_fraction"] == pytest.approx(0.002, abs=0.001)  # binomial, sd ~ 3e-4 here
    assert 0 <= info["dangling_removed"] < 0.2 * info["pore_removed"] + 10
    # the sheet lies in the middle of the vacuum, wrapped into the in-plane cell
    assert np.all((s.positions[:, :2] >= 0) & (s.positions[:, :2] < [lx, ly]))
    assert abs(s.positions[:, 2].mean() - st.VACUUM_C / 2) < 0.01
    assert 0.04 < s.positions[:, 2].std() < 0.06  # rattle_z = 0.05


def test_bonds_bn_order_and_coordination(sheet_flat):
    at = sheet_flat
    z = at.numbers
    i, j, d = neighbor_list("ijd", at, 1.7)
    assert np.allclose(d, BOND)  # one bond length: the lattice is commensurate with the cell
    assert not np.any((z[i] == 5) & (z[j] == 5)) and not np.any((z[i] == 7) & (z[j] == 7))
    assert np.any((z[i] == 5) & (z[j] == 7)) and np.any((z[i] == 6) & (z[j] != 6))  # domains and their edges
    cn = np.bincount(i, minlength=len(at))
    assert cn.max() <= 3 and cn.min() >= 2  # no dangling atoms (min_neighbors=2)
    assert np.mean(cn == 3) > 0.95
    # B only on sublattice A (y / (a sqrt3) in {0, 1/2} mod 1), N only on B ({1/6, 2/3})
    frac_y = np.round(at.positions[:, 1] / (st.A_BNC * np.sqrt(3)) * 6).astype(int) % 6
    assert set(frac_y[z == 5].tolist()) <= {0, 3} and set(frac_y[z == 7].tolist()) <= {1, 4}
    assert np.allclose(at.positions[:, 2], st.VACUUM_C / 2)


def test_pristine_sheet_bonds_across_the_boundary():
    at = st.paper_sheet(600, hbn_fraction=0.0, pore_fraction=0.0, vacancy_fraction=0.0, rattle_xy=0.0,
                        rattle_z=0.0)
    assert len(at) == at.info["n_sites"] and set(at.numbers.tolist()) == {6}
    i, d = neighbor_list("id", at, 1.7)
    assert np.all(np.bincount(i, minlength=len(at)) == 3)  # every atom 3-fold, edges included
    assert np.allclose(d, BOND)
    d2 = neighbor_list("d", at, 2.6)
    assert np.allclose(np.sort(d2)[len(d):], st.A_BNC)  # second neighbours at a: no gap or overlap at the edges


def test_min_distance_with_rattle_periodic(sheet_2e4):
    s = sheet_2e4
    nn = _periodic_nn_distance(s)
    assert nn.min() > st.MIN_DISTANCE
    assert 1.3 < np.median(nn) < 1.5
    edge = (s.positions[:, 0] < 2.0) | (s.positions[:, 0] > s.cell[0, 0] - 2.0)
    assert edge.sum() > 50 and nn[edge].min() > st.MIN_DISTANCE and nn[edge].max() < 1.7  # bonded across x
    # the same with ase's periodic neighbour list
    d = neighbor_list("d", s.to_atoms(), st.MIN_DISTANCE)
    assert len(d) == 0


def test_large_rattle_is_capped():
    # in-plane displacements are capped at 4 sd (0.4 A here), so bonds stay >= a/sqrt3 - 8 sd
    s = st.paper_sheet(4_000, seed=5, rattle_xy=0.1, rattle_z=0.0, pore_fraction=0.0, vacancy_fraction=0.0,
                       as_arrays=True)
    lattice = st.paper_sheet(4_000, seed=5, rattle_xy=0.0, rattle_z=0.0, pore_fraction=0.0,
                             vacancy_fraction=0.0, as_arrays=True)
    delta = s.positions[:, :2] - lattice.positions[:, :2]
    delta -= np.round(delta / np.diag(s.cell)[:2]) * np.diag(s.cell)[:2]
    r = np.hypot(delta[:, 0], delta[:, 1])
    assert r.max() <= 0.4 + 1e-9 and np.sum(r > 0.3) > 0  # capped, but the tail is there
    assert 0.09 < np.sqrt(np.mean(r**2) / 2) < 0.11  # sd per component ~ 0.1


def test_deterministic_and_formats():
    a1 = st.paper_sheet(3_000, seed=7, as_arrays=True)
    a2 = st.paper_sheet(3_000, seed=7, as_arrays=True)
    assert np.array_equal(a1.positions, a2.positions) and np.array_equal(a1.numbers, a2.numbers)
    b = st.paper_sheet(3_000, seed=8, as_arrays=True)
    assert len(a1) != len(b) or not np.array_equal(a1.numbers, b.numbers)
    at = st.paper_sheet(3_000, seed=7)
    assert np.array_equal(at.positions, a1.positions) and np.array_equal(at.numbers, a1.numbers)
    assert np.allclose(at.cell[:], a1.cell) and at.pbc.tolist() == [True, True, False]
    assert at.info == a1.info
    pos, num, cell, pbc = a1.as_tuple()
    assert pos is a1.positions and num is a1.numbers and cell is a1.cell and pbc is a1.pbc
    shared = a1.to_atoms()
    assert np.shares_memory(shared.positions, a1.positions)
    assert shared.numbers.dtype == np.int64 and np.array_equal(shared.numbers, a1.numbers)  # ASE's dtype
    # a Generator seed: drawn from it, recorded, reproducible from the record
    g = st.paper_sheet(3_000, seed=np.random.default_rng(3), as_arrays=True)
    assert np.array_equal(g.positions, st.paper_sheet(3_000, seed=g.info["seed"], as_arrays=True).positions)


def test_independent_of_block_size(monkeypatch):
    ref = st.paper_sheet(6_000, seed=4, as_arrays=True)
    monkeypatch.setattr(large, "_CHUNK_SITES", 500)  # many blocks of a few rows
    small = st.paper_sheet(6_000, seed=4, as_arrays=True)
    assert np.array_equal(ref.positions, small.positions) and np.array_equal(ref.numbers, small.numbers)
    assert ref.info == small.info


def test_statistics_do_not_depend_on_size(sheet_2e4):
    big = st.paper_sheet(200_000, seed=1, as_arrays=True)
    for key, tol in (("hbn_fraction", 0.05), ("pore_fraction", 2e-4), ("vacancy_fraction", 1e-3)):
        assert abs(big.info[key] - sheet_2e4.info[key]) < tol, key
    assert abs(big.info["hbn_fraction"] - 0.3) < 0.02
    assert big.info["vacancy_fraction"] == pytest.approx(0.002, abs=4e-4)
    # the same pattern scale: the share of C-BN bonds (domain edges) per atom agrees within 30%
    edges = []
    for s in (sheet_2e4, big):
        i, j = _tree(s).query_pairs(1.7, output_type="ndarray").T
        z = s.numbers
        edges.append(np.sum((z[i] == 6) != (z[j] == 6)) / len(s))
    assert edges[1] == pytest.approx(edges[0], rel=0.3)


def test_accepted_by_the_rasterizer():
    from ednn import GridSpec, rasterize
    from ednn.image.raster import prepare

    s = st.paper_sheet(400, seed=3, as_arrays=True)
    spec = GridSpec(species=("B", "C", "N"), spacing=st.A_BNC / 8, sigma=0.3, dim=2, cutoff=3.0)
    ps = [prepare(x, spec) for x in (s, s.as_tuple(), s.to_atoms())]
    for p in ps[1:]:
        assert p.shape == ps[0].shape and np.allclose(p.lattice, ps[0].lattice)
        assert np.shares_memory(p.positions, s.positions)
    assert np.array_equal(rasterize(s, spec), rasterize(s.to_atoms().copy(), spec))


def test_sheet_shape():
    assert st.sheet_shape(35_200_000) == (4000, 2200)  # the paper's 35.2 million atoms, exactly
    assert st.sheet_shape(16) == (2, 2)
    for n in [*range(16, 3000, 37), 20_000, 123_457, 2_000_000]:
        nx, ny = st.sheet_shape(n)
        count = 4 * nx * ny
        aspect = nx / (ny * np.sqrt(3))
        assert count >= n
        if n >= 2000:  # near-square shapes exist, and one of them is nearly as small as n
            assert 1 / 1.1 <= aspect <= 1.1 and count - n < 0.04 * n
        if n >= 20_000:
            assert 1 / 1.05 <= aspect <= 1.05 and count - n < 0.006 * n


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_atoms=15), "n_atoms=15 is too small"),
    (dict(n_atoms=100.5), "must be an integer"),
    (dict(n_atoms="1e6"), "must be an integer"),
    (dict(hbn_fraction=1.0), "hbn_fraction=1.0 must be a fraction in"),
    (dict(pore_fraction=-0.1), "pore_fraction=-0.1 must be a fraction"),
    (dict(vacancy_fraction=float("nan")), "vacancy_fraction=nan must be a fraction"),
    (dict(domain_size=0.0), "domain_size=0.0 must be a positive length"),
    (dict(pore_size=-1), "pore_size=-1 must be a positive length"),
    (dict(vacuum=0), "vacuum=0 must be a positive length"),
    (dict(rattle_xy=-0.1), "rattle_xy=-0.1 must be a standard deviation >= 0"),
    (dict(rattle_z=float("inf")), "rattle_z=inf must be a standard deviation"),
    (dict(a=0.1), "lattice constant a=0.1"),
    (dict(min_neighbors=3), "min_neighbors=3 must be 0, 1 or 2"),
    (dict(seed=-1), "seed=-1 must be a non-negative integer"),
    (dict(seed="x"), "seed='x' must be"),
])
def test_bad_inputs(kwargs, match):
    args = dict(n_atoms=100)
    args.update(kwargs)
    with pytest.raises(InputError, match=match.replace("[", r"\[")):
        st.paper_sheet(**args)


def test_everything_removed_is_an_error():
    with pytest.raises(InputError, match="no atom is left"):
        st.paper_sheet(16, pore_fraction=0.9, vacancy_fraction=0.9, seed=0)


def test_min_neighbors_clean_up():
    kw = dict(seed=6, pore_fraction=0.05, vacancy_fraction=0.05, rattle_xy=0.0, rattle_z=0.0)
    removed = [st.paper_sheet(5_000, min_neighbors=k, **kw).info["dangling_removed"] for k in (0, 1, 2)]
    assert removed[0] == 0 and removed[0] <= removed[1] < removed[2]
    for k in (0, 2):
        at = st.paper_sheet(5_000, min_neighbors=k, **kw)
        cn = np.bincount(neighbor_list("i", at, 1.7), minlength=len(at))
        assert (cn.min() < 2) if k == 0 else (cn.min() >= 2)  # the lattice count agrees with ase's


def test_read_large_extxyz_and_h5_equal_the_structure(tmp_path, monkeypatch):
    """read_large: an extxyz frame read in blocks (several here) and an ednn .h5 record give the structure's
    arrays (uint8 numbers); extra columns are skipped; bad files name the line and the fix."""
    import ase.io

    from ednn.data import DatasetWriter, large_io
    from ednn.data.large_io import read_large

    monkeypatch.setattr(large_io, "_BLOCK", 97)  # many blocks, a ragged last one
    s = large.paper_sheet(1000, seed=3)
    s.set_array("charge", np.linspace(-1, 1, len(s)))  # an extra column between species/pos and the end
    xyz = tmp_path / "s.extxyz"
    ase.io.write(xyz, s, format="extxyz")
    pos, num, cell, pbc = read_large(xyz)
    assert num.dtype == np.uint8 and np.array_equal(num, s.numbers)
    np.testing.assert_allclose(pos, s.positions, rtol=0, atol=1e-7)
    np.testing.assert_allclose(cell, s.cell[:], rtol=0, atol=1e-9)
    assert pbc.tolist() == [True, True, False]
    h5 = tmp_path / "s.h5"
    with DatasetWriter(h5) as w:
        w.append(s)
    pos2, num2, cell2, pbc2 = read_large(h5)
    assert np.array_equal(pos2, s.positions) and np.array_equal(num2, s.numbers) and num2.dtype == np.uint8
    assert np.array_equal(cell2, s.cell[:]) and pbc2.tolist() == [True, True, False]

    text = xyz.read_text().splitlines()
    cases = {
        "truncated": ("\n".join(text[:500]), "ends after 498"),
        "columns": ("\n".join(text[:10] + [text[10] + " 1.0"] + text[11:]), "line 11: expected 5 columns"),
        "element": ("\n".join(text[:7] + [text[7].replace(text[7].split()[0], "Xx", 1)] + text[8:]), "Xx"),
        "lattice": ("\n".join([text[0], text[1].split("Properties")[1].join(["Properties", ""])] + text[2:]),
                    "Lattice"),
        "frames": ("\n".join(text + text), "more than one frame"),
        "count": ("\n".join(["many"] + text[1:]), "line 1"),
    }
    for name, (body, msg) in cases.items():
        bad = tmp_path / f"{name}.xyz"
        bad.write_text(body + "\n")
        with pytest.raises(InputError, match=msg):
            read_large(bad)
    with pytest.raises(InputError, match="extended-XYZ"):
        read_large(_touch(tmp_path / "s.cif"))
    with DatasetWriter(tmp_path / "two.h5") as w:
        w.append(s)
        w.append(s)
    with pytest.raises(InputError, match="holds 2"):
        read_large(tmp_path / "two.h5")


def _touch(path):
    path.write_text("")
    return path
