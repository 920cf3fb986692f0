"""Radial basis functions and cutoff functions for atomic density expansions.

Every basis is a small :class:`torch.nn.Module` without trainable parameters (its constants are
buffers, so ``.to(dtype=..., device=...)`` works) that maps distances ``r`` (Å) to values
``R[p, l, n]`` of shape ``(P, l_max + 1, n_max)``. Bases that do not depend on ``l`` (class
attribute ``l_dependent = False``) return a view expanded along that axis. All functions are
differentiable with respect to ``r`` to any order by autograd.

* :class:`GTOBasis` -- the orthonormalised Gaussian-type orbitals of SOAP as defined by DScribe
  (``rbf="gto"``): ``g_nl(r) = sum_n' beta_{l n n'} r^l exp(-alpha_{l n'} r^2)``; the exponents
  make the primitive ``r^l exp(-alpha r^2)`` decay to ``1e-3`` at radii evenly spaced in
  ``[1 Å, r_cut]``, and ``beta_l = S_l^{-1/2}`` (Löwdin) orthonormalises them on ``[0, ∞)``
  with weight ``r^2``. :meth:`GTOBasis.smeared` gives the analytic radial integral of a
  Gaussian-smeared atom (Sommer & Dunham eq. 10 with the Gaussian ``h`` of eq. 6).
* :class:`ChebyshevBasis` -- the radial basis of moment tensor potentials (Hodapp & Shapeev,
  App. C.1): Chebyshev polynomials on ``[r_min, r_cut]`` times the smooth cutoff
  ``(r_cut - r)^2``.
* :class:`SphericalBesselBasis` -- eigenfunctions of the Laplacian in a ball of radius
  ``r_cut`` with ``R(r_cut) = 0``: ``j_l(z_nl r / r_cut)``, ``z_nl`` the ``n``-th positive zero
  of ``j_l``, orthonormal on ``[0, r_cut]`` with weight ``r^2``.
* :func:`cosine_cutoff`, :func:`polynomial_cutoff`, :func:`mtp_cutoff` and
  :func:`cutoff_function` (by name).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.special
import torch
from torch import nn

from entangle.errors import ConfigError

__all__ = [
    "GTOBasis",
    "ChebyshevBasis",
    "SphericalBesselBasis",
    "spherical_bessel_j",
    "cosine_cutoff",
    "polynomial_cutoff",
    "mtp_cutoff",
    "cutoff_function",
    "CUTOFF_FUNCTIONS",
]

GTO_DECAY_THRESHOLD = 1e-3
"""Value to which DScribe's primitive GTOs decay at their radius ``a_n`` (fixed in DScribe)."""


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# cutoff functions
# --------------------------------------------------------------------------------------------

