import pytest
import torch

from entangle.errors import ShapeError
from entangle.tn import MPO, MPS, qr_positive, split, svd, truncated_svd, tt_svd, merge


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_qr_positive_is_unique_and_exact():
    a = torch.randn(7, 4, dtype=torch.float64, generator=gen())
    q, r = qr_positive(a)
    assert torch.allclose(q @ r, a)
    assert torch.all(torch.diagonal(r) >= 0)
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("max_bond,cutoff", [(3, None), (None, 0.3), (5, 0.05)])
def test_truncated_svd_error_is_eckart_young(max_bond, cutoff):
    a = torch.randn(12, 9, dtype=torch.float64, generator=gen(1))
    u, s, vh, discarded = truncated_svd(a, max_bond=max_bond, cutoff=cutoff)
    s_full = torch.linalg.svdvals(a)
    k = s.shape[0]
    if max_bond is not None:
        assert k <= max_bond
    if cutoff is not None:
        assert torch.all(s > cutoff * s_full[0])
    err = torch.linalg.norm(a - u @ torch.diag(s) @ vh)
    assert torch.isclose(err, discarded)
    assert torch.isclose(discarded, torch.sqrt((s_full[k:] ** 2).sum()))


def test_tt_svd_error_equals_discarded_weight():
    t = torch.randn(3, 4, 5, 4, 3, dtype=torch.float64, generator=gen(2))
    cores, discarded = tt_svd(t, max_bond=4)
    approx = MPS(cores).to_dense()
    assert discarded > 0.1
    assert torch.isclose(torch.linalg.norm(t - approx), discarded, rtol=1e-10)
    exact, zero = tt_svd(t)
    assert torch.allclose(MPS(exact).to_dense(), t) and zero < 1e-12


def test_svd_gradient_finite_for_degenerate_spectrum():
    # identity and a product state have fully degenerate / zero singular values
    for a in (torch.eye(4, dtype=torch.float64), torch.ones(4, 4, dtype=torch.float64)):
        a = a.clone().requires_grad_(True)
        u, s, vh = svd(a)
        loss = (u[:, :2] @ torch.diag(s[:2]) @ vh[:2]).pow(2).sum() + u.sum() + vh.sum()
        loss.backward()
        assert torch.isfinite(a.grad).all()


def test_svd_gradient_matches_torch_for_distinct_spectrum():
    a = torch.randn(6, 4, dtype=torch.float64, generator=gen(3))
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen(4))

    def loss(f, x):
        u, s, vh = f(x)
        # gauge-invariant function of the factors
        return ((u * s) @ vh[:, :2] * w[:, :2]).sum() + (s**3).sum() + (u[:, :2] @ u[:, :2].T).sum()

    x1 = a.clone().requires_grad_(True)
    loss(svd, x1).backward()
    x2 = a.clone().requires_grad_(True)
    loss(lambda m: torch.linalg.svd(m, full_matrices=False), x2).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)


def test_gradients_through_split_are_finite_for_degenerate_spectra():
    theta = torch.zeros(1, 2, 2, 1, dtype=torch.float64)
    theta[0, 0, 0, 0] = theta[0, 1, 1, 0] = 1.0  # Bell pair: two equal singular values
    theta.requires_grad_(True)
    a, b, s, _ = split(theta, 1, max_bond=1)
    (a.sum() + b.sum() + s.sum()).backward()
    assert torch.isfinite(theta.grad).all()


def test_merge_split_roundtrip_and_bond_checks():
    a = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen(5))
    b = torch.randn(4, 5, 2, dtype=torch.float64, generator=gen(6))
    theta = merge(a, b)
    assert theta.shape == (2, 3, 5, 2)
    for absorb in ("left", "right", "both"):
        a2, b2, s, disc = split(theta, 1, absorb=absorb)
        assert torch.allclose(merge(a2, b2), theta) and disc < 1e-12
    a2, _, _, _ = split(theta, 1, absorb="right")
    m = a2.reshape(-1, a2.shape[-1])
    assert torch.allclose(m.T @ m, torch.eye(m.shape[1], dtype=torch.float64))
    with pytest.raises(ShapeError):
        merge(a, a)
    with pytest.raises(ShapeError):
        split(theta, 1, max_bond=0)


def test_mpo_split_keeps_two_physical_legs():
    mpo = MPO.random([2, 3], [3, 2], 4, generator=gen(7))
    theta = merge(*mpo.cores)
    a, b, s, _ = split(theta, 2, absorb="both")
    assert a.shape[:3] == (1, 2, 3) and b.shape[1:] == (3, 2, 1)
    assert torch.allclose(MPO([a, b]).to_matrix(), mpo.to_matrix())
