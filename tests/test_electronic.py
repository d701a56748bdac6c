"""ednn.electronic: exact Fermi-Dirac integrals of a piecewise-linear DOS, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad, simpson
from scipy.special import entr, expit, spence
from scipy.stats import norm

from ednn.electronic import (
    KB,
    EnergyGrid,
    _polylogs,
    _weights,
    band_energy,
    band_energy_weights,
    broadened_dos,
    density_from_ldos,
    dos_from_ldos,
    electronic_properties,
    entropy_term,
    entropy_weights,
    fermi_dirac,
    fermi_level,
    gaussian,
    number_of_electrons,
    occupation_weights,
)
from ednn.errors import InputError

ZETA3 = 1.2020569031595942
PI2 = math.pi**2


# --------------------------------------------------------------------------- polylogarithms

Y_POLYLOG = [0.0, 0.3, 0.99, 1.0, 1.01, 3.0, 10.0, 20.0, 37.0, 40.0, 60.0]


def _fermi_dirac_integral(s: int, y: float) -> float:
    """Li_s(-e^-y) = -(1/Gamma(s)) int_0^inf t^(s-1) / (e^(t+y) + 1) dt, by quadrature."""
    val, _ = quad(lambda t: t ** (s - 1) * expit(-(t + y)), 0.0, np.inf, epsabs=0.0,
                  epsrel=1e-13, limit=200)
    return -val / math.gamma(s)


def test_polylogs_against_quadrature_and_spence():
    y = np.array(Y_POLYLOG)
    l1, l2, l3 = _polylogs(y)
    np.testing.assert_allclose(l1, -np.log1p(np.exp(-y)), rtol=1e-15)
    np.testing.assert_allclose(l2, [_fermi_dirac_integral(2, v) for v in y], rtol=1e-12, atol=0)
    np.testing.assert_allclose(l3, [_fermi_dirac_integral(3, v) for v in y], rtol=1e-12, atol=0)
    # Li2(z) = spence(1 - z); for y > 3, 1 + e^-y loses the digits that matter
    ok = y <= 3
    np.testing.assert_allclose(l2[ok], spence(1.0 + np.exp(-y[ok])), rtol=1e-12, atol=0)
    # closed forms at 0
    assert l2[0] == pytest.approx(-PI2 / 12, rel=1e-15)
    assert l3[0] == pytest.approx(-0.75 * ZETA3, rel=1e-15)
    # the two branches meet continuously at y = 1 (and the large-y branch at 40)
    e = 1e-13
    for edge in (1.0, 40.0):
        lo, hi = _polylogs(np.array([edge - e, edge + e]))[1:]
        np.testing.assert_allclose(lo[0], lo[1], rtol=1e-12)
        np.testing.assert_allclose(hi[0], hi[1], rtol=1e-12)


# --------------------------------------------------------------------------- brute force

def _brute_force(grid: EnergyGrid, dos: np.ndarray, mu: float, temperature: float, refine: int):
    """N, band energy, entropy integral by Simpson's rule on a grid `refine` times finer."""
    e = grid.start + grid.spacing * np.arange((grid.n - 1) * refine + 1) / refine
    d = np.interp(e, grid.energies, dos)
    x = (e - mu) / (KB * temperature)
    f, one_minus_f = expit(-x), expit(x)
    s = entr(f) + entr(one_minus_f)
    return simpson(d * f, x=e), simpson(e * d * f, x=e), simpson(d * s, x=e)


