"""Tests of the DMRG-like sweeping trainer (Jahromi & Orús, Sec. III) and the Adam baseline."""

import json
import math

import numpy as np
import pytest
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.models.tnn import Dense, MPOLinear, TNLayer, build_tnn
from entangle.tn import von_neumann_entropy
from entangle.train.sweeper import DMRGSweeper, train_adam

F64 = torch.float64


def _nll(p, y):
    return -torch.log(p.gather(1, y[:, None]).clamp_min(1e-300)).mean()


def _mse(p, y):
    return ((p.reshape(y.shape) - y) ** 2).mean()


def _blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.75]], dtype=F64)
    x = centres[y] + 0.08 * torch.randn(n, 2, dtype=F64, generator=g)
    return x, y


def _classifier(seed=0, bond=4, n_mpo=4, units=16):
    return build_tnn([Dense(units, trainable=False), TNLayer(units, n_mpo=n_mpo, bond_dim=bond, activation="relu"),
                      Dense(2, activation="softmax")], in_features=2, seed=seed, dtype="float64")


def _regressor(seed=0, bond=2):
    return build_tnn([Dense(16, trainable=False), TNLayer(16, n_mpo=4, bond_dim=bond, activation="tanh"),
                      TNLayer(16, n_mpo=4, bond_dim=bond), Dense(1)], in_features=1, seed=seed, dtype="float64")


def _loss(model, loss_fn, x, y):
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def _entropies_from_dense(layer: MPOLinear) -> list[float]:
    """Independent reference: SVD of the weight, as a vector with legs (o1 i1)(o2 i2)..., across each cut."""
    n = layer.n_sites
    w = layer.weight.detach().reshape(*layer.out_shape, *layer.in_shape)
    v = w.permute([leg for k in range(n) for leg in (k, n + k)])
    sizes = [o * i for o, i in zip(layer.out_shape, layer.in_shape)]
    out = []
    for cut in range(1, n):
        s = torch.linalg.svdvals(v.reshape(math.prod(sizes[:cut]), -1))
        p = s**2 / (s**2).sum()
        p = p[p > 1e-30]
        out.append(float(-(p * p.log()).sum()))
    return out


@pytest.mark.parametrize("local_step", ["gd", "rms"])
def test_small_step_sweep_reduces_loss(local_step):
    x = torch.linspace(-1, 1, 64, dtype=F64)[:, None]
    y = torch.sin(3 * x)
    model = _regressor()
    before = _loss(model, _mse, x, y)
    sweeper = DMRGSweeper(model, _mse, lr=1e-3, max_bond=2, local_step=local_step)
    history = sweeper.fit(x, y, n_sweeps=1)
    after = _loss(model, _mse, x, y)
    assert after < before
    assert history[0]["loss"] == pytest.approx(after)
    assert history[0]["n_updates"] == 2 * 2 * 3  # two layers, 3 bonds each way


def test_bond_dims_history_entropies_and_canonical_centre():
    x, y = _blobs(100)
    model = _classifier(bond=2, n_mpo=4)  # 16 -> 16: site dims 2, largest bonds [4, 16, 4]
    sweeper = DMRGSweeper(model, _nll, lr=0.1, max_bond=3, metric="accuracy")
    history = sweeper.fit(x, y, n_sweeps=2)
    layer = model.layers[1]
    assert layer.bond_dims == [3, 3, 3]  # grown from 2 and truncated at max_bond
    record = history[-1]["layers"][0]
    assert record["bond_dims"] == [3, 3, 3]
    np.testing.assert_allclose(record["entropies"], _entropies_from_dense(layer), atol=1e-10)
    np.testing.assert_allclose(record["entropies"], layer.mpo.detach().entropies().numpy(), atol=1e-12)
    for s, entropy in zip(record["singular_values"], record["entropies"]):
        assert len(s) == 3 and s == sorted(s, reverse=True)
        assert entropy == pytest.approx(float(von_neumann_entropy(torch.tensor(s, dtype=F64))))
    # after left-right-left the orthogonality centre is back on site 0
    mpo = layer.mpo.detach()
    assert all(mpo.isometry_error(k, "right") < 1e-10 for k in range(1, 4))
    json.dumps(history)  # JSON-serialisable
    assert all(c.requires_grad for c in layer.cores)  # unfrozen after fit


def test_cutoff_truncates():
    x, y = _blobs(100)
    model = _classifier(bond=4, n_mpo=4)
    DMRGSweeper(model, _nll, lr=0.1, max_bond=16, cutoff=0.3).fit(x, y, n_sweeps=1)
    assert model.layers[1].bond_dims < [4, 16, 4]
    # bond 0 is split last, with the centre on site 0: its spectrum is exactly the kept one
    s = model.layers[1].mpo.detach().schmidt_values(0)
    assert float(s[-1]) > 0.3 * float(s[0])


