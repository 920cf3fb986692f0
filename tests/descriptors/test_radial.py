import math

import numpy as np
import pytest
import scipy.special
import torch
from numpy.polynomial import chebyshev

from entangle.descriptors.radial import (
    ChebyshevBasis,
    GTOBasis,
    SphericalBesselBasis,
    cosine_cutoff,
    cutoff_function,
    mtp_cutoff,
    polynomial_cutoff,
    spherical_bessel_j,
)
from entangle.errors import ConfigError

F64 = torch.float64


def radial_overlap(basis, r_max, n_points=400):
    """∫_0^r_max r² R_nl R_n'l dr by Gauss–Legendre quadrature: (L, n, n)."""
    x, w = np.polynomial.legendre.leggauss(n_points)
    r = torch.from_numpy(0.5 * r_max * (x + 1.0))
    w = torch.from_numpy(0.5 * r_max * w)
    values = basis(r)  # [P, L, n]
    return torch.einsum("p,pla,plb->lab", w * r**2, values, values)


def test_gto_constants_match_dscribe():
    from dscribe.descriptors import SOAP as DScribeSOAP

    basis = GTOBasis(r_cut=5.0, n_max=8, l_max=6)
    alphas, betas = DScribeSOAP(species=[1], r_cut=5.0, n_max=8, l_max=6).get_basis_gto(5.0, 8, 6)
    np.testing.assert_allclose(basis.alpha.numpy(), alphas, rtol=1e-13)
    np.testing.assert_allclose(basis.beta.numpy(), betas, rtol=1e-7,
                               atol=1e-7 * np.abs(betas).max())


def test_gto_is_orthonormal_and_primitives_decay_to_threshold():
    basis = GTOBasis(r_cut=4.0, n_max=4, l_max=3)
    overlap = radial_overlap(basis, 25.0)
    torch.testing.assert_close(overlap, torch.eye(4, dtype=F64).expand(4, 4, 4), atol=1e-10, rtol=0)
    radii = np.linspace(1.0, 4.0, 4)
    for l in range(4):  # r^l exp(-alpha r^2) = 1e-3 at r = a_n
        values = radii**l * np.exp(-basis.alpha[l].numpy() * radii**2)
        np.testing.assert_allclose(values, 1e-3, rtol=1e-12)


def test_gto_smeared_integral_matches_quadrature():
    """∫ g_nl(r) Y_lm(r̂) exp(-|r - d|²/2σ²) d³r by brute-force quadrature = the closed form."""
    from entangle.so3 import real_spherical_harmonics

    basis = GTOBasis(r_cut=4.0, n_max=3, l_max=3)
    sigma = 0.6
    d = torch.tensor([0.7, -0.4, 1.1], dtype=F64)
    # product grid: Gauss-Legendre in r on [0, 12] and cos θ, uniform in φ
    xr, wr = np.polynomial.legendre.leggauss(160)
    r = 6.0 * (xr + 1.0)
    wr = 6.0 * wr
    xc, wc = np.polynomial.legendre.leggauss(40)
    phi = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    wphi = np.full(80, 2 * np.pi / 80)
    st = np.sqrt(1 - xc**2)
    dirs = np.stack([st[:, None] * np.cos(phi), st[:, None] * np.sin(phi),
                     np.repeat(xc[:, None], 80, 1)], -1).reshape(-1, 3)
    w_ang = (wc[:, None] * wphi[None, :]).reshape(-1)
    y = real_spherical_harmonics(torch.from_numpy(dirs), 3).numpy()  # [A, 16]
    g = basis(torch.from_numpy(r)).numpy()  # [R, L, n]
    points = r[:, None, None] * dirs[None]  # [R, A, 3]
    gauss = np.exp(-((points - d.numpy()) ** 2).sum(-1) / (2 * sigma**2))  # [R, A]
    numeric = np.zeros((3, 16))
    for lm in range(16):
        l = math.isqrt(lm)
        numeric[:, lm] = np.einsum("r,a,ra,rn->n", wr * r**2, w_ang * y[:, lm], gauss, g[:, l])
    radial = basis.smeared(d.norm()[None], sigma)[0].numpy()  # [L, n]
    solid = real_spherical_harmonics(d[None], 3, normalize=False)[0].numpy()  # [16]
    closed = np.stack([radial[math.isqrt(lm)] * solid[lm] for lm in range(16)], -1)  # [n, 16]
    np.testing.assert_allclose(closed, numeric, atol=1e-9 * np.abs(numeric).max())


