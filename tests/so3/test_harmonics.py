"""Tests of entangle.so3.harmonics against scipy/sympy and the defining properties of Y_lm."""

import math

import numpy as np
import pytest
import sympy
import torch
from scipy.special import sph_harm_y

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.so3 import num_harmonics, real_spherical_harmonics, solid_harmonics
from entangle.so3.harmonics import block_order, block_to_standard, solid_harmonic_blocks

F64 = torch.float64


def _points(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=F64) * 2.0
    poles = torch.tensor([[0, 0, 1.0], [0, 0, -3.0], [1e-9, 0, 1], [0, -1e-12, -1],
                          [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -2, 0]], dtype=F64)
    return torch.cat([v, poles])


def _scipy_real(v: np.ndarray, l_max: int) -> np.ndarray:
    """Reference: real harmonics from scipy's complex ones (module docstring formula)."""
    theta = np.arctan2(np.hypot(v[:, 0], v[:, 1]), v[:, 2])  # accurate near the poles
    phi = np.arctan2(v[:, 1], v[:, 0])
    out = np.zeros((len(v), (l_max + 1) ** 2))
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), theta, phi)  # complex, Condon–Shortley phase
            if m == 0:
                out[:, l * l + l] = y.real
            elif m > 0:
                out[:, l * l + l + m] = math.sqrt(2) * (-1) ** m * y.real
            else:
                out[:, l * l + l + m] = math.sqrt(2) * (-1) ** m * y.imag
    return out


@pytest.mark.parametrize("l_max", [0, 1, 6, 12])
def test_matches_scipy(l_max):
    v = _points(300)
    ours = real_spherical_harmonics(v, l_max)
    assert ours.shape == (len(v), num_harmonics(l_max))
    np.testing.assert_allclose(ours.numpy(), _scipy_real(v.numpy(), l_max), atol=1e-12)


def test_matches_sympy_ynm():
    theta, phi = sympy.symbols("theta phi", real=True)
    v = _points(3, seed=4)
    ours = real_spherical_harmonics(v, 4).numpy()
    for row, (x, y, z) in enumerate(v.numpy()):
        at = {theta: math.atan2(math.hypot(x, y), z), phi: math.atan2(y, x)}
        for l in range(5):
            for m in range(-l, l + 1):
                ynm = complex(sympy.Ynm(l, abs(m), theta, phi).expand(func=True).evalf(subs=at))
                if m == 0:
                    ref = ynm.real
                else:
                    ref = math.sqrt(2) * (-1) ** m * (ynm.real if m > 0 else ynm.imag)
                assert ours[row, l * l + l + m] == pytest.approx(ref, abs=1e-12)


def test_closed_forms_l1_l2():
    v = _points(50)
    x, y, z = (v / v.norm(dim=-1, keepdim=True)).unbind(-1)
    ours = real_spherical_harmonics(v, 2)
    c1 = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(ours[:, 1:4], c1 * torch.stack([y, z, x], -1))
    c2 = math.sqrt(15 / (4 * math.pi))
    expected = torch.stack([c2 * x * y, c2 * y * z,
                            math.sqrt(5 / (16 * math.pi)) * (3 * z * z - 1),
                            c2 * x * z, c2 / 2 * (x * x - y * y)], -1)
    torch.testing.assert_close(ours[:, 4:9], expected)