@pytest.mark.parametrize("strategy,sweeps", [("pal", 15), ("lbl", 10)])
def test_strategies_train_blobs(strategy, sweeps):
    x, y = _blobs(200)
    xt, yt = _blobs(100, seed=1)
    model = _classifier()
    frozen = model.layers[0].weight.detach().clone()
    out_before = model.layers[2].weight.detach().clone()
    sweeper = DMRGSweeper(model, _nll, lr=0.1, max_bond=4, strategy=strategy, layer_sweeps=2, metric="accuracy",
                          dense_optimizer="adam", dense_lr=0.02)
    history = sweeper.fit(x, y, n_sweeps=sweeps, x_val=xt, y_val=yt)
    assert history[-1]["metric"] >= 0.97 and history[-1]["val_metric"] >= 0.97
    assert history[-1]["loss"] < history[0]["loss"]
    assert torch.equal(model.layers[0].weight, frozen)  # the non-trainable Dense stays put
    assert not torch.equal(model.layers[2].weight, out_before)


def test_minibatches_callback_and_resume():
    x, y = _blobs(200)
    model = _classifier()
    seen = []
    sweeper = DMRGSweeper(model, _nll, lr=0.1, max_bond=4, batch_size=32, metric="accuracy",
                          callback=lambda r: seen.append(r["sweep"]) or r["sweep"] == 3)
    assert len(sweeper.fit(x, y, n_sweeps=10)) == 3 and seen == [1, 2, 3]
    sweeper.callback = None
    history = sweeper.fit(x, y, n_sweeps=2)
    assert [r["sweep"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["time_s"] >= history[2]["time_s"]


def test_adam_baseline_trains():
    x, y = _blobs(200)
    model = _classifier()
    history = train_adam(model, _nll, x, y, lr=0.02, epochs=60, metric="accuracy", record_every=20)
    assert [r["epoch"] for r in history] == [20, 40, 60]
    assert history[-1]["metric"] >= 0.97
    assert len(history[-1]["layers"][0]["entropies"]) == 3
    json.dumps(history)


def test_bad_input_raises_before_training():
    x, y = _blobs(50)
    model = _classifier()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sweeper = DMRGSweeper(model, _nll, lr=0.1, max_bond=4, metric="accuracy")
    x_nan = x.clone()
    x_nan[7, 1] = float("nan")
    with pytest.raises(DataError, match="row 7"):
        sweeper.fit(x_nan, y, n_sweeps=1)
    with pytest.raises(ShapeError):
        sweeper.fit(x, y[:-1], n_sweeps=1)
    with pytest.raises(ShapeError):
        sweeper.fit(torch.cat([x, x], dim=1), y, n_sweeps=1)
    with pytest.raises(DataError, match="class labels"):
        sweeper.fit(x, y + 1, n_sweeps=1)
    with pytest.raises(ShapeError):
        sweeper.fit(x, y.double(), n_sweeps=1)
    with pytest.raises(DataError):
        train_adam(model, _nll, x_nan, y, epochs=1)
    with pytest.raises(DataError, match="float32"):
        sweeper.fit(x.float(), y, n_sweeps=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # nothing was touched
    for bad in [dict(max_bond=0), dict(lr=0.0), dict(lr=float("nan")), dict(strategy="sgd"), dict(local_step="adam"),
                dict(cutoff=-1.0), dict(n_sweeps=0), dict(batch_size=0), dict(metric="f1"), dict(lr_schedule="step"),
                dict(dense_optimizer="lbfgs")]:
        with pytest.raises(ConfigError):
            kwargs = dict(lr=0.1, max_bond=4, **{k: v for k, v in bad.items() if k not in ("lr", "max_bond")})
            kwargs.update({k: v for k, v in bad.items() if k in ("lr", "max_bond")})
            DMRGSweeper(model, _nll, **kwargs).fit(x, y, n_sweeps=1)
    with pytest.raises(ConfigError, match="no MPOLinear"):
        DMRGSweeper(build_tnn([Dense(2)], in_features=2), _nll)
    with pytest.raises(ConfigError, match="unknown activation"):
        build_tnn([Dense(16), TNLayer(16, n_mpo=4, activation="gelu")], in_features=2)


def test_frozen_mpo_layer_is_not_swept():
    x = torch.linspace(-1, 1, 32, dtype=F64)[:, None]
    model = _regressor()
    first, second = model.layers[1], model.layers[2]
    first.cores.requires_grad_(False)
    frozen = [c.detach().clone() for c in first.cores]
    DMRGSweeper(model, _mse, lr=0.01, max_bond=2).fit(x, torch.sin(3 * x), n_sweeps=1)
    assert all(torch.equal(c, f) for c, f in zip(first.cores, frozen))
    assert not any(c.requires_grad for c in first.cores) and all(c.requires_grad for c in second.cores)


def test_divergence_is_reported():
    x, y = _blobs(50)
    with pytest.raises(ConfigError, match="lower lr"):
        DMRGSweeper(_classifier(), lambda p, t: _nll(p, t) * float("inf"), lr=0.1).fit(x, y, n_sweeps=1)
