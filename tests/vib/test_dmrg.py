import pytest
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.tn import MPO, MPS
from entangle.vib import (
    check_hermitian, dmrg, exact_levels, hamiltonian_mpo, ho_dvr, kinetic_mpo, mpo_diagonal, potential_mpo,
)

HARTREE_TO_CM = 219474.63


def _hamiltonian(field, freqs, n_grid):
    bases = [ho_dvr(n, w / HARTREE_TO_CM) for n, w in zip(n_grid, freqs)]
    v = potential_mpo(field.cores, field.basis_values, [b.grid for b in bases])
    return hamiltonian_mpo(v, [b.kinetic for b in bases]), mpo_diagonal(v), [b.kinetic for b in bases]


def test_dmrg_2d_matches_exact(field_2d, dense_hamiltonian):
    field, freqs = field_2d
    h, v, kin = _hamiltonian(field, freqs, [12, 10])
    exact = torch.linalg.eigvalsh(dense_hamiltonian(v, kin))[:6]
    result = dmrg(h, 6, max_bond=20, cutoff=0.0, tol=1e-13, generator=torch.Generator().manual_seed(0))
    diff_cm = (result.energies - exact).abs() * HARTREE_TO_CM
    assert float(diff_cm.max()) < 1e-6
    assert all(result.converged)
    # restarting from the converged states needs only the minimum number of sweeps
    again = dmrg(h, 6, max_bond=20, cutoff=0.0, tol=1e-13, initial=result.states, min_sweeps=1)
    assert float((again.energies - exact).abs().max()) * HARTREE_TO_CM < 1e-6
    assert max(r["sweep"] for r in again.history) <= 1


def test_dmrg_3d_matches_exact(field_3d, dense_hamiltonian):
    field, freqs = field_3d
    h, v, kin = _hamiltonian(field, freqs, [8, 7, 8])
    exact = torch.linalg.eigvalsh(dense_hamiltonian(v, kin))[:6]
    assert torch.allclose(exact_levels(v, kin, 6, dense_limit=0), exact, rtol=0, atol=1e-15)
    result = dmrg(h, 6, max_bond=64, cutoff=0.0, tol=1e-13, generator=torch.Generator().manual_seed(1))
    diff_cm = (result.energies - exact).abs() * HARTREE_TO_CM
    assert float(diff_cm.max()) < 1e-6
    assert torch.allclose(result.overlaps, torch.eye(6, dtype=torch.float64), atol=1e-10)
    # the states are eigenvectors: compare with the dense Hamiltonian
    dense_h = h.to_matrix()
    for e, psi in zip(result.energies, result.states):
        x = psi.to_dense().reshape(-1)
        assert float((dense_h @ x - e * x).norm()) < 1e-9
    first = [r for r in result.history if r["state"] == 0]
    assert first[-1]["truncation_error"] == 0.0 and first[-1]["max_bond"] <= 8 * 7


def test_truncated_dmrg_is_variational(field_3d, dense_hamiltonian):
    field, freqs = field_3d
    h, v, kin = _hamiltonian(field, freqs, [8, 7, 8])
    exact = torch.linalg.eigvalsh(dense_hamiltonian(v, kin))[:2]
    result = dmrg(h, 2, max_bond=2, cutoff=0.0, tol=1e-12, generator=torch.Generator().manual_seed(2))
    assert bool((result.energies[0] >= exact[0] - 1e-15))
    assert float(result.energies[0] - exact[0]) * HARTREE_TO_CM < 1.0  # weakly coupled: bond 2 is nearly enough
    assert max(r["max_bond"] for r in result.history) == 2
    assert max(r["truncation_error"] for r in result.history) > 0.0


