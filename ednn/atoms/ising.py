"""The 2D Ising model on a periodic square lattice (EDNN paper, system 1).

Spins ``s_i = +-1`` on an ``L x W`` torus, energy ``E = -J sum_<ij> s_i s_j``
over nearest-neighbour bonds, each bond counted once (``2 L W`` bonds; for
``L = 2`` the two bonds between the same pair of rows are both counted, as the
periodic formula implies). ``J = 1`` and ``k_B = 1`` by default, so the
all-up state has ``E = -2 N`` and the checkerboard ``E = +2 N`` (N = L W).

Samplers work on a batch of independent chains at once (vectorised NumPy),
each chain with its own temperature, and are reproducible from a seed:

* ``metropolis``: checkerboard (red/black) single-spin Metropolis; a sweep
  visits every spin once.
* ``wolff``: Wolff single-cluster updates grown breadth-first for all chains
  simultaneously. During equilibration a "sweep" flips clusters until about
  ``N`` spins were flipped; from the mean cluster size measured there, each
  temperature gets a FIXED number ``ceil(N / <cluster size>)`` of cluster
  flips per sampling sweep (a state-dependent stopping rule would bias the
  samples, see :func:`wolff_sweep`).

Exact references: :func:`exact_energy_per_spin` (Kaufman's finite-lattice
partition function on the torus; equals brute-force enumeration) and
:func:`onsager_energy_per_spin` (infinite lattice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

T_CRITICAL = 2.0 / math.log(1.0 + math.sqrt(2.0))  # 2.269185... (J = k_B = 1)

__all__ = [
    "T_CRITICAL",
    "ising_energy",
    "local_energy",
    "metropolis_sweep",
    "wolff_sweep",
    "sample_configs",
    "exact_energy_per_spin",
    "onsager_energy_per_spin",
    "brute_force_energy_per_spin",
]


def _check_spins(spins: Any) -> np.ndarray:
    s = np.asarray(spins)
    if s.ndim < 2:
        raise InputError(f"spins must be an array (..., L, W) with L, W >= 2, got shape {s.shape}")
    if s.shape[-1] < 2 or s.shape[-2] < 2:
        raise InputError(f"lattice must be at least 2x2, got {s.shape[-2:]}")
    if s.dtype.kind not in "biuf" or not np.all((s == 1) | (s == -1)):
        raise InputError("spins must be +1 or -1 (got other values); map 0/1 spins with 2*s-1")
    return s


def ising_energy(spins: Any, J: float = 1.0) -> np.ndarray | float:
    """Exact energy ``-J sum_<ij> s_i s_j`` with periodic boundaries.

    Parameters
    ----------
    spins : array (..., L, W) of +-1
        One configuration or a batch.
    J : float
        Coupling (J > 0 ferromagnetic).

    Returns
    -------
    float or np.ndarray
        Energy per configuration (float for a single 2D input).
    """
    s = _check_spins(spins).astype(np.int64)
    bonds = s * np.roll(s, -1, axis=-1) + s * np.roll(s, -1, axis=-2)
    e = -J * bonds.sum(axis=(-2, -1)).astype(np.float64)
    return float(e) if s.ndim == 2 else e


def local_energy(spins: Any, J: float = 1.0) -> np.ndarray:
    """Per-site energy ``-J/2 s_i sum_{j in nn(i)} s_j``; sums to :func:`ising_energy`."""
    s = _check_spins(spins).astype(np.float64)
    h = np.roll(s, 1, -1) + np.roll(s, -1, -1) + np.roll(s, 1, -2) + np.roll(s, -1, -2)
    return -0.5 * J * s * h


def _neighbour_sum(s: np.ndarray) -> np.ndarray:
    return np.roll(s, 1, -1) + np.roll(s, -1, -1) + np.roll(s, 1, -2) + np.roll(s, -1, -2)


def metropolis_sweep(s: np.ndarray, beta: np.ndarray, rng: np.random.Generator, J: float = 1.0) -> None:
    """One checkerboard Metropolis sweep of a batch ``s`` (C, L, W) of int8 spins, in place.

    ``beta`` (C,) are inverse temperatures. For odd L or W the two-colouring
    is not proper across the periodic seam; three sub-lattices updates are
    then used (colour = (i + j) mod 2 plus the seam row/column separately)
    so that no two updated spins are neighbours.
    """
    C, L, W = s.shape
    b = np.asarray(beta, dtype=np.float64).reshape(C, 1, 1)
    for mask in _colour_masks(L, W):
        h = _neighbour_sum(s).astype(np.int16)
        dE = 2.0 * J * s * h  # energy change if flipped
        u = rng.random(s.shape)
        flip = mask & (u < np.exp(-b * np.maximum(dE, 0.0)))
        s[flip] *= -1


_MASK_CACHE: dict[tuple[int, int], list[np.ndarray]] = {}


def _colour_masks(L: int, W: int) -> list[np.ndarray]:
    key = (L, W)
    if key not in _MASK_CACHE:
        i, j = np.indices((L, W))
        if L % 2 == 0 and W % 2 == 0:
            c = (i + j) % 2
            masks = [c == 0, c == 1]
        else:  # greedy proper colouring of the periodic grid graph (at most 3 colours here)
            col = -np.ones((L, W), int)
            for a in range(L):
                for bb in range(W):
                    used = {col[(a - 1) % L, bb], col[(a + 1) % L, bb], col[a, (bb - 1) % W], col[a, (bb + 1) % W]}
                    col[a, bb] = min(k for k in range(5) if k not in used)
            masks = [col == k for k in range(col.max() + 1)]
        _MASK_CACHE[key] = [m[None] for m in masks]
    return _MASK_CACHE[key]


def _wolff_update(
    s: np.ndarray, p_add: np.ndarray, rng: np.random.Generator, active: np.ndarray
) -> np.ndarray:
    """One Wolff cluster flip in every active chain of ``s`` (C, L, W), in place.

    The clusters of all chains grow together breadth-first on flat site
    indices, so the cost is proportional to the cluster sizes (times the
    cluster diameter in NumPy calls), not to the lattice. Each bond from a
    newly added site to a parallel neighbour outside the cluster is tried
    exactly once with probability ``p_add`` of its chain. Returns the
    flipped cluster size of each chain (0 for inactive chains).
    """
    C, L, W = s.shape
    N = L * W
    flat = s.reshape(-1)
    chains = np.flatnonzero(active)
    frontier = chains * N + rng.integers(0, N, size=chains.size)
    in_cluster = np.zeros(C * N, dtype=bool)
    in_cluster[frontier] = True
    members = [frontier]
    while frontier.size:
        c, site = np.divmod(frontier, N)
        r, q = np.divmod(site, W)
        base = c * N
        nb = np.concatenate(
            [
                base + ((r + 1) % L) * W + q,
                base + ((r - 1) % L) * W + q,
                base + r * W + (q + 1) % W,
                base + r * W + (q - 1) % W,
            ]
        )
        src = np.tile(frontier, 4)
        ok = ~in_cluster[nb] & (flat[nb] == flat[src])
        nb, cc = nb[ok], np.tile(c, 4)[ok]
        nb = np.unique(nb[rng.random(nb.size) < p_add[cc]])
        in_cluster[nb] = True
        members.append(nb)
        frontier = nb
    idx = np.concatenate(members)
    flat[idx] *= -1
    return np.bincount(idx // N, minlength=C)


def wolff_sweep(
    s: np.ndarray,
    beta: np.ndarray,
    rng: np.random.Generator,
    J: float = 1.0,
    n_updates: np.ndarray | None = None,
) -> np.ndarray:
    """Wolff cluster updates of a batch ``s`` (C, L, W) of int8 spins, in place.

    Parameters
    ----------
    n_updates : array (C,) of int, optional
        Cluster flips per chain. A FIXED number must be used while sampling:
        stopping after a state-dependent number of flips (e.g. "until N spins
        flipped") biases the samples towards order, because the last flipped
        cluster is then preferentially large. If None, flips continue until
        each chain flipped >= L*W spins, which is only meant for equilibration.

    Returns
    -------
    np.ndarray
        Number of spins flipped per chain and number of updates per chain, as (2, C).
    """
    C, L, W = s.shape
    p_add = 1.0 - np.exp(-2.0 * np.asarray(beta, dtype=np.float64) * J)
    flipped = np.zeros(C, dtype=np.int64)
    count = np.zeros(C, dtype=np.int64)
    while True:
        active = flipped < L * W if n_updates is None else count < n_updates
        if not active.any():
            return np.stack([flipped, count])
        flipped += _wolff_update(s, p_add, rng, active)
        count += active


def sample_configs(
    L: int,
    temperatures: Sequence[float],
    n_per_T: int,
    seed: int = 0,
    algorithm: str = "wolff",
    n_sweeps: int = 5,
    n_equil: int | None = None,
    n_chains: int | None = None,
    W: int | None = None,
    J: float = 1.0,
    start: str = "auto",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Sample equilibrium Ising configurations at several temperatures.

    For each temperature, ``n_chains`` independent chains (all temperatures
    and chains advance together, vectorised) are equilibrated for ``n_equil``
    sweeps, then a configuration is taken from every chain every ``n_sweeps``
    sweeps until ``n_per_T`` configurations are collected.

    Parameters
    ----------
    L : int
        Lattice rows (and columns unless ``W`` is given); 2..1024.
    temperatures : sequence of float
        Temperatures (k_B = J = 1); T_c = 2.269.
    n_per_T : int
        Configurations per temperature.
    seed : int
        Seed; the same arguments give the same configurations.
    algorithm : {"wolff", "metropolis"}
        Update scheme (see module docstring).
    n_sweeps : int
        Sweeps between stored configurations of a chain.
    n_equil : int, optional
        Equilibration sweeps (default: 50 for Wolff, whose first half uses
        "flip ~N spins" sweeps and second half the frozen fixed-length sweeps, ``max(200, 2 L**2 / 8)``
        capped at 2000 for Metropolis).
    n_chains : int, optional
        Chains per temperature (default: ``n_per_T`` while the batch holds
        at most ~2M spins, else fewer).
    W : int, optional
        Lattice columns (default ``L``).
    J : float
        Coupling.
    start : {"auto", "up", "random"}
        Initial state; "auto" starts ordered (all up) below T_c and random above.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``spins`` (n, L, W) int8, ``energy`` (n,) float64, ``temperature`` (n,),
        ``magnetization`` (n,) per spin, ``chain`` (n,) chain index.
    """
    W = L if W is None else int(W)
    L = int(L)
    if not (2 <= L <= 4096 and 2 <= W <= 4096):
        raise InputError(f"lattice size {L}x{W} must be between 2 and 4096")
    temps = np.asarray(temperatures, dtype=np.float64).ravel()
    if temps.size == 0 or not np.all(np.isfinite(temps)) or np.any(temps <= 0):
        raise InputError(f"temperatures must be finite and > 0, got {temps}")
    if n_per_T < 1:
        raise InputError(f"n_per_T must be >= 1, got {n_per_T}")
    if n_sweeps < 1:
        raise InputError(f"n_sweeps must be >= 1 (sweeps between stored configurations), got {n_sweeps}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if algorithm not in ("wolff", "metropolis"):
        raise InputError(f"unknown algorithm {algorithm!r}; choose 'wolff' or 'metropolis'")
    if start not in ("auto", "up", "random"):
        raise InputError(f"start must be 'auto', 'up' or 'random', got {start!r}")
    rng = np.random.default_rng(seed)
    if n_chains is None:
        n_chains = max(1, min(n_per_T, (2_000_000 // (L * W * temps.size)) or 1))
    n_chains = int(min(n_chains, n_per_T))
    if n_equil is None:
        n_equil = 50 if algorithm == "wolff" else int(min(2000, max(200, L * L // 4)))
    n_equil = max(int(n_equil), 2 if algorithm == "wolff" else 1)
    n_rounds = math.ceil(n_per_T / n_chains)
    C = n_chains * temps.size
    beta = np.repeat(1.0 / temps, n_chains)
    s = rng.choice(np.array([-1, 1], dtype=np.int8), size=(C, L, W))
    ordered = (temps < T_CRITICAL) if start == "auto" else np.full(temps.size, start == "up")
    s[np.repeat(ordered, n_chains)] = 1
    n_up = None  # Wolff: fixed cluster flips per sweep, set after equilibration
    sizes = np.zeros((2, C), dtype=np.int64)
    total = n_equil + (n_rounds - 1) * n_sweeps
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"ising {L}x{W} {algorithm}", unit="sweep")
    out_s, out_t, out_c = [], [], []
    for r in range(n_rounds):
        n_steps = n_equil if r == 0 else n_sweeps
        for k in range(n_steps):
            if algorithm == "metropolis":
                metropolis_sweep(s, beta, rng, J)
            else:
                if r == 0 and k == n_equil // 2:  # freeze the sweep length (see wolff_sweep)
                    per_t = sizes.reshape(2, temps.size, n_chains).sum(axis=2)
                    mean_cluster = per_t[0] / np.maximum(per_t[1], 1)
                    n_up = np.ceil(L * W / np.maximum(mean_cluster, 1.0)).astype(np.int64)
                    n_up = np.repeat(n_up, n_chains)
                sizes += wolff_sweep(s, beta, rng, J, n_up)
            if bar is not None:
                bar.update(1)
        out_s.append(s.copy())
        out_t.append(np.repeat(temps, n_chains))
        out_c.append(np.arange(C))
    if bar is not None:
        bar.close()
    spins = np.stack(out_s, axis=1)  # (C, rounds, L, W)
    temp = np.stack(out_t, axis=1)
    chain = np.stack(out_c, axis=1)
    # order by temperature, then round, then chain; keep n_per_T per temperature
    spins = spins.reshape(temps.size, n_chains, n_rounds, L, W).transpose(0, 2, 1, 3, 4)
    spins = spins.reshape(temps.size, -1, L, W)[:, :n_per_T].reshape(-1, L, W)
    temp = temp.reshape(temps.size, n_chains, n_rounds).transpose(0, 2, 1).reshape(temps.size, -1)
    temp = temp[:, :n_per_T].ravel()
    chain = chain.reshape(temps.size, n_chains, n_rounds).transpose(0, 2, 1).reshape(temps.size, -1)
    chain = chain[:, :n_per_T].ravel()
    return {
        "spins": spins.astype(np.int8),
        "energy": ising_energy(spins, J).reshape(-1),
        "temperature": temp,
        "magnetization": spins.reshape(len(spins), -1).mean(axis=1, dtype=np.float64),
        "chain": chain,
    }


# --------------------------------------------------------------------------- exact results
def _log2cosh(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return a + np.log1p(np.exp(-2.0 * a))


def _log_abs_2sinh(x: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore"):
        small = np.log(2.0 * np.sinh(np.minimum(a, 1.0)))
    return np.where(a > 1.0, a + np.log1p(-np.exp(-2.0 * a)), small)


def _log_z_kaufman(K: float, m: int, n: int) -> float:
    """ln Z of the m x n periodic Ising model at coupling K = J/T (Kaufman 1949)."""
    k = np.arange(2 * n)
    c2, s2 = math.cosh(2 * K), math.sinh(2 * K)
    arg = c2 * c2 / s2 - np.cos(np.pi * k / n)
    gamma = np.arccosh(np.maximum(arg, 1.0))
    gamma[0] = 2 * K + math.log(math.tanh(K))  # signed
    odd, even = gamma[1::2], gamma[0::2]
    x_odd, x_even = 0.5 * m * odd, 0.5 * m * even
    terms = [
        (_log2cosh(x_odd).sum(), 1.0),
        (_log_abs_2sinh(x_odd).sum(), float(np.prod(np.sign(x_odd)))),
        (_log2cosh(x_even).sum(), 1.0),
        (_log_abs_2sinh(x_even).sum(), float(np.prod(np.sign(x_even)))),
    ]
    ref = max(t[0] for t in terms)
    total = sum(sg * math.exp(lg - ref) for lg, sg in terms)
    return math.log(0.5) + 0.5 * m * n * math.log(2 * s2) + ref + math.log(total)


def exact_energy_per_spin(T: float, L: int, W: int | None = None, J: float = 1.0) -> float:
    """Exact mean energy per spin <E>/N of the periodic L x W lattice at temperature T.

    From Kaufman's (Phys. Rev. 76, 1232 (1949)) closed-form partition function
    of the torus, differentiated numerically (central difference in beta,
    relative error ~1e-9). Checked against brute-force enumeration in the tests.
    """
    W = L if W is None else int(W)
    if T <= 0:
        raise InputError(f"temperature must be > 0, got {T}")
    beta = 1.0 / T
    h = 1e-5 * beta
    lp = _log_z_kaufman((beta + h) * J, L, W)
    lm = _log_z_kaufman((beta - h) * J, L, W)
    return float(-(lp - lm) / (2 * h) / (L * W))


def onsager_energy_per_spin(T: float, J: float = 1.0) -> float:
    """Onsager's exact energy per spin of the infinite square lattice.

    ``u = -J coth(2K) [1 + (2/pi) (2 tanh^2(2K) - 1) K1(k)]`` with
    ``K = J/T``, ``k = 2 sinh(2K) / cosh^2(2K)`` and K1 the complete elliptic
    integral of the first kind.
    """
    from scipy.special import ellipk

    K = J / T
    k = 2.0 * math.sinh(2 * K) / math.cosh(2 * K) ** 2
    k1 = float(ellipk(min(k * k, 1.0 - 1e-16)))
    return -J / math.tanh(2 * K) * (1.0 + 2.0 / math.pi * (2.0 * math.tanh(2 * K) ** 2 - 1.0) * k1)


def brute_force_energy_per_spin(T: float, L: int, W: int | None = None, J: float = 1.0) -> float:
    """<E>/N by enumerating all 2^(L W) states (L W <= 20)."""
    W = L if W is None else int(W)
    N = L * W
    if N > 20:
        raise InputError(f"brute force over 2^{N} states is too expensive; use L*W <= 20")
    codes = np.arange(2**N, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(N)) & 1).astype(np.int8)
    spins = (2 * bits - 1).reshape(-1, L, W)
    e = ising_energy(spins, J)
    w = np.exp(-(e - e.min()) / T)
    return float((w * e).sum() / w.sum() / N)
