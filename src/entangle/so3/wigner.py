"""Wigner 3j symbols (complex and real harmonics), real Clebsch–Gordan tensors, Wigner D matrices.

Complex 3j symbols
    :func:`wigner_3j` gives the usual symbol ``(l1 l2 l3; m1 m2 m3)`` of the complex harmonics
    (Condon–Shortley phase), evaluated exactly with Racah's formula in rational arithmetic
    (Edmonds, *Angular Momentum in Quantum Mechanics*, Eq. 3.7.3) and rounded once to float.

Real 3j symbols
    With the unitary change of basis ``Ẏ_l = U_l Y_l`` from complex to real harmonics
    (:func:`complex_to_real`; Hodapp & Shapeev Eqs. (8)–(9)), the 3j symbol for real harmonics
    is (their Eq. (10))::

        C[m1, m2, m3] = Σ_{m'} (l1 l2 l3; m'1 m'2 m'3) conj(U_l1[m1, m'1]) conj(U_l2[m2, m'2])
                                                      conj(U_l3[m3, m'3])

    It is real when ``l1 + l2 + l3`` is even and purely imaginary when it is odd (their App. B.1).
    :func:`real_wigner_3j` returns a real tensor in both cases::

        real_wigner_3j = Re C   (l1 + l2 + l3 even),        C = real_wigner_3j
        real_wigner_3j = Im C   (l1 + l2 + l3 odd),         C = 1j * real_wigner_3j

    Either way ``Σ_{m} R[m1,m2,m3] Y_l1m1(a) Y_l2m2(b) Y_l3m3(c)`` is invariant under rotations
    of ``(a, b, c)``, i.e. ``R`` is invariant under ``D_l1 ⊗ D_l2 ⊗ D_l3`` for proper rotations.
    Under an improper rotation it picks up ``(-1)^(l1+l2+l3)``: the odd tensors are
    pseudo-tensors, like the cross product: ``real_wigner_3j(1, 1, 1)[i, j, k] = ε_abc / sqrt(6)``
    where ``a, b, c`` are the Cartesian labels ``(y, z, x)`` of the ``l = 1`` components
    ``i, j, k``. The normalisation is that of the 3j symbols:
    ``(2 l3 + 1) Σ_{m1 m2} R[m1,m2,m3] R[m1,m2,m3'] = δ_{m3 m3'}`` (their Eq. (B23)), and the
    selection rules [SR1], [SR3], [SR4] and the symmetries (B17)–(B19) hold.

Real Clebsch–Gordan tensors
    :func:`real_clebsch_gordan` is ``(-1)^(l1-l2) sqrt(2 l3 + 1) real_wigner_3j(l1, l2, l3)``.
    For even ``l1 + l2 + l3`` it is exactly the complex Condon–Shortley coefficient
    ``<l1 m1 l2 m2 | l3 m3>`` carried to real harmonics on all three legs; for odd sums it is the
    imaginary part of that (real) tensor. It maps ``l1 ⊗ l2 → l3`` equivariantly:
    ``z[m3] = Σ CG[m1, m2, m3] x[m1] y[m2]`` transforms with ``D_l3`` when ``x, y`` transform with
    ``D_l1, D_l2``, and ``Σ_{m1 m2} CG[.., m3] CG[.., m3'] = δ``.

Wigner D matrices
    :func:`wigner_D` gives the real matrices with ``Y_l(R r) = D_l(R) Y_l(r)`` for every
    orthogonal ``R`` (proper or improper: ``D_l(-R) = (-1)^l D_l(R)``). They are computed as
    ``D_l(R)[m, m'] = ∫ Y_lm(R r) Y_lm'(r) dΩ`` by a quadrature that is exact for polynomials of
    degree ``2l`` (Gauss–Legendre in ``cos θ`` × uniform in ``φ``), so ``D`` is a polynomial in
    the entries of ``R``: batched, any dtype/device, differentiable.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.so3.harmonics import real_spherical_harmonics

__all__ = [
    "wigner_3j",
    "real_wigner_3j",
    "real_clebsch_gordan",
    "complex_to_real",
    "wigner_D",
    "random_rotation",
]


def _check_l(*ls: int) -> None:
    for l in ls:
        if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or l < 0:
            raise ConfigError(f"angular momenta must be non-negative ints, got {ls!r}")


def _triangle(l1: int, l2: int, l3: int) -> bool:
    """Selection rule [SR1] (Hodapp & Shapeev Eq. (11))."""
    return abs(l1 - l2) <= l3 <= l1 + l2


def _racah_3j(l1: int, l2: int, l3: int, m1: int, m2: int, m3: int) -> float:
    """One complex 3j symbol by Racah's formula in exact arithmetic (Edmonds Eq. 3.7.3)."""
    if m1 + m2 + m3 != 0 or not _triangle(l1, l2, l3) or abs(m1) > l1 or abs(m2) > l2 \
            or abs(m3) > l3:
        return 0.0
    f = math.factorial
    k_min = max(0, l2 - l3 - m1, l1 - l3 + m2)
    k_max = min(l1 + l2 - l3, l1 - m1, l2 + m2)
    denominators = [f(k) * f(l3 - l2 + k + m1) * f(l3 - l1 + k - m2) * f(l1 + l2 - l3 - k)
                    * f(l1 - k - m1) * f(l2 - k + m2) for k in range(k_min, k_max + 1)]
    common = math.lcm(*denominators)
    # the alternating series Σ_k (-1)^k / denominator_k, as numerator / common
    numerator = sum((-1) ** (k_min + i) * (common // d) for i, d in enumerate(denominators))
    if numerator == 0:
        return 0.0
    # square of the prefactor: triangle coefficient Δ(l1 l2 l3) times the (l ± m)! products
    square = Fraction(f(l1 + l2 - l3) * f(l1 - l2 + l3) * f(-l1 + l2 + l3)
                      * f(l1 + m1) * f(l1 - m1) * f(l2 + m2) * f(l2 - m2) * f(l3 + m3) * f(l3 - m3),
                      f(l1 + l2 + l3 + 1))
    sign = (-1) ** ((l1 - l2 - m3) % 2) * (1 if numerator > 0 else -1)
    return sign * math.sqrt(square * Fraction(numerator * numerator, common * common))


@lru_cache(maxsize=None)
def _wigner_3j_array(l1: int, l2: int, l3: int) -> np.ndarray:
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))  # [2l1+1, 2l2+1, 2l3+1]
    if _triangle(l1, l2, l3):
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                m3 = -m1 - m2
                if abs(m3) <= l3:
                    out[m1 + l1, m2 + l2, m3 + l3] = _racah_3j(l1, l2, l3, m1, m2, m3)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _complex_to_real_array(l: int) -> np.ndarray:
    """``U_l`` of Hodapp & Shapeev Eq. (9): rows real ``m``, columns complex ``m'``."""
    u = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)  # [2l+1, 2l+1]
    s = 1 / math.sqrt(2)
    u[l, l] = 1.0
    for m in range(1, l + 1):
        sign = (-1) ** m
        # Eq. (8), m > 0: Ẏ_m = (Y_{-m} + (-1)^m Y_m) / sqrt(2)
        u[l + m, l - m] = s
        u[l + m, l + m] = sign * s
        # Eq. (8), m < 0: Ẏ_{-m} = i (Y_{-m} - (-1)^m Y_m) / sqrt(2)
        u[l - m, l - m] = 1j * s
        u[l - m, l + m] = -1j * sign * s
    u.flags.writeable = False
    return u


