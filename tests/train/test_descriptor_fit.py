"""Config-driven fitting of descriptor models (entangle.train.descriptor_fit)."""

import json

import numpy as np
import pytest
import torch

from entangle import io
from entangle.data import load
from entangle.errors import ConfigError
from entangle.train.descriptor_fit import (
    evaluate_descriptor_model, fit_descriptor_model, predict_descriptor_model, target_values,
)

# a tiny, fast descriptor: the pipeline is what is tested, not the accuracy
_DESCRIPTOR = {"species": ["O", "Al", "Ga", "In"], "r_cut": 4.0, "n_max": 2, "l_max": 1, "sigma": 0.5}


@pytest.fixture
def mini_nomad(shared_data, tmp_path):
    """The first 40 training and 10 test rows of NOMAD 2018: cut CSVs, geometry folders linked."""
    source = shared_data / "nomad2018_tco"
    root = tmp_path / "nomad"
    root.mkdir()
    for split, rows in (("train", 40), ("test", 10)):
        lines = (source / f"{split}.csv").read_text().splitlines()
        (root / f"{split}.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
        (root / split).symlink_to(source / split, target_is_directory=True)
    return root


def _config(nomad, cache, kind="mps", **model):
    return {
        "seed": 3,
        "data": {"train": str(nomad / "train.csv"), "test": None, "max_train": 30,
                 "target": "mixing_energy_mev_per_cation", "validation_fraction": 0.2},
        "descriptor": dict(_DESCRIPTOR, cache_dir=str(cache)),
        "model": {"kind": kind, **model},
        "train": {"epochs": 15, "lr": 0.02, "patience": 15},
    }


def test_mixing_energy_is_formation_energy_times_atoms_per_cation(mini_nomad):
    structures = list(load(mini_nomad / "train.csv"))
    y = target_values(structures, "mixing_energy_mev_per_cation")
    for s, value in zip(structures, y):
        n_cations = sum(int(z) in (13, 31, 49) for z in s.numbers)
        assert n_cations * 5 == s.n_atoms * 2  # (Al,Ga,In)2O3: 2 cations per 5 atoms
        assert value == pytest.approx(1000.0 * s.properties["formation_energy_ev_natom"] * 2.5, rel=1e-12)


def test_fit_writes_files_and_reloads_to_identical_predictions(mini_nomad, tmp_path):
    torch.set_num_threads(1)
    held_out = list(load(mini_nomad / "train.csv"))[30:40]  # never seen in training (max_train = 30)
    out = tmp_path / "run"
    metrics = fit_descriptor_model(_config(mini_nomad, tmp_path / "cache", chi=3), out)

    for name in ("model.safetensors", "model.json", "metrics.json", "parity.png"):
        assert (out / name).is_file(), name
    written = json.loads((out / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    for split in ("train", "validation"):
        for stat in ("mae", "rmse", "max_abs_error"):
            assert np.isfinite(written[f"{split}_{stat}_mev_per_cation"])
    assert written["validation_n_structures"] == 6 and written["train_n_structures"] == 24
    assert "test_mae_mev_per_cation" not in written  # no test set configured
    assert written["n_parameters"] == sum(p.numel() for p in io.load(out).parameters())

    header = io.read_header(out)
    assert header["metadata"]["descriptor"]["soap"]["n_max"] == 2
    assert len(header["metadata"]["descriptor"]["standardization"]["scale"]) == 4 * 4 * 2 * 2 * 2
    assert header["metadata"]["target"]["units"] == "meV/cation"

    # reload and predict, computing descriptors afresh (no cache) and through a new cache
    p1 = predict_descriptor_model(out, held_out)
    p2 = predict_descriptor_model(out, held_out, cache_dir=tmp_path / "cache2")
    assert p1.shape == (10,)
    np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-9)
    reference = target_values(held_out, "mixing_energy_mev_per_cation")
    scores = evaluate_descriptor_model(out, held_out)
    assert scores["mae_mev_per_cation"] == pytest.approx(np.mean(np.abs(p1 - reference)), rel=1e-12)
    assert scores["rmse_mev_per_cation"] == pytest.approx(np.sqrt(np.mean((p1 - reference) ** 2)), rel=1e-12)

    # same config and seed, cached descriptors: the same model and metrics again
    again = fit_descriptor_model(_config(mini_nomad, tmp_path / "cache", chi=3), tmp_path / "run2")
    np.testing.assert_allclose(predict_descriptor_model(tmp_path / "run2", held_out), p1, rtol=0, atol=1e-9)
    assert again["validation_mae_mev_per_cation"] == pytest.approx(metrics["validation_mae_mev_per_cation"],
                                                                   rel=1e-10)


def test_gpr_with_test_split(mini_nomad, tmp_path):
    config = _config(mini_nomad, tmp_path / "cache", kind="gpr_soap")
    config["data"].update(test=str(mini_nomad / "test.csv"), max_test=8)
    metrics = fit_descriptor_model(config, tmp_path / "gpr")
    assert metrics["test_n_structures"] == 8
    assert metrics["n_parameters"] == 24  # dual weights, one per training structure
    assert io.read_header(tmp_path / "gpr")["metadata"]["descriptor"]["standardization"] is None  # raw spectra
    test = list(load(mini_nomad / "test.csv"))[:8]
    prediction = predict_descriptor_model(tmp_path / "gpr", test)
    reference = target_values(test, "mixing_energy_mev_per_cation")
    assert np.mean(np.abs(prediction - reference)) == pytest.approx(metrics["test_mae_mev_per_cation"], rel=1e-9)


@pytest.mark.parametrize("change, message", [
    ({"model": {"kind": "transformer"}}, "model.kind"),
    ({"model": {"chi": 0}}, "chi"),
    ({"model": {"bond": 4}}, "unknown model setting"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"als_sweeps": 2}}, "als_sweeps"),
    ({"data": {"validation_fraction": 1.5}}, "validation_fraction"),
    ({"data": {"target": "band"}}, "data.target"),
    ({"descriptor": {"n_max": 0}}, "n_max"),
    ({"descriptor": {"nmax": 4}}, "unknown descriptor setting"),
    ({"descriptor": {"standardize": "yes"}}, "standardize"),
    ({"optimiser": {}}, "unknown config section"),
    ({"seed": -1}, "seed"),
    ({"train": {"optimizer": "sgd"}}, "train.optimizer"),
    ({"train": {"loss": "l1"}}, "train.loss"),
    ({"train": {"huber_delta": 0}}, "train.huber_delta"),
    ({"train": {"lbfgs_iterations": 0}}, "train.lbfgs_iterations"),
    ({"train": {"warm_start": "pca"}}, "train.warm_start"),
    ({"train": {"warm_start": "linear"}}, "linear_chi"),  # a pure MPO has no linear part
    ({"model": {"linear_chi": -1}}, "linear_chi"),
])
def test_bad_config_raises_config_error_before_reading_data(tmp_path, change, message):
    config = {"data": {"train": str(tmp_path / "does-not-exist")}, "model": {"kind": "mpo", "chi": 2}}
    for section, value in change.items():
        config[section] = {**config[section], **value} if section in config else value
    with pytest.raises(ConfigError, match=message):
        fit_descriptor_model(config, tmp_path / "out")
    assert not (tmp_path / "out" / "model.json").exists()