def test_degenerate_levels_and_single_site():
    w = 0.01
    bases = [ho_dvr(6, w), ho_dvr(6, w), ho_dvr(6, w)]
    def basis(k, q):  # V = ω² q_1² / 2 as a one-term tensor train
        return (0.5 * w**2 * q**2).unsqueeze(1) if k == 0 else torch.ones(q.shape[0], 1, dtype=torch.float64)

    cores = [torch.ones(1, 1, 1, dtype=torch.float64)] * 3
    h = hamiltonian_mpo(potential_mpo(cores, basis, [b.grid for b in bases]), [b.kinetic for b in bases])
    # V depends on q_1 only: levels (n1 + 1/2) ω + free-particle-in-DVR levels of q_2, q_3
    free = torch.linalg.eigvalsh(bases[0].kinetic)
    ladders = [(n1 + 0.5) * w + free[i] + free[j] for n1 in range(5) for i in range(6) for j in range(6)]
    expected = torch.sort(torch.tensor(ladders, dtype=torch.float64))[0][:7]
    result = dmrg(h, 7, max_bond=36, cutoff=0.0, tol=1e-14, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(result.energies, expected, rtol=0, atol=1e-14)
    single = dmrg(kinetic_mpo([bases[0].kinetic]), 3)
    assert torch.allclose(single.energies, free[:3])


def test_check_hermitian_sees_through_gauge_but_catches_asymmetry():
    kin = [ho_dvr(3, 0.01).kinetic, ho_dvr(4, 0.02).kinetic]
    h = kinetic_mpo(kin)
    g = torch.tensor([[2.0, 1.0], [0.5, 3.0]], dtype=torch.float64)
    gauged = MPO([torch.einsum("astb,bc->astc", h.cores[0], g),
                  torch.einsum("cb,bstd->cstd", torch.linalg.inv(g), h.cores[1])])
    assert torch.allclose(gauged.to_matrix(), h.to_matrix(), atol=1e-14)
    check_hermitian(gauged)  # not symmetric core by core, but Hermitian
    skew = torch.zeros(3, 3, dtype=torch.float64)
    skew[0, 1] = 1e-6
    asym = MPO([h.cores[0] + torch.stack([skew, torch.zeros(3, 3, dtype=torch.float64)], -1).unsqueeze(0), h.cores[1]])
    with pytest.raises(DataError):
        check_hermitian(asym)
    with pytest.raises(DataError):
        dmrg(asym, 1)


def test_bad_input(field_2d):
    field, freqs = field_2d
    h, _, _ = _hamiltonian(field, freqs, [3, 2])
    with pytest.raises(ConfigError):
        dmrg(h, 7)  # grid of 6 points
    with pytest.raises(ConfigError):
        dmrg(h, 1, max_bond=0)
    with pytest.raises(ConfigError):
        dmrg(h, 0)
    with pytest.raises(ConfigError):
        dmrg(h, 1, cutoff=-1.0)
    with pytest.raises(ShapeError):
        dmrg(MPO.random([2, 3], [3, 2], 2, generator=torch.Generator().manual_seed(0)), 1)
    with pytest.raises(ShapeError):
        dmrg(h, 1, initial=MPS.random([2, 2], 2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError):
        dmrg(h, 2, initial=[MPS.random([3, 2], 2, generator=torch.Generator().manual_seed(0))])
    with pytest.raises(ShapeError):
        dmrg(h.to_matrix(), 1)


def test_gauge_transformed_mpo_gives_the_same_levels(field_3d):
    """Canonicalising the MPO (a gauge transformation of its bonds) mixes the bond channels, so
    the cores lose the diagonal-plus-few-blocks structure the fast contraction uses; the
    levels must not change."""
    field, freqs = field_3d
    h, _, _ = _hamiltonian(field, freqs, [6, 5, 6])
    gauged = h.canonicalize(0)
    scale = float(h.to_matrix().abs().max())
    assert torch.allclose(gauged.to_matrix(), h.to_matrix(), rtol=0, atol=1e-13 * scale)
    assert not all(torch.allclose(c, torch.diag_embed(torch.diagonal(c, dim1=1, dim2=2)).permute(0, 2, 3, 1))
                   for c in gauged.cores[1:])
    kwargs = dict(max_bond=36, cutoff=0.0, tol=1e-13, dense_limit=0)
    plain = dmrg(h, 3, generator=torch.Generator().manual_seed(5), **kwargs)
    dense = dmrg(gauged, 3, generator=torch.Generator().manual_seed(5), **kwargs)
    assert float((plain.energies - dense.energies).abs().max()) * HARTREE_TO_CM < 1e-6
