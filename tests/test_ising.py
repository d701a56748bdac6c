"""Ising model: exact energies, exact finite-lattice references, samplers against them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ednn.atoms.ising import (
    T_CRITICAL,
    _wolff_update,
    brute_force_energy_per_spin,
    exact_energy_per_spin,
    ising_energy,
    local_energy,
    onsager_energy_per_spin,
    sample_configs,
)
from ednn.errors import InputError


def _loop_energy(s: np.ndarray, J: float = 1.0) -> float:
    """Plain double loop over sites, right and down bond of each (every bond once)."""
    L, W = s.shape
    e = 0.0
    for i in range(L):
        for j in range(W):
            e -= J * s[i, j] * (s[i, (j + 1) % W] + s[(i + 1) % L, j])
    return e


@pytest.mark.parametrize("L,W", [(8, 8), (4, 6), (128, 128), (10, 4)])
def test_checkerboard_and_all_up(L, W):
    N = L * W
    up = np.ones((L, W), dtype=np.int8)
    assert ising_energy(up) == -2.0 * N  # 2N bonds, all parallel
    assert ising_energy(-up) == -2.0 * N
    cb = np.where(np.indices((L, W)).sum(0) % 2 == 0, 1, -1)
    assert ising_energy(cb) == 2.0 * N  # every bond antiparallel (even L, W)
    assert ising_energy(cb, J=-0.5) == -1.0 * N  # antiferromagnet ground state


def test_random_configs_match_loop_and_local_energy():
    rng = np.random.default_rng(3)
    for L, W in [(8, 8), (5, 7), (3, 3), (16, 12)]:
        s = rng.choice([-1, 1], size=(L, W))
        assert ising_energy(s) == _loop_energy(s)
        assert ising_energy(s, J=0.7) == pytest.approx(_loop_energy(s, 0.7), abs=1e-12)
        assert local_energy(s).sum() == pytest.approx(ising_energy(s), abs=1e-12)
    batch = rng.choice([-1, 1], size=(5, 6, 6))
    np.testing.assert_array_equal(ising_energy(batch), [_loop_energy(b) for b in batch])
    # translation and global flip invariance
    s = batch[0]
    assert ising_energy(np.roll(s, (2, 3), axis=(0, 1))) == ising_energy(s) == ising_energy(-s)


def test_bad_spins():
    with pytest.raises(InputError, match=r"\+1 or -1"):
        ising_energy(np.zeros((4, 4)))
    with pytest.raises(InputError, match="at least 2x2"):
        ising_energy(np.ones((1, 4)))
    with pytest.raises(InputError, match="algorithm"):
        sample_configs(8, [2.0], 1, algorithm="heatbath")
    with pytest.raises(InputError, match="temperatures"):
        sample_configs(8, [-1.0], 1)
    with pytest.raises(InputError, match=r"seed must be an integer >= 0, got -1"):
        sample_configs(8, [2.0], 1, seed=-1)
    with pytest.raises(InputError, match=r"n_sweeps must be >= 1 \(sweeps between stored configurations\), got 0"):
        sample_configs(8, [2.0], 1, n_sweeps=0)


@pytest.mark.parametrize("L,W", [(4, 4), (3, 4), (3, 5), (2, 3)])
def test_kaufman_exact_equals_enumeration(L, W):
    """Kaufman's torus partition function == brute force over all 2^(LW) states."""
    for T in (1.0, 2.0, T_CRITICAL, 2.5, 4.0):
        assert exact_energy_per_spin(T, L, W) == pytest.approx(brute_force_energy_per_spin(T, L, W), abs=1e-8)


def test_exact_finite_lattice_tends_to_onsager():
    for T in (1.5, 2.0, 2.5, 3.5):
        assert exact_energy_per_spin(T, 512) == pytest.approx(onsager_energy_per_spin(T), abs=1e-7)
    # at T_c the finite-size correction is ~ 1/L (u_L - u_inf ~ -0.6/L roughly), not exponential
    d32 = exact_energy_per_spin(T_CRITICAL, 32) - onsager_energy_per_spin(T_CRITICAL)
    d64 = exact_energy_per_spin(T_CRITICAL, 64) - onsager_energy_per_spin(T_CRITICAL)
    assert d32 < 0 and d64 < 0
    assert d32 / d64 == pytest.approx(2.0, rel=0.1)
    # Onsager at T_c: u = -sqrt(2)
    assert onsager_energy_per_spin(T_CRITICAL) == pytest.approx(-math.sqrt(2), abs=1e-6)