@pytest.mark.parametrize(("temperature", "spacing", "n"), [
    (10.0, 0.1, 41), (298.0, 0.1, 41), (933.0, 0.1, 41), (2000.0, 0.1, 41), (20000.0, 0.1, 41),
    (1e5, 0.01, 301),
])
def test_weights_against_fine_grid_quadrature(temperature, spacing, n):
    rng = np.random.default_rng(int(temperature))
    grid = EnergyGrid(start=-1.3, spacing=spacing, n=n)
    dos = rng.uniform(0.2, 3.0, n)
    on_point = float(grid.energies[n // 2 + 3])
    refine = 2000 if n < 100 else 40
    for mu in (on_point, on_point + 0.3 * spacing + 0.0123, grid.stop + 0.4, grid.start - 0.7):
        n_ref, eb_ref, s_ref = _brute_force(grid, dos, mu, temperature, refine)
        scale = grid.spacing * dos.sum()  # floor for integrals that vanish (mu far outside)
        got = [occupation_weights(grid, mu, temperature) @ dos,
               band_energy_weights(grid, mu, temperature) @ dos,
               entropy_weights(grid, mu, temperature) @ dos]
        for g, r in zip(got, (n_ref, eb_ref, s_ref)):
            assert abs(g - r) <= 1e-9 * abs(r) + 1e-13 * scale, (mu, g, r)


def test_weights_are_exact_per_hat_at_high_temperature():
    # kT = 1.7 eV >> spacing: each weight is int hat_i g with g nearly linear on the hat
    grid = EnergyGrid(start=-0.5, spacing=0.5, n=3)
    temperature = 20000.0
    kT = KB * temperature
    w = occupation_weights(grid, 0.2, temperature)
    for i, e_i in enumerate(grid.energies):
        lo, hi = max(e_i - 0.5, grid.start), min(e_i + 0.5, grid.stop)
        ref, _ = quad(lambda e, e_i=e_i: (1 - abs(e - e_i) / 0.5) * expit(-(e - 0.2) / kT), lo, hi,
                      epsabs=0, epsrel=1e-13)
        assert w[i] == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])
def test_analytic_and_quadrature_weights_agree(d):
    # two independent computations of the same weights, where both are accurate (spacing ~ kT)
    grid = EnergyGrid(start=-3.0, spacing=0.2, n=31)
    temperature = grid.spacing / d / KB
    for mu in (-3.5, -1.234, float(grid.energies[11]), 0.71, 3.9):
        for kind in ("occupation", "band", "entropy"):
            wa = _weights(grid, mu, temperature, kind, "analytic")
            wq = _weights(grid, mu, temperature, kind, "quadrature")
            scale = np.abs(wq).max()
            np.testing.assert_allclose(wa, wq, rtol=0, atol=1e-13 * scale, err_msg=f"{kind} {mu}")


def test_weights_on_a_fine_grid_at_high_temperature():
    # spacing 1e-3 eV, kT = 8.6 eV: the hat integrals against per-hat adaptive quadrature
    grid = EnergyGrid(start=-0.02, spacing=1e-3, n=41)
    temperature, mu = 1e5, 0.0057
    kT = KB * temperature
    e = grid.energies
    w = band_energy_weights(grid, mu, temperature)
    for i in (0, 7, 25, 40):
        lo, hi = max(i - 1, 0), min(i + 1, grid.n - 1)
        ref, _ = quad(lambda x, i=i: np.interp(x, e, np.eye(grid.n)[i]) * x * expit(-(x - mu) / kT),
                      e[lo], e[hi], points=[e[i]], epsabs=0, epsrel=1e-13)
        assert w[i] == pytest.approx(ref, rel=1e-11)


# --------------------------------------------------------------------------- Sommerfeld

