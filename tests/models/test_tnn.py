"""Tests of entangle.models.tnn: MPO layers, factorisation, hybrid networks."""

import itertools
import math

import pytest
import torch
from torch import nn

from entangle.errors import ConfigError, ShapeError
from entangle.models.tnn import (
    Activation, Dense, MPOLinear, TNLayer, TNNConfig, balanced_factors, build_tnn, factorizations, forward_plan,
)
from entangle.tn import MPO, merge

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shapes,bond,batch,plan", [
    (dict(in_features=64, out_features=64, n_sites=6), 8, 512, "dense"),      # large batch: W first
    (dict(in_features=256, out_features=256, n_sites=8), 4, 2, "ltr[3, 2, 3]"),  # small batch: blocks
    (dict(in_features=1024, out_features=64, n_sites=3), 4, 1, "ltr[1, 1, 1]"),  # site by site
    (dict(in_features=256, out_features=256, in_shape=(2, 2, 64), out_shape=(64, 2, 2)), 4, 16, "rtl[1, 1, 1]"),
])
def test_forward_equals_dense_weight_from_mpo(shapes, bond, batch, plan):
    layer = MPOLinear(**shapes, bond_dim=bond, dtype=F64, generator=_gen())
    x = torch.randn(batch, layer.in_features, dtype=F64, generator=_gen(1))
    w = layer.mpo.to_matrix()  # reference: entangle.tn's own contraction
    y = layer(x)
    assert layer.last_plan.name == plan
    torch.testing.assert_close(y, x @ w.T + layer.bias, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight, w, rtol=1e-12, atol=1e-12)
    # nn.Linear-style leading dimensions
    assert layer(x.reshape(1, batch, -1)).shape == (1, batch, layer.out_features)
    # gradients of the cores agree with those through the reference weight
    grads = torch.autograd.grad(layer(x).square().sum(), list(layer.cores))
    reference = torch.autograd.grad((x @ layer.mpo.to_matrix().T + layer.bias).square().sum(), list(layer.cores))
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_plan_flops_counted_exactly():
    layer = MPOLinear(64, 64, n_sites=6, bond_dim=8, dtype=F64, generator=_gen())
    dense = layer.forward_plan(1000)
    assert dense == forward_plan(tuple(tuple(c.shape) for c in layer.cores), 1000)
    assert dense.kind == "dense" and dense.blocks == ((0, 5),)
    # the dense plan costs a fixed merge plus 2 * batch * in * out
    assert layer.forward_plan(2000).flops - dense.flops == 2 * 1000 * 64 * 64
    # site by site, left to right, counted by hand: batch * O_<k * I_>k * D_{k-1} o_k i_k D_k * 2
    small = MPOLinear(1024, 64, n_sites=3, bond_dim=4)  # in (8, 8, 16), out (4, 4, 4), bonds (4, 4)
    plan = small.forward_plan(1)
    assert plan.name == "ltr[1, 1, 1]"
    assert plan.flops == 2 * (8 * 16 * 1 * 4 * 8 * 4 + 4 * 16 * 4 * 4 * 8 * 4 + 16 * 1 * 4 * 4 * 16 * 1)


def test_init_variance_matches_nn_linear():
    entries = torch.cat([MPOLinear(64, 32, bond_dim=4, dtype=F64, generator=_gen(s)).weight.detach().ravel()
                         for s in range(200)])
    reference = 1.0 / (3 * 64)  # Var U(-1/sqrt(in), 1/sqrt(in))
    assert abs(float(entries.var()) / reference - 1) < 0.1


def test_substitute_pair_gives_the_same_layer():
    layer = MPOLinear(64, 64, n_sites=6, bond_dim=3, dtype=F64, generator=_gen())
    x = torch.randn(5, 64, dtype=F64, generator=_gen(2))
    for k in range(5):
        theta = merge(layer.cores[k], layer.cores[k + 1])
        with layer.substitute_pair(k, theta):
            torch.testing.assert_close(layer(x), x @ layer.mpo.to_matrix().T + layer.bias)
    with pytest.raises(ShapeError):
        with layer.substitute_pair(0, torch.zeros(2, 2, 2, 2, 2, 2, dtype=F64)):
            pass


