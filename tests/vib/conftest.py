"""Slow, obviously-correct references shared by the vib tests."""

import pytest
import torch

from entangle.vib import PolynomialTT


def _dense_hamiltonian(potential: torch.Tensor, kinetics: list[torch.Tensor]) -> torch.Tensor:
    """diag(V) + Σ_i 1 ⊗ .. ⊗ T_i ⊗ .. ⊗ 1 as an explicit matrix (Kronecker products)."""
    dims = [t.shape[0] for t in kinetics]
    h = torch.diag(potential.reshape(-1).to(torch.float64))
    for i, t in enumerate(kinetics):
        term = torch.ones(1, 1, dtype=torch.float64)
        for j, n in enumerate(dims):
            term = torch.kron(term, t if i == j else torch.eye(n, dtype=torch.float64))
        h = h + term
    return h


@pytest.fixture
def dense_hamiltonian():
    return _dense_hamiltonian


CM = 1.0 / 219474.63  # Hartree per cm^-1


def coupled_force_field(frequencies_cm: list[float], couplings: list[tuple[float, tuple[int, ...]]]) -> PolynomialTT:
    """Harmonic part Σ ω_i² q_i² / 2 plus couplings (coefficient in Hartree, powers)."""
    f = len(frequencies_cm)
    terms = [((w * CM) ** 2 / 2.0, tuple(2 if j == i else 0 for j in range(f))) for i, w in enumerate(frequencies_cm)]
    return PolynomialTT.from_terms(terms + couplings)


@pytest.fixture
def field_3d() -> tuple[PolynomialTT, list[float]]:
    """A cubically and quartically coupled 3-mode force field (a.u.) and its frequencies (cm^-1)."""
    freqs = [1000.0, 1500.0, 2000.0]
    couplings = [(2e-7, (1, 1, 1)), (-3e-7, (2, 1, 0)), (1e-7, (0, 2, 1)), (-1e-7, (3, 0, 0)), (1e-8, (4, 0, 0)),
                 (2e-8, (0, 0, 4)), (5e-9, (2, 2, 0)), (3e-9, (0, 2, 2))]
    return coupled_force_field(freqs, couplings), freqs


@pytest.fixture
def field_2d() -> tuple[PolynomialTT, list[float]]:
    """A strongly coupled 2-mode field (Fermi-resonance-like: ω_2 ≈ 2 ω_1, coupling q_1² q_2)."""
    freqs = [800.0, 1610.0]
    couplings = [(4e-7, (2, 1)), (-2e-7, (3, 0)), (1.5e-8, (4, 0)), (8e-9, (2, 2)), (6e-9, (0, 4))]
    return coupled_force_field(freqs, couplings), freqs
