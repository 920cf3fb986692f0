"""Hyperparameter growth of Sec. 6.1 ([S1]-[S5], eq. 49): the paper's cold starts, warm starts
from the grown parent, and the ``task: etn_grow`` config behind ``entangle fit``."""

import json
import math
from pathlib import Path

import pytest
import yaml

from entangle import io
from entangle.cli import main
from entangle.data import read_extxyz
from entangle.errors import ConfigError
from entangle.models.etn import ETNConfig
from entangle.train.hyper import HYPER_NAMES, grow_etn, grow_hyperparameters
from entangle.train.losses import LossWeights
from entangle.train.trainer import TrainConfig, fit_reference_energies

DATA = Path(__file__).resolve().parents[1] / "data" / "emt_cuau.extxyz"


@pytest.fixture(scope="module")
def small():
    data = read_extxyz(DATA)
    data = data.filter(predicate=lambda s: s.n_atoms <= 32 and set(s.numbers) <= {29, 79})
    train, valid = data[:4], data[8:10]
    base = dict(species=[29, 79], r_cut=4.0, r_min=1.5, feature_scale=20.0,
                reference_energies=fit_reference_energies(train, [29, 79]))
    return train, valid, base


def test_hyperparameter_growth_follows_eq49(small, tmp_path):
    train, valid, base = small
    cfg = TrainConfig(optimizer="lbfgs", max_steps=2, batch_size=8,
                      weights=LossWeights(forces=0.01))
    path, model = grow_hyperparameters(train, valid, base, cfg, n_iterations=1, n_restarts=1,
                                       start=(3, 1, 1, 1, 1, 1), out_dir=tmp_path)
    step = path[1]
    start = path[0]["hyper"]
    assert [c["hyper"] for c in step["candidates"]] == [
        [h + (i == k) for i, h in enumerate(start)] for k in range(len(HYPER_NAMES))]
    for c in step["candidates"]:  # eq. (49) from the recorded losses and parameter counts
        if c["n_parameters"] == path[0]["n_parameters"]:  # ett_rank of a one-core ETT
            assert c["hyper"][-1] == 2 and c["gradient"] == -math.inf
            continue
        assert c["gradient"] == pytest.approx(
            -math.log(c["mean_valid_loss"] / path[0]["mean_valid_loss"])
            / math.log(c["n_parameters"] / path[0]["n_parameters"]))
    assert step["gradient"] == max(c["gradient"] for c in step["candidates"])
    assert step["n_parameters"] > path[0]["n_parameters"]
    assert model.n_parameters() == step["n_parameters"]
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert json.loads((tmp_path / "pareto.json").read_text())[0]["hyper"] == [3, 1, 1, 1, 1, 1]


def test_warm_started_candidates_start_from_the_best_parent_fit(small):
    # with a learning rate of 1e-9 a fit is its starting point: a warm-started candidate
    # in every direction (d included) then has the validation loss of the parent's best fit
    train, valid, base = small
    cfg = TrainConfig(optimizer="adam", lr=1e-9, max_steps=1, batch_size=8,
                      weights=LossWeights(forces=0.01))
    runs = {warm: grow_hyperparameters(train, valid, base, cfg, n_iterations=1, n_restarts=2,
                                       start=(3, 2, 1, 1, 1, 1), warm_start=warm)[0]
            for warm in (True, False)}
    for warm, path in runs.items():
        parent = min(path[0]["valid_losses"])
        starts = [loss for c in path[1]["candidates"] for loss in c["valid_losses"]]
        assert len(starts) == 12
        close = [abs(loss / parent - 1) < 1e-3 for loss in starts]
        assert all(close) if warm else not any(close)
    step = runs[True][1]  # eq. (49) against the parent trained on from the same start
    assert step["baseline"]["hyper"] == runs[True][0]["hyper"]
    assert step["baseline"]["valid_losses"] == pytest.approx([parent, parent], rel=1e-6)
    for c in step["candidates"]:
        if c["gradient"] > -math.inf:
            assert c["gradient"] == pytest.approx(
                -math.log(c["mean_valid_loss"] / step["baseline"]["mean_valid_loss"])
                / math.log(c["n_parameters"] / runs[True][0]["n_parameters"]))
    assert "baseline" not in runs[False][1]


def test_grow_config_through_the_cli(tmp_path, capsys):
    config = {
        "task": "etn_grow", "data": {"train": str(DATA), "valid_size": 3, "seed": 1},
        "model": {"r_cut": 4.0, "r_min": 1.5},
        "train": {"optimizer": "lbfgs", "max_steps": 2, "weights": {"forces": 0.01}},
        "grow": {"iterations": 1, "restarts": 1, "start": [3, 1, 1, 1, 1, 1],
                 "warm_start": True}}
    path = tmp_path / "grow.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", str(path), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    final = metrics["path"][-1]
    assert [metrics["hyperparameters"][name] for name in HYPER_NAMES] == final["hyper"]
    model = io.load(tmp_path / "out" / "model")
    assert model.n_parameters() == final["n_parameters"] == metrics["n_parameters"]
    assert metrics["valid"]["loss"] == pytest.approx(min(final["valid_losses"]), rel=1e-6)
    for name in ("pareto.json", "pareto.png", "metrics.json"):
        assert (tmp_path / "out" / name).exists()


@pytest.mark.parametrize("change, match", [
    ({"model": {"r_cut": 4.0, "n_rad": 6}}, r"leave out \['n_rad'\]"),
    ({"grow": {"iterations": 1, "restart": 2}}, "restart"),
    ({"grow": {"start": [5, 1, 1]}}, "six positive integers"),
    ({"init": "somewhere"}, "init and train.resume"),
    ({"task": "etn"}, "needs task: etn_grow"),
])
def test_bad_grow_configs_are_refused_before_any_fit(small, tmp_path, change, match):
    train, _, _ = small
    config = {"task": "etn_grow", "data": {"train": train, "valid_size": 2},
              "model": {"r_cut": 4.0}, "train": {"max_steps": 1}, **change}
    with pytest.raises(ConfigError, match=match):
        grow_etn(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "pareto.json").exists()


def test_the_qm7_growth_example_parses():
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples"
                             / "qm7_etn_grow.yaml").read_text())
    assert config["task"] == "etn_grow" and config["data"]["train"] == "qm7"
    assert set(config["grow"]) == {"iterations", "restarts", "start", "warm_start"}
    hyper = dict(zip(HYPER_NAMES, config["grow"]["start"]))
    assert hyper == {"n_rad": 5, "d": 1, "L": 1, "spec_rank": 1, "rad_rank": 1, "ett_rank": 1}
    ETNConfig(species=[1, 6, 7, 8, 16, 17], **config["model"], **hyper)  # [S1]
    assert TrainConfig(**config["train"]).optimizer == "lbfgs"