def test_from_linear_exact_low_rank():
    mpo = MPO.random([4, 2, 8], [2, 4, 4], bond_dim=3, generator=_gen(), dtype=F64)
    linear = nn.Linear(32, 64, dtype=F64)
    with torch.no_grad():
        linear.weight.copy_(mpo.to_matrix())
    layer = MPOLinear.from_linear(linear, in_shape=(2, 4, 4), out_shape=(4, 2, 8))
    assert layer.bond_dims == [3, 3]
    assert layer.compression_error < 1e-12
    assert float((layer.weight - linear.weight).abs().max().detach()) < 1e-10
    x = torch.randn(7, 32, dtype=F64, generator=_gen(1))
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-10, atol=1e-10)


def test_from_linear_reports_true_relative_error():
    linear = nn.Linear(64, 64, dtype=F64)
    layer = MPOLinear.from_linear(linear, max_bond=3)
    assert max(layer.bond_dims) == 3 and layer.in_shape == (2,) * 6
    with torch.no_grad():
        true_error = float(torch.linalg.norm(layer.weight - linear.weight) / torch.linalg.norm(linear.weight))
    assert 0.1 < true_error < 1.0
    assert layer.compression_error == pytest.approx(true_error, rel=1e-8)
    # more bond dimension, less error; cutoff=0 keeps everything
    assert MPOLinear.from_linear(linear, max_bond=8).compression_error < layer.compression_error
    assert MPOLinear.from_linear(linear, cutoff=0.0).compression_error < 1e-12


def test_factorizations_are_complete_and_balanced():
    for n, k in [(64, 3), (360, 3), (1024, 4), (30, 2)]:
        brute = {tuple(sorted(t)) for t in itertools.product(range(2, n + 1), repeat=k) if math.prod(t) == n} \
            if n <= 64 else None
        opts = factorizations(n, k)
        assert all(math.prod(o) == n and min(o) >= 2 for o in opts)
        assert len(set(opts)) == len(opts)
        if brute is not None:
            assert set(opts) == brute
    assert balanced_factors(64, 6) == (2,) * 6
    assert balanced_factors(1024, 3) == (8, 8, 16)
    assert balanced_factors(4096, 2) == (64, 64)


def test_shape_errors_list_valid_factorisations():
    with pytest.raises(ShapeError, match=r"no factorisation.*nearby size"):
        MPOLinear(7, 64, n_sites=3)
    with pytest.raises(ShapeError, match=r"\(4, 4, 4\)"):
        MPOLinear(64, 64, in_shape=(2, 2, 3))
    with pytest.raises(ShapeError, match=r"has 3 sites, expected 2"):
        MPOLinear(64, 64, in_shape=(8, 8), out_shape=(4, 4, 4))
    with pytest.raises(ShapeError, match=r"at most 6 sites.*6 sites: \(2, 2, 2, 2, 2, 2\)"):
        MPOLinear(64, 64, n_sites=7)
    with pytest.raises(ShapeError):
        MPOLinear(64, 64, n_sites=1)
    with pytest.raises(ConfigError):
        MPOLinear(64, 64, bond_dim=0)
    layer = MPOLinear(16, 16, bond_dim=2)
    with pytest.raises(ShapeError):
        layer(torch.zeros(3, 15))
    with pytest.raises(ShapeError):
        layer.set_cores(list(MPO.random([2, 8], [2, 8], 2, dtype=torch.float32).cores))


def test_bond_dims_capped_at_maximal_rank():
    layer = MPOLinear(64, 64, n_sites=6, bond_dim=100)
    assert layer.bond_dims == [4, 16, 64, 16, 4]
    assert layer.num_parameters() == sum(c.numel() for c in layer.cores) + 64