@pytest.mark.parametrize("mu", [0.0, 0.037])
def test_sommerfeld_constant_dos(mu):
    grid = EnergyGrid(start=-10.0, spacing=0.1, n=201)
    dos = np.full(grid.n, 2.7, dtype=np.float32)  # float32 input, float64 integrals
    d0 = float(dos[0])
    for temperature in (298.0, 933.0, 2000.0):
        kT = KB * temperature
        # exact for a constant DOS (no higher Sommerfeld terms; window edges ~ exp(-50))
        n_el = number_of_electrons(dos, grid, mu, temperature)
        assert n_el == pytest.approx(d0 * (mu + 10.0), rel=1e-10)
        shift = band_energy(dos, grid, mu, temperature) - d0 * (mu**2 - 100.0) / 2
        assert shift == pytest.approx(PI2 / 6 * kT**2 * d0, rel=1e-8)
        ts = entropy_term(dos, grid, mu, temperature)
        assert ts == pytest.approx(-PI2 / 3 * kT**2 * d0, rel=1e-8)
    # the count does not depend on T
    counts = [number_of_electrons(dos, grid, mu, t) for t in (1.0, 298.0, 933.0, 2000.0)]
    np.testing.assert_allclose(counts, counts[0], rtol=1e-10)


# --------------------------------------------------------------------------- Fermi level

@pytest.mark.parametrize("temperature", [10.0, 298.0, 933.0, 5000.0, 50000.0])
def test_fermi_level_of_symmetric_dos_is_the_centre(temperature):
    rng = np.random.default_rng(7)
    half = rng.uniform(0.1, 4.0, 51)
    dos = np.concatenate([half, half[-2::-1]])  # symmetric, 101 points
    grid = EnergyGrid(start=-3.7, spacing=0.1, n=dos.size)
    centre = grid.start + 50 * grid.spacing
    total = grid.spacing * (dos.sum() - 0.5 * (dos[0] + dos[-1]))
    mu = fermi_level(dos, grid, total / 2, temperature)
    assert abs(mu - centre) < 1e-9


def test_two_level_system_closed_form():
    # two narrow hats (width 1e-3 eV) with kT = 0.1 eV: occupations g_i f(E_i)
    grid = EnergyGrid(start=-0.2, spacing=1e-3, n=601)
    e1, e2, g1, g2, n_el = 0.05, 0.25, 2.0, 6.0, 3.0
    i1, i2 = 250, 450
    assert grid.energies[i1] == pytest.approx(e1) and grid.energies[i2] == pytest.approx(e2)
    dos = np.zeros(grid.n)
    dos[i1], dos[i2] = g1 / grid.spacing, g2 / grid.spacing
    kT = 0.1
    temperature = kT / KB
    # g1 u/(u+v1) + g2 u/(u+v2) = N with u = e^(mu/kT), v = e^(E/kT): a quadratic in u
    v1, v2 = math.exp(e1 / kT), math.exp(e2 / kT)
    qa, qb, qc = g1 + g2 - n_el, g1 * v2 + g2 * v1 - n_el * (v1 + v2), -n_el * v1 * v2
    u = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
    mu_exact = kT * math.log(u)
    mu = fermi_level(dos, grid, n_el, temperature)
    assert abs(mu - mu_exact) < 1e-5
    f1, f2 = 1 / (math.exp((e1 - mu_exact) / kT) + 1), 1 / (math.exp((e2 - mu_exact) / kT) + 1)
    assert g1 * f1 + g2 * f2 == pytest.approx(n_el, rel=1e-14)  # the closed form itself
    assert band_energy(dos, grid, mu, temperature) == pytest.approx(g1 * e1 * f1 + g2 * e2 * f2,
                                                                    rel=1e-5)


# --------------------------------------------------------------------------- T -> 0

def _exact_zero_temperature(grid: EnergyGrid, dos: np.ndarray, mu: float):
    """int_start^mu D and int_start^mu E D for the piecewise-linear D (Simpson: exact)."""
    e = grid.energies
    j = int(np.searchsorted(e, mu)) - 1  # interval holding mu
    nodes = np.append(e[: j + 1], mu)
    vals = np.interp(nodes, e, dos)
    mids = 0.5 * (nodes[1:] + nodes[:-1])
    dm = np.interp(mids, e, dos)
    w = np.diff(nodes)
    n0 = np.sum(w * (vals[1:] + vals[:-1]) / 2)
    eb0 = np.sum(w / 6 * (nodes[:-1] * vals[:-1] + 4 * mids * dm + nodes[1:] * vals[1:]))
    slope = (dos[j + 1] - dos[j]) / grid.spacing
    return n0, eb0, slope, float(np.interp(mu, e, dos))


