"""Training of ETN potentials: loss of eq. (47), L-BFGS/Adam, checkpoints and resume,
two-site ALS, fit/evaluate entry points (on a few EMT structures)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from entangle.data import read_extxyz
from entangle.errors import ConfigError
from entangle.models.etn import ETNConfig, ETNPotential
from entangle.train.als import ALSConfig, als_sweeps
from entangle.train.losses import ErrorAccumulator, LossWeights, potential_loss
from entangle.train.trainer import (
    TrainConfig, Trainer, evaluate_etn, evaluate_model, evaluate_structures, fit_etn,
    fit_reference_energies, prepare_batches,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "emt_cuau.extxyz"


@pytest.fixture(scope="module")
def small():
    data = read_extxyz(DATA)
    data = data.filter(predicate=lambda s: s.n_atoms <= 32 and set(s.numbers) <= {29, 79})
    return data[:8], data[8:11]


def make_model(train, seed=0, **kw):
    species = [29, 79]
    cfg = dict(species=species, n_rad=4, d=3, L=2, spec_rank=1, rad_rank=2, ett_rank=1,
               r_cut=4.0, r_min=1.5, feature_scale=20.0, seed=seed,
               reference_energies=fit_reference_energies(train, species))
    cfg.update(kw)
    return ETNPotential(ETNConfig(**cfg))


def test_loss_matches_eq47_by_hand(small):
    train, _ = small
    model = make_model(train)
    item = prepare_batches(train[:2], 4.0, 2)[0]
    pred = model(item.batch, item.neighbours, forces=True)
    w = LossWeights(energy=1.0, forces=0.01)
    loss, _ = potential_loss(pred, item.batch, w)
    by_hand = 0.0
    for k, s in enumerate(train[:2]):
        e = float(pred["energy"][k].detach()) - s.energy
        f = pred["forces"][item.batch.ptr[k]:item.batch.ptr[k + 1]].detach().numpy() - s.forces
        by_hand += e**2 + 0.01 * (f**2).sum()
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-12)


def test_huber_loss_matches_its_definition_by_hand(small):
    train, _ = small
    model = make_model(train)
    item = prepare_batches(train[:2], 4.0, 2)[0]
    pred = model(item.batch, item.neighbours, forces=True)
    e_res = pred["energy"].detach().numpy() - np.array([s.energy for s in train[:2]])
    f_res = pred["forces"].detach().numpy() - np.concatenate([s.forces for s in train[:2]])
    # deltas inside the residuals' range, so both branches of h are taken
    de, df = float(np.median(np.abs(e_res))), float(np.median(np.abs(f_res)))
    w = LossWeights(energy=1.0, forces=0.01, huber_energy=de, huber_forces=df)
    loss, _ = potential_loss(pred, item.batch, w)

    def h(r, d):
        r = np.abs(r)
        return np.where(r <= d, r**2, 2 * d * r - d**2)

    by_hand = h(e_res, de).sum() + 0.01 * h(f_res, df).sum()
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-12)
    squared, _ = potential_loss(pred, item.batch, LossWeights(energy=1.0, forces=0.01))
    assert float(loss.detach()) < float(squared.detach())
    huge = LossWeights(energy=1.0, forces=0.01, huber_energy=1e6, huber_forces=1e6)
    loss_huge, _ = potential_loss(pred, item.batch, huge)
    assert float(loss_huge.detach()) == pytest.approx(float(squared.detach()), rel=1e-12)


@pytest.mark.parametrize("key", ["huber_energy", "huber_forces"])
def test_huber_delta_must_be_positive(key):
    with pytest.raises(ConfigError, match=key):
        LossWeights(**{key: 0.0})


@pytest.mark.parametrize("optimizer,lr", [("lbfgs", 1.0), ("adam", 0.02)])
def test_training_reduces_validation_error(small, optimizer, lr):
    train, valid = small
    model = make_model(train)
    weights = LossWeights(energy=1.0, forces=0.1, energy_per_atom=True)
    before = evaluate_model(model, prepare_batches(valid, 4.0, 8), weights)["loss"]
    cfg = TrainConfig(optimizer=optimizer, lr=lr, max_steps=6, batch_size=4, weights=weights,
                      progress=False)
    history = Trainer(model, train, valid, cfg).fit()
    after = evaluate_model(model, prepare_batches(valid, 4.0, 8), weights)["loss"]
    assert after < before
    assert len(history) == 6 and "val_force_rmse_ev_per_a" in history[-1]


def test_checkpoint_and_resume(small, tmp_path):
    train, valid = small
    weights = LossWeights(forces=0.1)
    cfg = TrainConfig(optimizer="adam", lr=0.01, max_steps=2, batch_size=4, weights=weights,
                      progress=False, checkpoint_every=1)
    Trainer(make_model(train), train, valid, cfg, tmp_path).fit()
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["step"] == 2 and len(meta["history"]) == 2
    cfg.max_steps = 3
    resumed = Trainer(make_model(train, seed=5), train, valid, cfg, tmp_path)
    history = resumed.fit(resume=True)
    assert resumed.step == 3 and len(history) == 3
    # an uninterrupted run of 3 steps ends at the same parameters
    straight = make_model(train)
    Trainer(straight, train, valid, cfg).fit()
    for a, b in zip(straight.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-10)


def test_adam_learning_rate_decays_per_epoch_and_resumes(small, tmp_path):
    train, valid = small
    cfg = TrainConfig(optimizer="adam", lr=0.01, lr_decay=0.5, max_steps=2, batch_size=4,
                      weights=LossWeights(forces=0.1), progress=False, checkpoint_every=1)
    trainer = Trainer(make_model(train), train, valid, cfg, tmp_path)
    trainer.fit()
    cfg.max_steps = 3
    resumed = Trainer(make_model(train), train, valid, cfg, tmp_path)
    resumed.fit(resume=True)
    straight = Trainer(make_model(train), train, valid, cfg)
    straight.fit()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-10)
    constant = Trainer(make_model(train), train, valid,
                       TrainConfig(**{**cfg.__dict__, "lr_decay": 1.0}))
    constant.fit()
    assert not all(torch.allclose(a, b) for a, b in zip(straight.model.parameters(),
                                                       constant.model.parameters()))
    with pytest.raises(ConfigError, match="lr_decay"):
        TrainConfig(optimizer="adam", lr_decay=0.0)


def test_single_precision_training_returns_a_float64_model(small):
    train, valid = small
    base = dict(optimizer="adam", lr=0.01, max_steps=3, batch_size=4, progress=False,
                weights=LossWeights(forces=0.1), checkpoint_every=0)
    single = Trainer(make_model(train), train, valid, TrainConfig(**base, dtype="float32"))
    assert single.train[0].batch.positions.dtype == torch.float32
    single.fit()
    assert all(p.dtype == torch.float64 for p in single.model.parameters())
    double = Trainer(make_model(train), train, valid, TrainConfig(**base))
    double.fit()
    # the same optimisation up to single-precision round-off
    for a, b in zip(single.history, double.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert single.history[-1]["val_loss"] < single.history[0]["val_loss"]
    with pytest.raises(ConfigError, match="dtype"):
        TrainConfig(dtype="float16")


def test_bad_device_is_a_clear_error():
    with pytest.raises(ConfigError, match="torch device"):
        TrainConfig(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            TrainConfig(device="cuda")


def test_ema_keeps_the_moving_average_of_the_adam_steps(small, tmp_path):
    train, valid = small
    base = dict(optimizer="adam", lr=0.05, max_steps=1, batch_size=len(train), progress=False,
                weights=LossWeights(forces=0.1), standardize=False, checkpoint_every=0)
    start = [p.detach().clone() for p in make_model(train).parameters()]
    raw = Trainer(make_model(train), train, [], TrainConfig(**base))
    raw.fit()  # one Adam step: theta_1
    averaged = Trainer(make_model(train), train, [], TrainConfig(**base, ema_decay=0.25))
    averaged.fit()
    moved = [not torch.equal(p0, p1) for p0, p1 in zip(start, raw.model.parameters())]
    assert sum(moved) >= 3  # the step changed the cores, radial and species contractions
    for p0, p1, kept in zip(start, raw.model.parameters(), averaged.model.parameters()):
        assert torch.allclose(kept, 0.25 * p0 + 0.75 * p1, atol=1e-12)
    # the average is checkpointed: a resumed run continues it exactly
    cfg = TrainConfig(**{**base, "batch_size": 4, "max_steps": 2, "checkpoint_every": 1},
                      ema_decay=0.5)
    Trainer(make_model(train), train, valid, cfg, tmp_path).fit()
    cfg.max_steps = 3
    resumed = Trainer(make_model(train), train, valid, cfg, tmp_path)
    resumed.fit(resume=True)
    straight = Trainer(make_model(train), train, valid, cfg)
    straight.fit()
    assert [h["val_loss"] for h in resumed.history] == pytest.approx(
        [h["val_loss"] for h in straight.history], rel=1e-10)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-10)
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(optimizer="adam", ema_decay=1.0)
    with pytest.raises(ConfigError, match="Adam"):
        TrainConfig(optimizer="lbfgs", ema_decay=0.9)


def test_gradient_clipping_bounds_every_adam_step(small):
    train, valid = small
    cfg = TrainConfig(optimizer="adam", lr=0.01, max_steps=2, batch_size=4, progress=False,
                      weights=LossWeights(forces=0.1), checkpoint_every=0, clip_grad_norm=0.05)
    trainer = Trainer(make_model(train), train, valid, cfg)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    norms = []

    def record(optimizer, args, kwargs):
        norms.append(float(torch.linalg.vector_norm(
            torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        trainer.fit()
    finally:
        handle.remove()
    assert len(norms) == 2 * 2  # two mini-batches per epoch
    assert max(norms) <= 0.05 * (1 + 1e-6)
    unclipped = Trainer(make_model(train), train, valid,
                        TrainConfig(**{**cfg.__dict__, "clip_grad_norm": None}))
    item = unclipped.train[0]
    loss = unclipped._loss([item]) * unclipped.n_train / item.n_structures
    loss.backward()
    assert float(torch.linalg.vector_norm(torch.cat(
        [p.grad.reshape(-1) for p in unclipped.model.parameters() if p.grad is not None]))) > 0.05
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        TrainConfig(optimizer="adam", clip_grad_norm=0.0)


@pytest.mark.parametrize("section,key", [("train", "ema_decy"), ("model", "n_radd"),
                                         ("data", "valid_frac"), (None, "trian")])
def test_fit_etn_names_a_misspelt_config_key_before_loading_data(tmp_path, section, key):
    config = {"task": "etn", "data": {"train": str(tmp_path / "missing.extxyz")},
              "model": {"n_rad": 4}, "train": {"optimizer": "adam"}}
    (config if section is None else config[section])[key] = 1
    where = "config" if section is None else f"config.{section}"
    with pytest.raises(ConfigError, match=rf"{where}: unknown keys \['{key}'\]"):
        fit_etn(config, tmp_path / "out")


def test_two_site_als_lowers_training_loss(small):
    train, _ = small
    model = make_model(train, ett_rank=2)
    weights = LossWeights(energy=1.0, forces=0.1, energy_per_atom=True)
    batches = prepare_batches(train, 4.0, 8)
    before = evaluate_model(model, batches, weights)["loss"]
    history = als_sweeps(model, batches, weights, len(train),
                         ALSConfig(n_sweeps=1, cg_iters=8, max_rank=3))
    after = evaluate_model(model, batches, weights)["loss"]
    assert after < 0.5 * before
    assert len(history) == 2  # d - 1 bonds forward, no backward bonds for d = 3


def test_fit_and_evaluate_entry_points(small, tmp_path):
    train, valid = small
    config = {"data": {"train": train, "test": valid, "valid_fraction": 0.25},
              "model": {"n_rad": 4, "d": 2, "L": 2, "spec_rank": 1, "rad_rank": 2,
                        "ett_rank": 1, "r_cut": 4.0, "r_min": 1.5},
              "train": {"optimizer": "lbfgs", "max_steps": 3, "weights": {"forces": 0.1}}}
    metrics = fit_etn(config, tmp_path, progress=False)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "metrics.json").exists()
    for figure in ("parity.png", "learning_curve.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = evaluate_etn(tmp_path, valid)
    assert result["energy_mae_mev_per_atom"] == pytest.approx(
        metrics["test"]["energy_mae_mev_per_atom"], rel=1e-10)
    assert set(result) >= {"energy_mae_mev_per_atom", "energy_rmse_mev_per_atom",
                           "force_mae_ev_per_a", "force_rmse_ev_per_a", "stress_rmse_gpa"}
    assert result["stress_rmse_gpa"] is not None


def test_adam_then_lbfgs_polish_continues_the_run_and_resumes(small, tmp_path):
    train, valid = small
    config = {"data": {"train": train, "valid_fraction": 0.25},
              "model": {"n_rad": 4, "d": 2, "L": 2, "spec_rank": 1, "rad_rank": 2,
                        "ett_rank": 1, "r_cut": 4.0, "r_min": 1.5},
              "train": {"optimizer": "adam", "lr": 0.01, "max_steps": 3, "polish_steps": 4,
                        "dtype": "float32", "ema_decay": 0.9, "weights": {"forces": 0.1}}}
    metrics = fit_etn(config, tmp_path, progress=False)
    history = json.loads((tmp_path / "polish" / "checkpoint.json").read_text())["history"]
    assert [r["step"] for r in history] == list(range(1, metrics["steps"] + 1))
    assert 3 < metrics["steps"] <= 7
    adam_best = min(r["val_loss"] for r in history[:3])
    assert metrics["best_valid_loss"] == min(r["val_loss"] for r in history) <= adam_best
    assert metrics["valid"]["loss"] == pytest.approx(metrics["best_valid_loss"], rel=1e-5)
    # a resumed fit goes straight on with the (finished) polish: nothing is redone
    config["train"]["resume"] = True
    again = fit_etn(config, tmp_path, progress=False)
    assert again["steps"] == metrics["steps"]
    assert again["valid"]["loss"] == pytest.approx(metrics["valid"]["loss"], rel=1e-12)
    with pytest.raises(ConfigError, match="polish_steps"):
        TrainConfig(optimizer="lbfgs", polish_steps=5)


def test_errors_by_config_type_add_up_to_the_whole(small):
    train, _ = small
    every = read_extxyz(DATA).filter(predicate=lambda s: s.n_atoms <= 32
                                     and set(s.numbers) <= {29, 79})
    kinds = sorted({s.config_type for s in every})
    assert len(kinds) >= 2
    data = [s for kind in kinds for s in every.filter(kind)[:3]]
    model = make_model(train)
    weights = LossWeights(forces=0.1)
    result = evaluate_structures(model, data, weights, batch_size=4)
    whole = evaluate_model(model, prepare_batches(data, 4.0, 4), weights)
    for key, value in whole.items():
        assert result[key] == pytest.approx(value, rel=1e-10), key
    assert sorted(result["by_config_type"]) == kinds
    for kind, part in result["by_config_type"].items():
        members = [s for s in data if s.config_type == kind]
        assert part["n_structures"] == len(members)
        alone = evaluate_model(model, prepare_batches(members, 4.0, 4), weights)
        assert part["energy_mae_mev_per_atom"] == pytest.approx(
            alone["energy_mae_mev_per_atom"], rel=1e-10)
        assert part["force_rmse_ev_per_a"] == pytest.approx(alone["force_rmse_ev_per_a"],
                                                            rel=1e-10)
    one_kind = [s for s in data if s.config_type == kinds[0]]
    assert "by_config_type" not in evaluate_structures(model, one_kind, weights)
    kept = ErrorAccumulator(keep_values=True)  # the values behind the parity plot
    again = evaluate_structures(model, data, weights, batch_size=4, overall=kept)
    (e_ref, e_pred), (f_ref, f_pred) = kept.values()["energy"], kept.values()["forces"]
    assert len(e_ref) == len(data) and len(f_ref) == 3 * sum(s.n_atoms for s in data)
    assert 1000 * np.abs(e_pred - e_ref).mean() == pytest.approx(
        again["energy_mae_mev_per_atom"], rel=1e-10)
    assert np.abs(f_pred - f_ref).mean() == pytest.approx(again["force_mae_ev_per_a"], rel=1e-10)


def test_lbfgs_line_search_moves(small):
    # regression: torch's L-BFGS with max_iter=1 and its default max_eval gives the strong-Wolfe
    # search no evaluation, so every rejected first trial step became a zero step (no progress)
    train, _ = small
    model = make_model(train)
    cfg = TrainConfig(optimizer="lbfgs", max_steps=12, batch_size=8, progress=False,
                      weights=LossWeights(energy=1.0, forces=0.1))
    history = Trainer(model, train, [], cfg).fit()
    losses = [h["train_loss"] for h in history]
    assert len(losses) == 12  # the buggy optimiser stalls and stops after three steps
    assert all(b <= a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.97 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (optional path)")
def test_training_on_cuda_matches_cpu(small, tmp_path):
    train, valid = small
    weights = LossWeights(forces=0.1)
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = TrainConfig(optimizer="adam", lr=0.01, max_steps=2, batch_size=4, weights=weights,
                          progress=False, device=device)
        trainer = Trainer(make_model(train), train, valid, cfg, tmp_path / device)
        trainer.fit()
        runs[device] = trainer.model.cpu()
    for a, b in zip(runs["cpu"].parameters(), runs["cuda"].parameters()):
        assert torch.allclose(a, b, atol=1e-9)


def test_checkpoints_hold_cpu_tensors(small, tmp_path):
    from safetensors.torch import load_file
    train, valid = small
    cfg = TrainConfig(optimizer="adam", lr=0.01, max_steps=1, batch_size=4, progress=False,
                      weights=LossWeights(forces=0.1), device="cpu")
    Trainer(make_model(train), train, valid, cfg, tmp_path).fit()
    tensors = load_file(tmp_path / "checkpoint.safetensors")
    assert tensors and all(t.device.type == "cpu" for t in tensors.values())


def test_lbfgs_reuses_the_line_search_evaluation(small):
    # torch's L-BFGS re-evaluates the closure at the start of every step() (max_iter=1) at the
    # point where the previous line search ended; the trainer serves it from its cache, so an
    # iteration costs about one full-batch evaluation instead of two, on the same trajectory
    import collections
    train, _ = small
    cfg = TrainConfig(optimizer="lbfgs", max_steps=8, batch_size=4, progress=False,
                      weights=LossWeights(energy=1.0, forces=0.1))
    runs = {}
    for cached in (True, False):
        trainer = Trainer(make_model(train), train, [], cfg)
        if not cached:
            trainer._evaluations = collections.deque(maxlen=0)
        calls, loss = [0], trainer._loss

        def counted(batches, loss=loss, calls=calls):
            calls[0] += 1
            return loss(batches)

        trainer._loss = counted
        history = trainer.fit()
        runs[cached] = ([h["train_loss"] for h in history], calls[0] // len(trainer.train),
                        torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    (cached_losses, cached_evals, cached_p), (plain_losses, plain_evals, plain_p) = \
        runs[True], runs[False]
    assert len(cached_losses) == len(plain_losses) == 8
    assert cached_losses == pytest.approx(plain_losses, rel=1e-8)
    assert torch.allclose(cached_p, plain_p, rtol=1e-6, atol=1e-9)
    assert plain_evals - cached_evals == 8 - 1  # one evaluation saved per step but the first


def test_fit_from_a_trained_smaller_model_starts_where_it_ended(small, tmp_path):
    train, valid = small
    model = {"n_rad": 4, "d": 2, "L": 2, "spec_rank": 1, "rad_rank": 2, "ett_rank": 1,
             "r_cut": 4.0, "r_min": 1.5}
    config = {"data": {"train": train, "valid_fraction": 0.25}, "model": model,
              "train": {"optimizer": "lbfgs", "max_steps": 12, "weights": {"forces": 0.1}}}
    first = fit_etn(config, tmp_path / "small", progress=False)
    grown = dict(model, n_rad=5, L=3, rad_rank=3, ett_rank=2)
    config = {**config, "model": grown, "init": str(tmp_path / "small"),
              "train": {"optimizer": "adam", "lr": 1e-9, "max_steps": 1,
                        "weights": {"forces": 0.1}}}
    second = fit_etn(config, tmp_path / "grown", progress=False)
    assert second["n_parameters"] > 2 * first["n_parameters"]
    assert second["valid"]["loss"] == pytest.approx(first["valid"]["loss"], rel=0.005)
    with pytest.raises(ConfigError, match="r_cut"):  # refused before any training
        fit_etn({**config, "model": dict(grown, r_cut=3.5)}, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "checkpoint.json").exists()
    del config["init"]  # the same model from a random start is far off
    fresh = fit_etn(config, tmp_path / "fresh", progress=False)
    assert fresh["valid"]["loss"] > 3 * first["valid"]["loss"]
