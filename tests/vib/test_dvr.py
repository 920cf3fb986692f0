import math

import numpy as np
import pytest
import torch

from entangle.errors import ConfigError
from entangle.vib import ho_dvr, sine_dvr


@pytest.mark.parametrize("n,omega,center", [(6, 0.01, 0.0), (9, 0.0054, 1.3), (15, 0.02, -2.0)])
def test_ho_dvr_harmonic_levels_exact(n, omega, center):
    basis = ho_dvr(n, omega, center)
    v = 0.5 * omega**2 * (basis.grid - center) ** 2
    levels = torch.linalg.eigvalsh(basis.kinetic + torch.diag(v))
    # all oscillator levels k = 0..n-2 are exact; the quadrature error of X·X only moves the
    # top one, from (n - 1/2) ω to (3n - 2) ω / 4
    exact = (torch.arange(n - 1, dtype=torch.float64) + 0.5) * omega
    expected = torch.sort(torch.cat([exact, torch.tensor([(3 * n - 2) * omega / 4], dtype=torch.float64)]))[0]
    assert torch.allclose(levels, expected, rtol=0, atol=1e-13 * n * omega)


def test_ho_dvr_grid_and_weights_are_gauss_hermite():
    n, omega = 9, 0.0075
    basis = ho_dvr(n, omega)
    nodes, weights = np.polynomial.hermite.hermgauss(n)  # ∫ e^{-t²} g(t) dt, t = sqrt(ω) Q
    assert np.allclose(basis.grid.numpy(), nodes / math.sqrt(omega), rtol=1e-12, atol=1e-12)
    assert np.allclose(basis.weights.numpy(), weights * np.exp(nodes**2) / math.sqrt(omega), rtol=1e-10)
    # the quadrature integrates a Gaussian times a polynomial of degree < 2n exactly
    q = basis.grid
    integral = torch.sum(basis.weights * torch.exp(-omega * q**2) * q**4)
    assert float(integral) == pytest.approx(0.75 * math.sqrt(math.pi) / omega**2.5, rel=1e-12)
    assert torch.allclose(basis.kinetic, basis.kinetic.T, atol=0)


def test_sine_dvr_matches_box_eigenfunction_transform():
    n, a, b = 7, -1.5, 2.5
    basis = sine_dvr(n, a, b)
    length = b - a
    k = torch.arange(1, n + 1, dtype=torch.float64)
    # DVR points and transformation of the box eigenfunctions sqrt(2/L) sin(kπ(x-a)/L)
    trafo = math.sqrt(2.0 / (n + 1)) * torch.sin(torch.outer(k, k) * math.pi / (n + 1))
    kinetic = trafo.T @ torch.diag(k**2 * math.pi**2 / (2 * length**2)) @ trafo
    assert torch.allclose(basis.kinetic, kinetic, rtol=0, atol=1e-12 * float(kinetic.abs().max()))
    assert torch.allclose(basis.grid, a + k * length / (n + 1))
    assert torch.allclose(basis.weights.sum(), torch.tensor(n * length / (n + 1), dtype=torch.float64))


def _morse_levels(n_grid):
    d, alpha = 0.1, 0.05  # Hartree, 1/(sqrt(m_e) a0); harmonic ω = alpha sqrt(2 d)
    basis = sine_dvr(n_grid, -30.0, 250.0)
    v = d * (1.0 - torch.exp(-alpha * basis.grid)) ** 2
    return torch.linalg.eigvalsh(basis.kinetic + torch.diag(v))[:5], d, alpha


def test_sine_dvr_converges_to_analytic_morse_levels():
    _, d, alpha = _morse_levels(10)
    omega = alpha * math.sqrt(2.0 * d)
    v = torch.arange(5, dtype=torch.float64) + 0.5
    analytic = omega * v - (omega * v) ** 2 / (4.0 * d)
    errors = [float((_morse_levels(n)[0] - analytic).abs().max()) for n in (40, 80, 160)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-11 * omega
    assert errors[0] > 1e-5 * omega  # a coarse grid really is coarse: the test can see convergence


def test_bad_input():
    with pytest.raises(ConfigError):
        ho_dvr(0, 0.01)
    with pytest.raises(ConfigError):
        ho_dvr(5, -0.01)
    with pytest.raises(ConfigError):
        ho_dvr(5, float("nan"))
    with pytest.raises(ConfigError):
        sine_dvr(5, 1.0, 1.0)
    with pytest.raises(ConfigError):
        sine_dvr(2.5, 0.0, 1.0)