def test_network_from_spec_and_config_round_trip():
    spec = [Dense(64, trainable=False), TNLayer(64, n_mpo=6, bond_dim=4, activation="relu"),
            Dense(3, activation="softmax")]
    net = build_tnn(spec, in_features=2, seed=3, dtype="float64")
    x = torch.rand(10, 2, dtype=F64, generator=_gen())
    p = net(x)
    assert p.shape == (10, 3)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(10, dtype=F64))
    assert not any(q.requires_grad for q in net.layers[0].parameters())
    assert all(q.requires_grad for q in net.layers[2].parameters())
    assert isinstance(net.layers[1], MPOLinear) and net.layers[1].in_shape == (2,) * 6
    again = build_tnn(TNNConfig.from_dict(net.config.to_dict()))
    torch.testing.assert_close(again(x), p)
    # layer by layer reference
    h = net.layers[0](x)
    h = torch.relu(h @ net.layers[1].mpo.to_matrix().T + net.layers[1].bias)
    torch.testing.assert_close(torch.softmax(net.layers[2](h), dim=1), p)


def test_activations_and_spec_errors():
    x = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(Activation("sigmoid")(x), 1 / (1 + torch.exp(-x)))
    torch.testing.assert_close(Activation(None)(x), x)
    torch.testing.assert_close(Activation("Tanh")(x), torch.tanh(x))
    with pytest.raises(ConfigError, match="unknown activation"):
        Dense(4, activation="swish")
    with pytest.raises(ConfigError):
        TNLayer(64, n_mpo=1)
    with pytest.raises(ConfigError):
        TNLayer(64, n_mpo=6, bond_dim=0)
    with pytest.raises(ConfigError):
        build_tnn({"in_features": 2, "layers": [{"type": "conv", "units": 3}]})
    with pytest.raises(ShapeError, match="non-trainable Dense"):
        build_tnn([TNLayer(64, n_mpo=3)], in_features=7)
    with pytest.raises(ShapeError):
        build_tnn([Dense(4)], in_features=3)(torch.zeros(2, 4))


def test_state_dict_with_other_bond_dims_loads():
    trained = MPOLinear(64, 64, n_sites=6, bond_dim=3, dtype=F64, generator=_gen(1))
    fresh = MPOLinear(64, 64, n_sites=6, bond_dim=8, dtype=F64, generator=_gen(2))
    fresh.load_state_dict(trained.state_dict())
    assert fresh.bond_dims == [3, 3, 3, 3, 3]
    x = torch.randn(4, 64, dtype=F64, generator=_gen(3))
    torch.testing.assert_close(fresh(x), trained(x))


def test_network_save_load_roundtrip_after_bond_change(tmp_path):
    from entangle import io
    from entangle.models.tnn import TNNConfig, TNNetwork

    config = TNNConfig(in_features=2, layers=[{"type": "dense", "units": 16, "trainable": False},
                                              {"type": "tn", "units": 16, "n_mpo": 4, "bond_dim": 2,
                                               "activation": "relu"},
                                              {"type": "dense", "units": 1}], dtype="float64")
    net = TNNetwork(config)
    layer = net.mpo_layers()[0]
    grown = [torch.randn(c.shape[0] if k == 0 else 3, c.shape[1], c.shape[2], 1 if k == 3 else 3,
                         dtype=torch.float64) for k, c in enumerate(layer.mpo.cores)]
    layer.set_cores(grown)  # as after a sweep that grew the bonds to 3
    io.save(net, tmp_path / "tnn")
    loaded = io.load(tmp_path / "tnn")
    x = torch.randn(5, 2, dtype=torch.float64)
    assert loaded.mpo_layers()[0].bond_dims == [3, 3, 3]
    assert torch.equal(loaded(x), net(x))