@pytest.mark.parametrize("kind, model", [("mps", {"chi": 4}), ("mpo", {"chi": 2, "linear_chi": 4})])
def test_lbfgs_huber_warm_start_fit_and_csv_scale_metrics(mini_nomad, tmp_path, kind, model):
    torch.set_num_threads(1)
    config = _config(mini_nomad, tmp_path / "cache", kind=kind, **model)
    config["data"].update(test=str(mini_nomad / "test.csv"), max_test=8)
    config["train"] = {"optimizer": "lbfgs", "loss": "huber", "huber_delta": 0.05, "warm_start": "linear",
                       "warm_start_ridge": 1e-3, "epochs": 5, "patience": 2}
    metrics = fit_descriptor_model(config, tmp_path / kind)
    test = list(load(mini_nomad / "test.csv"))[:8]
    prediction = predict_descriptor_model(tmp_path / kind, test)  # meV/cation
    per_atom = np.array([s.properties["formation_energy_ev_natom"] for s in test])  # eV/atom, the CSV column
    csv_scale = prediction * 0.4 / 1000.0  # 2 cations per 5 atoms
    assert metrics["test_mae_mev_csv_scale"] == pytest.approx(1000 * np.mean(np.abs(csv_scale - per_atom)), rel=1e-9)
    assert metrics["test_mae_mev_csv_scale"] == pytest.approx(0.4 * metrics["test_mae_mev_per_cation"], rel=1e-9)
    assert metrics["test_rmse_mev_csv_scale"] == pytest.approx(0.4 * metrics["test_rmse_mev_per_cation"], rel=1e-9)
    rmsle = np.sqrt(np.mean((np.log1p(np.clip(csv_scale, 0, None)) - np.log1p(per_atom)) ** 2))
    assert metrics["test_rmsle"] == pytest.approx(rmsle, rel=1e-9)
    scores = evaluate_descriptor_model(tmp_path / kind, test)
    assert scores["rmsle"] == pytest.approx(rmsle, rel=1e-9)
    assert scores["mae_mev_csv_scale"] == pytest.approx(metrics["test_mae_mev_csv_scale"], rel=1e-9)
    for split in ("train", "validation"):
        assert np.isfinite(metrics[f"{split}_mae_mev_csv_scale"]) and np.isfinite(metrics[f"{split}_rmsle"])
    assert metrics["train_best_epoch"] >= -1  # -1: the warm start itself was the best on validation
