import doctest
import math

import numpy as np
import pytest
import torch

import entangle.io
import entangle.models.descriptor_tn
from entangle.errors import ConfigError, DataError, ShapeError
from entangle.models.descriptor_tn import (
    DenseTensorConfig, DenseTensorRegressor, FeatureMapConfig, FeatureMapMPS, MERARegressor, MPOConfig, MPORegressor,
    MPSConfig, MPSRegressor, TreeConfig, TTNRegressor, fit_model,
)
from entangle.tn import MPS

DIMS = [2, 3, 2, 3, 2]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def data(n=40, dims=DIMS, seed=0):
    g = gen(seed)
    x = 1.0 + 0.3 * torch.randn(n, *dims, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def randomize_normalization(model, seed=1):
    """Give the model non-trivial normalisation buffers so the reference checks them too."""
    x, y = data(seed=seed)
    model.set_normalization(x, 3.0 * y + 1.0)
    with torch.no_grad():
        model.bias.fill_(0.37)
    return model


def normalized(model, x):
    return (x - model.input_mean) / model.input_scale


def site_view(xn, order):
    return xn.permute(0, *[1 + p for p in order])


# ------------------------------------------------------------------------- dense references
@pytest.mark.parametrize("contraction", ["dense", "sweep"])
@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [2, 0, 4, 1, 3]])
def test_mps_equals_einsum_of_dense_state(contraction, order):
    model = randomize_normalization(MPSRegressor(MPSConfig(dims=DIMS, chi=3, site_order=order, contraction=contraction)))
    x, _ = data(seed=5)
    c = [p.detach() for p in model.cores]
    w_site = torch.einsum("iaj,jbk,kcl,ldm,men->abcde", *c)  # boundary bonds i, n have size 1
    ref = torch.einsum("zabcde,abcde->z", site_view(normalized(model, x), order), w_site) + 0.37
    ref = model.target_scale * ref + model.target_shift
    assert torch.allclose(model(x), ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("contraction", ["dense", "sweep"])
def test_mpo_equals_quadratic_form_of_dense_operator(contraction):
    order = [1, 0, 2, 4, 3]
    model = randomize_normalization(MPORegressor(MPOConfig(dims=DIMS, chi=3, site_order=order, contraction=contraction)))
    x, _ = data(seed=6)
    c = [p.detach() for p in model.cores]
    # T[o1..o5, i1..i5] in site order from cores (D, out, in, D)
    t = torch.einsum("iaAj,jbBk,kcCl,ldDm,meEn->abcdeABCDE", *c)
    xs = site_view(normalized(model, x), order)
    ref = torch.einsum("zabcde,abcdeABCDE,zABCDE->z", xs, t, xs) + 0.37
    assert torch.allclose(model(x), model.target_scale * ref + model.target_shift, atol=1e-12, rtol=1e-12)
    # operator_tensor is T in descriptor order
    inv = np.argsort(order).tolist()
    assert torch.allclose(model.operator_tensor(), t.permute(inv + [5 + k for k in inv]))


@pytest.mark.parametrize("contraction", ["dense", "sweep"])
def test_ttn_equals_explicit_tree(contraction):
    model = randomize_normalization(TTNRegressor(TreeConfig(dims=DIMS, chi=4, contraction=contraction)))
    x, _ = data(seed=7)
    w01, w23, w_top, root = [p.detach() for p in model.tensors]
    assert w01.shape == (2, 3, 4) and w23.shape == (2, 3, 4) and w_top.shape == (4, 4, 4) and root.shape == (4, 2, 1)
    w = torch.einsum("abp,cdq,pqr,res->abcde", w01, w23, w_top, root)
    ref = torch.einsum("zabcde,abcde->z", normalized(model, x), w) + 0.37
    assert torch.allclose(model(x), model.target_scale * ref + model.target_shift, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("contraction", ["dense", "sweep"])
def test_mera_equals_explicit_network(contraction):
    model = randomize_normalization(MERARegressor(TreeConfig(dims=DIMS, chi=4, contraction=contraction)))
    x, _ = data(seed=8)
    u12, u34, w01, w23, u_top, w_top, root = [p.detach() for p in model.tensors]
    assert u12.shape == (3, 2, 3, 2) and u34.shape == (3, 2, 3, 2) and u_top.shape == (4, 2, 4, 2)
    ref = torch.einsum("zabcde,bcBC,deDE,aBp,CDq,qEQF,pQr,rFs->z", normalized(model, x),
                       u12, u34, w01, w23, u_top, w_top, root) + 0.37
    assert torch.allclose(model(x), model.target_scale * ref + model.target_shift, atol=1e-12, rtol=1e-12)


def test_dense_tensor_regressor_is_the_inner_product():
    model = randomize_normalization(DenseTensorRegressor(DenseTensorConfig(dims=DIMS)))
    x, _ = data(seed=9)
    xn = normalized(model, x)
    ref = torch.stack([(xn[b] * model.weight.detach()).sum() for b in range(x.shape[0])]) + 0.37
    assert torch.allclose(model(x), model.target_scale * ref + model.target_shift, atol=1e-12)


def test_feature_map_mps_equals_dense_weights_on_product_embedding():
    dims = [2, 3]
    model = FeatureMapMPS(FeatureMapConfig(dims=dims, chi=3, init_noise=0.3))
    x, y = data(n=30, dims=dims, seed=3)
    model.set_normalization(x, y)
    with torch.no_grad():
        model.bias.fill_(-0.2)
        model.left.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.right.copy_(torch.tensor([1.5, 0.3, -0.7]))
    x_test, _ = data(n=7, dims=dims, seed=4)
    feats = ((x_test - x.min(0).values) / (x.max(0).values - x.min(0).values)).reshape(7, -1)
    phi = torch.stack([1 - feats, feats], dim=-1)  # [batch, 6, 2]
    a = model.cores.detach()
    w = torch.einsum("i,iaj,jbk,kcl,ldm,men,nfo,o->abcdef", model.left.detach(), *a, model.right.detach())
    ref = torch.einsum("abcdef,za,zb,zc,zd,ze,zf->z", w, *[phi[:, k] for k in range(6)]) - 0.2
    assert torch.allclose(model(x_test), model.target_scale * ref + model.target_shift, atol=1e-12)
    # to_mps represents the same weight tensor
    assert torch.allclose(model.to_mps().to_dense(), w, atol=1e-12)


def test_per_atom_contributions_are_summed_per_structure():
    model = randomize_normalization(MPSRegressor(MPSConfig(dims=DIMS, chi=3)))
    x_atoms, _ = data(n=11, seed=10)
    index = torch.tensor([0, 0, 2, 1, 1, 1, 2, 3, 3, 0, 2])
    per_row = model(x_atoms)
    ref = torch.stack([per_row[index == s].sum() for s in range(4)])
    assert torch.allclose(model(x_atoms, index), ref, atol=1e-12)
    assert torch.allclose(model(x_atoms, index.numpy(), n_structures=4), ref, atol=1e-12)


# -------------------------------------------------------------------------------- training
W_TRUE = 5 * MPS.random(DIMS, 2, generator=gen(42)).to_dense()  # bond-2 target weights


def low_rank_problem(n=300, seed=0, noise=0.0):
    g = gen(seed)
    x = torch.randn(n, *DIMS, generator=g, dtype=torch.float64)
    y = x.reshape(n, -1) @ W_TRUE.reshape(-1) + 0.7 + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def test_als_sweep_never_increases_the_objective():
    x, y = low_rank_problem(noise=0.5)
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=2, seed=3))
    model.set_normalization(x, y)
    history = torch.tensor(model.als_sweep(x, y, n_sweeps=3, ridge=1e-3), dtype=torch.float64)
    assert (torch.diff(history) <= 1e-12 * history[0]).all()
    # the final objective is what the model predicts: normalised MSE + ridge * ||psi||^2
    with torch.no_grad():
        mse = float((((model(x) - y) / model.target_scale) ** 2).mean())
        assert math.isclose(history[-1].item(), mse + 1e-3 * float(model.weight_tensor().norm() ** 2), rel_tol=1e-9)


