import dataclasses
import itertools
import json
import math

import pytest
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.models.nnmpo import ACTIVATIONS, NNMPO, NNMPOConfig, activation_and_derivative


def _random_model(n=4, f=3, nb=6, activation="moderate+silu", bonds=(3, 2), seed=0):
    model = NNMPO(NNMPOConfig(n_coords=n, n_latent=f, n_basis=nb, activation=activation, bond_dims=list(bonds),
                              seed=seed, w_init=1.5))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        model.U.copy_(q[:, :f])
        model.b.copy_(0.3 * torch.randn(model.b.shape, generator=gen, dtype=torch.float64))
        for core in model.cores:
            core.copy_(torch.randn(core.shape, generator=gen, dtype=torch.float64))
        model.norm.fill_(1.7)
    model.set_centres(torch.randn(nb - 1, n, generator=gen, dtype=torch.float64))
    return model


def _dense_reference(model, x):
    """Slow reference: V(x) = norm Σ_ρ Π_k φ_ρk(q_k) W[ρ1..ρf] with the TT expanded to a dense tensor."""
    dense = model.cores[0][0]  # (N, D1)
    for core in model.cores[1:]:
        dense = torch.tensordot(dense, core, dims=([dense.dim() - 1], [0]))
    dense = dense[..., 0]  # (N,)*f
    q = x @ model.U
    out = []
    for b in range(x.shape[0]):
        phis = [model.basis_values(k, q[b, k:k + 1])[0] for k in range(model.n_latent)]
        total = dense
        for phi in phis:
            total = torch.tensordot(phi, total, dims=([0], [0]))
        out.append(total)
    return model.norm * torch.stack(out)


def test_published_parameter_count():
    # Hino & Kurashige: N=21, f=6, bonds [5,14,14,14,6] -> 11,697 TT + 36 + 240 + 1 = 11,974
    model = NNMPO(NNMPOConfig(n_coords=6, n_latent=6, n_basis=21, bond_dims=[5, 14, 14, 14, 6]))
    assert sum(c.numel() for c in model.cores) == 11697
    assert model.num_parameters() == 11974


def test_init_is_on_stiefel_and_eye():
    model = NNMPO(NNMPOConfig(n_coords=5, n_latent=3, n_basis=4, max_bond=3))
    assert torch.equal(model.U.detach(), torch.eye(5, 3, dtype=torch.float64))
    assert model.bond_dims == [3, 3]
    assert float(model.w.detach().abs().max()) <= 0.5


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(activation):
    t = torch.linspace(-3, 3, 41, dtype=torch.float64)[torch.arange(41) != 20].requires_grad_(True)  # skip t=0
    a, da = activation_and_derivative(activation, t)
    (grad,) = torch.autograd.grad(a.sum(), t)
    torch.testing.assert_close(da, grad, rtol=1e-12, atol=1e-12)


def test_energy_matches_dense_reference():
    model = _random_model()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _dense_reference(model, x), rtol=1e-11, atol=1e-11)
        energy, _ = model.energy_and_forces(x)
        torch.testing.assert_close(energy, model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["moderate+silu", "tanh+gaussian+erf", "softplus+exp"])
def test_analytic_forces_match_autograd_and_finite_differences(activation):
    model = _random_model(activation=activation, nb=7)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, forces = model.energy_and_forces(x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).sum(), xg)
    torch.testing.assert_close(forces.detach(), -grad, rtol=1e-10, atol=1e-10)
    h = 1e-5
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[:, i] = h
            fd[:, i] = -(model(x + e) - model(x - e)) / (2 * h)
    torch.testing.assert_close(forces.detach(), fd, rtol=1e-6, atol=1e-7)


def test_forces_differentiable_wrt_parameters():
    # the force-matching loss needs d(F)/d(params); compare with finite differences in one core entry
    model = _random_model()
    x = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    _, forces = model.energy_and_forces(x)
    (g,) = torch.autograd.grad(forces.pow(2).sum(), model.cores[1])
    h = 1e-6
    with torch.no_grad():
        model.cores[1][0, 2, 1] += h
        plus = model.energy_and_forces(x)[1].pow(2).sum()
        model.cores[1][0, 2, 1] -= 2 * h
        minus = model.energy_and_forces(x)[1].pow(2).sum()
    assert math.isclose(float(g[0, 2, 1]), float((plus - minus) / (2 * h)), rel_tol=1e-6)