def _gauss_sphere(n_theta: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    ct, wt = np.polynomial.legendre.leggauss(n_theta)
    ph = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    st = np.sqrt(1 - ct**2)
    pts = np.stack([np.outer(st, np.cos(ph)), np.outer(st, np.sin(ph)),
                    np.outer(ct, np.ones(n_phi))], -1).reshape(-1, 3)
    w = np.outer(wt, np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return torch.tensor(pts), torch.tensor(w)


@pytest.mark.parametrize("l_max", [4, 10, 16])
def test_orthonormal_by_quadrature(l_max):
    pts, w = _gauss_sphere(l_max + 3, 2 * l_max + 5)
    y = real_spherical_harmonics(pts, l_max)
    gram = torch.einsum("ka,k,kb->ab", y, w, y)
    torch.testing.assert_close(gram, torch.eye(num_harmonics(l_max), dtype=F64),
                               atol=1e-12, rtol=0)


def test_poles():
    l_max = 10
    v = torch.tensor([[0, 0, 1.0], [0, 0, -2.5]], dtype=F64)
    y = real_spherical_harmonics(v, l_max)
    expected = torch.zeros_like(y)
    for l in range(l_max + 1):
        expected[0, l * l + l] = math.sqrt((2 * l + 1) / (4 * math.pi))
        expected[1, l * l + l] = (-1) ** l * math.sqrt((2 * l + 1) / (4 * math.pi))
    torch.testing.assert_close(y, expected, atol=1e-14, rtol=0)


def test_parity_and_scale_invariance():
    v = _points(100)
    y = real_spherical_harmonics(v, 8)
    ls = torch.tensor([l for l in range(9) for _ in range(2 * l + 1)])
    torch.testing.assert_close(real_spherical_harmonics(-v, 8), y * (-1.0) ** ls)
    torch.testing.assert_close(real_spherical_harmonics(3.7 * v, 8), y)


def test_solid_harmonics_are_scaled_polynomials():
    v = _points(100)
    ls = torch.tensor([l for l in range(7) for _ in range(2 * l + 1)], dtype=F64)
    r = v.norm(dim=-1, keepdim=True)
    expected = real_spherical_harmonics(v, 6) * r**ls
    torch.testing.assert_close(solid_harmonics(v, 6), expected)
    torch.testing.assert_close(real_spherical_harmonics(v, 6, normalize=False), expected)
    at_zero = solid_harmonics(torch.zeros(1, 3, dtype=F64), 6)
    assert at_zero[0, 0] == pytest.approx(1 / math.sqrt(4 * math.pi))
    assert torch.all(at_zero[0, 1:] == 0)


def test_solid_harmonics_are_harmonic():
    """∇² (r^l Y_lm) = 0: the second derivatives by double backward are right."""
    v = _points(6).requires_grad_()
    s = solid_harmonics(v, 5)
    laplacian = torch.zeros_like(s)
    for k in range(s.shape[-1]):
        (grad,) = torch.autograd.grad(s[:, k].sum(), v, create_graph=True)
        for a in range(3):
            (second,) = torch.autograd.grad(grad[:, a].sum(), v, retain_graph=True)
            laplacian[:, k] += second[:, a]
    assert laplacian[:, 1:].abs().max() < 1e-10


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(normalize):
    v = _points(5, seed=3)[:5].requires_grad_()
    fn = lambda x: real_spherical_harmonics(x, 4, normalize=normalize)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (v,))
    assert torch.autograd.gradgradcheck(fn, (v,))


def test_gradient_at_poles_is_finite_and_correct():
    v = torch.tensor([[0, 0, 1.0], [0, 0, -1.0]], dtype=F64, requires_grad=True)
    y = real_spherical_harmonics(v, 8)
    (grad,) = torch.autograd.grad((y * torch.linspace(-1, 1, 81, dtype=F64)).sum(), v,
                                  create_graph=True)
    (hess,) = torch.autograd.grad(grad.square().sum(), v)
    assert torch.isfinite(grad).all() and torch.isfinite(hess).all()
    eps = 1e-6
    for a in range(3):
        d = torch.zeros(3, dtype=F64)
        d[a] = eps
        f = lambda x: (real_spherical_harmonics(x, 8) * torch.linspace(-1, 1, 81, dtype=F64)).sum()
        fd = (f(v.detach() + d) - f(v.detach() - d)) / (2 * eps)
        assert grad[:, a].sum().item() == pytest.approx(fd.item(), abs=1e-6)


def test_float32_and_batch_shapes():
    v = _points(64).reshape(8, 9, 3)
    y64 = real_spherical_harmonics(v, 10)
    y32 = real_spherical_harmonics(v.float(), 10)
    assert y64.shape == (8, 9, 121) and y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=2e-5, rtol=0)
    torch.testing.assert_close(y64.reshape(-1, 121), real_spherical_harmonics(v.reshape(-1, 3), 10))
    assert real_spherical_harmonics(torch.zeros(0, 3), 3).shape == (0, 16)
    assert real_spherical_harmonics(torch.tensor([1.0, 2.0, 3.0]), 2).shape == (9,)