def test_wolff_update_preserves_boltzmann_distribution():
    """Start from exact Boltzmann samples of a 4x4 torus; one Wolff flip keeps <E> exact."""
    L, T = 4, 2.5
    codes = np.arange(2 ** (L * L))
    states = (2 * ((codes[:, None] >> np.arange(L * L)) & 1) - 1).reshape(-1, L, L).astype(np.int8)
    e = ising_energy(states)
    w = np.exp(-(e - e.min()) / T)
    w /= w.sum()
    rng = np.random.default_rng(0)
    C = 60000
    s = states[rng.choice(len(w), size=C, p=w)].copy()
    p = np.full(C, 1 - math.exp(-2 / T))
    for _ in range(2):
        sizes = _wolff_update(s, p, rng, np.ones(C, bool))
    assert sizes.min() >= 1
    e1 = ising_energy(s) / 16
    err = e1.std() / math.sqrt(C)
    assert abs(e1.mean() - (w * e).sum() / 16) < 4 * err


def _check_sampler(algorithm: str, L: int, temps, n_chains: int, n_per_T: int, **kw) -> dict:
    r = sample_configs(L, temps, n_per_T, seed=11, algorithm=algorithm, n_chains=n_chains, **kw)
    out = {}
    for T in temps:
        sel = r["temperature"] == T
        u = r["energy"][sel] / (L * L)
        ch = r["chain"][sel]
        # standard error from independent chains (each chain's mean is independent)
        means = np.array([u[ch == c].mean() for c in np.unique(ch)])
        err = means.std(ddof=1) / math.sqrt(len(means))
        exact = exact_energy_per_spin(T, L)
        out[T] = (u.mean(), err, exact)
        assert abs(u.mean() - exact) < 4.0 * err + 1e-4, (algorithm, T, u.mean(), exact, err)
    return out


TEMPS = [2.0, 2.269, 2.5]


def test_metropolis_energies_match_exact_finite_lattice():
    """16x16 torus, checkerboard Metropolis; compared with Kaufman's exact finite-L u(T).

    Near T_c the exact 16x16 value differs from Onsager's infinite-lattice u(T)
    by ~0.04/spin (finite-size effect ~1/L), far more than the statistical error,
    so the finite-lattice value is the right reference; at T = 2.0 both agree
    to 1e-4.
    """
    res = _check_sampler("metropolis", 16, TEMPS, n_chains=96, n_per_T=384, n_sweeps=5, n_equil=400)
    assert abs(exact_energy_per_spin(2.0, 16) - onsager_energy_per_spin(2.0)) < 2e-4
    assert all(err < 0.02 for _, err, _ in res.values())


def test_wolff_energies_match_exact_finite_lattice():
    res = _check_sampler("wolff", 16, TEMPS, n_chains=64, n_per_T=256, n_sweeps=1, n_equil=20)
    assert all(err < 0.02 for _, err, _ in res.values())


def test_sampling_reproducible_and_shapes():
    a = sample_configs(8, [1.5, 3.0], 10, seed=5, algorithm="wolff", n_equil=4, n_chains=5)
    b = sample_configs(8, [1.5, 3.0], 10, seed=5, algorithm="wolff", n_equil=4, n_chains=5)
    c = sample_configs(8, [1.5, 3.0], 10, seed=6, algorithm="wolff", n_equil=4, n_chains=5)
    assert a["spins"].shape == (20, 8, 8) and a["spins"].dtype == np.int8
    np.testing.assert_array_equal(a["spins"], b["spins"])
    assert not np.array_equal(a["spins"], c["spins"])
    np.testing.assert_array_equal(a["energy"], ising_energy(a["spins"]))
    np.testing.assert_array_equal(a["temperature"], [1.5] * 10 + [3.0] * 10)
    m = sample_configs(6, [2.0], 4, seed=1, algorithm="metropolis", n_equil=10)
    assert m["spins"].shape == (4, 6, 6)
    # odd lattices use a proper 3-colouring: still valid +-1 states with exact energies
    o = sample_configs(5, [2.0], 3, seed=1, algorithm="metropolis", n_equil=10, W=7)
    assert o["spins"].shape == (3, 5, 7)
    np.testing.assert_array_equal(o["energy"], [_loop_energy(x) for x in o["spins"]])


@pytest.mark.slow
def test_wolff_32x32_near_tc():
    """Longer check at L = 32 (about a minute)."""
    _check_sampler("wolff", 32, [2.2, 2.269, 2.35], n_chains=64, n_per_T=512, n_sweeps=1, n_equil=40)
