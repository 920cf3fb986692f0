import json
import os

import numpy as np
import pytest
import torch

from entangle import io
from entangle.data import data_root
from entangle.data import load as load_data
from entangle.errors import ConfigError, DataError, ModelFileError, ShapeError
from entangle.models.nnmpo import NNMPO, NNMPOConfig
from entangle.train.nnmpo_trainer import (
    pick_centres,
    EV_TO_CM1, NNMPOTrainer, TrainData, adam_epochs, als_sweep, canonicalize, evaluate_arrays, fit_h2co,
    fold_scales, load_h2co_arrays, make_train_data, predict_arrays, resolve_data_dir, select_restart,
    training_loss,
)
from entangle.train.stiefel import StiefelAdam, project_tangent


def _toy_data(n_points=120, n=3, seed=0):
    """A smooth anharmonic 3-d surface with exact forces (independent of the model)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, n, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    e = (0.5 * (xr**2).sum(1) + 0.3 * xr[:, 0] * xr[:, 1] - 0.1 * xr[:, 2] ** 3 + 0.2 * torch.sin(xr[:, 0] + xr[:, 2]))
    (g,) = torch.autograd.grad(e.sum(), xr)
    return TrainData(x, e.detach(), -g)


def _loss(model, data):
    with torch.no_grad():
        return float(training_loss(model, data))


def _toy_model(bonds=(3, 3), nb=6, seed=0, data=None):
    model = NNMPO(NNMPOConfig(n_coords=3, n_latent=3, n_basis=nb, bond_dims=list(bonds), seed=seed, w_init=1.0))
    if data is not None:
        model.set_centres(data.x[: nb - 1])
    return model


# ------------------------------------------------------------------------------------ Stiefel
def test_stiefel_adam_stays_orthonormal_and_solves_procrustes():
    # maximise tr(Uᵀ A): the optimum on St(3, 6) is the polar factor of A
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    u = torch.nn.Parameter(torch.eye(6, 3, dtype=torch.float64))
    opt = StiefelAdam([u], lr=0.1)
    for _ in range(250):
        opt.zero_grad()
        loss = -(u * a).sum()
        loss.backward()
        opt.step()
        err = (u.T @ u - torch.eye(3, dtype=torch.float64)).abs().max()
        assert float(err.detach()) < 1e-12
    left, _, right = torch.linalg.svd(a, full_matrices=False)
    torch.testing.assert_close(u.detach(), left @ right, atol=1e-5, rtol=0)


def test_tangent_projection_is_tangent():
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    xi = project_tangent(u, torch.randn(5, 3, generator=gen, dtype=torch.float64))
    sym = u.T @ xi + xi.T @ u  # tangent vectors satisfy Uᵀξ + ξᵀU = 0
    assert float(sym.abs().max()) < 1e-13


# ----------------------------------------------------------------------------------------- ALS
def test_canonicalize_preserves_tensor_and_gauge():
    model = _toy_model()
    with torch.no_grad():
        for c in model.cores:
            c.copy_(torch.randn(c.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(c.numel())))
    cores = [c.detach() for c in model.cores]
    new = canonicalize(cores, 1)
    dense = lambda cs: torch.einsum("xai,ibj,jcy->abc", *cs)  # noqa: E731
    torch.testing.assert_close(dense(new), dense(cores))
    left = new[0].reshape(-1, new[0].shape[2])
    right = new[2].reshape(new[2].shape[0], -1)
    torch.testing.assert_close(left.T @ left, torch.eye(left.shape[1], dtype=torch.float64))
    torch.testing.assert_close(right @ right.T, torch.eye(right.shape[0], dtype=torch.float64))


def test_one_site_als_never_increases_loss_and_is_locally_optimal():
    data = _toy_data()
    model = _toy_model(data=data)
    losses = [_loss(model, data)]
    for _ in range(4):
        als_sweep(model, data, n_sites=1, ridge=0.0)
        losses.append(_loss(model, data))
    assert all(b <= a * (1 + 1e-9) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.05 * losses[0]
    # the sweep ends with an exact solve for core 0: the loss gradient w.r.t. it must vanish
    loss = training_loss(model, data)
    (g,) = torch.autograd.grad(loss, model.cores[0])
    (g_other,) = torch.autograd.grad(training_loss(model, data), model.cores[1])
    assert float(g.abs().max()) < 1e-8 * max(1.0, float(g_other.abs().max()) * 1e3)


def test_cg_local_solver_matches_exact_solve_and_sweeps_reduce_loss():
    from entangle.train.nnmpo_trainer import _Sweeper

    data = _toy_data()
    model = _toy_model(data=data)
    phis, dphis = model.site_bases(data.x)
    cores = canonicalize([c.detach() for c in model.cores], 1)
    sw = _Sweeper(phis, dphis, cores, data.y, -(data.f @ model.U).detach(), 1.0)
    with torch.no_grad():
        sw.build_right(2)
        sw.update_left(0)
        exact = sw.solve(1, 1, 1e-4)
        cg = sw.solve_cg(1, torch.zeros_like(exact), 1e-4, iters=300)
    torch.testing.assert_close(cg, exact, rtol=1e-6, atol=1e-8)
    als_sweep(model, data, n_sites=1, ridge=1e-8)
    before = _loss(model, data)
    als_sweep(model, data, n_sites=1, ridge=1e-8, cg_iters=10)
    assert _loss(model, data) < before


def test_ridge_als_decreases_ridge_objective():
    data = _toy_data(seed=2)
    model = _toy_model(data=data)
    ridge = 1e-3
    objective = []
    for _ in range(3):
        als_sweep(model, data, n_sites=1, ridge=ridge)
        cores = canonicalize([c.detach() for c in model.cores], 0)
        objective.append(_loss(model, data) + ridge * float(cores[0].pow(2).sum()))
    assert objective[2] <= objective[1] * (1 + 1e-9) <= objective[0] * (1 + 1e-9) ** 2


def test_two_site_als_respects_max_bond_and_cutoff():
    data = _toy_data(n_points=80)
    model = _toy_model(bonds=(1, 1), data=data)
    als_sweep(model, data, n_sites=2, ridge=1e-6, max_bond=3)
    assert model.bond_dims == [3, 3]
    before = _loss(model, data)
    als_sweep(model, data, n_sites=2, ridge=1e-6, max_bond=2)
    assert max(model.bond_dims) <= 2
    als_sweep(model, data, n_sites=2, ridge=1e-6, max_bond=5, cutoff=0.999)
    assert model.bond_dims == [1, 1]  # a cutoff this large keeps only the leading singular value
    assert np.isfinite(before)


def test_two_site_damped_sweeps_never_increase_loss_without_truncation():
    # each damped two-site step minimises loss + λ||θ − θ_current||², so with an exact (untruncated)
    # split the training loss cannot go up, while the bonds grow to fit the data
    data = _toy_data(n_points=60)
    model = _toy_model(bonds=(1, 1), data=data)
    losses = [_loss(model, data)]
    for _ in range(3):
        als_sweep(model, data, n_sites=2, ridge=1e-6, max_bond=None, cutoff=1e-13)
        losses.append(_loss(model, data))
    assert all(b <= a * (1 + 1e-9) for a, b in zip(losses, losses[1:])), losses
    assert max(model.bond_dims) > 1
    assert losses[-1] < 1e-2 * losses[0]


# ---------------------------------------------------------------------------------- training
def test_adam_reduces_loss_and_keeps_u_orthonormal():
    data = _toy_data()
    model = _toy_model(data=data)
    als_sweep(model, data, n_sites=1, ridge=1e-8)
    before = _loss(model, data)
    after = adam_epochs(model, data, epochs=30, lr=1e-3, lr_u=1e-3, batch_size=40, seed=0)
    assert after < before
    u = model.U.detach()
    assert float((u.T @ u - torch.eye(3, dtype=torch.float64)).abs().max()) < 1e-12


def test_fold_scales_gives_raw_units():
    data = _toy_data()
    model = _toy_model(data=data)
    als_sweep(model, data, n_sites=1, ridge=1e-8)
    sx, sy = 3.0, 0.25
    raw = fold_scales(model, sx, sy)
    with torch.no_grad():
        e_s, f_s = model.energy_and_forces(data.x)
        e_r, f_r = raw.energy_and_forces(data.x * sx)
    torch.testing.assert_close(e_r, sy * e_s)
    torch.testing.assert_close(f_r, sy / sx * f_s)


def test_io_round_trip_with_grown_bonds_and_corruption(tmp_path):
    data = _toy_data()
    model = _toy_model(bonds=(2, 4), data=data)
    als_sweep(model, data, n_sites=2, ridge=1e-6, max_bond=3)
    assert model.bond_dims != [2, 4]  # the sweep changed the shapes the config was built with
    io.save(model, tmp_path / "model", metadata={"note": "toy"})
    loaded = io.load(tmp_path)  # a directory means DIR/model
    assert isinstance(loaded, NNMPO) and loaded.bond_dims == model.bond_dims
    assert loaded.metadata == {"note": "toy"}
    with torch.no_grad():
        e0, f0 = model.energy_and_forces(data.x)
        e1, f1 = loaded.energy_and_forces(data.x)
    assert torch.equal(e0, e1) and torch.equal(f0, f1)
    assert torch.equal(loaded.x0, model.x0) and torch.equal(loaded.norm, model.norm)
    assert not list(tmp_path.glob("*.tmp"))
    weights = tmp_path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="SHA-256"):
        io.load(tmp_path)
    (tmp_path / "model.json").write_text("{broken")
    with pytest.raises(ModelFileError):
        io.load(tmp_path)
    with pytest.raises(ModelFileError):
        io.load(tmp_path / "missing")


def test_predict_and_evaluate_npz_through_io(tmp_path):
    """The CLI path: io.save -> io.load(DIR) -> evaluate_arrays / predict_arrays on an .npz file."""
    data = _toy_data()
    model = _toy_model(bonds=(2, 3), data=data)
    als_sweep(model, data, n_sites=1, ridge=1e-8)
    raw = fold_scales(model, 2.0, 0.5)  # raw units: x = 2 x_s, E = 0.5 E_s, F = 0.25 F_s
    io.save(raw, tmp_path / "model")
    x, y, f = 2.0 * data.x.numpy(), 0.5 * data.y.numpy(), 0.25 * data.f.numpy()
    np.savez(tmp_path / "points.npz", x=x, y=y, f=f)  # y is (P,)
    points = load_data(tmp_path / "points.npz")
    loaded = io.load(tmp_path)
    metrics = evaluate_arrays(loaded, points.x, points.y, points.f)
    with torch.no_grad():
        e_s, f_s = model.energy_and_forces(data.x)
    de = 0.5 * (e_s - data.y).numpy()
    assert metrics["n_points"] == x.shape[0]
    assert metrics["energy_mae_cm1"] == pytest.approx(np.mean(np.abs(de)) * EV_TO_CM1, rel=1e-10)
    assert metrics["force_rmse"] == pytest.approx(np.sqrt(np.mean((0.25 * (f_s - data.f).numpy()) ** 2)), rel=1e-10)
    assert evaluate_arrays(loaded, x, y[:, None], f) == metrics  # (P, 1) energies are accepted too
    pred = predict_arrays(loaded, points.x)
    assert pred["energy"].shape == (x.shape[0],) and pred["forces"].shape == x.shape
    np.testing.assert_allclose(pred["energy"], 0.5 * e_s.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pred["forces"], 0.25 * f_s.numpy(), rtol=1e-12, atol=1e-14)
    # forces are -dV/dx of the predicted energy (central differences in raw units)
    h, k = 1e-5, 1
    xp, xm = x[:4].copy(), x[:4].copy()
    xp[:, k] += h
    xm[:, k] -= h
    fd = -(predict_arrays(loaded, xp)["energy"] - predict_arrays(loaded, xm)["energy"]) / (2 * h)
    np.testing.assert_allclose(pred["forces"][:4, k], fd, rtol=1e-6, atol=1e-8)
    with pytest.raises(ShapeError):
        predict_arrays(loaded, x[:, :2])
    bad = x.copy()
    bad[2, 0] = np.inf
    with pytest.raises(DataError):
        predict_arrays(loaded, bad)


def test_resolve_data_dir(tmp_path):
    assert resolve_data_dir("h2co") == data_root() / "h2co_pompon"
    assert resolve_data_dir("../d", tmp_path / "cfg") == tmp_path / "cfg" / "../d"
    assert resolve_data_dir(str(tmp_path / "abs"), "/elsewhere") == tmp_path / "abs"
    with pytest.raises(ConfigError):
        resolve_data_dir("")


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    data = _toy_data()
    valid = _toy_data(n_points=50, seed=7)
    schedule = [{"kind": "als", "sites": 1, "sweeps": 1},
                {"kind": "cycle", "repeat": 2, "stages": [
                    {"kind": "adam", "epochs": 3, "lr": 1e-3, "batch_size": 40},
                    {"kind": "als", "sites": 1}]}]
    full = NNMPOTrainer(_toy_model(data=data), data, valid, 1.0, schedule, progress=False)
    full.run()
    first = NNMPOTrainer(_toy_model(data=data), data, valid, 1.0, schedule, out_dir=tmp_path, progress=False,
                         max_seconds=0.0)  # stops after the first step
    first.run()
    assert first.done == 1
    resumed = NNMPOTrainer(_toy_model(seed=5, data=data), data, valid, 1.0, schedule, out_dir=tmp_path,
                           progress=False)
    assert resumed.load_checkpoint() and resumed.done == 1
    resumed.run()
    assert resumed.done == full.done == 5
    with torch.no_grad():
        torch.testing.assert_close(resumed.model(valid.x), full.model(valid.x), rtol=1e-10, atol=1e-12)
    assert resumed.best_mae == pytest.approx(full.best_mae, rel=1e-9)


def test_early_stopping_and_config_mismatch(tmp_path):
    data = _toy_data()
    valid = _toy_data(n_points=50, seed=7)
    schedule = [{"kind": "als", "sites": 1, "sweeps": 2, "ridge": 1e-10},
                {"kind": "adam", "epochs": 5, "lr": 0.3, "train_u": False},
                {"kind": "adam", "epochs": 5, "lr": 0.3, "train_u": False},
                {"kind": "adam", "epochs": 5, "lr": 0.3, "train_u": False}]
    trainer = NNMPOTrainer(_toy_model(data=data), data, valid, 1.0, schedule, patience=2, progress=False,
                           out_dir=tmp_path, run_config={"a": 1})
    trainer.run()
    assert trainer.done == 4 and trainer.since_best == 2
    assert trainer.history[1]["val_mae_cm1"] == trainer.best_mae
    other = NNMPOTrainer(_toy_model(data=data), data, valid, 1.0, schedule, out_dir=tmp_path, run_config={"a": 2})
    with pytest.raises(ConfigError):
        other.load_checkpoint()


def test_bad_schedule_and_arrays_raise(tmp_path):
    data = _toy_data(n_points=20)
    model = _toy_model(data=data)
    for schedule in ([], [{"kind": "sgd"}], [{"kind": "als", "sites": 3}],
                     [{"kind": "adam", "lr": 1e-3, "momentum": 1}],
                     [{"kind": "als", "max_bond": 0}]):
        with pytest.raises(ConfigError):
            NNMPOTrainer(model, data, data, 1.0, schedule)
    x = np.zeros((5, 3))
    with pytest.raises(ShapeError):
        evaluate_arrays(model, x, np.zeros(4), np.zeros((5, 3)))
    with pytest.raises(ShapeError):
        evaluate_arrays(model, np.zeros((5, 4)), np.zeros(5), np.zeros((5, 4)))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="structure 3"):
        evaluate_arrays(model, bad, np.zeros(5), np.zeros((5, 3)))
    with pytest.raises(DataError):
        load_h2co_arrays(tmp_path)
    with pytest.raises(ConfigError):
        fit_h2co({"data": str(tmp_path), "model": {"n_latnt": 3}}, tmp_path / "out")


def test_select_restart_keeps_the_best_validated_seed():
    data, valid = _toy_data(), _toy_data(n_points=50, seed=7)

    def make(seed):
        model = _toy_model(seed=seed)
        gen = torch.Generator().manual_seed(seed)
        model.set_centres(data.x[torch.randperm(data.x.shape[0], generator=gen)[:5]])
        return model

    best, records = select_restart(make, data, valid, 1.0, [3, 4, 5], sweeps=2, ridge=1e-10, force_weight=1.0)
    assert [r["seed"] for r in records] == [3, 4, 5]
    maes = []
    for seed in (3, 4, 5):  # independently: the same sweeps from the same start
        model = make(seed)
        for _ in range(2):
            als_sweep(model, data, 1, ridge=1e-10)
        with torch.no_grad():
            maes.append(float((model(valid.x) - valid.y).abs().mean() * EV_TO_CM1))
    assert [r["val_mae_cm1"] for r in records] == pytest.approx(maes, rel=1e-10)
    assert best == (3, 4, 5)[int(np.argmin(maes))]
    assert len(set(round(m, 8) for m in maes)) == 3  # the seeds really differ
    with pytest.raises(ConfigError):
        select_restart(make, data, valid, 1.0, [0], sweeps=0, ridge=0.0, force_weight=1.0)


def test_fit_h2co_restarts_choose_a_seed_and_resume_keeps_it(tmp_path):
    data, valid = _toy_data(), _toy_data(n_points=50, seed=7)
    for name, split in (("train", data), ("validation", valid)):
        for key, arr in (("x", split.x), ("y", split.y[:, None]), ("f", split.f)):
            np.save(tmp_path / f"{key}_{name}.npy", arr.numpy())
    config = {"data": str(tmp_path), "seed": 2,
              "model": {"n_latent": 3, "n_basis": 5, "bond_dims": [2, 2]},
              "train": {"progress": False, "restarts": 3, "restart_sweeps": 1, "ridge": 1e-10,
                        "target_mae_cm1": 1e9, "schedule": [{"kind": "als", "sites": 1, "sweeps": 2}]}}
    out = tmp_path / "out"
    metrics = fit_h2co(config, out)
    candidates = metrics["restarts"]["candidates"]
    # reached after the first sweep; the time to it includes the restart selection
    assert metrics["time_to_target_s"] == pytest.approx(
        metrics["restarts"]["seconds"] + metrics["history"][0]["time_s"], abs=0.01)
    assert [c["seed"] for c in candidates] == [2, 3, 4]
    assert metrics["seed"] == min(candidates, key=lambda c: c["val_mae_cm1"])["seed"]
    assert json.loads((out / "restarts.json").read_text())["candidates"] == candidates
    # resuming (nothing left to do) reuses the recorded choice instead of selecting again
    (out / "restarts.json").write_text(json.dumps({"seconds": 0.0, "candidates": [{"seed": 9, "val_mae_cm1": 0.0}]}))
    assert fit_h2co(config, out)["seed"] == 9
    with pytest.raises(ConfigError):
        fit_h2co({**config, "train": {**config["train"], "restarts": 0}}, tmp_path / "bad")


# ------------------------------------------------------------------------------ H2CO (shared data)
def test_short_training_on_h2co_subset(shared_data, tmp_path):
    splits = load_h2co_arrays(shared_data / "h2co_pompon")
    x, y, f = splits["train"]
    assert x.shape == (625, 6) and splits["validation"][0].shape == (843, 6)
    x, y, f = x[:200], y[:200], f[:200]
    sx, sy = float(np.std(x)), float(np.std(y))
    train = make_train_data(x, y, f, sx, sy)
    xv, yv, fv = (a[:300] for a in splits["validation"])
    valid = make_train_data(xv, yv, fv, sx, sy)
    model = NNMPO(NNMPOConfig(n_coords=6, n_latent=6, n_basis=7, bond_dims=[3, 4, 4, 4, 3], seed=0))
    model.set_centres(train.x[:6])
    std_cm1 = float(np.std(yv)) * EV_TO_CM1
    before = evaluate_arrays(fold_scales(model, sx, sy), xv, yv, fv)["energy_mae_cm1"]
    schedule = [{"kind": "als", "sites": 1, "sweeps": 3, "ridge": 1e-8},
                {"kind": "adam", "epochs": 20, "lr": 1e-3, "batch_size": 50},
                {"kind": "als", "sites": 1, "sweeps": 1, "ridge": 1e-8}]
    trainer = NNMPOTrainer(model, train, valid, sy, schedule, progress=False)
    trainer.run()
    raw = fold_scales(trainer.best_state, sx, sy)
    after = evaluate_arrays(raw, xv, yv, fv)
    assert after["energy_mae_cm1"] < 0.15 * std_cm1 < 0.2 * before
    assert after["energy_mae_cm1"] == pytest.approx(trainer.best_mae, rel=1e-9)


def test_fit_h2co_writes_model_and_metrics(shared_data, tmp_path):
    # as the CLI calls it: no `task`, a `config_dir`, and `data` relative to it
    config_dir = tmp_path / "examples"
    config_dir.mkdir()
    rel = os.path.relpath(shared_data / "h2co_pompon", config_dir)
    config = {"data": rel, "config_dir": str(config_dir), "seed": 1,
              "model": {"n_latent": 6, "n_basis": 5, "bond_dims": [2, 2, 2, 2, 2]},
              "train": {"progress": False, "schedule": [{"kind": "als", "sites": 1, "sweeps": 1}]}}
    metrics = fit_h2co(config, tmp_path)
    for key in ("energy_mae_cm1", "energy_rmse_cm1", "force_rmse"):
        assert np.isfinite(metrics[key]) and np.isfinite(metrics["train"][key])
    model = io.load(tmp_path)
    assert isinstance(model, NNMPO) and model.metadata["units"]["energy"] == "eV"
    xv, yv, fv = load_h2co_arrays(shared_data / "h2co_pompon")["validation"]
    again = evaluate_arrays(model, xv, yv, fv)
    assert again["energy_mae_cm1"] == pytest.approx(metrics["energy_mae_cm1"], rel=1e-12)
    assert json.loads((tmp_path / "metrics.json").read_text())["num_parameters"] == model.num_parameters()


def test_farthest_point_centres_are_spread_and_seed_free():
    data = _toy_data(n_points=200)
    picked = pick_centres(data, 10, "farthest", seed=3)
    assert len(set(picked.tolist())) == 10
    assert int(picked[0]) == int(torch.argmin(data.y))
    assert torch.equal(picked, pick_centres(data, 10, "farthest", seed=7))
    # greedy farthest-point sampling covers the cloud better than a random draw of the same size
    def covering_radius(idx):
        return float(torch.cdist(data.x, data.x[idx]).min(dim=1).values.max())
    assert covering_radius(picked) < covering_radius(pick_centres(data, 10, "random", seed=0))
    with pytest.raises(ConfigError, match="centres"):
        pick_centres(data, 10, "kmeans")
    with pytest.raises(ConfigError, match="training points"):
        pick_centres(data, 500, "farthest")
