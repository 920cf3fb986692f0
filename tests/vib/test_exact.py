import pytest
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.vib import apply_hamiltonian, exact_levels, ho_dvr, sine_dvr


def _problem():
    gen = torch.Generator().manual_seed(0)
    bases = [ho_dvr(6, 0.01), sine_dvr(7, -30.0, 30.0), ho_dvr(5, 0.02)]
    v = 0.01 * torch.rand(6, 7, 5, generator=gen, dtype=torch.float64)
    return v, [b.kinetic for b in bases]


def test_apply_hamiltonian_matches_dense(dense_hamiltonian):
    v, kin = _problem()
    h = dense_hamiltonian(v, kin)
    psi = torch.randn(3, 6, 7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = apply_hamiltonian(psi, v, kin)
    assert torch.allclose(out.reshape(3, -1), psi.reshape(3, -1) @ h.T, atol=1e-14)


def test_lanczos_equals_dense_diagonalisation(dense_hamiltonian):
    v, kin = _problem()
    reference = torch.linalg.eigvalsh(dense_hamiltonian(v, kin))[:8]
    lanczos, vectors = exact_levels(v, kin, 8, dense_limit=0, return_vectors=True)
    assert torch.allclose(lanczos, reference, rtol=0, atol=1e-14)
    residual = apply_hamiltonian(vectors, v, kin) - lanczos.reshape(-1, 1, 1, 1) * vectors
    assert float(residual.abs().max()) < 1e-12
    dense = exact_levels(v, kin, 8)
    assert torch.allclose(dense, reference, rtol=0, atol=1e-14)


def test_bad_input():
    v, kin = _problem()
    with pytest.raises(ConfigError):
        exact_levels(v, kin, 6 * 7 * 5 + 1)  # more states than grid points
    with pytest.raises(ConfigError):
        exact_levels(v, kin, 0)
    with pytest.raises(ShapeError):
        exact_levels(v, kin[:2], 1)
    with pytest.raises(ShapeError):
        exact_levels(v, [kin[1], kin[0], kin[2]], 1)
    with pytest.raises(DataError):
        exact_levels(v, [kin[0] + torch.triu(torch.ones(6, 6, dtype=torch.float64), 1), kin[1], kin[2]], 1)
    bad = v.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(DataError):
        exact_levels(bad, kin, 1)
