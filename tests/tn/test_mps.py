import math

import pytest
import torch

from entangle.errors import ShapeError
from entangle.tn import MPS, von_neumann_entropy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dense_entropy(t: torch.Tensor, bond: int) -> float:
    d = t.shape
    m = t.reshape(math.prod(d[: bond + 1]), -1)
    return float(von_neumann_entropy(torch.linalg.svdvals(m)))


def test_random_norm_and_dense_roundtrip():
    psi = MPS.random([2, 3, 4, 2], 3, generator=gen())
    assert torch.isclose(psi.norm(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(psi.norm(), torch.linalg.norm(psi.to_dense()))
    # with norm=None each dense entry has unit variance in expectation
    g = gen(1)
    mean_sq = sum(float(MPS.random([3] * 3, 4, generator=g, norm=None).norm() ** 2) for _ in range(400)) / 400
    assert 0.8 < mean_sq / 3**3 < 1.2


@pytest.mark.parametrize("center", [0, 2, 4])
def test_canonicalize_preserves_tensor_and_makes_isometries(center):
    psi = MPS.random([2, 3, 2, 4, 2], 3, generator=gen(2), norm=None)
    c = psi.canonicalize(center)
    assert torch.allclose(c.to_dense(), psi.to_dense(), atol=1e-12)
    for k in range(center):
        assert c.isometry_error(k, "left") < 1e-12
    for k in range(center + 1, psi.n_sites):
        assert c.isometry_error(k, "right") < 1e-12
    assert torch.isclose(torch.linalg.norm(c.cores[center]), psi.norm())


def test_canonicalize_leaves_contractions_unchanged():
    psi = MPS.random([2, 3, 2, 4], 3, generator=gen(3), norm=None)
    xs = [torch.randn(7, d, dtype=torch.float64, generator=gen(10 + k)) for k, d in enumerate(psi.dims)]
    ref = psi.contract_product(xs)
    for center in range(psi.n_sites):
        assert torch.allclose(psi.canonicalize(center).contract_product(xs), ref)


def test_batched_product_contraction_equals_dense_einsum():
    psi = MPS.random([2, 3, 4], 2, generator=gen(4))
    xs = [torch.randn(5, d, dtype=torch.float64, generator=gen(20 + k)) for k, d in enumerate(psi.dims)]
    ref = torch.einsum("abc,na,nb,nc->n", psi.to_dense(), *xs)
    assert torch.allclose(psi.contract_product(xs), ref)


def test_batched_dense_contraction_equals_dense_einsum():
    psi = MPS.random([2, 3, 4], 2, generator=gen(5))
    x = torch.randn(6, 2, 3, 4, dtype=torch.float64, generator=gen(6))
    assert torch.allclose(psi.contract_dense(x), torch.einsum("abc,nabc->n", psi.to_dense(), x))
    with pytest.raises(ShapeError):
        psi.contract_dense(torch.randn(6, 2, 3, 5, dtype=torch.float64))


def test_inner_product_against_dense():
    a = MPS.random([2, 3, 2], 2, generator=gen(7))
    b = MPS.random([2, 3, 2], 3, generator=gen(8))
    assert torch.isclose(a.inner(b), (a.to_dense() * b.to_dense()).sum())


def test_entropies_product_state_is_zero():
    v = [torch.randn(d, dtype=torch.float64, generator=gen(30 + d)) for d in (2, 3, 2)]
    psi = MPS.product_state(v)
    assert torch.allclose(psi.entropies(), torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_entropies_ghz_is_ln2():
    n = 5
    ghz = torch.zeros([2] * n, dtype=torch.float64)
    ghz[(0,) * n] = ghz[(1,) * n] = 2**-0.5
    psi, _ = MPS.from_dense(ghz)
    assert torch.allclose(psi.entropies(), torch.full((n - 1,), math.log(2), dtype=torch.float64))


def test_entropies_random_state_match_dense_svd():
    psi = MPS.random([2, 3, 2, 3, 2], 4, generator=gen(9))
    t = psi.to_dense()
    ours = psi.entropies()
    for bond in range(psi.n_sites - 1):
        assert math.isclose(float(ours[bond]), dense_entropy(t, bond), rel_tol=1e-9, abs_tol=1e-12)
        s_dense = torch.linalg.svdvals(t.reshape(math.prod(t.shape[: bond + 1]), -1))
        s = psi.schmidt_values(bond)
        assert torch.allclose(s, s_dense[: s.shape[0]])


def test_truncate_error_is_exact_and_respects_max_bond():
    psi = MPS.random([3] * 6, 9, generator=gen(11))
    small, discarded = psi.truncate(max_bond=3)
    assert max(small.bond_dims) <= 3
    assert torch.isclose(torch.linalg.norm(small.to_dense() - psi.to_dense()), discarded, rtol=1e-9)
    same, zero = psi.truncate(cutoff=1e-14)
    assert torch.allclose(same.to_dense(), psi.to_dense()) and zero < 1e-10


def test_bad_cores_raise_shape_error():
    with pytest.raises(ShapeError, match="bond"):
        MPS([torch.zeros(1, 2, 3), torch.zeros(2, 2, 1)])
    with pytest.raises(ShapeError, match="boundary"):
        MPS([torch.zeros(2, 2, 1)])
    with pytest.raises(ShapeError):
        MPS.random([2, 2, 2], 0)