def test_basis_values_and_derivatives():
    model = _random_model()
    q = torch.linspace(-2, 2, 11, dtype=torch.float64)
    phi = model.basis_values(1, q)
    assert phi.shape == (11, 6)
    assert torch.equal(phi[:, 0], torch.ones(11, dtype=torch.float64))
    qg = q.clone().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda t: model.basis_values(1, t).sum(0), qg)  # (N, P)
    torch.testing.assert_close(model.basis_derivatives(1, q).detach(), jac.T, rtol=1e-12, atol=1e-12)
    # explicit formula for the first "moderate" function: 1 - exp(-t^2) + 0.05 t^2
    t = model.w[1, 0] * (q - (model.x0 @ model.U)[0, 1]) + model.b[1, 0]
    torch.testing.assert_close(phi[:, 1].detach(), (1 - torch.exp(-t * t) + 0.05 * t * t).detach())


def test_dvr_mpo_diagonal_reproduces_energies_on_grid():
    # W_k[β,σ,σ,β'] = Σ_ρ W_k[β,ρ,β'] φ_ρ(Q_σ): contracting the diagonal MPO gives V on the product grid
    model = _random_model(n=3, f=3, bonds=(2, 3))
    grids = [torch.linspace(-1.0, 1.0, 3, dtype=torch.float64) * (k + 1) for k in range(3)]
    with torch.no_grad():
        diag = [torch.einsum("arb,sr->asb", core, model.basis_values(k, grids[k]))
                for k, core in enumerate(model.cores)]
        for sigma in itertools.product(range(3), repeat=3):
            value = torch.ones(1, dtype=torch.float64)
            for k, s in enumerate(sigma):
                value = value @ diag[k][:, s, :]
            q = torch.stack([grids[k][s] for k, s in enumerate(sigma)])[None]  # (1, f)
            x = q @ model.U.T  # U square orthogonal: x = q Uᵀ
            torch.testing.assert_close(model.norm * value[0], model(x)[0], rtol=1e-11, atol=1e-11)


def test_bad_input_raises():
    model = _random_model()
    with pytest.raises(ShapeError):
        model(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ShapeError):
        model.energy_and_forces(torch.zeros(4, dtype=torch.float64))
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[1, 2] = float("nan")
    with pytest.raises(DataError, match="structure 1"):
        model(x)
    with pytest.raises(DataError, match="dtype"):
        model(torch.zeros(3, 4, dtype=torch.float32))
    with pytest.raises(ShapeError):
        model.basis_values(7, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ShapeError):
        model.set_centres(torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("kwargs", [
    dict(n_coords=3, n_latent=4, n_basis=5),  # f > n
    dict(n_coords=3, n_latent=3, n_basis=5, bond_dims=[2, 0]),  # bond < 1
    dict(n_coords=3, n_latent=3, n_basis=5, bond_dims=[2]),  # wrong number of bonds
    dict(n_coords=3, n_latent=3, n_basis=1),
    dict(n_coords=3, n_latent=3, n_basis=5, activation="moderate+relu"),
    dict(n_coords=3, n_latent=3, n_basis=5, max_bond=0),
    dict(n_coords=3, n_latent=3, n_basis=5, dtype="float16"),
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        NNMPOConfig(**kwargs)


def test_set_cores_validates_and_tracks_bonds():
    model = _random_model()
    cores = [torch.randn(1, 6, 4, dtype=torch.float64), torch.randn(4, 6, 5, dtype=torch.float64),
             torch.randn(5, 6, 1, dtype=torch.float64)]
    model.set_cores(cores)
    assert model.bond_dims == [4, 5] and model.config.bond_dims == [4, 5]
    with pytest.raises(ShapeError):
        model.set_cores(cores[:2])
    with pytest.raises(ShapeError):
        model.set_cores([cores[0], torch.randn(3, 6, 5, dtype=torch.float64), cores[2]])


def test_from_config_rebuilds_shapes_and_rejects_bad_configs():
    model = NNMPO(NNMPOConfig(n_coords=3, n_latent=3, n_basis=4, max_bond=3, seed=2))
    stored = json.loads(json.dumps(dataclasses.asdict(model.config)))  # what entangle.io writes
    assert stored["bond_dims"] == model.bond_dims == [3, 3]  # the actual bonds, not just max_bond
    rebuilt = NNMPO.from_config(stored)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], value), name
    with pytest.raises(ConfigError, match="unknown"):
        NNMPO.from_config({**stored, "n_bassis": 4})
    with pytest.raises(ConfigError, match="missing"):
        NNMPO.from_config({"n_coords": 3, "n_latent": 2})
    with pytest.raises(ConfigError):
        NNMPO.from_config([3, 3, 4])
