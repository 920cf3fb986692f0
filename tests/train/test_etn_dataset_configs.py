"""Example configs of the MoNbTaW / QM7 ETN benchmarks parse, and the stratified validation
split of fit_etn keeps every config type (issue 6)."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from entangle.data import read_extxyz
from entangle.data.atoms import Dataset
from entangle.errors import ConfigError
from entangle.models.etn import ETNConfig
from entangle.train.trainer import TrainConfig, fit_etn, stratified_split

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data" / "emt_cuau.extxyz"


@pytest.mark.parametrize("name,species", [("monbtaw", [41, 42, 73, 74]),
                                          ("qm7", [1, 6, 7, 8, 16, 17])])
def test_example_configs_parse(name, species):
    config = yaml.safe_load((REPO / "examples" / f"{name}_etn.yaml").read_text())
    assert config["task"] == "etn"
    assert set(config) <= {"task", "data", "model", "reference", "train"}
    assert set(config["data"]) <= {"train", "test", "valid_fraction", "valid_size", "stratify",
                                   "seed"}
    assert config["reference"] == "fitted"
    ETNConfig(species=species, **config["model"])
    train = TrainConfig(**config["train"])
    if name == "qm7":
        assert config["data"]["valid_size"] == 1025 and train.weights.forces == 0.0
    else:
        assert config["data"]["stratify"] is True and train.weights.forces > 0.0


def typed(n_per_type):
    base = read_extxyz(DATA)
    items = []
    for kind, n in n_per_type.items():
        items += [base[k % len(base)].replace(config_type=kind) for k in range(n)]
    return Dataset(items)


def test_stratified_split_keeps_every_config_type():
    data = typed({"a": 1, "b": 2, "c": 7, "d": 40})
    valid, train = stratified_split(data, 0.1, seed=3)
    counts = Counter(s.config_type for s in valid)
    assert counts == {"b": 1, "c": 1, "d": 4}  # "a" has one structure: it stays in train
    assert len(valid) + len(train) == len(data)
    assert {s.config_type for s in train} == {"a", "b", "c", "d"}
    ids = {id(s) for s in valid}
    assert ids.isdisjoint(id(s) for s in train) and len(ids) == len(valid)
    again, _ = stratified_split(data, 0.1, seed=3)
    assert [id(s) for s in again] == [id(s) for s in valid]
    with pytest.raises(ConfigError):
        stratified_split(data, 1.0, seed=0)


def test_fit_etn_stratify_and_valid_size(tmp_path):
    data = typed({"x": 6, "y": 6, "z": 3})
    data = Dataset(s for s in data if set(s.numbers) <= {29, 79} and s.n_atoms <= 32)
    kinds = {s.config_type for s in data}
    model = {"n_rad": 3, "d": 2, "L": 1, "spec_rank": 1, "rad_rank": 1, "ett_rank": 1,
             "r_cut": 4.0, "r_min": 1.5}
    train = {"max_steps": 1, "checkpoint_every": 0, "weights": {"forces": 0.0}}
    metrics = fit_etn({"data": {"train": data, "valid_fraction": 0.1, "stratify": True},
                       "model": model, "train": train}, tmp_path / "s", progress=False)
    assert metrics["n_valid"] == len(stratified_split(data, 0.1, 0)[0]) >= len(kinds)
    metrics = fit_etn({"data": {"train": data, "valid_size": 4}, "model": model,
                       "train": train}, tmp_path / "n", progress=False)
    assert (metrics["n_valid"], metrics["n_train"]) == (4, len(data) - 4)


def test_stratified_split_of_monbtaw_holds_every_type(shared_data):
    from entangle.data import load
    data = load("monbtaw")
    valid, train = stratified_split(data, 0.1, seed=0)
    kinds = Counter(s.config_type for s in data)
    got = Counter(s.config_type for s in valid)
    assert set(got) == set(kinds)
    assert all(got[k] == max(1, int(round(0.1 * n))) for k, n in kinds.items())
    assert len(valid) + len(train) == len(data)
    assert np.isclose(len(valid) / len(data), 0.1, atol=0.01)
