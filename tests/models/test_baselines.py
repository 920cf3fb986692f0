import numpy as np
import pytest
import torch

import entangle.io
from entangle.errors import ConfigError, DataError
from entangle.models.baselines import (
    DenseNNConfig, DenseNNRegressor, GPRConfig, NormalizedDotProductKernel, RBFGPRegressor, SOAPGPRegressor,
)
from entangle.models.descriptor_tn import fit_model

DIMS = [2, 2, 3, 3, 2]

# marginal-likelihood optimisation on tiny synthetic sets may stop at a kernel bound
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def soap_like(n, seed=0, dims=DIMS):
    """Positive descriptors with a smooth nonlinear target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *dims, generator=g, dtype=torch.float64) + 0.1
    flat = x.reshape(n, -1)
    v = torch.linspace(-1.0, 1.0, flat.shape[1], dtype=torch.float64)
    y = torch.sin(flat @ v) + 0.5 * flat.mean(1)
    return x, y


@pytest.mark.parametrize("cls", [RBFGPRegressor, SOAPGPRegressor])
def test_gpr_torch_posterior_mean_equals_sklearn(cls):
    x, y = soap_like(50)
    model = cls(GPRConfig(dims=DIMS)).fit(x[:40], y[:40])
    xt = x[40:]
    flat = model.normalize_inputs(xt).reshape(10, -1).numpy()
    ref = model.gpr_.predict(flat) * float(model.target_scale) + float(model.target_shift)
    np.testing.assert_allclose(model(xt).detach().numpy(), ref, rtol=1e-10, atol=1e-10)



def test_rbf_gpr_interpolates_smooth_target():
    dims = [2, 2, 1, 1, 1]
    x, y = soap_like(80, dims=dims)
    model = RBFGPRegressor(GPRConfig(dims=dims)).fit(x[:60], y[:60])
    assert float(((model(x[60:]) - y[60:]) ** 2).mean()) < 0.05 * float(y.var())


def test_soap_kernel_is_the_squared_cosine():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    k = NormalizedDotProductKernel(2)(a, b)
    ref = [[(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) ** 2 for v in b] for u in a]
    np.testing.assert_allclose(k, ref, rtol=1e-12)
    k_aa, grad = NormalizedDotProductKernel(2)(a, eval_gradient=True)
    np.testing.assert_allclose(np.diag(k_aa), 1.0)
    assert grad.shape == (4, 4, 0)


def test_soap_gpr_is_invariant_to_descriptor_scale():
    # the normalised kernel only sees directions: rescaling a structure's descriptor changes nothing
    x, y = soap_like(40, seed=2)
    model = SOAPGPRegressor(GPRConfig(dims=DIMS)).fit(x[:30], y[:30])
    scale = torch.linspace(0.5, 3.0, 10, dtype=torch.float64).reshape(10, 1, 1, 1, 1, 1)
    torch.testing.assert_close(model(x[30:] * scale), model(x[30:]), rtol=1e-10, atol=1e-12)


def test_soap_gpr_rejects_zero_descriptor():
    x, y = soap_like(10)
    x[4] = 0.0
    with pytest.raises(DataError, match="structure 4"):
        SOAPGPRegressor(GPRConfig(dims=DIMS)).fit(x, y)


def test_gpr_refuses_per_atom_input_and_unfitted_use():
    x, y = soap_like(12)
    with pytest.raises(ConfigError, match="not fitted"):
        RBFGPRegressor(GPRConfig(dims=DIMS))(x)
    model = RBFGPRegressor(GPRConfig(dims=DIMS)).fit(x, y)
    with pytest.raises(ConfigError, match="averaged descriptors"):
        model(x, structure_index=torch.zeros(12, dtype=torch.long))


def test_gpr_save_load_round_trip(tmp_path):
    x, y = soap_like(30)
    model = SOAPGPRegressor(GPRConfig(dims=DIMS)).fit(x, y)
    entangle.io.save(model, tmp_path / "gpr")
    loaded = entangle.io.load(tmp_path / "gpr")
    assert loaded.train_x.shape == (30, 72)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_dense_nn_default_size_is_order_a_million():
    model = DenseNNRegressor(DenseNNConfig(dims=[4, 4, 4, 4, 4]))
    widths = [1024, 1024, 512, 256, 1]
    expected = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    assert model.num_parameters() == expected == 1_705_985


def test_dense_nn_trains_hidden_states_and_round_trips(tmp_path):
    x, y = soap_like(120, seed=3)
    model = DenseNNRegressor(DenseNNConfig(dims=DIMS, hidden=[32, 16], activation="tanh", seed=4))
    twin = DenseNNRegressor(DenseNNConfig(dims=DIMS, hidden=[32, 16], activation="tanh", seed=4))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    history = fit_model(model, x, y, epochs=150, lr=1e-2, patience=150)
    assert history.best_val_loss < 0.5 * history.val_loss[0]
    hidden = model.hidden_states(x[:5])
    assert [tuple(h.shape) for h in hidden] == [(5, 32), (5, 16)]
    # the output layer applied to the last hidden state is the raw prediction
    raw = model.linears[-1](hidden[-1]).squeeze(-1)
    torch.testing.assert_close(model(x[:5]), model.target_scale * raw + model.target_shift)
    entangle.io.save(model, tmp_path / "nn")
    torch.testing.assert_close(entangle.io.load(tmp_path / "nn")(x), model(x), rtol=0, atol=0)


def test_baseline_config_errors():
    with pytest.raises(ConfigError):
        DenseNNConfig(dims=DIMS, hidden=[0])
    with pytest.raises(ConfigError):
        DenseNNConfig(dims=DIMS, activation="gelu2")
    with pytest.raises(ConfigError):
        GPRConfig(dims=DIMS, zeta=0)
