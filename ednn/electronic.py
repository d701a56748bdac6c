"""Electronic-structure physics of the local density of states (LDOS), independent of any network.

Given the LDOS ``d(r, E)`` on a uniform energy grid (as predicted in the MALA approach), this
module computes the density of states, the electron density, the Fermi level, the band energy
and the electronic entropy term at a finite electronic temperature. Units are eV, Angstrom and
kelvin throughout; inputs may be float32, every integral is done in float64.

Conventions
-----------
Energies
    Absolute energies in eV (the energy grid's ``start`` is an absolute energy, not an offset
    from the Fermi level). The band energy is ``int E D(E) f(E) dE`` with these absolute
    energies.
Gaussian broadening
    :func:`gaussian` is ``exp(-(x/w)**2) / (w*sqrt(pi))`` (MALA's convention): the width ``w``
    is ``sqrt(2)`` times the standard deviation of the normalised Gaussian.
Between grid points
    A DOS or LDOS given on the grid is the piecewise-linear function through its values (hat
    basis functions on the grid points) and zero outside the energy window.
Fermi-Dirac integrals
    ``k_B T`` at room temperature (25.7 meV) is smaller than a typical energy spacing (0.1 eV),
    so a quadrature rule on the grid would be wrong. Instead every integral
    ``int D(E) g(E) dE`` (``g`` = Fermi-Dirac occupation ``f``, ``E f``, or the entropy density
    ``s = -[f ln f + (1-f) ln(1-f)]``) is the exact integral of the piecewise-linear ``D``
    against ``g``: a dot product ``w @ D`` with weights ``w_i = int hat_i(E) g(E) dE`` that are
    computed analytically (:func:`occupation_weights`, :func:`band_energy_weights`,
    :func:`entropy_weights`), for any temperature and any chemical potential, in or outside
    the window.

How the weights are computed
----------------------------
With ``x = (E - mu)/kT``, the occupation ``f(x) = 1/(exp(x) + 1)`` is split as
``theta(-x) + sgn(x) f(|x|)``. The step ``theta(-x)`` (the T = 0 occupation) is integrated
against the hats exactly as a polynomial; the correction ``sgn(x) f(|x|)``, which decays on
both sides of ``mu``, through tail integrals of ``f`` written with polylogarithms
``L_n(y) = Li_n(-exp(-y))``, ``y >= 0``::

    int_y^inf f(t) dt     = -L1(y)
    int_y^inf t f(t) dt   = -y L1(y) - L2(y)
    int_y^inf t^2 f(t) dt = -(y^2 L1(y) + 2 y L2(y) + 2 L3(y))

and, with the entropy density ``s(t) = ln(1 + exp(-t)) + t f(t)`` (``t > 0``, even in ``t``)::

    int_y^inf s(t) dt     = -y L1(y) - 2 L2(y)
    int_y^inf t s(t) dt   = -y^2 L1(y) - 3 y L2(y) - 3 L3(y)

No difference of two large numbers is formed. Where the spacing is below ``kT`` (hot electrons
or a fine grid) the hat weights would be second differences of these tails, losing about
``eps * (kT/spacing)^2``; there the integrands vary slowly on each interval and are analytic
in the strip ``|Im x| < pi``, so a 12-point Gauss-Legendre rule per interval is exact to
round-off instead. Both ways agree to ~1e-15 where they meet (``spacing = kT``), and the
weights are accurate to round-off from 1 K to beyond 1e5 K, with ``mu`` anywhere.

Example
-------
>>> grid = EnergyGrid(start=-10.0, spacing=0.1, n=201)
>>> dos = np.full(grid.n, 2.0)              # 2 states/eV
>>> props = electronic_properties(grid, 298.0, 20.0, dos=dos)
>>> abs(props["fermi_level"]) < 1e-9
True
>>> round(props["band_energy"], 6)      # -100 + (pi^2/6) (kT)^2 * 2
-99.997831
>>> round(props["entropy_term"], 6)     # -(pi^2/3) (kT)^2 * 2
-0.004339
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import bernoulli, expit

from .errors import InputError

__all__ = [
    "KB",
    "EnergyGrid",
    "gaussian",
    "broadened_dos",
    "fermi_dirac",
    "occupation_weights",
    "band_energy_weights",
    "entropy_weights",
    "dos_from_ldos",
    "rebroaden",
    "density_from_ldos",
    "number_of_electrons",
    "band_energy",
    "entropy_term",
    "fermi_level",
    "electronic_properties",
]

KB = 8.617333262e-5
"""Boltzmann constant in eV/K (CODATA 2018)."""

_ZETA3 = 1.2020569031595942
_LN2 = math.log(2.0)
_PI2_12 = math.pi**2 / 12.0


# --------------------------------------------------------------------------- energy grid


@dataclasses.dataclass(frozen=True)
class EnergyGrid:
    """A uniform energy grid ``start + spacing * arange(n)`` on which a DOS or LDOS is sampled.

    Attributes
    ----------
    start : float
        First energy in eV (absolute, not relative to the Fermi level).
    spacing : float
        Energy spacing in eV, > 0.
    n : int
        Number of energy points, >= 2.
    """

    start: float
    spacing: float
    n: int

    def __post_init__(self) -> None:
        start, spacing, n = self.start, self.spacing, self.n
        if not (_is_real(start) and math.isfinite(start)):
            raise InputError(f"energy grid: start must be a finite energy in eV, got {start!r}")
        if not (_is_real(spacing) and math.isfinite(spacing) and spacing > 0):
            raise InputError(
                f"energy grid: spacing must be a finite energy > 0 eV, got {spacing!r}"
            )
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise InputError(
                f"energy grid: n (number of energies) must be an integer >= 2, got {n!r}"
            )
        object.__setattr__(self, "start", float(start))
        object.__setattr__(self, "spacing", float(spacing))
        object.__setattr__(self, "n", int(n))

    @property
    def energies(self) -> np.ndarray:
        """The grid energies in eV, float64 array of shape ``(n,)``."""
        return self.start + self.spacing * np.arange(self.n, dtype=np.float64)

    @property
    def stop(self) -> float:
        """The last grid energy in eV (included in the grid)."""
        return self.start + self.spacing * (self.n - 1)

    def to_dict(self) -> dict[str, Any]:
        """``{"start": ..., "spacing": ..., "n": ...}`` (plain Python numbers)."""
        return {"start": self.start, "spacing": self.spacing, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnergyGrid:
        """The grid described by ``d`` (as written by :meth:`to_dict`)."""
        if not isinstance(d, dict):
            raise InputError(
                f"energy grid: expected a dict with start, spacing, n; got {type(d).__name__}"
            )
        keys = {"start", "spacing", "n"}
        missing, unknown = keys - set(d), set(d) - keys
        if missing or unknown:
            raise InputError(
                f"energy grid: expected keys start, spacing, n; missing {sorted(missing)}, "
                f"unknown {sorted(map(str, unknown))}"
            )
        return cls(start=d["start"], spacing=d["spacing"], n=d["n"])

    def check_axis(self, array: Any, name: str = "array") -> None:
        """Raise :class:`InputError` unless the last axis of ``array`` has ``n`` energies.

        Parameters
        ----------
        array : array_like
            A DOS ``(n,)`` or LDOS ``(..., n)``.
        name : str
            Name of the array in the error message.
        """
        shape = np.shape(array)
        m = shape[-1] if shape else None
        if m != self.n:
            got = f"{m} energies on its last axis" if m is not None else "no energy axis (a scalar)"
            raise InputError(
                f"{name} has {got} (shape {shape}) but the energy grid has {self.n} "
                f"(start {self.start} eV, spacing {self.spacing} eV); the LDOS must be on the "
                "dataset's energy grid"
            )


# --------------------------------------------------------------------------- broadening


def gaussian(x: Any, width: float) -> np.ndarray:
    """The broadening function ``exp(-(x/width)**2) / (width*sqrt(pi))`` (integral 1).

    Parameters
    ----------
    x : array_like
        Energies in eV.
    width : float
        Width in eV, ``sqrt(2)`` times the standard deviation (MALA's convention).

    Returns
    -------
    numpy.ndarray
        float64 values in 1/eV.
    """
    width = _positive(width, "Gaussian width", "eV")
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-((x / width) ** 2)) / (width * math.sqrt(math.pi))


def broadened_dos(eigenvalues: Any, weights: Any, grid: EnergyGrid, width: float) -> np.ndarray:
    """DOS on the grid from eigenvalues: ``sum_k weights_k * gaussian(E - eigenvalues_k, width)``.

    Parameters
    ----------
    eigenvalues : array_like
        Kohn-Sham eigenvalues in eV, any shape (e.g. ``(n_kpoints, n_bands)``).
    weights : array_like
        Weight of each eigenvalue (k-point weight times spin degeneracy), same shape.
    grid : EnergyGrid
        Energy grid of the result.
    width : float
        Broadening width in eV (see :func:`gaussian`).

    Returns
    -------
    numpy.ndarray
        float64 DOS of shape ``(grid.n,)`` in states/eV.
    """
    eps = np.asarray(eigenvalues, dtype=np.float64)
    wts = np.asarray(weights, dtype=np.float64)
    if eps.shape != wts.shape:
        raise InputError(
            f"eigenvalues {eps.shape} and weights {wts.shape} must have the same shape"
        )
    eps, wts = eps.ravel(), wts.ravel()
    _check_finite(eps, "eigenvalues")
    _check_finite(wts, "weights")
    width = _positive(width, "Gaussian width", "eV")
    energies = grid.energies
    out = np.zeros(grid.n)
    chunk = max(1, (1 << 20) // grid.n)
    for i in range(0, eps.size, chunk):
        out += wts[i : i + chunk] @ gaussian(energies[None, :] - eps[i : i + chunk, None], width)
    return out


# --------------------------------------------------------------------------- Fermi-Dirac


def fermi_dirac(energies: Any, mu: float, temperature: float) -> np.ndarray:
    """Fermi-Dirac occupation ``1/(exp((E - mu)/kT) + 1)``, computed without overflow.

    Parameters
    ----------
    energies : array_like
        Energies in eV.
    mu : float
        Chemical potential (Fermi level) in eV.
    temperature : float
        Electronic temperature in K, > 0.

    Returns
    -------
    numpy.ndarray
        float64 occupations in [0, 1].
    """
    kT = KB * _temperature(temperature)
    mu = _mu(mu)
    return expit(-(np.asarray(energies, dtype=np.float64) - mu) / kT)


# Polylogarithms L_n(y) = Li_n(-exp(-y)), n = 1, 2, 3, y >= 0.
#
# y < 1: Taylor series about 0. L1(y) = -ln 2 + y/2 - ln cosh(y/2)
#        = -ln 2 + y/2 - sum_m c_m y^(2m), with ln cosh w = sum_m a_m w^(2m),
#        a_m = 2^(2m) (2^(2m) - 1) B_2m / (2m (2m)!), c_m = a_m / 4^m (radius of convergence
#        pi in y, so 20 terms leave < 1e-20 for y < 1). dL_n/dy = -L_(n-1) with
#        L2(0) = -pi^2/12 and L3(0) = -3 zeta(3)/4 gives L2 and L3 term by term.
# y >= 1: sum_k (-u)^k / k^n with u = exp(-y) <= 1/e (40 terms at y = 1, fewer above).
# y >= 40: the first term -u alone (the next is below 1e-17 relative).
_N_COSH = 20
_DEG = 2 * _N_COSH + 2
_B = bernoulli(2 * _N_COSH)
# c_m = a_m / 4^m = (4^m - 1) B_2m / (2m (2m)!)
_C = np.array(
    [(4.0**m - 1.0) * _B[2 * m] / (2 * m * math.factorial(2 * m)) for m in range(1, _N_COSH + 1)]
)
_G2 = np.zeros(_DEG + 1)  # ascending powers of y
_G3 = np.zeros(_DEG + 1)
_G2[:3] = (-_PI2_12, _LN2, -0.25)
_G3[:4] = (-0.75 * _ZETA3, _PI2_12, -0.5 * _LN2, 1.0 / 12.0)
for _m in range(1, _N_COSH + 1):
    _G2[2 * _m + 1] += _C[_m - 1] / (2 * _m + 1)
    _G3[2 * _m + 2] -= _C[_m - 1] / ((2 * _m + 1) * (2 * _m + 2))
del _m
_K_MAX = 40
_K = np.arange(1, _K_MAX + 1, dtype=np.float64)
_INV_K2 = 1.0 / _K**2
_INV_K3 = 1.0 / _K**3
_Y_SMALL = 1.0
_Y_FAR = 40.0


def _polylogs(
    y: np.ndarray, third: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``L_n(y) = Li_n(-exp(-y))`` for n = 1, 2 (and 3 if ``third``), for float64 ``y >= 0``."""
    y = np.asarray(y, dtype=np.float64)
    l1 = -np.log1p(np.exp(-y))
    l2 = np.empty_like(y)
    l3 = np.empty_like(y) if third else None
    small = y < _Y_SMALL
    far = y >= _Y_FAR
    mid = ~(small | far)
    if small.any():
        ys = y[small]
        pw = np.cumprod(np.broadcast_to(ys[:, None], (ys.size, _DEG)), axis=1)  # y^1 .. y^DEG
        l2[small] = _G2[0] + pw @ _G2[1:]
        if third:
            l3[small] = _G3[0] + pw @ _G3[1:]
    if mid.any():
        ym = y[mid]
        # terms until u^k < 1e-17: k > 39.2 / y
        k = min(_K_MAX, int(math.ceil(39.2 / float(ym.min()))) + 1)
        pw = np.cumprod(np.broadcast_to(-np.exp(-ym)[:, None], (ym.size, k)), axis=1)
        l2[mid] = pw @ _INV_K2[:k]
        if third:
            l3[mid] = pw @ _INV_K3[:k]
    if far.any():
        u = -np.exp(-y[far])
        l2[far] = u
        if third:
            l3[far] = u
    return l1, l2, l3


def _hat_moments(
    a: np.ndarray, b: np.ndarray, d: float, i0: np.ndarray, i1: np.ndarray
) -> np.ndarray:
    """Weights of the hats from the moments ``I_k = int_a^b x^k g dx`` on each interval [a, b]."""
    w = np.zeros(a.size + 1)
    w[:-1] += (b * i0 - i1) / d
    w[1:] += (i1 - a * i0) / d
    return w


def _weights(grid: EnergyGrid, mu: float, temperature: float, kind: str,
             method: str | None = None) -> np.ndarray:
    """Unchecked core of the weight functions; ``kind`` in {occupation, band, entropy}.

    ``method`` (``analytic`` or ``quadrature``) is chosen by ``spacing / kT`` unless given.
    """
    if method is None:
        method = "quadrature" if grid.spacing < _D_SWITCH * KB * temperature else "analytic"
    if method == "quadrature":
        return _weights_quadrature(grid, mu, temperature, kind)
    kT = KB * temperature
    h = grid.spacing
    e = grid.energies - mu  # E - mu
    x = e / kT
    a, b = x[:-1], x[1:]
    d = h / kT
    y = np.abs(x)
    pos, neg = x > 0, x < 0
    l1, l2, l3 = _polylogs(y, third=kind != "occupation")

    def split(t: np.ndarray, t_at_0: float) -> tuple[np.ndarray, np.ndarray]:
        # tail integral at the positive part / at minus the negative part of each grid point
        return np.where(pos, t, t_at_0), np.where(neg, t, t_at_0)

    if kind == "entropy":
        # s is even; int_a^b x^k s = int over the positive part plus (-1)^k times the mirror
        p0, n0 = split(-y * l1 - 2.0 * l2, 2.0 * _PI2_12)
        p1, n1 = split(-y * y * l1 - 3.0 * y * l2 - 3.0 * l3, 2.25 * _ZETA3)
        m0 = (p0[:-1] - p0[1:]) + (n0[1:] - n0[:-1])
        m1 = (p1[:-1] - p1[1:]) - (n1[1:] - n1[:-1])
        return kT * _hat_moments(a, b, d, m0, m1)

    # the T = 0 step theta(mu - E), exactly, in local coordinates t = (E - E_i)/h in [0, tc]
    tc = np.clip(-e[:-1] / h, 0.0, 1.0)
    tc2, e_i = tc * tc, e[:-1]
    # the correction sgn(x) f(|x|): positive part minus the mirror of the negative part
    p0, n0 = split(-l1, _LN2)
    p1, n1 = split(-y * l1 - l2, _PI2_12)
    c0 = (p0[:-1] - p0[1:]) - (n0[1:] - n0[:-1])
    c1 = (p1[:-1] - p1[1:]) + (n1[1:] - n1[:-1])
    w_occ = np.zeros(grid.n)
    w_occ[:-1] += h * (tc - 0.5 * tc2)
    w_occ[1:] += h * 0.5 * tc2
    w_occ += kT * _hat_moments(a, b, d, c0, c1)
    if kind == "occupation":
        return w_occ
    # band energy: int hat E f = mu * occupation + int hat (E - mu) f
    p2, n2 = split(-(y * y * l1 + 2.0 * y * l2 + 2.0 * l3), 1.5 * _ZETA3)
    c2 = (p2[:-1] - p2[1:]) - (n2[1:] - n2[:-1])
    tc3 = tc2 * tc
    w_x = np.zeros(grid.n)
    w_x[:-1] += h * (e_i * (tc - 0.5 * tc2) + h * (0.5 * tc2 - tc3 / 3.0))
    w_x[1:] += h * (e_i * 0.5 * tc2 + h * tc3 / 3.0)
    w_x += kT * kT * _hat_moments(a, b, d, c1, c2)
    return mu * w_occ + w_x


# Gauss-Legendre nodes and weights on [0, 1]
_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_GL_T = 0.5 * (_GL_X + 1.0)
_GL_LEFT = 0.5 * _GL_W * (1.0 - _GL_T)
_GL_RIGHT = 0.5 * _GL_W * _GL_T
_D_SWITCH = 1.0


def _weights_quadrature(grid: EnergyGrid, mu: float, temperature: float, kind: str) -> np.ndarray:
    """The weights by 12-point Gauss-Legendre quadrature on each interval, for spacing < kT.

    On an interval of width ``d = spacing/kT < 1`` (in units of kT) the integrands are analytic
    in a strip of half-width pi around the real axis (the poles of f are at +-i pi), so the
    rule converges geometrically, roughly like ``(d / 4 pi)^24``: round-off for ``d < 1``. The
    analytic formulas would take second differences of the tail integrals here and lose
    ``~eps / d^2`` (1e-8 relative at 1e5 K and 0.01 eV).
    """
    kT = KB * temperature
    h = grid.spacing
    local = h * _GL_T[None, :]
    x = ((grid.energies[:-1] - mu)[:, None] + local) / kT
    if kind == "entropy":
        ax = np.abs(x)
        g = np.log1p(np.exp(-ax)) + ax * expit(-ax)  # s(x), even in x
    else:
        g = expit(-x)
        if kind == "band":
            g = g * (grid.energies[:-1, None] + local)
    w = np.zeros(grid.n)
    w[:-1] += h * (g @ _GL_LEFT)
    w[1:] += h * (g @ _GL_RIGHT)
    return w


def occupation_weights(grid: EnergyGrid, mu: float, temperature: float) -> np.ndarray:
    """Weights ``w`` with ``int D(E) f(E) dE = w @ D`` for a piecewise-linear ``D`` on the grid.

    Exact (to round-off) for any temperature and any ``mu``, also when ``k_B T`` is much
    smaller than the grid spacing; see the module docstring.

    Parameters
    ----------
    grid : EnergyGrid
        Energy grid of ``D``.
    mu : float
        Chemical potential in eV.
    temperature : float
        Electronic temperature in K, > 0.

    Returns
    -------
    numpy.ndarray
        float64 weights of shape ``(grid.n,)`` in eV.
    """
    return _weights(grid, _mu(mu), _temperature(temperature), "occupation")


def band_energy_weights(grid: EnergyGrid, mu: float, temperature: float) -> np.ndarray:
    """Weights ``w`` with ``int E D(E) f(E) dE = w @ D`` (absolute energies ``E``).

    Parameters and exactness as in :func:`occupation_weights`; the weights are in eV^2.
    """
    return _weights(grid, _mu(mu), _temperature(temperature), "band")


def entropy_weights(grid: EnergyGrid, mu: float, temperature: float) -> np.ndarray:
    """Weights ``w`` with ``int D(E) s(E) dE = w @ D``, ``s = -[f ln f + (1-f) ln(1-f)]``.

    ``s`` is dimensionless, so the weights are in eV and ``w @ D`` is the entropy in units of
    ``k_B``. Parameters and exactness as in :func:`occupation_weights`.
    """
    return _weights(grid, _mu(mu), _temperature(temperature), "entropy")


# --------------------------------------------------------------------------- LDOS -> DOS, density


def rebroaden(ldos: Any, grid: EnergyGrid, width_from: float, width_to: float) -> np.ndarray:
    """An LDOS (or DOS) broadened with Gaussians of width ``width_from`` turned into one broadened with
    ``width_to`` (eV, MALA's convention), along its last (energy) axis.

    Gaussians compose: ``g_a * g_b = g_c`` with ``c^2 = a^2 + b^2`` in this convention, so convolving
    with ``g_w``, ``w = sqrt(width_to^2 - width_from^2)``, gives exactly what the labeller would have
    written with ``width_to`` (up to the sampled kernel and the window's edges: values within ~3 w of
    an edge lose the states beyond it). The kernel is sampled on the grid and normalised, so the sum
    over the window (electrons, DOS integral) is kept away from the edges.
    """
    from scipy.ndimage import gaussian_filter1d  # noqa: PLC0415

    a, b = _positive(width_from, "width_from", "eV"), _positive(width_to, "width_to", "eV")
    if b < a:
        raise InputError(f"cannot sharpen an LDOS: width_to = {b} eV is below its broadening {a} eV")
    x = np.asarray(ldos, dtype=np.float64)
    grid.check_axis(x, "ldos")
    if b == a:
        return x
    w = math.sqrt(b * b - a * a)
    if w < grid.spacing:
        raise InputError(f"the extra broadening sqrt(width_to^2 - width_from^2) = {w:.4g} eV is below the energy "
                         f"spacing {grid.spacing} eV: the grid cannot carry it; choose width_to >= "
                         f"{math.sqrt(a * a + grid.spacing**2):.4g} eV")
    return gaussian_filter1d(x, sigma=w / math.sqrt(2.0) / grid.spacing, axis=-1, mode="constant", truncate=6.0)


def dos_from_ldos(ldos: Any, voxel_volume: float, grid: EnergyGrid | None = None) -> np.ndarray:
    """DOS ``D(E) = sum_r d(r, E) * voxel_volume`` (float64).

    Parameters
    ----------
    ldos : array_like
        LDOS of shape ``(..., n)`` in states/(eV Angstrom^3); all leading axes are summed.
    voxel_volume : float
        Volume of one voxel in Angstrom^3, > 0.
    grid : EnergyGrid, optional
        If given, the energy axis is checked against it.

    Returns
    -------
    numpy.ndarray
        float64 DOS of shape ``(n,)`` in states/eV.
    """
    voxel_volume = _positive(voxel_volume, "voxel_volume", "Angstrom^3")
    ldos = np.asarray(ldos)
    if grid is not None:
        grid.check_axis(ldos, "ldos")
    if ldos.ndim < 1:
        raise InputError(f"ldos must have an energy axis (shape (..., n)), got shape {ldos.shape}")
    dos = ldos.reshape(-1, ldos.shape[-1]).sum(axis=0, dtype=np.float64) * voxel_volume
    # a NaN or inf anywhere in the LDOS makes its energy's sum non-finite
    if not np.isfinite(dos).all():
        raise InputError("ldos contains NaN or inf values; check the prediction or the dataset")
    return dos


def density_from_ldos(ldos: Any, grid: EnergyGrid, mu: float, temperature: float) -> np.ndarray:
    """Electron density ``n(r) = int d(r, E) f(E) dE = ldos @ occupation_weights``.

    Parameters
    ----------
    ldos : array_like
        LDOS of shape ``(..., grid.n)`` in states/(eV Angstrom^3) (float32 is fine; it is
        converted to float64 in chunks).
    grid : EnergyGrid
        Energy grid of the LDOS.
    mu : float
        Fermi level in eV.
    temperature : float
        Electronic temperature in K.

    Returns
    -------
    numpy.ndarray
        float64 density of shape ``ldos.shape[:-1]`` in electrons/Angstrom^3.
    """
    ldos = np.asarray(ldos)
    grid.check_axis(ldos, "ldos")
    w = occupation_weights(grid, mu, temperature)
    flat = ldos.reshape(-1, grid.n)
    out = np.empty(flat.shape[0])
    chunk = max(1, (1 << 22) // grid.n)
    for i in range(0, flat.shape[0], chunk):
        block = np.asarray(flat[i : i + chunk], dtype=np.float64)
        if not np.isfinite(block).all():
            raise InputError("ldos contains NaN or inf values; check the prediction or the dataset")
        out[i : i + chunk] = block @ w
    return out.reshape(ldos.shape[:-1])


# --------------------------------------------------------------------------- DOS integrals


def number_of_electrons(
    dos: Any, grid: EnergyGrid, mu: float, temperature: float
) -> float | np.ndarray:
    """``N = int D(E) f(E) dE``, exact for the piecewise-linear DOS.

    Parameters
    ----------
    dos : array_like
        DOS of shape ``(n,)`` (or ``(..., n)`` for several) in states/eV.
    grid : EnergyGrid
        Energy grid of the DOS.
    mu : float
        Chemical potential in eV.
    temperature : float
        Electronic temperature in K.

    Returns
    -------
    float or numpy.ndarray
        Number of electrons (an array of shape ``dos.shape[:-1]`` for a batch).
    """
    dos = _dos(dos, grid)
    return _scalar(dos @ occupation_weights(grid, mu, temperature))


def band_energy(dos: Any, grid: EnergyGrid, mu: float, temperature: float) -> float | np.ndarray:
    """Band energy ``int E D(E) f(E) dE`` in eV (absolute energies).

    Parameters as in :func:`number_of_electrons`.
    """
    dos = _dos(dos, grid)
    return _scalar(dos @ band_energy_weights(grid, mu, temperature))


def entropy_term(dos: Any, grid: EnergyGrid, mu: float, temperature: float) -> float | np.ndarray:
    """Electronic entropy contribution ``-T S = -kT int D(E) s(E) dE`` in eV (<= 0 for D >= 0).

    Parameters as in :func:`number_of_electrons`.
    """
    dos = _dos(dos, grid)
    temperature = _temperature(temperature)
    return _scalar(-KB * temperature * (dos @ entropy_weights(grid, mu, temperature)))


def fermi_level(dos: Any, grid: EnergyGrid, n_electrons: float, temperature: float,
                tol: float = 1e-10) -> float:
    """The chemical potential ``mu`` with ``int D(E) f(E; mu) dE = n_electrons``.

    Solved by bracketed root finding (Brent's method) on the energy window widened by
    ``20 kT`` on each side.

    Parameters
    ----------
    dos : array_like
        DOS of shape ``(grid.n,)`` in states/eV.
    grid : EnergyGrid
        Energy grid of the DOS.
    n_electrons : float
        Number of (valence) electrons, > 0.
    temperature : float
        Electronic temperature in K.
    tol : float
        Absolute tolerance on ``mu`` in eV.

    Returns
    -------
    float
        The Fermi level in eV.

    Raises
    ------
    InputError
        If ``n_electrons`` cannot be placed in the window (more electrons than the DOS holds
        there, or ``n_electrons <= 0``).
    """
    dos = _dos(dos, grid)
    if dos.ndim != 1:
        raise InputError(f"fermi_level needs one DOS of shape ({grid.n},), got shape {dos.shape}")
    temperature = _temperature(temperature)
    n_electrons = _finite(n_electrons, "number of electrons", "")
    tol = _positive(tol, "tolerance", "eV")
    if n_electrons <= 0:
        raise InputError(f"number of electrons must be > 0, got {n_electrons!r}")
    kT = KB * temperature

    def excess(mu: float) -> float:
        return float(_weights(grid, mu, temperature, "occupation") @ dos) - n_electrons

    lo, hi = grid.start - 20.0 * kT, grid.stop + 20.0 * kT
    f_lo, f_hi = excess(lo), excess(hi)
    window = f"the energy window [{grid.start:.6g}, {grid.stop:.6g}] eV"
    if not f_hi > 0.0:
        raise InputError(
            f"{n_electrons:.10g} electrons cannot be placed in {window}: the DOS holds "
            f"{f_hi + n_electrons:.10g} electrons there (at {temperature:.6g} K); widen the energy "
            "window (or check the number of electrons and the DOS normalisation)"
        )
    if not f_lo < 0.0:
        raise InputError(
            f"{n_electrons:.10g} electrons is fewer than the {f_lo + n_electrons:.6g} electrons "
            f"{window} holds with the Fermi level 20 kT below it (at {temperature:.6g} K); widen "
            "the energy window downwards (or check the DOS: it must not be negative)"
        )
    return float(brentq(excess, lo, hi, xtol=tol, rtol=4 * np.finfo(float).eps, maxiter=200))


def electronic_properties(grid: EnergyGrid, temperature: float, n_electrons: float | None, *,
                          ldos: Any = None, dos: Any = None, voxel_volume: float | None = None,
                          mu: float | None = None) -> dict[str, Any]:
    """Fermi level, band energy, entropy term and (from an LDOS) the density, in one call.

    Parameters
    ----------
    grid : EnergyGrid
        Energy grid of the LDOS / DOS.
    temperature : float
        Electronic temperature in K.
    n_electrons : float or None
        Number of electrons; used to find the Fermi level (may be None when ``mu`` is given).
    ldos : array_like, optional
        LDOS ``(..., grid.n)`` in states/(eV Angstrom^3); needs ``voxel_volume``.
    dos : array_like, optional
        DOS ``(grid.n,)`` in states/eV. Exactly one of ``ldos`` and ``dos``.
    voxel_volume : float, optional
        Voxel volume in Angstrom^3 (with ``ldos``).
    mu : float, optional
        Use this Fermi level instead of solving for it.

    Returns
    -------
    dict
        ``temperature`` (K), ``fermi_level`` (eV), ``band_energy`` (eV), ``entropy_term``
        (``-TS`` in eV), ``n_electrons`` (the integral at the Fermi level), ``dos``
        (states/eV) and, from an LDOS, ``density`` (electrons/Angstrom^3, shape
        ``ldos.shape[:-1]``).
    """
    if (ldos is None) == (dos is None):
        raise InputError("give exactly one of ldos= and dos=")
    temperature = _temperature(temperature)
    if ldos is not None:
        if voxel_volume is None:
            raise InputError("ldos= needs voxel_volume= (the volume of one voxel in Angstrom^3)")
        ldos = np.asarray(ldos)
        grid.check_axis(ldos, "ldos")
        dos = dos_from_ldos(ldos, voxel_volume)
    dos = _dos(dos, grid)
    if dos.ndim != 1:
        raise InputError(f"dos must have shape ({grid.n},), got shape {dos.shape}")
    if mu is None:
        if n_electrons is None:
            raise InputError("give n_electrons (to find the Fermi level) or mu")
        mu = fermi_level(dos, grid, n_electrons, temperature)
    else:
        mu = _mu(mu)
    w_occ = _weights(grid, mu, temperature, "occupation")
    out: dict[str, Any] = {
        "temperature": temperature,
        "fermi_level": float(mu),
        "band_energy": float(dos @ _weights(grid, mu, temperature, "band")),
        "entropy_term": -KB * temperature * float(dos @ _weights(grid, mu, temperature, "entropy")),
        "n_electrons": float(dos @ w_occ),
        "dos": dos,
    }
    if ldos is not None:
        out["density"] = density_from_ldos(ldos, grid, mu, temperature)
    return out


# --------------------------------------------------------------------------- input checks


def _finite(value: Any, what: str, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be a number, got {value!r}") from e
    if not math.isfinite(v):
        raise InputError(f"{what} must be finite, got {value!r}{' ' + unit if unit else ''}")
    return v


def _mu(mu: Any) -> float:
    return _finite(mu, "chemical potential mu", "eV")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive(value: Any, what: str, unit: str) -> float:
    v = _finite(value, what, unit)
    if v <= 0:
        raise InputError(f"{what} must be > 0 {unit}, got {value!r}")
    return v


def _temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError) as e:
        raise InputError(f"electronic temperature must be > 0 K, got {temperature!r}") from e
    if not (math.isfinite(t) and t > 0):
        raise InputError(f"electronic temperature must be > 0 K (and finite), got {temperature!r}")
    return t


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{name} contains {bad} NaN or inf values of {array.size}")


def _dos(dos: Any, grid: EnergyGrid) -> np.ndarray:
    dos = np.asarray(dos)
    grid.check_axis(dos, "dos")
    dos = dos.astype(np.float64, copy=False)
    _check_finite(dos, "dos")
    return dos


def _scalar(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value