@lru_cache(maxsize=None)
def _real_3j_array(l1: int, l2: int, l3: int) -> np.ndarray:
    w = _wigner_3j_array(l1, l2, l3)
    u1, u2, u3 = (_complex_to_real_array(l).conj() for l in (l1, l2, l3))
    # Eq. (10), one leg at a time
    c = np.einsum("abc,ia->ibc", w, u1)
    c = np.einsum("ibc,jb->ijc", c, u2)
    c = np.einsum("ijc,kc->ijk", c, u3)  # [2l1+1, 2l2+1, 2l3+1]
    out = c.real if (l1 + l2 + l3) % 2 == 0 else c.imag
    out = np.where(np.abs(out) < 1e-14, 0.0, out)  # exact zeros where selection rules say so
    out.flags.writeable = False
    return out


def _to_torch(array: np.ndarray, dtype: torch.dtype, device: torch.device | str | None
              ) -> torch.Tensor:
    return torch.tensor(array, dtype=dtype, device=device)  # always a fresh copy


def wigner_3j(l1: int, l2: int, l3: int, *, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Wigner 3j symbols of the complex harmonics.

    Parameters
    ----------
    l1, l2, l3 : non-negative angular momenta.
    dtype, device : of the returned tensor (a fresh copy of a cached float64 table).

    Returns
    -------
    (2l1+1, 2l2+1, 2l3+1) tensor ``W[m1+l1, m2+l2, m3+l3] = (l1 l2 l3; m1 m2 m3)``; zero unless
    the triangle rule holds and ``m1 + m2 + m3 = 0``.

    Examples
    --------
    >>> w = wigner_3j(1, 1, 0)
    >>> round(float(w[1, 1, 0]), 12)  # (1 1 0; 0 0 0) = -1/sqrt(3)
    -0.57735026919
    """
    _check_l(l1, l2, l3)
    return _to_torch(_wigner_3j_array(int(l1), int(l2), int(l3)), dtype, device)


def complex_to_real(l: int, *, dtype: torch.dtype = torch.complex128,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Unitary ``U_l`` with ``Y_real = U_l Y_complex`` (Hodapp & Shapeev Eqs. (8)–(9)).

    Returns
    -------
    (2l+1, 2l+1) complex tensor; row ``m + l`` (real harmonic ``m``), column ``m' + l``
    (complex harmonic ``m'``).
    """
    _check_l(l)
    return _to_torch(_complex_to_real_array(int(l)), dtype, device)


def real_wigner_3j(l1: int, l2: int, l3: int, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Wigner 3j symbols of the real harmonics (Hodapp & Shapeev Eq. (10)), as a real tensor.

    Returns ``Re C`` for even ``l1 + l2 + l3`` and ``Im C`` for odd sums, where ``C`` is the
    (real resp. purely imaginary) tensor of Eq. (10); see the module docstring.

    Returns
    -------
    (2l1+1, 2l2+1, 2l3+1) tensor, indices ``m + l`` in the order of
    :func:`~entangle.so3.real_spherical_harmonics`; zero unless the triangle rule holds.

    Examples
    --------
    >>> r = real_wigner_3j(1, 1, 0)
    >>> torch.allclose(r[:, :, 0], -torch.eye(3, dtype=torch.float64) / 3 ** 0.5)
    True
    """
    _check_l(l1, l2, l3)
    return _to_torch(_real_3j_array(int(l1), int(l2), int(l3)), dtype, device)


def real_clebsch_gordan(l1: int, l2: int, l3: int, *, dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Clebsch–Gordan coupling tensor ``l1 ⊗ l2 → l3`` for real harmonics.

    ``(-1)^(l1 - l2) sqrt(2 l3 + 1) real_wigner_3j(l1, l2, l3)``; see the module docstring.

    Returns
    -------
    (2l1+1, 2l2+1, 2l3+1) tensor ``CG[m1, m2, m3]`` with
    ``Σ_{m1 m2} CG[m1, m2, m3] CG[m1, m2, m3'] = δ_{m3 m3'}`` when the triangle rule holds
    (zero tensor otherwise).

    Examples
    --------
    >>> cg = real_clebsch_gordan(2, 1, 1)
    >>> torch.allclose(torch.einsum("abk,abn->kn", cg, cg), torch.eye(3, dtype=torch.float64))
    True
    """
    _check_l(l1, l2, l3)
    factor = (-1) ** ((l1 - l2) % 2) * math.sqrt(2 * l3 + 1)
    return _to_torch(factor * _real_3j_array(int(l1), int(l2), int(l3)), dtype, device)


@lru_cache(maxsize=None)
def _sphere_quadrature(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (K, 3) and weights (K,) integrating spherical polynomials of degree <= 2l exactly.

    Gauss–Legendre with ``l + 1`` nodes in ``cos θ`` (exact to degree ``2l + 1``) times
    ``2l + 1`` equally spaced azimuths (exact for Fourier modes ``|k| <= 2l``).
    """
    cos_theta, w_theta = np.polynomial.legendre.leggauss(l + 1)  # [l+1]
    phi = 2 * np.pi * np.arange(2 * l + 1) / (2 * l + 1)  # [2l+1]
    sin_theta = np.sqrt(1 - cos_theta**2)
    points = np.stack([
        np.outer(sin_theta, np.cos(phi)),
        np.outer(sin_theta, np.sin(phi)),
        np.outer(cos_theta, np.ones_like(phi)),
    ], axis=-1).reshape(-1, 3)  # [K, 3]
    weights = np.outer(w_theta, np.full_like(phi, 2 * np.pi / (2 * l + 1))).reshape(-1)  # [K]
    points.flags.writeable = False
    weights.flags.writeable = False
    return points, weights


def _check_rotation(rotation: torch.Tensor) -> None:
    if not isinstance(rotation, torch.Tensor):
        raise DataError(f"rotation must be a torch.Tensor, got {type(rotation).__name__}")
    if not rotation.is_floating_point():
        raise DataError(f"rotation must have a floating-point dtype, got {rotation.dtype}")
    if rotation.ndim < 2 or rotation.shape[-2:] != (3, 3):
        raise ShapeError(f"rotation must have shape (..., 3, 3), got {tuple(rotation.shape)}")
    with torch.no_grad():
        eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
        error = (rotation.transpose(-1, -2) @ rotation - eye).abs()  # [..., 3, 3]
        # loose enough for float32 input and finite-difference probes, tight enough to catch
        # scaled or non-orthogonal matrices
        tol = max(1e-4, 1e3 * torch.finfo(rotation.dtype).eps)
        if error.numel() and not bool(error.max() <= tol):
            raise DataError(f"rotation is not orthogonal: max |R^T R - 1| = "
                            f"{float(error.max()):.2e} > {tol:.1e}", field="rotation")


def wigner_D(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Real Wigner D matrix of degree ``l``: ``Y_l(R r) = D_l(R) Y_l(r)`` for all ``r``.

    Parameters
    ----------
    l : angular momentum.
    rotation : (..., 3, 3) orthogonal matrices ``R`` (proper or improper), any floating dtype.

    Returns
    -------
    (..., 2l+1, 2l+1) tensor, same dtype and device; orthogonal, ``D_l(R1 R2) =
    D_l(R1) D_l(R2)``, ``D_l(-1) = (-1)^l``. Differentiable with respect to ``rotation``.

    Examples
    --------
    >>> r = random_rotation(torch.Generator().manual_seed(0))
    >>> v = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    >>> y, y_rot = real_spherical_harmonics(v, 2)[4:], real_spherical_harmonics(r @ v, 2)[4:]
    >>> torch.allclose(y_rot, wigner_D(2, r) @ y)
    True
    """
    _check_l(l)
    _check_rotation(rotation)
    l = int(l)
    points_np, weights_np = _sphere_quadrature(l)
    points = torch.tensor(points_np, dtype=rotation.dtype, device=rotation.device)  # [K, 3]
    weights = torch.tensor(weights_np, dtype=rotation.dtype, device=rotation.device)  # [K]
    block = slice(l * l, (l + 1) ** 2)
    y = real_spherical_harmonics(points, l, normalize=False)[:, block]  # [K, 2l+1]
    rotated = torch.einsum("...ij,kj->...ki", rotation, points)  # [..., K, 3]
    # |R r| = 1, so the solid harmonics (a polynomial in R) equal the spherical ones
    y_rot = real_spherical_harmonics(rotated, l, normalize=False)[..., block]  # [..., K, 2l+1]
    return torch.einsum("...km,k,kn->...mn", y_rot, weights, y)  # [..., 2l+1, 2l+1]


def random_rotation(generator: torch.Generator | int, dtype: torch.dtype = torch.float64, *,
                    shape: tuple[int, ...] = (), device: torch.device | str | None = None
                    ) -> torch.Tensor:
    """Rotation matrices drawn uniformly (Haar measure) from SO(3).

    QR decomposition of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Mezzadri, *Notices AMS* 54, 592 (2007)) gives a Haar-distributed orthogonal matrix; one
    column is negated where the determinant is -1, which maps Haar on O(3) to Haar on SO(3).

    Parameters
    ----------
    generator : a ``torch.Generator`` (CPU) or an int seed.
    dtype : floating dtype of the result.
    shape : batch shape; the result has shape ``(*shape, 3, 3)``.
    device : device of the result (drawn on the CPU, so the same seed gives the same matrices).

    Returns
    -------
    (*shape, 3, 3) tensor with ``R^T R = 1`` and ``det R = +1``.
    """
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or an int seed, got {generator!r}")
    gaussian = torch.randn(*shape, 3, 3, generator=generator, dtype=torch.float64)  # [..., 3, 3]
    q, r = torch.linalg.qr(gaussian)
    signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0)  # [..., 3]
    q = q * signs.unsqueeze(-2)  # columns times sign(r_jj); [..., 3, 3]
    flip = torch.ones_like(signs)
    flip[..., 0] = torch.sign(torch.linalg.det(q))
    q = q * flip.unsqueeze(-2)  # [..., 3, 3]
    return q.to(dtype=dtype, device=device)