def test_low_temperature_limit():
    rng = np.random.default_rng(3)
    grid = EnergyGrid(start=-10.0, spacing=0.1, n=106)
    dos = rng.uniform(1.0, 1.3, grid.n)
    mu, temperature = 0.4321, 1.0
    kT = KB * temperature
    n0, eb0, slope, d_mu = _exact_zero_temperature(grid, dos, mu)
    n_el = number_of_electrons(dos, grid, mu, temperature)
    eb = band_energy(dos, grid, mu, temperature)
    ts = entropy_term(dos, grid, mu, temperature)
    assert n_el == pytest.approx(n0, rel=1e-8)
    assert eb == pytest.approx(eb0, rel=1e-8)
    assert abs(ts) < 1e-6
    # and beyond the limit: mu is 370 kT from the nearest kink, so Sommerfeld is exact here
    som = PI2 / 6 * kT**2
    assert n_el - n0 == pytest.approx(som * slope, rel=1e-5)
    assert eb - eb0 == pytest.approx(som * (d_mu + mu * slope), rel=1e-5)
    assert ts == pytest.approx(-PI2 / 3 * kT**2 * d_mu, rel=1e-9)


def test_mu_far_outside_the_window():
    grid = EnergyGrid(start=-5.0, spacing=0.25, n=41)
    dos = np.linspace(0.5, 2.0, grid.n)
    total = grid.spacing * (dos.sum() - 0.5 * (dos[0] + dos[-1]))
    for temperature in (1.0, 300.0, 1e5 / 3):
        assert number_of_electrons(dos, grid, 1e4, temperature) == pytest.approx(total, rel=1e-13)
        assert number_of_electrons(dos, grid, -1e4, temperature) == 0.0
        for f in (occupation_weights, band_energy_weights, entropy_weights):
            assert np.isfinite(f(grid, 1e4, temperature)).all()
            assert np.isfinite(f(grid, -1e4, temperature)).all()


# --------------------------------------------------------------------------- LDOS

def test_ldos_density_and_fermi_level():
    rng = np.random.default_rng(11)
    grid = EnergyGrid(start=-12.0, spacing=0.1, n=60)
    ldos = rng.uniform(0.0, 0.2, (3, 4, 5, grid.n)).astype(np.float32)
    vol, temperature = 0.27, 933.0
    dos = dos_from_ldos(ldos, vol)
    assert dos.dtype == np.float64 and dos.shape == (grid.n,)
    np.testing.assert_allclose(dos, ldos.astype(np.float64).sum(axis=(0, 1, 2)) * vol, rtol=1e-13)
    mu = -8.234
    dens = density_from_ldos(ldos, grid, mu, temperature)
    assert dens.shape == (3, 4, 5) and dens.dtype == np.float64
    assert dens.sum() * vol == pytest.approx(number_of_electrons(dos, grid, mu, temperature),
                                             rel=1e-12)
    n_el = 5.0
    mu = fermi_level(dos, grid, n_el, temperature)
    assert number_of_electrons(dos, grid, mu, temperature) == pytest.approx(n_el, rel=1e-10)
    props = electronic_properties(grid, temperature, n_el, ldos=ldos, voxel_volume=vol)
    assert set(props) == {"temperature", "fermi_level", "band_energy", "entropy_term",
                          "n_electrons", "dos", "density"}
    assert props["fermi_level"] == pytest.approx(mu, abs=1e-9)
    assert props["n_electrons"] == pytest.approx(n_el, rel=1e-10)
    assert props["density"].sum() * vol == pytest.approx(n_el, rel=1e-10)
    assert props["band_energy"] == pytest.approx(band_energy(dos, grid, mu, temperature), rel=1e-9)
    assert props["entropy_term"] < 0
    # a given mu is used as is
    fixed = electronic_properties(grid, temperature, None, dos=dos, mu=-8.0)
    assert fixed["fermi_level"] == -8.0 and "density" not in fixed
    assert fixed["n_electrons"] == pytest.approx(number_of_electrons(dos, grid, -8.0, temperature))


