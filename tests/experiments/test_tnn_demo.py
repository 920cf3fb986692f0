"""Reduced-size run of the four Jahromi & Orús experiments and checks of their data sets."""

import json
import math

import numpy as np
import pytest

from entangle.errors import ConfigError
from entangle.experiments.tnn_demo import (
    SETTINGS, blobs_data, format_table, linear_data, run_all, sine_data, spiral_data, table_model,
)
from entangle.models.tnn import MPOLinear


def test_data_sets():
    x, y, xt, yt = blobs_data(0)
    assert x.shape == (500, 2) and xt.shape == (100, 2) and set(np.unique(y)) == {0, 1}
    assert x.min() == 0.0 and x.max() == 1.0
    x, y, xt, yt = spiral_data(0)
    assert x.shape == xt.shape == (600, 2) and np.bincount(y).tolist() == [200, 200, 200]
    assert np.abs(x).max() <= 1.0 and not np.allclose(x, xt)
    x, y, _, _ = linear_data(0)
    residual = y - (0.55 * x[:, 0] + 0.2)
    assert x.shape == (400, 1) and np.abs(residual).max() <= 0.1 and abs(residual.mean()) < 0.02
    x, y, _, _ = sine_data(0)
    assert 0 <= x.min() and x.max() <= 2 * math.pi and np.abs(y - np.sin(x[:, 0])).max() <= 0.25
    np.testing.assert_array_equal(spiral_data(3)[0], spiral_data(3)[0])  # seeded


def test_table_architectures():
    sine = table_model("sine")
    assert [type(m).__name__ for m in sine.layers] == ["Linear", "MPOLinear", "MPOLinear", "MPOLinear", "MPOLinear",
                                                       "Linear"]
    assert [a.name for a in sine.activations] == ["linear", "linear", "sigmoid", "sigmoid", "sigmoid", "linear"]
    spiral = table_model("spiral")
    tn = spiral.layers[1]
    assert isinstance(tn, MPOLinear) and tn.in_shape == tn.out_shape == (2,) * 6
    assert max(tn.bond_dims) == SETTINGS["spiral"].max_bond
    assert not spiral.layers[0].weight.requires_grad and spiral.activations[-1].name == "softmax"


def test_reduced_run_meets_relaxed_targets(tmp_path):
    results = run_all(tmp_path, scale=0.25, seed=0, progress=False)
    json.dumps(results)
    assert results["blobs_accuracy"] >= 0.95
    assert results["spiral_accuracy"] >= 0.85
    assert abs(results["linear_slope"] - 0.55) <= 0.05 and abs(results["linear_intercept"] - 0.20) <= 0.05
    assert results["sine_test_rmse"] <= 1.8 * results["sine_noise_rmse"]
    for name in ("blobs", "spiral", "linear", "sine"):
        assert (tmp_path / f"{name}_training.png").stat().st_size > 1000
        assert results[f"{name}_sweeps"] == max(2, round(SETTINGS[name].sweeps * 0.25))
    assert len(results["sine_entropies"]) == 4 and all(len(e) == 5 for e in results["sine_entropies"])
    table = format_table(results)
    assert "spiral (Table II)" in table and "total time" in table
    with pytest.raises(ConfigError):
        run_all(tmp_path, scale=0)