def test_als_recovers_low_rank_target():
    x, y = low_rank_problem()
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=2, seed=1))
    model.set_normalization(x, y)
    history = model.als_sweep(x, y, n_sweeps=6, ridge=0.0, max_bond=2)
    assert history[-1] < 1e-9 < history[0]
    assert model.bond_dims == [2, 2, 2, 2]
    x_test, y_test = low_rank_problem(n=50, seed=9)
    assert torch.allclose(model(x_test), y_test, atol=1e-3 * float(y_test.abs().max()))
    assert torch.allclose(model.weight_tensor() * model.target_scale / model.input_scale, W_TRUE, atol=1e-3)


def test_mpo_gradient_sweep_is_monotone_without_truncation():
    x, y = low_rank_problem(n=60)
    model = MPORegressor(MPOConfig(dims=DIMS, chi=2, seed=0))
    model.set_normalization(x, y)
    with torch.no_grad():
        before = float((((model(x) - y) / model.target_scale) ** 2).mean())
    history = torch.tensor(model.gradient_sweep(x, y, n_sweeps=1, steps=3), dtype=torch.float64)
    assert history[0] <= before + 1e-12
    assert (torch.diff(history) <= 1e-12).all()
    assert history[-1] < before


@pytest.mark.parametrize("cls, config", [(MPSRegressor, MPSConfig), (MPORegressor, MPOConfig)])
def test_sweeps_on_per_atom_rows_fit_the_structure_sums(cls, config):
    """Rows are atoms, targets are sums over the atoms of each structure (eq. 22 unaveraged):
    the final sweep objective equals the normalised MSE of the summed predictions."""
    x, _ = low_rank_problem(n=300)
    index = torch.arange(300) % 100  # 100 structures of 3 atoms each
    y = torch.zeros(100, dtype=torch.float64).index_add_(
        0, index, x.reshape(300, -1) @ W_TRUE.reshape(-1) + 0.7) + 0.3 * torch.randn(
        100, generator=gen(5), dtype=torch.float64)  # noise: the fit cannot be exact
    model = cls(config(dims=DIMS, chi=2, seed=2))
    model.set_normalization(x, y, index)
    if cls is MPSRegressor:
        history = model.als_sweep(x, y, index, n_sweeps=3, ridge=0.0, max_bond=2)
    else:
        history = model.gradient_sweep(x, y, index, n_sweeps=2, steps=3)
    assert 1e-4 < history[-1] < history[0]
    with torch.no_grad():
        mse = float((((model(x, index) - y) / model.target_scale) ** 2).mean())
    assert math.isclose(history[-1], mse, rel_tol=1e-6)