@pytest.mark.parametrize("normalize", [True, False])
def test_autograd_and_blocked_paths_agree(normalize):
    v = torch.randn(2, 20001, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    blocked = real_spherical_harmonics(v, 3, normalize=normalize)  # no grad: blocked path
    graph = real_spherical_harmonics(v.clone().requires_grad_(), 3, normalize=normalize)
    assert graph.requires_grad and not blocked.requires_grad
    # the no-grad path vectorises the recursion over m: the same values up to rounding
    torch.testing.assert_close(blocked, graph.detach(), atol=1e-12, rtol=1e-12)
    first = real_spherical_harmonics(v, 3, normalize=normalize, channels_first=True)
    torch.testing.assert_close(first, blocked.movedim(-1, 0), atol=0, rtol=0)
    first_graph = real_spherical_harmonics(v.clone().requires_grad_(), 3, normalize=normalize,
                                           channels_first=True)
    torch.testing.assert_close(first_graph, graph.movedim(-1, 0), atol=0, rtol=0)
    with torch.no_grad():
        again = real_spherical_harmonics(v.requires_grad_(), 3, normalize)
    torch.testing.assert_close(again, blocked, atol=0, rtol=0)


@pytest.mark.parametrize("l_max", [0, 1, 2, 7])
def test_solid_harmonic_blocks(l_max):
    """Blocks in "cosine first" order; block_to_standard restores l*l + l + m."""
    v = _points(40, seed=5)
    expected = solid_harmonics(v, l_max)  # [n, lm]
    blocks = list(solid_harmonic_blocks(v, l_max))
    assert [b.shape for b in blocks] == [(2 * l + 1, len(v)) for l in range(l_max + 1)]
    for l, block in enumerate(blocks):
        columns = [l * l + l + m for m in block_order(l)]
        torch.testing.assert_close(block, expected[:, columns].T, atol=1e-12, rtol=1e-12)
    stacked = torch.cat(blocks)[block_to_standard(l_max)]
    torch.testing.assert_close(stacked, expected.T, atol=1e-12, rtol=1e-12)
    first = torch.cat(list(solid_harmonic_blocks(v.T.contiguous(), l_max, components_first=True)))
    torch.testing.assert_close(first, torch.cat(blocks), atol=0, rtol=0)
    with pytest.raises(DataError):
        solid_harmonic_blocks(v.clone().requires_grad_(), l_max)
    with pytest.raises(ShapeError):
        solid_harmonic_blocks(v.reshape(2, -1, 3), l_max)


def test_large_l_is_stable():
    v = torch.tensor([[0, 0, 1.0], [1e-7, 0, 1], [1, 1, 1e-3]], dtype=F64)
    y = real_spherical_harmonics(v, 40)
    assert torch.isfinite(y).all()
    np.testing.assert_allclose(y.numpy(), _scipy_real(v.numpy(), 40), atol=1e-10)


def test_bad_input():
    with pytest.raises(ShapeError):
        real_spherical_harmonics(torch.zeros(4, 2), 2)
    with pytest.raises(DataError):
        real_spherical_harmonics(torch.zeros(4, 3, dtype=torch.int64), 2)
    with pytest.raises(DataError, match=r"index \(1,\)"):
        real_spherical_harmonics(torch.tensor([[1.0, 0, 0], [0, 0, 0]]), 2)
    with pytest.raises(DataError):
        real_spherical_harmonics(torch.tensor([[1.0, float("nan"), 0]]), 2)
    for bad in (-1, 2.0, True):
        with pytest.raises(ConfigError):
            real_spherical_harmonics(torch.ones(1, 3), bad)
