import matplotlib.image
import numpy as np
import pytest

from entangle.analysis.plots import (
    plot_bond_entropies, plot_capacity, plot_entropy_vs_bond, plot_latent, plot_ratio_distribution, plot_spectrum,
)


def read_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        plot_entropy_vs_bond([2, 4, 8], {"MPS": [0.3, 0.6, 0.8], "MPO": [0.5, 0.9, 1.2]}, tmp_path / "a.png",
                             errors={"MPS": [0.01, 0.02, 0.02]}, page=1.5),
        plot_bond_entropies([0.2, 0.5, 0.4], tmp_path / "b.png", labels=["a|b", "ab|c", "abc|d"]),
        plot_ratio_distribution({"x": rng.uniform(0, 3, 200), "y": rng.uniform(0, 1, 50)}, tmp_path / "c.png"),
        plot_spectrum({"p": np.sort(rng.dirichlet(np.ones(16)))[::-1]}, tmp_path / "d.png", d_a=16, d_b=64),
        plot_capacity([0, 1, 2], [0.1, 0.5, 0.3], tmp_path / "e.png", kl=[0.01, None, 0.03]),
        plot_latent([rng.normal(size=(30, 2))] * 2, tmp_path / "f.png", labels=rng.normal(size=30), titles=["a", "b"]),
        plot_latent([rng.normal(size=(30, 2))], tmp_path / "sub" / "g.png", labels=np.array(["x", "y", "z"] * 10)),
    ]
    for path in paths:
        read_png(path)


def test_plots_differ_with_data(tmp_path):
    a = read_png(plot_bond_entropies([0.1, 0.2], tmp_path / "a.png"))
    b = read_png(plot_bond_entropies([0.9, 0.2], tmp_path / "b.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(Exception):
        plot_latent([np.zeros((3, 2))], tmp_path / "bad.png", labels=np.zeros(5))