def test_gto_rejects_bad_parameters():
    with pytest.raises(ConfigError):
        GTOBasis(r_cut=0.9, n_max=3, l_max=2)
    with pytest.raises(ConfigError):
        GTOBasis(r_cut=1.5, n_max=40, l_max=2)  # overlap numerically singular
    with pytest.raises(ConfigError):
        GTOBasis(r_cut=3.0, n_max=0, l_max=2)


def test_chebyshev_matches_numpy_and_vanishes_smoothly():
    basis = ChebyshevBasis(r_min=0.5, r_cut=4.0, n_max=6, l_max=2)
    r = torch.linspace(0.0, 5.0, 301, dtype=F64, requires_grad=True)
    values = basis(r)  # [P, 3, 6]
    assert values.shape == (301, 3, 6)
    xi = (2 * r.detach().numpy() - 4.5) / 3.5
    for n in range(6):
        coefficients = np.zeros(n + 1)
        coefficients[n] = 1.0
        envelope = np.clip(4.0 - r.detach().numpy(), 0, None) ** 2
        expected = chebyshev.chebval(xi, coefficients) * envelope
        np.testing.assert_allclose(values[:, 1, n].detach().numpy(), expected, atol=1e-12)
    grad = torch.autograd.grad(values[:, 0, 3].sum(), r)[0]
    outside = r.detach() >= 4.0
    assert torch.all(values[outside] == 0) and torch.all(grad[outside] == 0)


def test_spherical_bessel_matches_scipy_with_finite_gradients():
    x = torch.linspace(0.0, 40.0, 4001, dtype=F64, requires_grad=True)
    values = spherical_bessel_j(x, 12)
    expected = np.stack([scipy.special.spherical_jn(l, x.detach().numpy()) for l in range(13)], -1)
    np.testing.assert_allclose(values.detach().numpy(), expected, atol=1e-13)
    grad = torch.autograd.grad(values.sum(), x)[0]
    expected_grad = sum(scipy.special.spherical_jn(l, x.detach().numpy(), derivative=True)
                        for l in range(13))
    np.testing.assert_allclose(grad.numpy(), expected_grad, atol=1e-12)


def test_bessel_basis_orthonormal_and_zero_at_cutoff():
    basis = SphericalBesselBasis(r_cut=3.0, n_max=5, l_max=4)
    overlap = radial_overlap(basis, 3.0)
    torch.testing.assert_close(overlap, torch.eye(5, dtype=F64).expand(5, 5, 5), atol=1e-12, rtol=0)
    at_cut = basis(torch.tensor([3.0 - 1e-12, 3.5], dtype=F64))
    assert at_cut.abs().max() < 1e-9
    # the radial parts are eigenfunctions of the Laplacian: R'' + 2R'/r - l(l+1)R/r² = -k² R
    r = torch.tensor([0.7, 1.3, 2.2], dtype=F64, requires_grad=True)
    l, n = 2, 3
    value = basis(r)[:, l, n]
    d1 = torch.autograd.grad(value.sum(), r, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), r)[0]
    k = float(basis.zeros[l, n]) / 3.0
    lhs = d2 + 2 * d1 / r - l * (l + 1) * value / r**2
    torch.testing.assert_close(lhs, -k**2 * value.detach(), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", ["cosine", "polynomial", "mtp"])
def test_cutoff_functions(name):
    r_cut = 3.0
    r = torch.tensor([0.0, 1.0, r_cut - 1e-7, r_cut, 4.0], dtype=F64, requires_grad=True)
    f = cutoff_function(name, r, r_cut)
    grad = torch.autograd.grad(f.sum(), r)[0]
    f = f.detach()
    assert torch.all(f[3:] == 0)
    assert abs(float(f[2])) < 1e-12
    assert abs(float(grad[2])) < 1e-6 and float(grad[4]) == 0
    if name == "mtp":
        assert float(f[1]) == pytest.approx((r_cut - 1.0) ** 2)
    else:
        assert float(f[0]) == 1.0


def test_cutoff_closed_forms():
    r = torch.linspace(0, 3, 7, dtype=F64)
    torch.testing.assert_close(cosine_cutoff(r, 3.0), 0.5 * (1 + torch.cos(math.pi * r / 3.0)))
    x = r / 3.0
    torch.testing.assert_close(polynomial_cutoff(r, 3.0), 1 - 10 * x**3 + 15 * x**4 - 6 * x**5)
    torch.testing.assert_close(mtp_cutoff(r, 3.0), (3.0 - r) ** 2)
    with pytest.raises(ConfigError):
        cutoff_function("gaussian", r, 3.0)