# --------------------------------------------------------------------------- broadening

def test_broadened_dos_normalisation_and_convention():
    rng = np.random.default_rng(5)
    grid = EnergyGrid(start=-8.0, spacing=0.01, n=1601)
    eig = rng.uniform(-3.0, 3.0, (4, 7))
    wts = rng.uniform(0.5, 2.0, (4, 7))
    dos = broadened_dos(eig, wts, grid, 0.2)
    integral = grid.spacing * (dos.sum() - 0.5 * (dos[0] + dos[-1]))
    assert integral == pytest.approx(wts.sum(), rel=1e-10)
    # width = sqrt(2) sigma: the normal pdf with sigma = width / sqrt(2)
    x = np.linspace(-1, 1, 21)
    np.testing.assert_allclose(gaussian(x, 0.3), norm.pdf(x, scale=0.3 / math.sqrt(2)), rtol=1e-13)
    assert gaussian(0.0, 1.0) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-15)
    one = broadened_dos([0.5], [2.0], grid, 0.25)
    i0 = 850  # E = 0.5
    assert one[i0] == pytest.approx(2.0 / (0.25 * math.sqrt(math.pi)), rel=1e-12)
    assert one[i0 + 25] == pytest.approx(2.0 * math.exp(-1) / (0.25 * math.sqrt(math.pi)),
                                         rel=1e-12)


def test_fermi_dirac_is_stable():
    f = fermi_dirac(np.array([-1e3, -1.0, 0.0, 1.0, 1e3]), 0.0, 1.0)
    assert np.isfinite(f).all()
    assert f[0] == 1.0 and f[2] == 0.5 and f[4] == 0.0


# --------------------------------------------------------------------------- energy grid

def test_energy_grid():
    g = EnergyGrid(start=-5, spacing=0.5, n=np.int64(11))
    assert isinstance(g.n, int) and g.stop == 0.0
    np.testing.assert_array_equal(g.energies, np.linspace(-5.0, 0.0, 11))
    assert EnergyGrid.from_dict(g.to_dict()) == g
    with pytest.raises(InputError, match="spacing must be"):
        EnergyGrid(0.0, 0.0, 10)
    with pytest.raises(InputError, match="n .* integer >= 2"):
        EnergyGrid(0.0, 0.1, 1)
    with pytest.raises(InputError, match="start must be"):
        EnergyGrid(float("nan"), 0.1, 10)
    with pytest.raises(InputError, match="missing"):
        EnergyGrid.from_dict({"start": 0.0, "n": 3})


# --------------------------------------------------------------------------- bad inputs

