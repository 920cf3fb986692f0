"""Discrete variable representations (DVR) of one vibrational coordinate.

A DVR basis of ``n`` functions is localised on ``n`` grid points ``Q_σ``: local operators
(the potential) are diagonal, ``<σ'|V|σ> ≈ V(Q_σ) δ_{σσ'}``, and the kinetic energy
``T = -1/2 d²/dQ²`` is a dense ``(n, n)`` matrix. Coordinates are mass-weighted, so the mass is
one and, in atomic units, ``Q`` is in ``sqrt(m_e) * bohr`` and energies in Hartree.

Two bases:

* :func:`ho_dvr` – harmonic-oscillator DVR: the grid is the set of eigenvalues of the position
  operator in the first ``n`` harmonic-oscillator functions of frequency ``ω`` (Gauss–Hermite
  points), and ``T`` is the exact kinetic matrix of that basis transformed to the DVR
  (Light, Hamilton & Lill, J. Chem. Phys. 82, 1400 (1985); Light & Carrington,
  Adv. Chem. Phys. 114, 263 (2000), sec. II).
* :func:`sine_dvr` – particle-in-a-box (sine) DVR on ``[a, b]`` in the closed form of Colbert &
  Miller, J. Chem. Phys. 96, 1982 (1992), appendix A, eq. (A6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from entangle.errors import ConfigError

__all__ = ["DVRBasis", "ho_dvr", "sine_dvr"]


@dataclass(frozen=True)
class DVRBasis:
    """A one-dimensional DVR basis.

    Attributes
    ----------
    kind : ``"ho"`` or ``"sine"``.
    grid : (n,) grid points ``Q_σ`` (mass-weighted coordinate, ``sqrt(m_e) * bohr``).
    kinetic : (n, n) symmetric kinetic-energy matrix ``<σ|-1/2 d²/dQ²|σ'>`` (Hartree).
    weights : (n,) quadrature weights: ``Σ_σ w_σ f(Q_σ) ≈ ∫ f(Q) dQ`` and a wavefunction with DVR
        coefficients ``c_σ`` takes the values ``ψ(Q_σ) = c_σ / sqrt(w_σ)``.
    """

    kind: str
    grid: torch.Tensor
    kinetic: torch.Tensor
    weights: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.grid.shape[0])


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of DVR points must be an integer >= 1, got {n!r}")


def ho_dvr(n: int, omega: float, center: float = 0.0, *, dtype: torch.dtype = torch.float64) -> DVRBasis:
    """Harmonic-oscillator DVR of ``n`` points for frequency ``omega``.

    Parameters
    ----------
    n : number of grid points (= number of oscillator functions, quanta 0..n-1).
    omega : harmonic frequency (Hartree); the reference oscillator is ``-1/2 d²/dQ² + ω² (Q - c)² / 2``.
    center : origin ``c`` of the grid (``sqrt(m_e) * bohr``).

    Returns
    -------
    :class:`DVRBasis` with ``grid`` sorted ascending and symmetric about ``center``.

    Notes
    -----
    In the oscillator basis ``|k>`` the position is ``X_{k,k+1} = sqrt((k+1) / (2ω))`` and the
    kinetic energy ``T_{kk} = ω (2k+1) / 4``, ``T_{k,k+2} = -ω sqrt((k+1)(k+2)) / 4``. With
    ``X = L diag(Q) Lᵀ`` the DVR kinetic matrix is ``Lᵀ T L``. For the harmonic potential
    itself the DVR Hamiltonian reproduces ``(k + 1/2) ω`` exactly for ``k = 0..n-2``: the
    product ``X X`` of truncated matrices differs from ``X²`` only in its last diagonal entry,
    which moves the top level from ``(n - 1/2) ω`` to ``(3n - 2) ω / 4``.
    """
    _check_n(n)
    if not (math.isfinite(omega) and omega > 0):
        raise ConfigError(f"HO-DVR frequency must be a finite positive number (Hartree), got {omega!r}")
    if not math.isfinite(center):
        raise ConfigError(f"HO-DVR center must be finite, got {center!r}")
    k = torch.arange(n, dtype=torch.float64)
    x_fbr = torch.diag(torch.sqrt((k[1:]) / (2.0 * omega)), 1)  # (n, n) X_{k,k+1} = sqrt((k+1)/(2ω))
    x_fbr = x_fbr + x_fbr.T
    t_fbr = torch.diag(omega * (2.0 * k + 1.0) / 4.0)  # (n, n)
    if n > 2:
        off = -omega * torch.sqrt((k[:-2] + 1.0) * (k[:-2] + 2.0)) / 4.0
        t_fbr = t_fbr + torch.diag(off, 2) + torch.diag(off, -2)
    q, vecs = torch.linalg.eigh(x_fbr)  # q ascending; vecs[:, σ] = L[:, σ]
    vecs = vecs * torch.sign(vecs[0]).where(vecs[0] != 0, torch.ones_like(vecs[0]))  # L[0, σ] > 0
    kinetic = vecs.T @ t_fbr @ vecs  # (n, n)
    kinetic = 0.5 * (kinetic + kinetic.T)
    phi0 = (omega / math.pi) ** 0.25 * torch.exp(-0.5 * omega * q**2)  # ground oscillator function
    weights = (vecs[0] / phi0) ** 2  # Gauss–Hermite weights for dQ
    return DVRBasis("ho", (q + center).to(dtype), kinetic.to(dtype), weights.to(dtype))


def sine_dvr(n: int, a: float, b: float, *, dtype: torch.dtype = torch.float64) -> DVRBasis:
    """Particle-in-a-box (sine) DVR with ``n`` interior points on ``[a, b]``.

    The grid is ``Q_i = a + i (b - a) / (n + 1)``, ``i = 1..n`` (wavefunctions vanish at ``a`` and
    ``b``). With ``N = n + 1`` intervals and ``L = b - a`` (Colbert & Miller 1992, eq. A6, ħ = m = 1)::

        T_ii = π² / (4 L²) [ (2N² + 1) / 3 - 1 / sin²(π i / N) ]
        T_ij = π² / (4 L²) (-1)^(i-j) [ 1 / sin²(π (i-j) / (2N)) - 1 / sin²(π (i+j) / (2N)) ]

    which equals the exact kinetic matrix of the first ``n`` box eigenfunctions transformed to the
    DVR.

    Parameters
    ----------
    n : number of grid points.
    a, b : box ends (``sqrt(m_e) * bohr``), ``a < b``.
    """
    _check_n(n)
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ConfigError(f"sine DVR needs finite box ends a < b, got a={a!r}, b={b!r}")
    length = b - a
    big_n = n + 1
    i = torch.arange(1, n + 1, dtype=torch.float64)
    grid = a + i * length / big_n  # (n,)
    diff = i[:, None] - i[None, :]  # (n, n)
    summ = i[:, None] + i[None, :]
    sign = 1.0 - 2.0 * torch.remainder(diff, 2.0)  # (-1)^(i-j)
    safe = torch.where(diff == 0, torch.ones_like(diff), diff)

    def inv_sin2(m: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.sin(math.pi * m / (2 * big_n)) ** 2

    off = sign * (inv_sin2(safe) - inv_sin2(summ))
    diag = (2.0 * big_n**2 + 1.0) / 3.0 - 1.0 / torch.sin(math.pi * i / big_n) ** 2
    kinetic = torch.where(diff == 0, torch.diag(diag), off) * (math.pi**2 / (4.0 * length**2))  # (n, n)
    weights = torch.full((n,), length / big_n, dtype=torch.float64)
    return DVRBasis("sine", grid.to(dtype), kinetic.to(dtype), weights.to(dtype))
