import pytest
import torch

from entangle.errors import DataError, ShapeError
from entangle.tn import MPO
from entangle.vib import (
    PolynomialTT, add_mpo, grid_potential_mpo, hamiltonian_mpo, ho_dvr, kinetic_mpo, mpo_diagonal, potential_mpo,
    sine_dvr,
)


def _product_points(grids):
    mesh = torch.meshgrid(*grids, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)  # (n_points, f)


def test_potential_mpo_is_the_potential_on_the_grid(field_3d):
    field, freqs = field_3d
    bases = [ho_dvr(n, w / 219474.63) for n, w in zip([4, 3, 5], freqs)]
    grids = [b.grid for b in bases]
    mpo = potential_mpo(field.cores, field.basis_values, grids, norm=2.5)
    dense = mpo.to_matrix()  # (60, 60)
    expected = 2.5 * field(_product_points(grids))  # direct evaluation, point by point
    assert torch.allclose(torch.diagonal(dense), expected, rtol=1e-13, atol=0)
    assert torch.count_nonzero(dense - torch.diag(torch.diagonal(dense))) == 0
    assert torch.allclose(mpo_diagonal(mpo).reshape(-1), expected, rtol=1e-13, atol=0)
    assert mpo.bond_dims == [c.shape[2] for c in field.cores[:-1]]


def test_potential_mpo_rounding_shrinks_bonds_with_bounded_error():
    gen = torch.Generator().manual_seed(3)
    cores = [torch.randn(1, 4, 6, generator=gen, dtype=torch.float64),
             torch.randn(6, 4, 6, generator=gen, dtype=torch.float64),
             torch.randn(6, 4, 1, generator=gen, dtype=torch.float64)]
    grids = [torch.linspace(-1, 1, 3, dtype=torch.float64)] * 3  # 3 points < 6: rank at most 3

    def basis(k, q):
        return torch.stack([torch.ones_like(q), q, q**2, torch.cos(q)], dim=1)

    exact = potential_mpo(cores, basis, grids)
    rounded = potential_mpo(cores, basis, grids, cutoff=1e-13)
    assert max(rounded.bond_dims) <= 3 < max(exact.bond_dims)
    scale = float(exact.to_matrix().abs().max())
    assert torch.allclose(rounded.to_matrix(), exact.to_matrix(), rtol=0, atol=1e-11 * scale)


def test_kinetic_mpo_is_the_kronecker_sum(dense_hamiltonian):
    kin = [ho_dvr(3, 0.01).kinetic, sine_dvr(4, -1.0, 1.0).kinetic, ho_dvr(2, 0.02).kinetic,
           sine_dvr(3, 0.0, 2.0).kinetic]
    dims = [t.shape[0] for t in kin]
    expected = dense_hamiltonian(torch.zeros(dims, dtype=torch.float64), kin)
    mpo = kinetic_mpo(kin)
    assert mpo.bond_dims == [2, 2, 2]
    assert torch.allclose(mpo.to_matrix(), expected, rtol=0, atol=1e-14)
    assert torch.allclose(kinetic_mpo(kin[:1]).to_matrix(), kin[0])


def test_hamiltonian_mpo_equals_dense_hamiltonian(field_3d, dense_hamiltonian):
    field, freqs = field_3d
    bases = [ho_dvr(5, freqs[0] / 219474.63), sine_dvr(4, -40.0, 40.0), ho_dvr(3, freqs[2] / 219474.63)]
    grids = [b.grid for b in bases]
    h = hamiltonian_mpo(potential_mpo(field.cores, field.basis_values, grids), [b.kinetic for b in bases])
    values = field(_product_points(grids)).reshape(5, 4, 3)
    expected = dense_hamiltonian(values, [b.kinetic for b in bases])
    assert torch.allclose(h.to_matrix(), expected, rtol=0, atol=1e-15)
    assert h.bond_dims == [d + 2 for d in potential_mpo(field.cores, field.basis_values, grids).bond_dims]


@pytest.mark.parametrize("n_sites", [1, 2, 4])
def test_add_mpo(n_sites):
    gen = torch.Generator().manual_seed(n_sites)
    dims = [2, 3, 2, 3][:n_sites]
    a = MPO.random(dims, dims, 3, generator=gen)
    b = MPO.random(dims, dims, 2, generator=gen)
    s = add_mpo(a, b)
    assert torch.allclose(s.to_matrix(), a.to_matrix() + b.to_matrix(), atol=1e-14)
    assert s.bond_dims == [5] * (n_sites - 1)
    with pytest.raises(ShapeError):
        add_mpo(a, MPO.random([2] * (n_sites + 1), [2] * (n_sites + 1), 2, generator=gen))


def test_grid_potential_mpo_compresses_a_sum_of_products():
    grids = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in (6, 5, 7)]

    def potential(q):
        return q[:, 0] ** 2 + 0.5 * q[:, 1] ** 2 + 0.3 * q[:, 2] ** 2 + 0.1 * q[:, 0] * q[:, 1] * q[:, 2]

    mpo, discarded = grid_potential_mpo(potential, grids)
    values = potential(_product_points(grids)).reshape(6, 5, 7)
    assert float(discarded) < 1e-12
    assert torch.allclose(mpo_diagonal(mpo), values, atol=1e-13)
    # a sum of 4 products, each with an identity-like partner: the rank at every cut is at most 3
    assert max(mpo.bond_dims) <= 3
    with pytest.raises(ShapeError):
        grid_potential_mpo(potential, grids, max_points=100)
    with pytest.raises(ShapeError):
        grid_potential_mpo(lambda q: q, grids)


def test_bad_input():
    field = PolynomialTT.from_terms([(1.0, (2, 0)), (1.0, (0, 2))])
    grids = [torch.linspace(-1, 1, 4, dtype=torch.float64)] * 2
    with pytest.raises(ShapeError):
        potential_mpo(field.cores, field.basis_values, grids[:1])
    with pytest.raises(ShapeError):
        potential_mpo(field.cores, lambda k, q: torch.ones(q.shape[0], 2), grids)
    with pytest.raises(DataError):
        potential_mpo(field.cores, lambda k, q: field.basis_values(k, q) / 0.0, grids)
    with pytest.raises(DataError):
        potential_mpo(field.cores, field.basis_values, [grids[0], torch.tensor([0.0, float("nan")])])
    with pytest.raises(DataError):
        kinetic_mpo([torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)])
    with pytest.raises(ShapeError):
        kinetic_mpo([torch.ones(2, 3)])
    with pytest.raises(ShapeError):
        hamiltonian_mpo(potential_mpo(field.cores, field.basis_values, grids), [torch.eye(3, dtype=torch.float64)] * 2)
    off_diagonal = kinetic_mpo([ho_dvr(3, 0.01).kinetic] * 2)
    with pytest.raises(ShapeError):
        mpo_diagonal(off_diagonal)