def test_fit_model_restores_best_validation_weights():
    x, y = low_rank_problem(n=120, noise=0.3)
    x_val, y_val = low_rank_problem(n=40, seed=5, noise=0.3)
    model = DenseTensorRegressor(DenseTensorConfig(dims=DIMS))
    history = fit_model(model, x, y, validation=(x_val, y_val), epochs=200, lr=0.05, patience=15)
    with torch.no_grad():
        val = float((((model(x_val) - y_val) / model.target_scale) ** 2).mean())
    assert math.isclose(val, history.best_val_loss, rel_tol=1e-10)
    assert min(history.val_loss) == history.best_val_loss
    assert history.val_loss[0] > 2 * history.best_val_loss


def test_fit_model_per_atom_rows():
    g = gen(2)
    n_struct = 150
    counts = torch.randint(1, 4, (n_struct,), generator=g)
    index = torch.repeat_interleave(torch.arange(n_struct), counts)
    x = torch.randn(int(counts.sum()), *DIMS, generator=g, dtype=torch.float64)
    w = torch.randn(DIMS, generator=g, dtype=torch.float64)
    y = torch.zeros(n_struct, dtype=torch.float64).index_add(0, index, x.reshape(len(index), -1) @ w.reshape(-1))
    model = DenseTensorRegressor(DenseTensorConfig(dims=DIMS))
    history = fit_model(model, x, y, index, val_fraction=0.2, epochs=300, lr=0.05, patience=300)
    assert history.best_val_loss < 0.1 * history.val_loss[0]


