import math

import pytest
import torch

from entangle.errors import ConfigError
from entangle.vib import HARTREE_TO_CM, HARTREE_TO_EV, PolynomialTT, latent_frequencies, vib_levels


def _rotation(theta: float) -> torch.Tensor:
    return torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)


def test_latent_frequencies_of_a_rotated_harmonic_potential():
    w = torch.tensor([1200.0, 2900.0], dtype=torch.float64)
    U = _rotation(0.4)
    # the Hessian in q = x U is Uᵀ diag(ω²) U: its diagonal gives the latent frequencies
    hess = U.T @ torch.diag(w**2) @ U
    assert torch.allclose(latent_frequencies(U, w), torch.sqrt(torch.diagonal(hess)))
    assert torch.allclose(latent_frequencies(torch.eye(2, dtype=torch.float64), w), w)


def test_vib_levels_of_rotated_harmonic_molecule_in_ev():
    """V(x) = Σ ω_i² x_i² / 2 written in rotated latent coordinates q = x U (so it is coupled in q),
    in eV: the levels are the harmonic ladder of the original frequencies."""
    w_cm = torch.tensor([1200.0, 2900.0], dtype=torch.float64)
    w = w_cm / HARTREE_TO_CM
    U = _rotation(0.4)
    hess = U.T @ torch.diag(w**2) @ U  # V = q hess q / 2
    terms = [(float(hess[0, 0]) / 2 * HARTREE_TO_EV, (2, 0)), (float(hess[1, 1]) / 2 * HARTREE_TO_EV, (0, 2)),
             (float(hess[0, 1]) * HARTREE_TO_EV, (1, 1)), (-1.0, (0, 0))]
    model = PolynomialTT.from_terms(terms, U=U)
    expected = torch.tensor(sorted(float(a * w_cm[0] + b * w_cm[1]) for a in range(4) for b in range(3)),
                            dtype=torch.float64)[:5]
    dm = vib_levels(model, 5, "ho", 16, frequencies=w_cm, method="dmrg", max_bond=30, tol=1e-13, cutoff=0.0)
    ex = vib_levels(model, 5, "ho", 16, frequencies=w_cm, method="exact")
    assert torch.allclose(dm.energies, ex.energies, rtol=0, atol=1e-6 / HARTREE_TO_CM)
    assert torch.allclose(dm.levels_cm, expected, atol=1e-6)  # the latent HO-DVR converges fast
    assert dm.zpe_cm == pytest.approx(float(w_cm.sum()) / 2, abs=1e-6)
    assert dm.problem.v_origin == pytest.approx(-1.0 / HARTREE_TO_EV)
    sine = vib_levels(model, 3, "sine", 30, frequencies=w_cm, method="exact")
    assert torch.allclose(sine.levels_cm, expected[:3], atol=0.5)


def test_vib_levels_of_an_nnmpo_model():
    """The NN-MPO model of entangle.models plugs in: DMRG and exact agree on its MPO."""
    from entangle.models.nnmpo import NNMPO, NNMPOConfig

    model = NNMPO(NNMPOConfig(n_coords=3, n_latent=3, n_basis=5, bond_dims=[3, 3], seed=0))
    gen = torch.Generator().manual_seed(0)
    model.set_centres(20.0 * torch.randn(4, 3, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        model.norm.fill_(0.5)  # eV: the potential varies by ~1000 cm^-1 over the grid
    freqs = [1100.0, 1500.0, 2100.0]
    dm = vib_levels(model, 4, "ho", 6, frequencies=freqs, method="dmrg", max_bond=40, tol=1e-13, cutoff=0.0)
    ex = vib_levels(model, 4, "ho", 6, frequencies=freqs, method="exact")
    assert float((dm.energies - ex.energies).abs().max()) * HARTREE_TO_CM < 1e-6
    with torch.no_grad():
        v0 = float(model(torch.zeros(1, 3, dtype=torch.float64))[0])
    assert dm.problem.v_origin == pytest.approx(v0 / HARTREE_TO_EV, rel=1e-12)


def test_bad_input():
    model = PolynomialTT.from_terms([(1e-5, (2, 0)), (1e-5, (0, 2))])
    with pytest.raises(ConfigError):
        vib_levels(model, 1, "ho", 5)  # no frequencies for the HO-DVR
    with pytest.raises(ConfigError):
        vib_levels(model, 1, "sine", 5)  # neither bounds nor frequencies
    with pytest.raises(ConfigError):
        vib_levels(model, 1, "fourier", 5, frequencies=[1000.0, 1000.0])
    with pytest.raises(ConfigError):
        vib_levels(model, 1, "ho", 5, frequencies=[1000.0, 1000.0], energy_unit="kcal")
    with pytest.raises(ConfigError):
        vib_levels(model, 26, "ho", 5, frequencies=[1000.0, 1000.0], energy_unit="hartree")
    with pytest.raises(ConfigError):
        vib_levels(model, 26, "ho", 5, frequencies=[1000.0, 1000.0], method="exact", energy_unit="hartree")
    with pytest.raises(ConfigError):
        vib_levels(model, 1, "ho", [5], frequencies=[1000.0, 1000.0])
    with pytest.raises(ConfigError):
        vib_levels(object(), 1, "ho", 5, frequencies=[1000.0])