def cosine_cutoff(r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """Behler's cosine cutoff ``(1 + cos(π r / r_cut)) / 2`` for ``r < r_cut``, else 0.

    Parameters
    ----------
    r : (...) tensor of distances, Å.
    r_cut : cutoff radius, Å.

    Returns
    -------
    (...) tensor, dimensionless, continuous with a continuous first derivative at ``r_cut``.
    """
    inside = r < r_cut
    value = 0.5 * (1.0 + torch.cos(r * (math.pi / r_cut)))  # [...]
    return torch.where(inside, value, torch.zeros_like(r))


def polynomial_cutoff(r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """Quintic ``1 - 10 x^3 + 15 x^4 - 6 x^5`` with ``x = r / r_cut`` for ``r < r_cut``, else 0.

    The value and its first two derivatives vanish at ``r_cut`` (C² cutoff); it equals 1 with
    zero slope and curvature at ``r = 0``.
    """
    x = torch.clamp(r / r_cut, max=1.0)  # [...]
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x)


def mtp_cutoff(r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """Moment-tensor-potential cutoff ``(r_cut - r)^2`` for ``r < r_cut``, else 0 (unit Å²)."""
    return torch.clamp(r_cut - r, min=0.0) ** 2


CUTOFF_FUNCTIONS = {"cosine": cosine_cutoff, "polynomial": polynomial_cutoff, "mtp": mtp_cutoff}
"""Cutoff functions by name."""


def cutoff_function(name: str, r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """Evaluate the cutoff function called ``name`` (a key of :data:`CUTOFF_FUNCTIONS`)."""
    if name not in CUTOFF_FUNCTIONS:
        raise ConfigError(f"unknown cutoff function {name!r}; choose one of "
                          f"{sorted(CUTOFF_FUNCTIONS)}")
    return CUTOFF_FUNCTIONS[name](r, r_cut)


# --------------------------------------------------------------------------------------------
# Gaussian-type orbitals (SOAP, DScribe's rbf="gto")
# --------------------------------------------------------------------------------------------

def gto_exponents_and_coefficients(r_cut: float, n_max: int, l_max: int
                                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exponents ``alpha[l, n]`` (Å⁻²) and Löwdin coefficients ``beta[l, n, n']`` (float64).

    ``alpha_{l n} = ln(a_n^l / 1e-3) / a_n^2`` with ``a = linspace(1, r_cut, n_max)`` makes the
    primitive ``r^l exp(-alpha r^2)`` equal ``1e-3`` at ``r = a_n``. With the overlap
    ``S_{nn'} = Γ(l + 3/2) / (2 (alpha_n + alpha_n')^{l + 3/2})`` of the primitives,
    ``beta_l = S_l^{-1/2}`` (symmetric square root) makes ``g_nl`` orthonormal.

    Raises
    ------
    ConfigError
        If an overlap matrix is not numerically positive definite (too many functions for the
        cutoff), as DScribe does.
    """
    radii = np.linspace(1.0, r_cut, n_max)  # [n]
    alphas = np.empty((l_max + 1, n_max))
    betas = np.empty((l_max + 1, n_max, n_max))
    for l in range(l_max + 1):
        alpha = (math.log(1.0 / GTO_DECAY_THRESHOLD) + l * np.log(radii)) / radii**2  # [n]
        overlap = 0.5 * math.gamma(l + 1.5) * (alpha[:, None] + alpha[None, :]) ** (-l - 1.5)
        eigenvalues, eigenvectors = np.linalg.eigh(overlap)
        if eigenvalues.min() <= 1e-14 * eigenvalues.max():
            raise ConfigError(
                f"the GTO basis with r_cut={r_cut}, n_max={n_max} cannot be orthonormalised "
                f"(overlap matrix for l={l} is singular); lower n_max or raise r_cut")
        betas[l] = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        alphas[l] = alpha
    return alphas, betas


class GTOBasis(nn.Module):
    """Orthonormal Gaussian-type orbitals ``g_nl(r)`` exactly as DScribe's ``rbf="gto"``.

    Parameters
    ----------
    r_cut : float
        Cutoff radius, Å (> 1, as DScribe requires: the first primitive decays at 1 Å).
    n_max : int
        Number of radial functions per ``l``.
    l_max : int
        Largest angular momentum.

    Attributes
    ----------
    alpha : (l_max + 1, n_max) buffer, Å⁻².
    beta : (l_max + 1, n_max, n_max) buffer, ``beta[l, n, n']``.

    Examples
    --------
    >>> import torch
    >>> basis = GTOBasis(r_cut=5.0, n_max=4, l_max=2).double()
    >>> basis(torch.linspace(0.5, 5.0, 7, dtype=torch.float64)).shape
    torch.Size([7, 3, 4])
    """

    l_dependent = True

    def __init__(self, r_cut: float, n_max: int, l_max: int):
        super().__init__()
        self.r_cut = _check_positive_float("r_cut", r_cut)
        if self.r_cut <= 1.0:
            raise ConfigError(f"the GTO basis needs r_cut > 1 Å, got {r_cut!r}")
        self.n_max = _check_positive_int("n_max", n_max)
        self.l_max = _check_positive_int("l_max", l_max, minimum=0)
        alphas, betas = gto_exponents_and_coefficients(self.r_cut, self.n_max, self.l_max)
        self.register_buffer("alpha", torch.from_numpy(alphas))
        self.register_buffer("beta", torch.from_numpy(betas))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``g_nl(r)``: (P,) distances in Å -> (P, l_max + 1, n_max), Å^(-3/2)."""
        primitives = torch.exp(-self.alpha.to(r.dtype) * (r * r)[:, None, None])  # [P, L, n']
        powers = [torch.ones_like(r)]
        for _ in range(self.l_max):
            powers.append(powers[-1] * r)  # r^l by products: finite gradients at r = 0
        primitives = primitives * torch.stack(powers, dim=1)[:, :, None]  # [P, L, n']
        return torch.einsum("pln,lkn->plk", primitives, self.beta.to(r.dtype))  # [P, L, n]

    def smeared_constants(self, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Constants ``(K, gamma)`` of the Gaussian-smeared radial integral, see :meth:`smeared`.

        ``gamma[l, n'] = eta alpha / (alpha + eta)`` (Å⁻²) and
        ``K[l, n, n'] = π^{3/2} beta[l, n, n'] eta^l / (alpha[l, n'] + eta)^{l + 3/2}`` with
        ``eta = 1 / (2 sigma^2)``; computed in float64, returned in the buffers' dtype.
        """
        sigma = _check_positive_float("sigma", sigma)
        eta = 1.0 / (2.0 * sigma * sigma)
        alpha = self.alpha.double()  # [L, n']
        ls = torch.arange(self.l_max + 1, dtype=torch.float64, device=alpha.device)[:, None]
        scale = math.pi**1.5 * eta**ls / (alpha + eta) ** (ls + 1.5)  # [L, n']
        k = self.beta.double() * scale[:, None, :]  # [L, n, n']
        gamma = eta * alpha / (alpha + eta)  # [L, n']
        return k.to(self.alpha.dtype), gamma.to(self.alpha.dtype)

    def smeared(self, d: torch.Tensor, sigma: float) -> torch.Tensor:
        """Radial part of the expansion of one Gaussian-smeared atom at distance ``d``.

        For an (unnormalised, as in DScribe) Gaussian ``exp(-|r - d|^2 / (2 sigma^2))`` centred
        at the vector ``d``, the expansion coefficient on ``g_nl(r) Y_lm(r̂)`` is

            c_nlm = ∫ d³r g_nl(r) Y_lm(r̂) exp(-|r - d|² / 2σ²) = I_nl(|d|) · |d|^l Y_lm(d̂).

        Expanding the Gaussian in spherical waves,
        ``exp(-|r-d|²η) = 4π exp(-η(r² + d²)) Σ_lm i_l(2η r d) Y_lm(r̂) Y_lm(d̂)`` with the modified
        spherical Bessel function ``i_l``, and using
        ``∫_0^∞ r^{l+2} exp(-a r²) i_l(b r) dr = √π b^l exp(b²/4a) / (2^{l+2} a^{l+3/2})``
        gives ``I_nl(d) = Σ_n' K[l, n, n'] exp(-gamma[l, n'] d²)``: a Gaussian in ``d`` again,
        so ``c_nlm`` is smooth everywhere, also at ``d = 0`` (the central atom).

        Parameters
        ----------
        d : (P,) distances, Å.
        sigma : Gaussian width, Å.

        Returns
        -------
        (P, l_max + 1, n_max) tensor ``I[p, l, n]`` (multiply by the solid harmonic
        ``|d|^l Y_lm(d̂)`` to get ``c_nlm``).
        """
        k, gamma = self.smeared_constants(sigma)
        primitives = torch.exp(-gamma.to(d.dtype) * (d * d)[:, None, None])  # [P, L, n']
        return torch.einsum("pln,lkn->plk", primitives, k.to(d.dtype))  # [P, L, n]


# --------------------------------------------------------------------------------------------
# Chebyshev polynomials with the MTP cutoff
# --------------------------------------------------------------------------------------------

class ChebyshevBasis(nn.Module):
    """MTP radial basis ``Q_n(r) = T_n(ξ) (r_cut - r)^2`` for ``r < r_cut`` (else 0).

    ``ξ = (2 r - r_min - r_cut) / (r_cut - r_min)`` maps ``[r_min, r_cut]`` onto ``[-1, 1]``;
    ``T_n`` are the Chebyshev polynomials of the first kind, ``n = 0 .. n_max - 1``
    (Hodapp & Shapeev, App. C.1, eq. C2). The functions do not depend on ``l``.

    Parameters
    ----------
    r_min, r_cut : float
        Inner and outer radius, Å (``0 <= r_min < r_cut``).
    n_max : int
        Number of functions.
    l_max : int
        Size of the (broadcast) ``l`` axis of the output.
    """

    l_dependent = False

    def __init__(self, r_min: float, r_cut: float, n_max: int, l_max: int = 0):
        super().__init__()
        self.r_cut = _check_positive_float("r_cut", r_cut)
        if isinstance(r_min, bool) or not isinstance(r_min, (int, float, np.floating)) \
                or not 0.0 <= float(r_min) < self.r_cut:
            raise ConfigError(f"r_min must satisfy 0 <= r_min < r_cut={r_cut}, got {r_min!r}")
        self.r_min = float(r_min)
        self.n_max = _check_positive_int("n_max", n_max)
        self.l_max = _check_positive_int("l_max", l_max, minimum=0)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """(P,) distances in Å -> (P, l_max + 1, n_max), unit Å²."""
        xi = (2.0 * r - (self.r_min + self.r_cut)) / (self.r_cut - self.r_min)  # [P]
        values = [torch.ones_like(xi), xi]
        for _ in range(2, self.n_max):
            values.append(2.0 * xi * values[-1] - values[-2])  # T_{n+1} = 2ξT_n - T_{n-1}
        chebyshev = torch.stack(values[: self.n_max], dim=-1)  # [P, n]
        out = chebyshev * mtp_cutoff(r, self.r_cut)[:, None]  # [P, n]
        return out[:, None, :].expand(-1, self.l_max + 1, -1)  # [P, L, n]


# --------------------------------------------------------------------------------------------
# spherical Bessel functions (Laplacian eigenbasis)
# --------------------------------------------------------------------------------------------

def spherical_bessel_j(x: torch.Tensor, l_max: int) -> torch.Tensor:
    """Spherical Bessel functions ``j_l(x)`` for ``l = 0 .. l_max``, ``x >= 0``.

    Where ``x > max(l, 1)`` the upward recursion ``j_{l+1} = (2l+1)/x j_l - j_{l-1}`` from
    ``j_0 = sin x / x`` and ``j_1 = sin x / x² - cos x / x`` is used (it is stable while
    ``l < x``); elsewhere the power series
    ``j_l(x) = x^l / (2l+1)!! Σ_k (-x²/2)^k / (k! (2l+3)(2l+5)...(2l+2k+1))``, summed until the
    terms fall below 1e-17 (at most ~25 terms for ``x <= max(l, 1)``, ``l <= 20``). Both
    branches are evaluated on safe inputs, so autograd gradients are finite everywhere (also
    at ``x = 0``). Agrees with ``scipy.special.spherical_jn`` to ~1e-14 for ``l <= 20``.

    Parameters
    ----------
    x : (...) tensor, dimensionless, ``x >= 0``.
    l_max : largest order.

    Returns
    -------
    (..., l_max + 1) tensor.
    """
    l_max = _check_positive_int("l_max", l_max, minimum=0)
    out = []
    x_big = torch.clamp(x, min=1.0)  # the recursion branch never sees x < 1
    sin, cos = torch.sin(x_big), torch.cos(x_big)
    j_prev = sin / x_big  # [...]
    j_cur = sin / (x_big * x_big) - cos / x_big  # [...]
    for l in range(l_max + 1):
        if l == 0:
            recursion = j_prev
        elif l == 1:
            recursion = j_cur
        else:
            j_prev, j_cur = j_cur, (2 * l - 1) / x_big * j_cur - j_prev
            recursion = j_cur
        threshold = max(float(l), 1.0)
        x_small = torch.clamp(x, max=threshold)  # the series branch never sees x > threshold
        x2_small = x_small * x_small
        term = torch.ones_like(x)
        total = torch.ones_like(x)
        bound, k = 1.0, 0
        while bound > 1e-17:  # bound: |k-th term| at x = threshold, the largest x used here
            k += 1
            bound *= 0.5 * threshold**2 / (k * (2 * l + 2 * k + 1))
            term = term * (-0.5 * x2_small / (k * (2 * l + 2 * k + 1)))
            total = total + term
        double_factorial = float(math.prod(range(1, 2 * l + 2, 2)))
        series = total / double_factorial if l == 0 else x_small**l / double_factorial * total
        out.append(torch.where(x > threshold, recursion, series))
    return torch.stack(out, dim=-1)


def spherical_bessel_zeros(l_max: int, n_max: int) -> np.ndarray:
    """First ``n_max`` positive zeros ``z[l, n]`` of ``j_l`` for ``l = 0 .. l_max`` (float64).

    The zeros of ``j_l`` interlace those of ``j_{l-1}`` (one in each interval between
    consecutive zeros), so they are bracketed from the zeros ``kπ`` of ``j_0`` upwards and
    polished with Brent's method.
    """
    zeros = np.pi * np.arange(1, n_max + l_max + 1, dtype=np.float64)  # j_0
    table = np.empty((l_max + 1, n_max))
    table[0] = zeros[:n_max]
    for l in range(1, l_max + 1):
        zeros = np.array([
            scipy.optimize.brentq(lambda t: scipy.special.spherical_jn(l, t), a, b, xtol=1e-15)
            for a, b in zip(zeros[:-1], zeros[1:])])
        table[l] = zeros[:n_max]
    return table


class SphericalBesselBasis(nn.Module):
    """Laplacian eigenbasis ``R_nl(r) = N_nl j_l(z_nl r / r_cut)`` for ``r < r_cut`` (else 0).

    ``z_nl`` is the ``n``-th positive zero of ``j_l`` so that ``R_nl(r_cut) = 0``, and
    ``N_nl = sqrt(2 / r_cut^3) / |j_{l+1}(z_nl)|`` makes ``∫_0^r_cut r^2 R_nl R_n'l dr = δ_nn'``.

    Parameters
    ----------
    r_cut : float
        Cutoff radius, Å.
    n_max, l_max : int
        Number of functions per ``l`` and largest ``l``.
    """

    l_dependent = True

    def __init__(self, r_cut: float, n_max: int, l_max: int):
        super().__init__()
        self.r_cut = _check_positive_float("r_cut", r_cut)
        self.n_max = _check_positive_int("n_max", n_max)
        self.l_max = _check_positive_int("l_max", l_max, minimum=0)
        zeros = spherical_bessel_zeros(self.l_max, self.n_max)  # [L, n]
        ls = np.arange(self.l_max + 1)[:, None]
        norms = math.sqrt(2.0 / self.r_cut**3) / np.abs(scipy.special.spherical_jn(ls + 1, zeros))
        self.register_buffer("zeros", torch.from_numpy(zeros))
        self.register_buffer("norms", torch.from_numpy(norms))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """(P,) distances in Å -> (P, l_max + 1, n_max), Å^(-3/2)."""
        inside = r < self.r_cut
        r_in = torch.where(inside, r, torch.zeros_like(r))  # [P]
        out = []
        for l in range(self.l_max + 1):
            x = r_in[:, None] * (self.zeros[l] / self.r_cut).to(r.dtype)  # [P, n]
            out.append(spherical_bessel_j(x, l)[..., l] * self.norms[l].to(r.dtype))  # [P, n]
        values = torch.stack(out, dim=1)  # [P, L, n]
        return torch.where(inside[:, None, None], values, torch.zeros_like(values))