# ---------------------------------------------------------------------------- io and errors
@pytest.mark.parametrize("make", [
    lambda: MPSRegressor(MPSConfig(dims=DIMS, chi=3, site_order=[4, 3, 2, 1, 0])),
    lambda: MPORegressor(MPOConfig(dims=DIMS, chi=2)),
    lambda: TTNRegressor(TreeConfig(dims=DIMS, chi=3)),
    lambda: MERARegressor(TreeConfig(dims=DIMS, chi=3)),
    lambda: DenseTensorRegressor(DenseTensorConfig(dims=DIMS)),
    lambda: FeatureMapMPS(FeatureMapConfig(dims=[2, 2, 2], chi=2)),
])
def test_save_load_round_trip(make, tmp_path):
    model = make()
    x, y = data(dims=model.config.dims)
    model.set_normalization(x, y)
    entangle.io.save(model, tmp_path / "model")
    loaded = entangle.io.load(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert torch.equal(loaded(x), model(x))


def test_save_load_after_als_changed_bonds(tmp_path):
    x, y = low_rank_problem(n=80)
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=2))
    model.set_normalization(x, y)
    model.als_sweep(x, y, n_sweeps=1)  # no truncation: bonds grow to [2, 6, 6, 2]
    assert model.bond_dims == [2, 6, 6, 2]
    entangle.io.save(model, tmp_path / "m")
    loaded = entangle.io.load(tmp_path / "m")
    assert loaded.bond_dims == [2, 6, 6, 2]
    assert torch.equal(loaded(x), model(x))


def test_bad_inputs_raise_entangle_errors():
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=2))
    x, y = data(n=5)
    with pytest.raises(ShapeError, match=r"\(batch, 2, 3, 2, 3, 2\)"):
        model(x[:, :, :2])
    bad = x.clone()
    bad[3, 0, 1, 1, 2, 0] = float("nan")
    with pytest.raises(DataError, match="structure 3: descriptor"):
        model(bad)
    with pytest.raises(DataError, match="real floating-point"):
        model(np.ones((2, *DIMS), dtype=np.int64))
    with pytest.raises(DataError, match="structure 1: structure_index"):
        model(x, structure_index=[0, 0, 2, 2, 2])
    with pytest.raises(DataError, match="structure 2: target"):
        fit_model(model, x, torch.tensor([0.0, 1.0, float("nan"), 2.0, 3.0]), epochs=1)
    with pytest.raises(ShapeError):
        fit_model(model, x, y[:4], epochs=1)
    for bad_config in (dict(chi=0), dict(chi=2.5), dict(site_order=[0, 1, 2, 3, 3]), dict(contraction="fast"),
                       dict(dtype="float16")):
        with pytest.raises(ConfigError):
            MPSConfig(dims=DIMS, **bad_config)
    with pytest.raises(ConfigError):
        TreeConfig(dims=DIMS, chi=0)
    with pytest.raises(ConfigError):
        MPSConfig(dims=[2, 0, 3])
    with pytest.raises(ConfigError):
        model.als_sweep(x, y, ridge=-1.0)


def test_float32_input_and_float32_model():
    x, _ = data(n=4)
    model64 = MPSRegressor(MPSConfig(dims=DIMS, chi=3))
    assert torch.allclose(model64(x.float()), model64(x.float().double()))
    model32 = MPSRegressor(MPSConfig(dims=DIMS, chi=3, dtype="float32"))
    out = model32(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), model64(x), atol=1e-5)


def test_docstring_examples():
    result = doctest.testmod(entangle.models.descriptor_tn)
    assert result.attempted > 0 and result.failed == 0