def test_bad_inputs():
    grid = EnergyGrid(start=-2.0, spacing=0.1, n=41)
    dos = np.ones(grid.n)
    for t in (0.0, -300.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="electronic temperature must be > 0 K"):
            number_of_electrons(dos, grid, 0.0, t)
        with pytest.raises(InputError, match="electronic temperature must be > 0 K"):
            fermi_level(dos, grid, 1.0, t)
    bad = dos.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        band_energy(bad, grid, 0.0, 300.0)
    ldos = np.ones((2, 2, grid.n))
    ldos[1, 0, 5] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        dos_from_ldos(ldos, 1.0)
    with pytest.raises(InputError, match="NaN or inf"):
        density_from_ldos(ldos, grid, 0.0, 300.0)
    with pytest.raises(InputError, match=r"40 energies .* grid has 41 .* dataset's energy grid"):
        number_of_electrons(dos[:-1], grid, 0.0, 300.0)
    with pytest.raises(InputError, match="ldos has 42 energies"):
        density_from_ldos(np.ones((2, 42)), grid, 0.0, 300.0)
    with pytest.raises(InputError, match=r"holds 4 electrons .* widen the energy window"):
        fermi_level(dos, grid, 5.0, 300.0)
    with pytest.raises(InputError, match="must be > 0"):
        fermi_level(dos, grid, 0.0, 300.0)
    with pytest.raises(InputError, match="widen the energy window downwards"):
        fermi_level(dos, grid, 1e-30, 20000.0)  # 20 kT below the window still holds 1e-9
    for vol in (0.0, -1.0):
        with pytest.raises(InputError, match="voxel_volume must be > 0"):
            dos_from_ldos(np.ones((2, grid.n)), vol)
        with pytest.raises(InputError, match="voxel_volume must be > 0"):
            electronic_properties(grid, 300.0, 1.0, ldos=np.ones((2, grid.n)), voxel_volume=vol)
    with pytest.raises(InputError, match="exactly one"):
        electronic_properties(grid, 300.0, 1.0)
    with pytest.raises(InputError, match="voxel_volume"):
        electronic_properties(grid, 300.0, 1.0, ldos=np.ones((2, grid.n)))


def test_rebroaden_composes_gaussian_widths():
    """A DOS broadened with s1, re-broadened to s2, is the DOS broadened with s2 (widths add in quadrature),
    away from the window's top; electrons are kept; sharpening and sub-grid extra widths are refused."""
    from ednn.electronic import broadened_dos, rebroaden

    rng = np.random.default_rng(3)
    grid = EnergyGrid(start=-6.0, spacing=0.02, n=700)  # to 7.98 eV
    eig = np.sort(rng.uniform(-4.0, 9.0, size=(1, 3, 40)), axis=-1)
    w = np.full(eig.shape, 2.0 / 3)
    s1, s2 = 0.04, 0.15
    d1 = broadened_dos(eig, w, grid, s1)
    d2 = broadened_dos(eig, w, grid, s2)
    got = rebroaden(d1, grid, s1, s2)
    inner = grid.energies < grid.stop - 4 * s2
    assert np.abs(got - d2)[inner].max() < 1e-4 * d2.max()
    assert got[inner].sum() == pytest.approx(d2[inner].sum(), rel=1e-4)
    ldos = np.stack([d1, 2 * d1])  # works on any leading axes
    np.testing.assert_allclose(rebroaden(ldos, grid, s1, s2)[1], 2 * got, rtol=1e-12)
    with pytest.raises(InputError, match="sharpen"):
        rebroaden(d1, grid, s2, s1)
    with pytest.raises(InputError, match="spacing"):
        rebroaden(d1, grid, s1, 0.041)


def test_density_errors_count_only_voxels_above_the_threshold():
    """MAPE over the voxels above 1 % of the label's maximum: exact on a hand-made field; the vacuum voxels
    (label 1e-4 of the maximum, prediction 10x off) do not enter it, but do enter the electron count."""
    from ednn.predict.electronic import density_errors

    label = np.full((2, 2, 2), 1e-4)
    label[0, 0, 0], label[1, 1, 1] = 1.0, 0.5
    pred = label * 10
    pred[0, 0, 0], pred[1, 1, 1] = 1.1, 0.4  # +10 % and -20 %
    e = density_errors(pred, label, voxel_volume=0.5)
    assert e["voxels_counted"] == 2 and e["density_mape_pct"] == pytest.approx(15.0)
    n_true, n_pred = 0.5 * label.sum(), 0.5 * pred.sum()
    assert e["electrons_pct"] == pytest.approx(100 * (n_pred - n_true) / n_true)
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean((pred - label) ** 2)))
    assert density_errors(pred, label, 0.5, threshold=0.0)["voxels_counted"] == 8
    with pytest.raises(InputError, match="same grid"):
        density_errors(pred[:1], label, 0.5)
    with pytest.raises(InputError, match="positive maximum"):
        density_errors(pred, -label, 0.5)
