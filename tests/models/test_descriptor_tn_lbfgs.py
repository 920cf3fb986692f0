"""L-BFGS / Huber training, the linear warm start and the MPO linear term (descriptor_tn)."""

import math

import pytest
import torch

import entangle.io
from entangle.errors import ConfigError
from entangle.models.descriptor_tn import (
    DenseTensorConfig, DenseTensorRegressor, MPOConfig, MPORegressor, MPSConfig, MPSRegressor, fit_model,
    linear_warm_start,
)

DIMS = [2, 3, 2, 3, 2]


def linear_problem(n=120, seed=0, outliers=0, rank_one=False):
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + 0.3 * torch.randn(n, *DIMS, generator=g, dtype=torch.float64)
    w = torch.randn(*DIMS, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    if rank_one:
        w = torch.einsum("a,b,c,d,e->abcde", *[torch.linspace(0.5, 1.5, d, dtype=torch.float64) for d in DIMS])
    y = (x * w).flatten(1).sum(1) + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    y[:outliers] += 50.0
    return x, y


def ridge_reference(model, x, y, ridge):
    """Closed-form ridge on the model's normalised inputs (bias unpenalised)."""
    xn = ((x - model.input_mean) / model.input_scale).flatten(1)
    yn = (y - model.target_shift) / model.target_scale
    n, p = xn.shape
    a = torch.cat([xn, torch.ones(n, 1, dtype=torch.float64)], 1)
    penalty = torch.full((p + 1,), ridge * float(xn.var(0).mean()), dtype=torch.float64)
    penalty[p] = 0
    sol = torch.linalg.solve(a.T @ a / n + torch.diag(penalty), a.T @ yn / n)
    return model.target_scale * (a @ sol) + model.target_shift


def test_linear_warm_start_full_rank_mps_equals_ridge_solution():
    x, y = linear_problem()
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=36))  # full rank at every cut
    info = linear_warm_start(model, x, y, ridge=1e-3)
    assert info["discarded"] < 1e-10
    with torch.no_grad():
        assert torch.allclose(model(x), ridge_reference(model, x, y, 1e-3), atol=1e-8)


def test_linear_warm_start_merges_duplicate_columns_exactly():
    x, y = linear_problem()
    x[:, 1, 2] = x[:, 0, 1]  # an exactly repeated block of entries
    dense = DenseTensorRegressor(DenseTensorConfig(dims=DIMS))
    linear_warm_start(dense, x, y, ridge=1e-2)
    with torch.no_grad():
        assert torch.allclose(dense(x), ridge_reference(dense, x, y, 1e-2), atol=1e-8)
        assert torch.allclose(dense.weight[1, 2], dense.weight[0, 1])  # the ridge splits evenly


def test_huber_warm_start_resists_outliers():
    x, y = linear_problem(outliers=5)
    clean = slice(5, None)
    errors = {}
    for loss in ("mse", "huber"):
        model = MPSRegressor(MPSConfig(dims=DIMS, chi=36))
        linear_warm_start(model, x, y, ridge=1e-6, loss=loss, huber_delta=0.05)
        with torch.no_grad():
            errors[loss] = float((model(x)[clean] - y[clean]).abs().mean())
    assert errors["huber"] < 0.2 * errors["mse"]


def test_mpo_linear_term_is_added_and_round_trips(tmp_path):
    x, y = linear_problem()
    model = MPORegressor(MPOConfig(dims=DIMS, chi=2, linear_chi=3))
    linear_warm_start(model, x, y, ridge=1e-3)
    with torch.no_grad():
        xn = (x - model.input_mean) / model.input_scale
        t = model.operator_tensor().reshape(math.prod(DIMS), -1)
        quad = ((xn.flatten(1) @ t.T) * xn.flatten(1)).sum(1)
        lin = xn.flatten(1) @ model.linear_tensor().reshape(-1)
        ref = model.target_scale * (quad + lin + model.bias) + model.target_shift
        assert torch.allclose(model(x), ref, atol=1e-10)
    entangle.io.save(model, tmp_path / "m")
    loaded = entangle.io.load(tmp_path / "m")
    assert loaded.config.linear_chi == 3 and torch.equal(loaded(x), model(x))
    assert MPORegressor(MPOConfig(dims=DIMS, chi=2)).linear_tensor() is None


def test_lbfgs_fit_never_worse_than_warm_start_and_learns():
    x, y = linear_problem(n=200)
    xv, yv = linear_problem(n=60, seed=1)
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=2))
    linear_warm_start(model, x, y, ridge=1e-4)
    with torch.no_grad():
        start = float((((model(xv) - yv) / model.target_scale) ** 2).mean())
    history = fit_model(model, x, y, validation=(xv, yv), normalize=False, optimizer="lbfgs", epochs=30, patience=5)
    assert history.best_val_loss <= start
    x, y = linear_problem(n=200, rank_one=True)
    xv, yv = linear_problem(n=60, seed=1, rank_one=True)
    cold = MPSRegressor(MPSConfig(dims=DIMS, chi=2))
    history = fit_model(cold, x, y, validation=(xv, yv), optimizer="lbfgs", loss="huber", epochs=30, patience=5)
    assert history.best_val_loss < 0.05 * history.val_loss[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "sgd"}, "optimizer"), ({"loss": "l1"}, "loss"), ({"huber_delta": 0.0}, "huber_delta"),
    ({"lbfgs_iterations": 0}, "lbfgs_iterations"),
])
def test_fit_model_rejects_bad_optimizer_settings(kwargs, message):
    x, y = linear_problem(n=20)
    with pytest.raises(ConfigError, match=message):
        fit_model(MPSRegressor(MPSConfig(dims=DIMS, chi=2)), x, y, **kwargs)


def test_linear_warm_start_rejects_models_without_a_linear_part():
    x, y = linear_problem(n=20)
    with pytest.raises(ConfigError, match="linear_chi"):
        linear_warm_start(MPORegressor(MPOConfig(dims=DIMS, chi=2)), x, y)
    with pytest.raises(ConfigError, match="linear_chi"):
        MPOConfig(dims=DIMS, linear_chi=-1)
